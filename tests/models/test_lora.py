"""LoRA adapters: initialisation, routing equals merging, padded slots keep their rank."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.models import decoder, get_preset, init_params, lora

CONFIG = get_preset("tiny_s")
TOKENS = jnp.asarray(np.random.RandomState(0).randint(3, 128, size=(3, 10)))


@jax.jit
def _logits(params, adapters=None, weights=None):
  b, s = TOKENS.shape
  positions = jnp.broadcast_to(jnp.arange(s), (b, s))
  hidden, _ = decoder.forward_hidden(CONFIG, params, TOKENS, positions, jnp.ones((b, s), bool),
                                     adapters=adapters, adapter_weights=weights)
  return decoder.logits_from_hidden(CONFIG, params, hidden)


def _randomize_b(adapters, seed=1, scale=0.5):
  keys = iter(jax.random.split(jax.random.PRNGKey(seed), 64))
  return {"layers": {name: {"a": ab["a"], "b": scale * jax.random.normal(next(keys), ab["b"].shape)}
                     for name, ab in adapters["layers"].items()}}


@pytest.fixture(scope="module")
def params():
  return init_params(CONFIG, jax.random.PRNGKey(0))


def test_init_zero_b_shared_a_and_zero_padded_columns():
  cfg = lora.LoraConfig(rank=8, alpha=16, targets=("q", "down"))
  adapters = lora.init_adapters(CONFIG, cfg, [8, 8, 2], jax.random.PRNGKey(0), share_init=[0, 0, 1])
  assert set(adapters["layers"]) == {"q", "down"}
  a, b = adapters["layers"]["q"]["a"], adapters["layers"]["q"]["b"]
  assert a.shape == (CONFIG.num_layers, CONFIG.hidden_size, 24)
  assert b.shape == (CONFIG.num_layers, 24, CONFIG.num_heads * CONFIG.head_dim)
  assert not np.any(b)
  np.testing.assert_array_equal(a[..., :8], a[..., 8:16])  # same init id: same A
  assert not np.array_equal(a[..., :2], a[..., 16:18])
  assert np.all(a[..., 18:] == 0) and np.all(a[..., 16:18] != 0)  # rank-2 slot, padded
  assert np.max(np.abs(a)) <= 1 / np.sqrt(CONFIG.hidden_size)


def test_zero_b_leaves_the_base_output_unchanged(params):
  adapters = lora.init_adapters(CONFIG, lora.LoraConfig(), [64, 64], jax.random.PRNGKey(3))
  weights = jnp.asarray([[0.5, 0.0], [0.0, 0.5], [0.5, 0.5]])
  np.testing.assert_array_equal(_logits(params, adapters, weights), _logits(params))


def test_routed_rows_equal_the_merged_weights_of_their_slots(params):
  cfg = lora.LoraConfig(rank=4, alpha=8)
  adapters = _randomize_b(lora.init_adapters(CONFIG, cfg, [4, 4, 2], jax.random.PRNGKey(1),
                                             share_init=[0, 1, 2]))
  weights = np.array([[2.0, 0, 0], [0, 2.0, 0], [2.0, 0, 4.0]], np.float32)
  routed = _logits(params, adapters, jnp.asarray(weights))
  assert not np.allclose(routed[0], routed[1], atol=1e-3)
  for row in range(3):
    merged = _logits(lora.merge(params, adapters, weights[row]))
    np.testing.assert_allclose(routed[row], merged[row], atol=2e-4)


def test_compact_drops_unused_slots_without_changing_outputs(params):
  cfg = lora.LoraConfig(rank=4, alpha=8)
  adapters = _randomize_b(lora.init_adapters(CONFIG, cfg, [4, 4, 4], jax.random.PRNGKey(1),
                                             share_init=[0, 1, 2]))
  weights = np.array([[0, 2.0, 0], [0, 2.0, 0], [0, 2.0, 2.0]], np.float32)
  small, small_weights = lora.compact(adapters, weights)
  assert small["layers"]["q"]["a"].shape[-1] == 8 and small_weights.shape == (3, 2)
  np.testing.assert_array_equal(small["layers"]["v"]["b"], adapters["layers"]["v"]["b"][:, 4:])
  np.testing.assert_allclose(_logits(params, small, jnp.asarray(small_weights)),
                             _logits(params, adapters, jnp.asarray(weights)), atol=1e-5)


def test_padded_columns_get_zero_gradient_so_a_small_slot_keeps_its_rank(params):
  cfg = lora.LoraConfig(rank=4, alpha=8)
  adapters = _randomize_b(lora.init_adapters(CONFIG, cfg, [4, 2], jax.random.PRNGKey(2),
                                             share_init=[0, 1]))
  for ab in adapters["layers"].values():  # padded B rows start at zero, as after init
    ab["b"] = ab["b"].at[:, 6:].set(0.0)
  weights = jnp.asarray([[2.0, 4.0]] * 3)
  grads = jax.jit(jax.grad(lambda ad: jnp.sum(_logits(params, ad, weights) ** 2)))(adapters)
  for ab in grads["layers"].values():
    assert np.all(ab["a"][..., 6:] == 0) and np.all(ab["b"][:, 6:] == 0)
    assert np.any(ab["a"][..., 4:6] != 0)


def test_bad_lora_configs_name_the_field():
  with pytest.raises(ValueError, match="targets.*'qkv'.*'gate'"):
    lora.LoraConfig(targets=("q", "qkv"))
  with pytest.raises(ValueError, match="rank"):
    lora.LoraConfig(rank=0)
  assert lora.LoraConfig().scale == 0.5 and lora.LoraConfig().targets == decoder.LINEAR_NAMES
