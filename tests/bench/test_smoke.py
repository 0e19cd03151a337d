"""The benchmark's model-FLOP counts agree with XLA's own count of the programs."""

import jax
import jax.numpy as jnp
import pytest

from marl_jax.bench import smoke
from marl_jax.models import decoder, get_preset, init_params

CONFIG = get_preset("tiny_m", hidden_size=256, intermediate_size=768, num_heads=4,
                    num_kv_heads=2, head_dim=64, num_layers=2, vocab_size=4096,
                    one_hot_embed=False)  # a gather: no FLOPs
B, S = 4, 32


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return (cost if isinstance(cost, dict) else cost[0])["flops"]


@pytest.mark.parametrize("cached", [False, True], ids=["prefill", "decode_step"])
def test_forward_flops_match_xla_cost_analysis(cached):
  """A prefill over S tokens (LM head at the last one) and one cached decode step
  over S slots: the matmul and attention FLOPs we count are XLA's count less its
  elementwise work (norms, RoPE, softmax: a few percent at this width)."""
  params = init_params(CONFIG, jax.random.PRNGKey(0))
  n = 1 if cached else S
  tokens = jnp.ones((B, n), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(n), (B, n))
  shape = (CONFIG.num_layers, B, CONFIG.num_kv_heads, S, CONFIG.head_dim)
  cache = (jnp.zeros(shape), jnp.zeros(shape)) if cached else None

  def forward(p, cache):
    kwargs = {}
    if cached:
      kwargs = dict(cache=cache, cache_valid=jnp.ones((B, S), bool), cache_index=S - 1)
    hidden, _ = decoder.forward_hidden(CONFIG, p, tokens, positions, jnp.ones((B, n), bool),
                                       **kwargs)
    return decoder.logits_from_hidden(CONFIG, p, hidden[:, -1:])

  # XLA computes every query against all S keys (the causal mask zeroes half).
  ours = smoke.forward_flops(CONFIG, B * n, S, lm_head_tokens=B)
  xla = _xla_flops(forward, params, cache)
  assert 0.95 * xla <= ours <= xla
