"""The per-slot optimizer: optax's AdamW when every slot steps, untouched slots
when one steps alone, per-slot ticks, and the schedules' tails."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from marl_jax.models import get_preset, init_params
from marl_jax.models.lora import LoraConfig
from marl_jax.policies.store import PolicyStore
from marl_jax.rl import schedules, slot_adamw, slots

CONFIG = get_preset("tiny_s", num_layers=1)
ROLES = ("generator", "aggregator", "judge")


def _store(mode="isolated", kind="lora"):
  base = init_params(CONFIG, jax.random.PRNGKey(0))
  return PolicyStore.create(CONFIG, base, ROLES, mode=mode, kind=kind,
                            lora=LoraConfig(rank=4, alpha=8.0), rng=jax.random.PRNGKey(1))


def _grads(tree, seed):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return treedef.unflatten([jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _control(active, iteration=0):
  return jnp.asarray(active), jnp.asarray(iteration, jnp.int32)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_every_slot_stepping_is_optax_adamw(kind):
  store = _store(kind=kind)
  kw = dict(lr=1e-2, total_steps=6, warmup_steps=2, weight_decay=0.01)
  ours = slot_adamw.SlotAdamW(store.routing, **kw)
  theirs = optax.adamw(schedules.learning_rate(1e-2, 6, 2), weight_decay=0.01)
  p_ours = p_theirs = store.trainable
  s_ours, s_theirs = ours.init(p_ours), theirs.init(p_theirs)
  for k in range(4):
    g = _grads(store.trainable, k)
    p_ours, s_ours = ours.step(g, s_ours, p_ours, *_control([True] * 3, k))
    updates, s_theirs = theirs.update(g, s_theirs, p_theirs)
    p_theirs = optax.apply_updates(p_theirs, updates)
  for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(s_ours["count"], [4, 4, 4])


@pytest.mark.parametrize("mode,kind", [("isolated", "lora"), ("isolated", "full"),
                                       ("hybrid", "lora")])
def test_a_slot_stepping_alone_leaves_the_others_bit_for_bit(mode, kind):
  store = _store(mode, kind)
  opt = slot_adamw.SlotAdamW(store.routing, lr=1e-2, total_steps=10, weight_decay=0.1)
  params, state = store.trainable, opt.init(store.trainable)
  params, state = opt.step(_grads(params, 0), state, params, *_control([True] * 4 if mode ==
                                                                      "hybrid" else [True] * 3))
  n = store.routing.num_slots
  active = np.zeros(n, bool)
  active[1] = True
  new, new_state = opt.step(_grads(params, 1), state, params, *_control(active))
  moved = np.asarray(slots.slot_sq_norms(store.routing, jax.tree.map(jnp.subtract, new, params)))
  assert moved[1] > 0 and np.all(moved[np.arange(n) != 1] == 0)
  for key in ("mu", "nu"):
    diff = np.asarray(slots.slot_sq_norms(store.routing, jax.tree.map(
        jnp.subtract, new_state[key], state[key])))
    assert diff[1] > 0 and np.all(diff[np.arange(n) != 1] == 0), key
  np.testing.assert_array_equal(new_state["count"], np.asarray(state["count"]) + active)
  # Bit for bit: the untouched slots' entries are the very same numbers.
  keep = slots.expand(store.routing, params, jnp.asarray(~active))
  for a, b, k in zip(jax.tree.leaves(new), jax.tree.leaves(params), jax.tree.leaves(keep)):
    np.testing.assert_array_equal(np.where(np.asarray(k), np.asarray(a), 0),
                                  np.where(np.asarray(k), np.asarray(b), 0))


def test_update_ticks_advance_per_slot_and_iteration_ticks_do_not():
  store = _store()
  by_update = slot_adamw.SlotAdamW(store.routing, lr=1.0, total_steps=100, warmup_steps=10,
                                   ticks="update")
  by_iteration = slot_adamw.SlotAdamW(store.routing, lr=1.0, total_steps=100, warmup_steps=10)
  state = by_update.init(store.trainable)
  params = store.trainable
  for _ in range(3):  # slot 0 takes 3 steps in iteration 0, slot 1 one, slot 2 none
    params, state = by_update.step(_grads(params, 0), state, params, *_control([1, 0, 0], 0))
  params, state = by_update.step(_grads(params, 1), state, params, *_control([0, 1, 0], 0))
  np.testing.assert_array_equal(state["count"], [3, 1, 0])
  np.testing.assert_allclose(by_update.rates(state["count"], 0), [0.4, 0.2, 0.1], rtol=1e-6)
  np.testing.assert_allclose(by_iteration.rates(state["count"], 4), [0.5] * 3, rtol=1e-6)
  with pytest.raises(ValueError, match=r"rl.schedule_ticks='step'.*\('iteration', 'update'\)"):
    slot_adamw.SlotAdamW(store.routing, lr=1.0, total_steps=10, ticks="step")


def test_periodic_tail_climbs_back_after_the_horizon_and_clamp_stays_at_zero():
  clamp = schedules.learning_rate(1.0, total_steps=12, warmup_steps=2)
  periodic = schedules.learning_rate(1.0, total_steps=12, warmup_steps=2, tail="periodic")
  ticks = np.arange(40)
  c, p = np.asarray(clamp(ticks)), np.asarray(periodic(ticks))
  np.testing.assert_allclose(c[:13], p[:13], atol=1e-7)  # equal up to the horizon
  assert c[12] == pytest.approx(0.0, abs=1e-7) and np.all(c[12:] < 1e-7)
  assert p[12] == pytest.approx(0.0, abs=1e-7)
  assert np.all(np.diff(p[12:23]) > 0) and p[22] == pytest.approx(1.0, abs=1e-6)  # 2T - warmup
  np.testing.assert_allclose(p[13], 0.5 * (1 + np.cos(np.pi * 11 / 10)), rtol=1e-5)
  with pytest.raises(ValueError, match=r"rl.schedule_tail='wrap'.*\('clamp', 'periodic'\)"):
    schedules.learning_rate(1.0, 10, tail="wrap")
