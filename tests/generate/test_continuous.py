"""Continuous batching gives the lockstep sampler's tokens, refills its slots, compiles once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.generate import continuous, sampler, slot_programs
from marl_jax.generate.draw import SamplingParams
from marl_jax.models import get_preset, init_params, lora as lora_lib

CONFIG = get_preset("tiny_s", eos_ids=(2,), max_position_embeddings=256)
# Prompts of 2-16 tokens (one prompt bucket), token limits that stop rows at
# different steps; more rows than slots, so slots are refilled.
LENGTHS = [5, 16, 9, 3, 12, 2, 7, 8, 14, 4, 6, 11, 10]
LIMITS = [12, 3, 7, 12, 1, 5, 12, 9, 2, 12, 11, 4, 6]


@pytest.fixture(scope="module")
def params():
  # Larger-than-default init so that continuations depend on the weights.
  p = init_params(CONFIG, jax.random.PRNGKey(0))
  return jax.tree.map(lambda x: x * 4 if x.ndim >= 2 else x, p)


def _prompts(lengths=LENGTHS, seed=0):
  rng = np.random.RandomState(seed)
  return [rng.randint(3, 128, size=n).tolist() for n in lengths]


def _assert_same(got, want):
  np.testing.assert_array_equal(got.lengths, want.lengths)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_array_equal(got.truncated, want.truncated)
  # The same rows at other cache columns and batch places: float32 rounding only.
  np.testing.assert_allclose(got.logprobs, want.logprobs, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("temperature,stacked", [(0.0, False), (1.0, False), (0.7, True)],
                         ids=["greedy", "sampled", "sampled_stacked_cache"])
def test_equals_lockstep_with_refills_and_stops(params, temperature, stacked, monkeypatch):
  """Every row's tokens equal the lockstep sampler's for the same key: rows cut at
  their own limits, rows ending on a stop token (natural stops), and 13 rows through
  4 slots. `stacked`: the accelerators' layout (stacked layers, one [L, ...] cache)."""
  if stacked:
    monkeypatch.setattr(sampler, "unroll_default", lambda: False)
  prompts = _prompts()
  sampling = SamplingParams(temperature=temperature, max_new_tokens=12)
  free = sampler.generate(CONFIG, params, prompts, jax.random.PRNGKey(1), sampling)
  stop = int(np.bincount(free.tokens[:, 1:4].ravel()).argmax())  # a token several rows draw
  sampling = SamplingParams(temperature=temperature, max_new_tokens=12, stop_ids=(stop,))
  want = sampler.generate(CONFIG, params, prompts, jax.random.PRNGKey(1), sampling,
                          limits=LIMITS)
  stats = continuous.Stats()
  got = continuous.generate(CONFIG, params, prompts, jax.random.PRNGKey(1), sampling, slots=4,
                            limits=LIMITS, chunk=4, stats=stats)
  _assert_same(got, want)
  natural = ~want.truncated & (want.lengths < np.array(LIMITS))
  assert natural.sum() >= 2 and want.truncated.sum() >= 2
  assert stats.prefills >= 3 and stats.rows == len(prompts) and stats.slots == 4
  assert stats.tokens == want.lengths.sum() <= stats.slot_steps
  # Narrowing the decode as the queue drains changes no row, and never costs
  # slot-steps (test_the_drain_moves_the_live_row_and_decodes_it_alone: it saves them).
  wide = continuous.Stats()
  _assert_same(continuous.generate(CONFIG, params, prompts, jax.random.PRNGKey(1), sampling,
                                   slots=4, limits=LIMITS, chunk=4, shrink=False, stats=wide),
               want)
  assert wide.compactions == 0 and stats.tokens == wide.tokens <= stats.slot_steps \
      <= wide.slot_steps
  # A cache wider than the rows need (64 prompt columns for 16-token buckets): each
  # decode attends to the columns that hold its rows, at most half, with the same rows.
  cut = continuous.Stats()
  _assert_same(continuous.generate(CONFIG, params, prompts, jax.random.PRNGKey(1), sampling,
                                   slots=4, limits=LIMITS, chunk=4, max_prompt_len=64,
                                   stats=cut), want)
  decoded = cut.slot_steps - cut.rows  # the decode's (slot, step)s, prefills' first tokens out
  assert 0 < cut.column_steps * 2 <= decoded * (64 + 12)
  assert wide.column_steps == (wide.slot_steps - wide.rows) * (16 + 12)


