"""The sampler agrees with full-forward recomputation and honours its options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.generate import draw, sampler as sampling
from marl_jax.models import decoder, get_preset, init_params
from marl_jax.models.scoring import token_logprobs
from tests.helpers import use_cpu_kernels

CONFIG = get_preset("tiny_s", eos_ids=(2,), max_position_embeddings=256)


@pytest.fixture(scope="module")
def params():
  # Larger-than-default init so greedy decoding is not a constant string.
  p = init_params(CONFIG, jax.random.PRNGKey(0))
  return jax.tree.map(lambda x: x * 4 if x.ndim >= 2 else x, p)


def _prompts(lengths, seed=0):
  rng = np.random.RandomState(seed)
  return [rng.randint(3, 128, size=n).tolist() for n in lengths]


@pytest.mark.parametrize("unroll,skinny_rows,kernels",
                         [(True, 64, True), (True, 64, False), (True, 0, False),
                          (False, 64, False)],
                         ids=["cpu_kernels", "decode_layout", "layer_list", "scanned_stack"])
def test_cached_greedy_equals_full_forward_on_left_padded_batch(params, unroll, skinny_rows,
                                                                 kernels, monkeypatch):
  """Each greedy token is the argmax of a cache-free, unpadded forward over its prefix:
  with per-layer caches and kernels packed for the hand-written CPU kernels (CPU's
  default where they build), output-major kernels (else, up to SKINNY_ROWS rows of a
  wide model), per-layer caches and stored kernels (CPU otherwise), and the scan's
  stacked cache (accelerators')."""
  use_cpu_kernels(kernels, monkeypatch)
  monkeypatch.setattr(sampling, "unroll_default", lambda: unroll)
  monkeypatch.setattr(decoder, "SKINNY_ROWS", skinny_rows)
  monkeypatch.setattr(decoder, "DECODE_LAYOUT_MIN_HIDDEN", 0)  # tiny_s is narrower
  prompts = _prompts([5, 17, 9])
  n_new = 12
  out = sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(1),
                          sampling.SamplingParams(temperature=0.0, max_new_tokens=n_new))
  for i, prompt in enumerate(prompts):
    got = out.completion(i)
    assert len(got) == n_new or got[-1] in CONFIG.eos_ids
    seq = jnp.asarray([prompt + got])
    logits = decoder.forward_logits(CONFIG, params, seq)[0, len(prompt) - 1:-1]
    np.testing.assert_array_equal(np.argmax(logits, -1), got)
    ref_logps = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                                   np.array(got)[:, None], -1)[:, 0]
    np.testing.assert_allclose(out.logprobs[i, : len(got)], ref_logps, atol=1e-5)


def test_stop_token_included_and_rows_padded_after_it(params):
  prompts = _prompts([6, 6, 6, 6], seed=3)
  first = sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(0),
                            sampling.SamplingParams(temperature=0.0, max_new_tokens=8))
  stop = int(first.tokens[0, 2])  # make the third greedy token of row 0 a stop id
  out = sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(0),
                          sampling.SamplingParams(temperature=0.0, max_new_tokens=8,
                                                  stop_ids=(stop,)))
  row = out.completion(0)
  assert row[-1] == stop and len(row) <= 3
  assert not out.truncated[0]
  assert np.all(out.tokens[0, len(row):] == CONFIG.pad_id)
  assert np.all(out.logprobs[0, len(row):] == 0)
  no_stop = ~np.isin(first.tokens, CONFIG.eos_ids).any(axis=1)
  np.testing.assert_array_equal(first.truncated, no_stop)


def test_sampling_is_deterministic_per_key_and_varies_across_keys(params):
  prompts = _prompts([4] * 8, seed=5)
  sp = sampling.SamplingParams(temperature=1.0, max_new_tokens=10)
  a = sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(7), sp)
  b = sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(7), sp)
  c = sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(8), sp)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, c.tokens)


def test_sampled_logprobs_match_rescoring_at_temperature(params):
  prompts = _prompts([3, 9, 6, 4], seed=11)
  sp = sampling.SamplingParams(temperature=0.7, max_new_tokens=10)
  out = sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(2), sp)
  seqs = [p + out.completion(i) for i, p in enumerate(prompts)]
  tokens, valid = sampling.left_pad(seqs, 32, len(seqs), CONFIG.pad_id)
  logp, entropy = token_logprobs(CONFIG, params, jnp.asarray(tokens), jnp.asarray(valid),
                                 temperature=0.7, chunk_size=8)
  for i in range(len(prompts)):
    n = out.lengths[i]
    np.testing.assert_allclose(np.asarray(logp)[i, -n:], out.logprobs[i, :n], atol=5e-5)
  assert np.all(np.asarray(entropy)[valid[:, 1:]] > 0)


def test_top_k_one_is_greedy(params):
  prompts = _prompts([5, 7], seed=2)
  greedy = sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(0),
                             sampling.SamplingParams(temperature=0.0, max_new_tokens=6))
  topk = sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(9),
                           sampling.SamplingParams(temperature=1.0, top_k=1, max_new_tokens=6))
  np.testing.assert_array_equal(greedy.tokens, topk.tokens)


def test_tiny_top_p_is_greedy(params):
  prompts = _prompts([5, 7], seed=4)
  greedy = sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(0),
                             sampling.SamplingParams(temperature=0.0, max_new_tokens=6))
  topp = sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(9),
                           sampling.SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=6))
  np.testing.assert_array_equal(greedy.tokens, topp.tokens)


