"""rl.remat: per-layer recompute changes no number, reaches the compiled update, is validated."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.models import decoder
from marl_jax.models.config import ModelConfig
from marl_jax.models.lora import LoraConfig
from marl_jax.policies.store import PolicyStore
from marl_jax.rl import update
from marl_jax.trainer import config as config_lib
from marl_jax.trainer import loop
from marl_jax.trainer import measure

# Deeper than decoder.UNROLL_MAX_LAYERS: the layers run as a scan, as Qwen3's do.
DEEP = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=6,
                   num_heads=4, num_kv_heads=2, head_dim=8)
ROLES = ("generator", "aggregator")


def _random(tree, rng, scale):
  # numpy, not jax.random: eager jax.random compiles once per shape (seconds here).
  return jax.tree.map(lambda x: jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype), tree)


@functools.cache  # jax arrays are immutable: every test may share them
def _store_and_batch(rows=3, length=20):
  rng = np.random.default_rng(0)
  base = _random(decoder.param_shapes(DEEP), rng, 0.02)
  base["layers"].update({k: jnp.ones_like(v) for k, v in base["layers"].items() if "norm" in k})
  store = PolicyStore.create(DEEP, base, ROLES, mode="isolated", kind="lora",
                             lora=LoraConfig(rank=4, alpha=8.0), rng=jax.random.PRNGKey(1))
  # LoRA B starts at zero, which leaves A without a gradient: give it values.
  trainable = _random(store.trainable, rng, 0.05)
  valid = np.ones((rows, length), bool)
  valid[0, :4] = False
  mask = np.zeros((rows, length - 1), bool)
  mask[:, -8:] = True
  batch = dict(tokens=rng.integers(3, 64, (rows, length)).astype(np.int32), valid=valid,
               mask=mask, old_logp=np.full((rows, length - 1), -4.0, np.float32),
               advantages=np.linspace(-1, 1, rows).astype(np.float32),
               role=(np.arange(rows) % 2).astype(np.int32), kl_coef=np.zeros(rows, np.float32))
  route = store.route([ROLES[r] for r in batch["role"]])
  return trainable, store.replace(trainable={}), jax.tree.map(jnp.asarray, batch), route


@pytest.mark.parametrize("policy", ["layer", "dots"])
def test_recompute_gives_the_loss_and_gradients_of_no_recompute(policy):
  trainable, store, batch, route = _store_and_batch()
  run = lambda remat: update._jit_group_grads(
      trainable, store, batch, route, cfg=update.LossConfig(remat=remat), num_roles=2)
  plain, recomputed = run("none"), run(policy)
  np.testing.assert_allclose(recomputed["total"], plain["total"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(recomputed["grads"]), jax.tree.leaves(plain["grads"])):
    assert float(jnp.abs(b).max()) > 0
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _checkpoints(remat: str) -> int:
  trainable, store, batch, route = _store_and_batch()
  fn = functools.partial(update.group_grads, cfg=update.LossConfig(remat=remat), num_roles=2)
  return str(jax.make_jaxpr(fn)(trainable, store, batch, route)).count("remat")  # jax.checkpoint


def test_the_config_field_reaches_the_compiled_update():
  config = config_lib.get_config("model=qwen3_0_6b")
  assert config.rl.remat == "layer"
  cfg = loop.loss_config(config)
  assert cfg.remat == "layer"
  # The LM head's chunks are checkpointed either way; 'layer' adds the layer scan's.
  assert _checkpoints(cfg.remat) > _checkpoints("none")
  trainable, store, _, _ = _store_and_batch()
  full = store.replace(trainable=trainable)
  temp = {r: measure.update_temp_bytes(full, 4, 256, remat=r) for r in ("none", "layer")}
  assert temp["layer"] < 0.5 * temp["none"], temp


def test_defaults_per_preset_and_an_unknown_policy_is_named():
  assert config_lib.get_config("").rl.remat == "none"  # the tiny world: as before
  assert config_lib.get_config("study=1").rl.remat == "layer"
  assert config_lib.get_config("model=qwen3_4b").rl.remat == "layer"
  assert update.LossConfig(remat=True) == update.LossConfig(remat="layer")  # one jit key
  config = config_lib.get_config("")
  config.rl.remat = "everything"
  with pytest.raises(ValueError, match=r"rl.remat='everything' is unknown; valid: \('none', "
                                       r"'layer', 'dots'\)"):
    loop.loss_config(config)
