"""Rows that share a prompt start from the live row that holds it, with the lockstep
sampler's tokens (continuous.Session, session_rows.HeldPrompts)."""

import jax
import numpy as np
import pytest

from marl_jax.generate import continuous, sampler
from marl_jax.generate.draw import SamplingParams
from marl_jax.generate.session_rows import HeldPrompts
from marl_jax.models import get_preset, init_params, lora as lora_lib

CONFIG = get_preset("tiny_s", eos_ids=(2,), max_position_embeddings=256)
# Two prompts, each under two roles (LoRA slots) or copies, interleaved as a
# refill takes them: a row may start only from its own prompt, role and copy.
ORDER = [(0, 0), (0, 1), (0, 0), (0, 1), (1, 0), (1, 0), (1, 1), (0, 0), (1, 1), (0, 1),
         (1, 0), (0, 0)]
LIMITS = [12, 9, 12, 3, 12, 2, 10, 7, 12, 5, 11, 4]


@pytest.fixture(scope="module")
def params():
  p = init_params(CONFIG, jax.random.PRNGKey(0))
  return jax.tree.map(lambda x: x * 4 if x.ndim >= 2 else x, p)


def _rows():
  rng = np.random.RandomState(3)
  prompts = [rng.randint(3, 128, size=n).tolist() for n in (7, 11)]
  return [prompts[p] for p, _ in ORDER], np.array([r for _, r in ORDER])


def test_rows_of_one_prompt_and_role_start_from_a_live_row(params):
  """The same sampled tokens as lockstep with and without sharing; with it, rows
  start from the prompt a live row of their role holds (forks), so fewer rows are
  prefilled."""
  prompts, roles = _rows()
  adapters = lora_lib.init_adapters(CONFIG, lora_lib.LoraConfig(rank=4), [4, 4],
                                    jax.random.PRNGKey(2))
  adapters = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(7), x.shape),
                          adapters)
  weights = np.eye(2, dtype=np.float32)[roles] * 2.0
  sampling = SamplingParams(temperature=1.0, max_new_tokens=12)
  want = sampler.generate(CONFIG, params, prompts, jax.random.PRNGKey(5), sampling,
                          adapters=adapters, adapter_weights=weights, limits=LIMITS)
  for share in (False, True):
    stats = continuous.Stats()
    got = continuous.generate(CONFIG, params, prompts, jax.random.PRNGKey(5), sampling,
                              slots=4, adapters=adapters, adapter_weights=weights,
                              limits=LIMITS, share=share, stats=stats)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.lengths, want.lengths)
    np.testing.assert_allclose(got.logprobs, want.logprobs, rtol=2e-5, atol=2e-5)
    assert stats.forks >= (4 if share else 0) and (share or stats.forks == 0)
    assert stats.rows == len(prompts)


def test_rows_of_one_prompt_start_only_from_their_own_copy(params):
  """Full copies (stacked params): a prompt held by one copy's row does not start
  another copy's."""
  prompts, copies = _rows()
  stacked = jax.tree.map(lambda x: np.stack([x, 1.2 * x]), params)
  sampling = SamplingParams(temperature=1.0, max_new_tokens=12)
  want = sampler.generate_slots(CONFIG, stacked, prompts, copies, jax.random.PRNGKey(6),
                                sampling, limits=LIMITS)
  stats = continuous.Stats()
  got = continuous.generate(CONFIG, stacked, prompts, jax.random.PRNGKey(6), sampling, slots=2,
                            copies=copies, limits=LIMITS, stats=stats)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_array_equal(got.lengths, want.lengths)
  assert stats.forks >= 2


def test_held_prompts_follow_their_rows():
  held = HeldPrompts(copies=2)
  a, b = HeldPrompts.key([5, 6], None), HeldPrompts.key([5, 6], np.array([1.0, 0.0]))
  assert a != b and a == HeldPrompts.key(np.array([5, 6]), None)
  held.hold(0, 3, a)
  held.hold(0, 1, a)
  assert held.holder(0, a) == 1 and held.holder(1, a) is None and held.holder(0, b) is None
  held.release(0, 1)
  assert held.holder(0, a) == 3
  held.move(0, 3, 0)
  assert held.holder(0, a) == 0
  held.hold(0, 0, b)  # the slot's next row: its old prompt is no longer held
  assert held.holder(0, a) is None and held.holder(0, b) == 0
  held.release(0, 0)
  held.release(0, 2)  # a slot that holds nothing
  assert held.holder(0, b) is None