@pytest.mark.parametrize("vocab", [7, 300, 5000])
def test_inverse_cdf_picks_the_first_entry_whose_cdf_reaches_u(vocab):
  """The two-level search equals a flat searchsorted over the cumulative mass, and
  never returns an entry of zero mass (zero blocks, zero runs, the padded tail)."""
  rng = np.random.default_rng(vocab)
  probs = rng.random((6, vocab)) * (rng.random((6, vocab)) < 0.3)
  probs[:, : vocab // 2] = 0.0  # whole blocks without mass
  probs[:, -1] = 0.0
  probs[:, vocab // 2] += 0.05  # every row has mass
  probs[0] = 0.0
  probs[0, vocab // 2 + 1] = 1.0  # one entry holds all the mass
  probs /= probs.sum(-1, keepdims=True)
  u = rng.uniform(1e-7, 1.0, size=(200, 6))
  got = np.stack([np.asarray(draw.inverse_cdf(jnp.asarray(probs, jnp.float32),
                                              jnp.asarray(row, jnp.float32)))
                  for row in u])
  cdf = np.cumsum(probs.astype(np.float64), -1)
  want = np.stack([[np.searchsorted(cdf[i], row[i] * cdf[i, -1]) for i in range(6)]
                   for row in u])
  assert np.all(probs[np.arange(6), got] > 0)
  # float32 rounding may move a draw lying within 1e-5 of a boundary by one entry.
  near = np.abs(cdf[np.arange(6), np.minimum(want, vocab - 1)] - u) < 1e-5
  assert np.mean((got == want) | near) == 1.0


def test_buckets_bound_compiled_shapes(params):
  sp = sampling.SamplingParams(temperature=0.0, max_new_tokens=4)
  before = sampling.compiled_shapes()
  for n, length in [(3, 5), (5, 9), (8, 12), (2, 16)]:  # all in batch 8, prompt 16
    sampling.generate(CONFIG, params, _prompts([length] * n), jax.random.PRNGKey(0), sp)
  assert sampling.compiled_shapes() - before <= 1


def test_bad_inputs_raise_clear_errors(params):
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    sampling.generate(CONFIG, params, [[5], []], jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="max_position_embeddings"):
    sampling.generate(CONFIG, params, [[5] * 200], jax.random.PRNGKey(0),
                      sampling.SamplingParams(max_new_tokens=64))
  with pytest.raises(ValueError, match="temperature"):
    sampling.SamplingParams(temperature=-1)


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu_kernels", "xla"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("rows", [4, 80], ids=["skinny", "wide"])
def test_decode_layout_computes_what_the_stored_layout_does(tied, rows, kernels):
  """The decode layout (decoder.decode_layout: fused, one array per layer, kernels
  packed for cpu_kernels or else output-major) gives the stored layout's logits:
  through the hand-written product and attention, or as (W x^T)^T for few rows
  and x W^T for many."""
  use_cpu_kernels(kernels)
  config = CONFIG.replace(tie_embeddings=tied)
  params = init_params(config, jax.random.PRNGKey(3))
  layout = jax.jit(decoder.decode_layout, static_argnums=(0, 2))(config, params, kernels)
  form = decoder.Packed if kernels else decoder.Transposed
  assert all(isinstance(layout["layers"][0][name], form)
             for name in ("q+k+v", "o", "gate+up", "down"))
  assert isinstance(decoder.lm_head(config, layout), form)
  tokens = jnp.asarray(np.random.RandomState(0).randint(3, 128, size=(rows, 5)))
  positions = jnp.broadcast_to(jnp.arange(5), tokens.shape)
  valid = jnp.ones(tokens.shape, bool)

  @jax.jit
  def logits(p):
    hidden, _ = decoder.forward_hidden(config, p, tokens[:, :1], positions[:, :1], valid[:, :1])
    return decoder.logits_from_hidden(config, p, hidden)

  np.testing.assert_allclose(logits(layout), logits(params), rtol=0, atol=1e-5)


def test_decode_layout_is_reused_for_the_same_weights_only(params, monkeypatch):
  """Calls with the same arrays share one layout; other weights (new values under
  the same tree) get their own, so their tokens are their own; the two most
  recently used layouts are kept, and a layout goes when the weights it was made
  from are freed."""
  monkeypatch.setattr(sampling, "unroll_default", lambda: True)
  monkeypatch.setattr(decoder, "DECODE_LAYOUT_MIN_HIDDEN", 0)
  monkeypatch.setattr(sampling, "_LAYOUTS", [])  # earlier tests' entry: the same params
  made = []
  monkeypatch.setattr(sampling, "_decode_layout",
                      lambda *a: made.append(1) or decoder.decode_layout(a[0], a[1], a[3]))
  prompts = _prompts([5, 9])
  greedy = sampling.SamplingParams(temperature=0.0, max_new_tokens=8)

  def tokens(p):
    return sampling.generate(CONFIG, p, prompts, jax.random.PRNGKey(0), greedy).tokens

  def scaled(factor):
    return jax.tree.map(lambda x: factor * x if x.ndim >= 2 else x, params)

  first = tokens(params)
  np.testing.assert_array_equal(tokens(params), first)
  assert len(made) == 1
  other = scaled(-1)
  monkeypatch.setattr(sampling, "unroll_default", lambda: False)  # the stored kernels
  expected = tokens(other)
  monkeypatch.setattr(sampling, "unroll_default", lambda: True)
  assert not np.array_equal(expected, first)
  np.testing.assert_array_equal(tokens(other), expected)
  np.testing.assert_array_equal(tokens(params), first)  # both kept
  assert len(made) == 2
  third = scaled(2)
  tokens(third)  # evicts the least recently used: other's
  tokens(params)
  assert len(made) == 3 and len(sampling._LAYOUTS) == sampling.LAYOUTS_KEPT
  tokens(other)
  assert len(made) == 4
  del other, third
  assert len(sampling._LAYOUTS) == 1  # each layout went with its weights