def test_the_drain_moves_the_live_row_and_decodes_it_alone(params):
  """Rows cut at 2 tokens in slots 0-2 and one of 12 in slot 3: after the first chunk
  the live row moves to slot 0 and decodes alone (width 1), with lockstep's tokens."""
  config = CONFIG.replace(eos_ids=())
  prompts, limits = _prompts([5, 9, 3, 12]), [2, 2, 2, 12]
  sampling = SamplingParams(temperature=1.0, max_new_tokens=12)
  want = sampler.generate(config, params, prompts, jax.random.PRNGKey(2), sampling,
                          limits=limits)
  stats = continuous.Stats()
  got = continuous.generate(config, params, prompts, jax.random.PRNGKey(2), sampling, slots=4,
                            limits=limits, chunk=4, stats=stats)
  _assert_same(got, want)
  # 4 first tokens at prefill, a chunk of 4 steps x 4 slots, then 7 steps x 1 slot
  # (decoding every slot to the end: 4 + 4 x 4 + 7 x 4 = 48).
  assert (stats.tokens, stats.compactions, stats.slot_steps) == (18, 1, 4 + 4 * 4 + 7)
  # Full copies, 2 slots each: copy 0's live row moves from slot 1 to 0, copy 1's is
  # there already; both then decode at width 1.
  copies = jax.tree.map(lambda x: jnp.stack([x, -x if x.ndim >= 2 else x]), params)
  of, limits = [0, 0, 1, 1], [2, 12, 12, 2]
  want = sampler.generate_slots(config, copies, prompts, of, jax.random.PRNGKey(2), sampling,
                                limits=limits)
  stats = continuous.Stats()
  got = continuous.generate(config, copies, prompts, jax.random.PRNGKey(2), sampling, slots=2,
                            copies=of, limits=limits, chunk=4, max_prompt_len=64, stats=stats)
  _assert_same(got, want)
  assert (stats.compactions, stats.slot_steps) == (1, 4 + 4 * 2 * 2 + 7 * 2)
  assert stats.column_steps * 2 <= (4 * 2 * 2 + 7 * 2) * (64 + 12)  # fewer columns too


def test_per_row_sampling_settings(params):
  """Rows with their own temperature, top-k and top-p in one call equal lockstep calls
  made per setting with those rows' keys."""
  prompts = _prompts(seed=3)
  settings = [SamplingParams(0.0, max_new_tokens=8),
              SamplingParams(0.8, top_k=5, max_new_tokens=6),
              SamplingParams(1.2, top_p=0.5, max_new_tokens=8)]
  rows = [settings[i % 3] for i in range(len(prompts))]
  keys = jax.random.split(jax.random.PRNGKey(4), len(prompts))
  got = continuous.generate(CONFIG, params, prompts, keys, rows, slots=3, chunk=4)
  for setting in settings:
    mine = [i for i, s in enumerate(rows) if s is setting]
    want = sampler.generate(CONFIG, params, [prompts[i] for i in mine], keys[np.array(mine)],
                            setting)
    n = setting.max_new_tokens
    np.testing.assert_array_equal(got.tokens[mine, :n], want.tokens)
    np.testing.assert_allclose(got.logprobs[mine, :n], want.logprobs, atol=2e-5)
    np.testing.assert_array_equal(got.lengths[mine], want.lengths)


def test_lora_rows_and_full_copies_are_routed_per_row(params):
  """Per-row LoRA weights, and per-row full copies (each with its own slots), give
  the lockstep sampler's rows (generate / generate_slots)."""
  prompts = _prompts(seed=5)
  sampling = SamplingParams(temperature=1.0, max_new_tokens=8)
  adapters = lora_lib.init_adapters(CONFIG, lora_lib.LoraConfig(rank=4), [4, 4],
                                    jax.random.PRNGKey(2))
  adapters = jax.tree.map(lambda x: x + 0.2 * jax.random.normal(jax.random.PRNGKey(6), x.shape),
                          adapters)
  weights = np.zeros((len(prompts), 2), np.float32)
  weights[np.arange(len(prompts)), np.arange(len(prompts)) % 2] = 2.0
  want = sampler.generate(CONFIG, params, prompts, jax.random.PRNGKey(3), sampling,
                          adapters=adapters, adapter_weights=weights)
  got = continuous.generate(CONFIG, params, prompts, jax.random.PRNGKey(3), sampling, slots=4,
                            adapters=adapters, adapter_weights=weights)
  _assert_same(got, want)
  copies = jax.tree.map(lambda x: jnp.stack([x, -x if x.ndim >= 2 else x]), params)
  of = [i % 3 == 0 for i in range(len(prompts))]
  want = sampler.generate_slots(CONFIG, copies, prompts, of, jax.random.PRNGKey(3), sampling)
  stats = continuous.Stats()
  got = continuous.generate(CONFIG, copies, prompts, jax.random.PRNGKey(3), sampling, slots=2,
                            copies=of, stats=stats)
  _assert_same(got, want)
  assert stats.slots == 4 and stats.prefills >= 3


