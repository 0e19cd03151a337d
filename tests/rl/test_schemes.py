"""The reference update scheme: its minibatches, their normalisation, and that a
slot's step moves that slot alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.models import get_preset, init_params
from marl_jax.models.lora import LoraConfig
from marl_jax.policies.store import PolicyStore, Routing
from marl_jax.rl import losses, schemes, slot_adamw, slots, update

CONFIG = get_preset("tiny_s", num_layers=1)
ROLES = ("generator", "aggregator")
# Voting with 3 generators: per episode 3 generator rows, then the aggregator's.
VOTING_ROWS = ["generator"] * 3 + ["aggregator"]


def test_reference_minibatches_cut_each_slots_rows_in_rollout_order():
  rows = VOTING_ROWS * 4  # 4 episodes: 12 generator rows, 4 aggregator rows
  ip = Routing("isolated", "lora", ROLES)
  plan = schemes.reference_minibatches(rows, ip, 4)
  assert [(mb.slot, list(mb.rows)) for mb in plan] == [
      (0, [0, 1, 2, 4]), (0, [5, 6, 8, 9]), (0, [10, 12, 13, 14]), (1, [3, 7, 11, 15])]
  sp = schemes.reference_minibatches(rows, Routing("shared", "lora", ROLES), 6)
  assert [(mb.slot, len(mb.rows)) for mb in sp] == [(0, 6), (0, 6), (0, 4)]  # one short last
  assert list(np.concatenate([mb.rows for mb in sp])) == list(range(16))
  # More rows per minibatch than a slot has: one short minibatch; hybrid: slot 0 has all.
  hybrid = schemes.reference_minibatches(rows, Routing("hybrid", "lora", ROLES), 100)
  assert [(mb.slot, len(mb.rows)) for mb in hybrid] == [(0, 16), (1, 12), (2, 4)]
  shuffled = schemes.reference_minibatches(rows, ip, 4, np.random.default_rng(0))
  assert sorted(np.concatenate([mb.rows for mb in shuffled[:3]])) == [
      i for i, r in enumerate(rows) if r == "generator"]
  assert [list(mb.rows) for mb in shuffled] != [list(mb.rows) for mb in plan]
  for bad in (0, -512):
    with pytest.raises(ValueError, match=f"rl.minibatch_rows={bad} must be a positive"):
      schemes.reference_minibatches(rows, ip, bad)


def test_slot_names_name_the_shared_slot_once():
  assert schemes.slot_names(Routing("shared", "lora", ROLES)) == ["shared"]
  assert schemes.slot_names(Routing("isolated", "lora", ROLES)) == list(ROLES)
  assert schemes.slot_names(Routing("hybrid", "lora", ROLES)) == ["shared", *ROLES]


def _store(mode):
  base = init_params(CONFIG, jax.random.PRNGKey(0))
  return PolicyStore.create(CONFIG, base, ROLES, mode=mode, kind="lora",
                            lora=LoraConfig(rank=4, alpha=8.0), rng=jax.random.PRNGKey(1))


def _arrays(store, roles, s=12, seed=0):
  rng = np.random.default_rng(seed)
  b = len(roles)
  mask = np.zeros((b, s - 1), bool)
  for i in range(b):
    mask[i, -(2 + i % 4):] = True  # completions of 2 to 5 tokens
  arrays = dict(tokens=rng.integers(3, 100, size=(b, s)).astype(np.int32),
                valid=np.ones((b, s), bool), mask=mask,
                old_logp=rng.normal(-4.0, 0.3, size=(b, s - 1)).astype(np.float32),
                advantages=rng.normal(size=b).astype(np.float32),
                role=np.array([ROLES.index(r) for r in roles], np.int32),
                kl_coef=np.zeros(b, np.float32))
  return jax.tree.map(jnp.asarray, arrays), jax.tree.map(jnp.asarray, store.route(roles))


def test_a_minibatch_is_normalised_over_its_own_rows():
  """The loss of a minibatch step is the mean over its rows of each row's token-mean
  PPO loss (seq_mean_token_mean), whatever the other minibatches hold."""
  store = _store("isolated")
  roles = ["generator"] * 3
  arrays, route = _arrays(store, roles)
  cfg = update.LossConfig(dual_clip=3.0)
  opt = slot_adamw.SlotAdamW(store.routing, lr=1e-3, total_steps=10)
  state = update.init_state(jax.tree.map(jnp.copy, store.trainable), opt)
  logp, _ = store.token_logprobs(arrays["tokens"], arrays["valid"], route)
  pg, _ = losses.ppo_clipped(logp, arrays["old_logp"], arrays["advantages"], 0.2, 0.28, 3.0)
  pg, mask = np.asarray(pg, np.float64), np.asarray(arrays["mask"])
  expect = np.mean([(pg[i] * mask[i]).sum() / mask[i].sum() for i in range(3)])
  control = {"active": jnp.asarray([True, False]), "iteration": jnp.int32(0)}
  _, metrics = update.apply_minibatch(state, store.replace(trainable={}), arrays, route, cfg=cfg,
                                      optimizer=opt, num_roles=2, control=control)
  np.testing.assert_allclose(float(metrics["loss"]), expect, rtol=1e-5)


def test_reference_iteration_under_ip_steps_the_generator_three_times_and_the_aggregator_once():
  store = _store("isolated")
  rows = VOTING_ROWS * 3  # 9 generator rows, 3 aggregator rows
  arrays, _ = _arrays(store, rows)
  opt = slot_adamw.SlotAdamW(store.routing, lr=1e-2, total_steps=10, weight_decay=0.01,
                             ticks="update")
  state = update.init_state(jax.tree.map(jnp.copy, store.trainable), opt)
  frozen = store.replace(trainable={})
  plan = schemes.reference_minibatches(rows, store.routing, 3)
  assert [mb.slot for mb in plan] == [0, 0, 0, 1]
  for mb in plan:
    before = jax.tree.map(jnp.copy, state)
    sub = jax.tree.map(lambda x: x[mb.rows], arrays)
    route = jax.tree.map(jnp.asarray, store.route([rows[i] for i in mb.rows]))
    control = {"active": jnp.asarray(np.arange(2) == mb.slot), "iteration": jnp.int32(0)}
    state, _ = update.apply_minibatch(state, frozen, sub, route, cfg=update.LossConfig(),
                                      optimizer=opt, num_roles=2, control=control)
    other = 1 - mb.slot
    for key, new, old in (("params", state["trainable"], before["trainable"]),
                          ("mu", state["opt_state"]["mu"], before["opt_state"]["mu"]),
                          ("nu", state["opt_state"]["nu"], before["opt_state"]["nu"])):
      diff = np.asarray(slots.slot_sq_norms(store.routing, jax.tree.map(jnp.subtract, new, old)))
      assert diff[mb.slot] > 0 and diff[other] == 0, (key, mb.slot)
  np.testing.assert_array_equal(state["opt_state"]["count"], [3, 1])
