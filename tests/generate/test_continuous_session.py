"""continuous.Session: rows submitted while it runs, by priority, with the programs of generate."""

import jax
import numpy as np
import pytest

from marl_jax.generate import continuous, draw, sampler
from marl_jax.generate.draw import SamplingParams
from marl_jax.models import get_preset, init_params

CONFIG = get_preset("tiny_s", eos_ids=(2,), max_position_embeddings=256)
SAMPLING = SamplingParams(temperature=1.0, max_new_tokens=10)
LIMITS = [10, 3, 7, 10, 1, 5, 9, 2, 6, 4]


@pytest.fixture(scope="module")
def params():
  p = init_params(CONFIG, jax.random.PRNGKey(0))
  return jax.tree.map(lambda x: x * 4 if x.ndim >= 2 else x, p)  # weight-dependent tokens


def _prompts(seed):
  rng = np.random.RandomState(seed)
  return [rng.randint(3, 128, size=n).tolist() for n in (5, 14, 9, 3, 12, 2, 7, 8, 11, 4)]


def _fed_one_by_one(params, prompts, keys, stats=None):
  """A 3-slot session fed its first 3 rows, then one more row each time a row finishes;
  returns ({row: Finished}, how many rows were submitted while others were decoding)."""
  session = continuous.Session(CONFIG, params, SAMPLING, slots=3, max_prompt_len=16, chunk=4,
                               stats=stats)
  session.submit(prompts[:3], keys[:3], limits=LIMITS[:3])
  fed, out, during = 3, {}, 0
  while not session.idle:
    for done in session.step():
      out[done.row] = done
      if fed < len(prompts):
        during += not session.idle
        session.submit(prompts[fed:fed + 1], keys[fed:fed + 1], limits=LIMITS[fed:fed + 1])
        fed += 1
  return out, during


def test_rows_fed_while_running_equal_generate_and_compile_nothing_new(params):
  """Rows submitted as others finish give generate's tokens for the same keys, and a
  second session with other prompts and keys compiles no program the first did not."""
  prompts, rng = _prompts(0), jax.random.PRNGKey(3)
  want = continuous.generate(CONFIG, params, prompts, rng, SAMPLING, slots=3, limits=LIMITS,
                             max_prompt_len=16, chunk=4)
  stats = continuous.Stats()
  got, during = _fed_one_by_one(params, prompts, np.asarray(draw.row_keys(rng, len(prompts))),
                                stats)
  assert sorted(got) == list(range(len(prompts))) and during >= 3
  for i, done in got.items():
    n = int(want.lengths[i])
    np.testing.assert_array_equal(done.tokens, want.tokens[i, :n])
    np.testing.assert_allclose(done.logprobs, want.logprobs[i, :n], rtol=2e-5, atol=2e-5)
    assert done.truncated == want.truncated[i]
  assert stats.rows == len(prompts) and stats.tokens == int(want.lengths.sum())
  assert stats.tokens <= stats.slot_steps
  before = sampler.compiled_shapes()
  _fed_one_by_one(params, _prompts(1), np.asarray(jax.random.split(jax.random.PRNGKey(9), 10)))
  assert sampler.compiled_shapes() == before


def test_lower_priority_rows_are_prefilled_first(params):
  """Rows queued with priorities 5..0 enter 2 slots lowest first; ties in submission order."""
  session = continuous.Session(CONFIG, params, SAMPLING, slots=2, max_prompt_len=16)
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), 6))
  rows = session.submit(_prompts(2)[:6], keys, limits=[3] * 6, priority=[5, 4, 3, 1, 1, 0])
  started = {done.row: done.prefill for done in session.run()}
  assert started == {rows[5]: 0, rows[3]: 0, rows[4]: 1, rows[2]: 1, rows[1]: 2, rows[0]: 2}


def test_a_refill_prefills_each_prompt_bucket_apart(params):
  """Short and long prompts refilled together take one prefill per prompt bucket (16
  and 64 tokens), so no short prompt is padded to a long one's length; the rows are
  the lockstep sampler's for the same keys."""
  rng = np.random.RandomState(3)
  prompts = [rng.randint(3, 128, size=n).tolist() for n in (4, 60, 9, 50)]
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(5), 4))
  stats = continuous.Stats()
  session = continuous.Session(CONFIG, params, SAMPLING, slots=4, max_prompt_len=64,
                               stats=stats)
  session.submit(prompts, keys, limits=[4] * 4)
  got = {done.row: done for done in session.run()}
  want = sampler.generate(CONFIG, params, prompts, keys, SAMPLING, limits=[4] * 4)
  assert stats.prefills == 2 and {got[r].prefill for r in (0, 2)} == {0}
  assert {got[r].prefill for r in (1, 3)} == {1}
  for i, done in got.items():
    np.testing.assert_array_equal(done.tokens, want.tokens[i, :want.lengths[i]])


def test_rows_the_session_cannot_take_are_refused(params):
  greedy = continuous.Session(CONFIG, params, SamplingParams(0.0, max_new_tokens=4), slots=2,
                              max_prompt_len=16)
  key = np.zeros((1, 2), np.uint32)
  with pytest.raises(ValueError, match="open the session with every sampling"):
    greedy.submit([[5, 6]], key, SamplingParams(1.0, max_new_tokens=4))
  with pytest.raises(ValueError, match="max_prompt_len=16"):
    greedy.submit([[5] * 17], key)
  with pytest.raises(ValueError, match=r"limits .* max_new_tokens=4"):
    greedy.submit([[5]], key, limits=[5])
  with pytest.raises(ValueError, match="adapter_weights"):
    greedy.submit([[5]], key, adapter_weights=np.ones((1, 2)))
  assert greedy.idle  # nothing was queued