def test_calls_run_only_the_lora_slots_their_rows_use(params, monkeypatch):
  """A prefill or decode whose rows use some of the LoRA slots runs those only (one
  role's rows pay for one slot), with the tokens of the lockstep sampler given every
  slot. Rows 0-3 use slot 2, row 4 slots 0 and 2, the rest slot 0; none slot 1."""
  prompts = _prompts(seed=11)
  sampling = SamplingParams(temperature=1.0, max_new_tokens=12)
  adapters = lora_lib.init_adapters(CONFIG, lora_lib.LoraConfig(rank=4), [4, 4, 4],
                                    jax.random.PRNGKey(2))
  adapters = jax.tree.map(lambda x: x + 0.2 * jax.random.normal(jax.random.PRNGKey(7), x.shape),
                          adapters)
  weights = np.zeros((len(prompts), 3), np.float32)
  weights[:4, 2] = weights[4:, 0] = 2.0
  weights[4, 2] = 1.0
  calls, copies = [], []  # (program, the LoRA slots it ran) of each call
  for name in ("prefill_program", "decode_program"):
    program = getattr(slot_programs, name)
    def spy(*args, program=program, name=name, at=5 if name == "prefill_program" else 8):
      calls.append((name, None if args[at] is None else tuple(np.asarray(args[at]).tolist())))
      return program(*args)
    monkeypatch.setattr(slot_programs, name, spy)
  select = slot_programs.select_program
  monkeypatch.setattr(slot_programs, "select_program",
                      lambda *args, **kw: copies.append(1) or select(*args, **kw))
  want = sampler.generate(CONFIG, params, prompts, jax.random.PRNGKey(3), sampling,
                          adapters=adapters, adapter_weights=weights, limits=LIMITS)
  got = continuous.generate(CONFIG, params, prompts, jax.random.PRNGKey(3), sampling, slots=4,
                            adapters=adapters, adapter_weights=weights, limits=LIMITS)
  _assert_same(got, want)
  np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-4)
  ran = [used for _, used in calls]
  assert None not in ran and all(1 not in used for used in ran)
  assert {(2,), (0,), (0, 2)} <= set(ran)
  # a layout's slots are copied when its calls' slots change, not at every call
  last, changes = {}, 0
  for name, used in calls:
    changes += last.get(name) != used
    last[name] = used
  assert len(copies) <= changes < len(calls)


def test_no_recompiles_after_warm_up(params):
  """After a warm-up that meets every program (the prefill buckets, and as the queue
  drains each decode width, 4, 2 and 1, and each move, into 2 slots and into 1), calls
  with other prompts, keys and row counts (the same buckets and settings) compile
  nothing."""
  sampling = SamplingParams(temperature=1.0, max_new_tokens=12)
  continuous.generate(CONFIG, params, _prompts(seed=7), jax.random.PRNGKey(0), sampling,
                      slots=4, limits=LIMITS)
  for limits in ([2, 2, 2, 12], [2, 2, 12, 12]):  # moves into 1 slot, then into 2
    stats = continuous.Stats()
    continuous.generate(CONFIG, params, _prompts([5, 9, 3, 12]), jax.random.PRNGKey(2),
                        sampling, slots=4, limits=limits, stats=stats)
    assert stats.compactions == 1
  before = sampler.compiled_shapes()
  for seed, n in ((8, 13), (9, 21)):
    prompts = _prompts([3 + (i * 5) % 13 for i in range(n)], seed=seed)
    continuous.generate(CONFIG, params, prompts, jax.random.PRNGKey(seed), sampling, slots=4,
                        limits=[1 + (i * 7) % 12 for i in range(n)])
  assert sampler.compiled_shapes() == before


def test_bad_inputs_raise_clear_errors(params):
  sampling = SamplingParams(max_new_tokens=4)
  with pytest.raises(ValueError, match="max_prompt_len=8"):
    continuous.generate(CONFIG, params, [[5] * 9], jax.random.PRNGKey(0), sampling, slots=2,
                        max_prompt_len=8)
  with pytest.raises(ValueError, match="slots >= 1"):
    continuous.generate(CONFIG, params, [[5]], jax.random.PRNGKey(0), sampling, slots=0)
  with pytest.raises(ValueError, match="limits"):
    continuous.generate(CONFIG, params, [[5]], jax.random.PRNGKey(0), sampling, slots=1,
                        limits=[5])
  with pytest.raises(ValueError, match="stop_ids"):
    continuous.generate(CONFIG, params, [[5], [6]], jax.random.PRNGKey(0),
                        [sampling, SamplingParams(stop_ids=(3,))], slots=1)


@pytest.mark.parametrize("engine", ["lockstep", "continuous"])
def test_row_ids_key_rows_by_identity(params, engine):
  """Rows keyed by ids draw what the same rows drew at those places of a larger call."""
  prompts = _prompts(seed=11)
  sampling = SamplingParams(temperature=1.0, max_new_tokens=8)
  call = (sampler.generate if engine == "lockstep" else
          lambda *args, **kw: continuous.generate(*args, slots=3, **kw))
  whole = call(CONFIG, params, prompts, jax.random.PRNGKey(2), sampling)
  ids = [9, 2, 5]
  part = call(CONFIG, params, [prompts[i] for i in ids], jax.random.PRNGKey(2), sampling,
              row_ids=ids)
  np.testing.assert_array_equal(part.tokens, whole.tokens[ids])
  np.testing.assert_array_equal(part.lengths, whole.lengths[ids])
  default = call(CONFIG, params, prompts[:4], jax.random.PRNGKey(2), sampling,
                 row_ids=range(4))  # the default ids are the places
  np.testing.assert_array_equal(default.tokens, whole.tokens[:4])
