"""Per-role interventions: KL anchor, gradient-coherence regularizer, gradient-mass balancing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.trainer.config import get_config
from marl_jax import workflows
from marl_jax.models import get_preset, init_params
from marl_jax.models.lora import LoraConfig
from marl_jax.policies.store import PolicyStore
from marl_jax.rl import batch as batch_lib
from marl_jax.rl import interventions as iv
from marl_jax.rl import update
from marl_jax.workflows.episodes import Call, Episode
from marl_jax.workflows.parsing import Parsed

CONFIG = get_preset("tiny_s", num_layers=1)
ROLES = ("generator", "aggregator")


def _store(mode="shared"):
  base = init_params(CONFIG, jax.random.PRNGKey(0))
  return PolicyStore.create(CONFIG, base, ROLES, mode=mode, kind="lora",
                            lora=LoraConfig(rank=4, alpha=8.0), rng=jax.random.PRNGKey(1))


def _arrays(store, roles=(0, 0, 1, 1), kl_coef=None, seed=0):
  rng = np.random.default_rng(seed)
  b, s = len(roles), 12
  mask = np.zeros((b, s - 1), bool)
  mask[:, -5:] = True
  arrays = dict(tokens=rng.integers(3, 100, size=(b, s)).astype(np.int32),
                valid=np.ones((b, s), bool), mask=mask,
                old_logp=np.full((b, s - 1), -4.0, np.float32),
                advantages=np.array([1.0, -1.0, 0.5, -0.5][:b], np.float32),
                role=np.array(roles, np.int32),
                kl_coef=np.zeros(b, np.float32) if kl_coef is None else kl_coef,
                ref_logp=rng.normal(-4.0, 1.0, size=(b, s - 1)).astype(np.float32))
  route = store.route([ROLES[r] for r in roles])
  return jax.tree.map(jnp.asarray, arrays), jax.tree.map(jnp.asarray, route)


def _step(store, arrays, route, icfg=None, state=None, cfg=update.LossConfig(grad_clip=0.0)):
  opt = update.make_optimizer(1e-2, total_steps=10, schedule="constant")
  if state is None:
    state = update.init_state(jax.tree.map(jnp.copy, store.trainable), opt)
    state = iv.init_state(state, icfg or iv.Interventions(), len(ROLES))
  return update.apply_minibatch(state, store.replace(trainable={}), arrays, route, cfg=cfg,
                           optimizer=opt, num_roles=len(ROLES), role_grads=True,
                           interventions=icfg)


_BASELINE = {}


def _baseline(store_mode="shared"):
  """(trainable after, metrics) of one step without interventions on the default batch."""
  if store_mode not in _BASELINE:
    store = _store(store_mode)
    new, metrics = _step(store, *_arrays(store))
    _BASELINE[store_mode] = jax.device_get((new["trainable"], metrics))
  return _BASELINE[store_mode]


def _call(role, agent=0):
  return Call(episode=0, group=0, role=role, agent=agent, turn=0, stage=0, slot=0,
              prompt_tokens=[5, 6, 7], completion_tokens=[8, 9], logprobs=np.zeros(2, np.float32),
              truncated=False, prompt_truncated=False, text="1",
              parsed=Parsed("answer", "1", "1"))


# --- per-role KL anchor (rl.kl_role_coefs) -----------------------------------


def test_kl_role_coefs_reach_only_that_roles_rows():
  episode = Episode(id=0, group=0, sample=0, problem=None, question="q", family="math",
                    calls=[_call("generator", 0), _call("generator", 1), _call("aggregator")],
                    reward=1.0)
  config = get_config("workflow=voting")
  config.rl.kl_role_coefs.aggregator = 0.3
  built = batch_lib.build([episode], ROLES, kl_coefs=config.rl.kl_role_coefs.to_dict(),
                          default_kl=config.rl.kl_coef)
  np.testing.assert_allclose(built.kl_coef[:3], [0.0, 0.0, 0.3])


def test_kl_anchor_changes_only_its_roles_loss_and_gradient():
  store = _store("shared")
  cfg = update.LossConfig(use_kl=True, grad_clip=0.0)
  off, route = _arrays(store)
  on, _ = _arrays(store, kl_coef=np.array([0.0, 0.0, 0.5, 0.5], np.float32))

  @jax.jit
  def loss_and_grad(arrays, weight):
    fn = lambda t: update._loss(t, store.replace(trainable={}), arrays, route, weight, cfg, 2)[0]
    return jax.value_and_grad(fn)(store.trainable)

  def role_loss_and_grad(arrays, role):
    return loss_and_grad(arrays, (arrays["role"] == role).astype(jnp.float32))

  def diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                               jax.tree.leaves(b)))

  (gen_off, g_gen_off), (gen_on, g_gen_on) = (role_loss_and_grad(a, 0) for a in (off, on))
  (agg_off, g_agg_off), (agg_on, g_agg_on) = (role_loss_and_grad(a, 1) for a in (off, on))
  assert float(gen_on) == float(gen_off) and diff(g_gen_on, g_gen_off) == 0.0
  assert float(agg_on) > float(agg_off) + 1e-3  # k3 >= 0, and ref != current logp
  assert diff(g_agg_on, g_agg_off) > 1e-6


# --- gradient-coherence regularizer ------------------------------------------


def test_coherence_factor_is_one_minus_lambda_times_positive_cosine():
  grads = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])}
  ema = {"w": jnp.array([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])}
  factors, cos = iv.coherence_factors(grads, ema, 0.5)
  np.testing.assert_allclose(cos, [1.0, 0.0, -1.0], atol=1e-6)
  np.testing.assert_allclose(factors, [0.5, 1.0, 1.0], atol=1e-6)  # anti-aligned: no boost
  factors, _ = iv.coherence_factors(grads, ema, 0.5, roles=(1, 2))
  np.testing.assert_allclose(factors, [1.0, 1.0, 1.0], atol=1e-6)  # role 0 not chosen
  zero = jax.tree.map(jnp.zeros_like, ema)
  np.testing.assert_allclose(iv.coherence_factors(grads, zero, 0.5)[0], 1.0)


def test_coherence_keeps_a_per_role_ema_in_the_trainer_state():
  store = _store("shared")
  icfg = iv.Interventions(coherence=0.5, coherence_decay=0.5)
  arrays, route = _arrays(store)
  arrays["advantages"] = jnp.array([1.0, -1.0, 0.0, 0.0])  # no aggregator gradient
  first, m1 = _step(store, arrays, route, icfg)
  np.testing.assert_allclose(m1["coherence_scale"], [1.0, 1.0])  # gbar starts at 0
  ema = jax.tree.map(np.asarray, first["interventions"]["coherence_ema"])  # state is donated
  gen_sq = sum(float(jnp.sum(x[0] ** 2)) for x in jax.tree.leaves(ema))
  agg_sq = sum(float(jnp.sum(x[1] ** 2)) for x in jax.tree.leaves(ema))
  assert gen_sq > 0 and agg_sq == 0  # an absent role's gbar is left alone
  second, m2 = _step(store, arrays, route, icfg, state=first)
  assert 0.5 <= float(m2["coherence_scale"][0]) < 0.99  # same batch: aligned with gbar
  assert float(m2["coherence_cos"][0]) > 0.02
  ema2 = second["interventions"]["coherence_ema"]
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(ema2), jax.tree.leaves(ema)))


def test_coherence_without_its_state_names_the_fix():
  store = _store("shared")
  arrays, route = _arrays(store)
  opt = update.make_optimizer(1e-2, total_steps=10, schedule="constant")
  state = update.init_state(jax.tree.map(jnp.copy, store.trainable), opt)
  with pytest.raises(ValueError, match="init_state"):
    update.apply_minibatch(state, store.replace(trainable={}), arrays, route, cfg=update.LossConfig(),
                      optimizer=opt, num_roles=2, interventions=iv.Interventions(coherence=0.1))


# --- gradient-mass balancing -------------------------------------------------


def _shares(mass, factors):
  scaled = np.asarray(mass) * np.asarray(factors) ** 2
  return scaled / scaled.sum()


def test_cap_water_fills_to_the_cap_and_never_raises():
  mass = jnp.array([8.0, 1.0, 1.0])
  f = iv.balance_factors(mass, "cap", cap=0.4)
  np.testing.assert_allclose(_shares(mass, f), [0.4, 0.3, 0.3], atol=1e-5)
  np.testing.assert_allclose(f[1:], 1.0)
  rng = np.random.default_rng(0)
  for _ in range(20):
    mass = jnp.asarray(rng.exponential(size=4) ** 3, jnp.float32)
    f = np.asarray(iv.balance_factors(mass, "cap", cap=0.3))
    assert np.all(f <= 1 + 1e-6) and _shares(mass, f).max() <= 0.3 + 1e-4
  # Infeasible (2 active roles, cap 0.4): equal shares by scaling down; one role: untouched.
  np.testing.assert_allclose(iv.balance_factors(jnp.array([4.0, 1.0, 0.0]), "cap", cap=0.4),
                             [0.5, 1.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(iv.balance_factors(jnp.array([5.0, 0.0]), "cap", cap=0.5), 1.0)


def test_equalize_moves_every_role_to_the_mean_mass_within_max_gain():
  f = iv.balance_factors(jnp.array([4.0, 1.0, 0.0]), "equalize", max_gain=4.0)
  np.testing.assert_allclose(f, [np.sqrt(2.5 / 4), np.sqrt(2.5), 1.0], rtol=1e-6)
  f = iv.balance_factors(jnp.array([100.0, 1.0]), "equalize", max_gain=2.0)
  np.testing.assert_allclose(f[1], 2.0)


def test_cap_rescales_role_gradients_before_the_update():
  store = _store("shared")
  arrays, route = _arrays(store)
  baseline, m0 = _baseline()
  capped, m1 = _step(store, arrays, route, iv.Interventions(balance="cap", balance_cap=0.5))
  mass = np.diag(np.asarray(m0["role_gram"]))
  want = np.asarray(iv.balance_factors(jnp.asarray(mass), "cap", 0.5))
  np.testing.assert_allclose(m1["balance_scale"], want, rtol=1e-4)
  assert np.min(want) < 0.999  # one role held more than half of the mass
  np.testing.assert_allclose(m1["role_gram"], m0["role_gram"], rtol=1e-5)  # raw diagnostics
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(capped["trainable"]),
                                                   jax.tree.leaves(baseline)))


def test_per_agent_divides_each_roles_loss_by_its_parallel_agents():
  config = get_config("workflow=voting")
  config.interventions.balance = "per_agent"
  icfg = iv.from_config(config, workflows.get("voting", n=3))
  assert icfg.role_loss_scale == (1 / 3, 1.0) and not icfg.needs_role_grads
  store = _store("shared")
  _, m0 = _baseline()
  _, m1 = _step(store, *_arrays(store), icfg)
  gram0, gram1 = np.asarray(m0["role_gram"]), np.asarray(m1["role_gram"])
  np.testing.assert_allclose(gram1[0, 0], gram0[0, 0] / 9, rtol=1e-4)
  np.testing.assert_allclose(gram1[1, 1], gram0[1, 1], rtol=1e-5)


def test_config_errors_name_the_field():
  config = get_config("workflow=voting")
  voting = workflows.get("voting")
  assert not iv.from_config(config, voting).active  # all off by default
  config.interventions.coherence_roles = ("judge",)
  with pytest.raises(ValueError, match="coherence_roles"):
    iv.from_config(config, voting)
  config.interventions.coherence_roles = ()
  config.interventions.balance = "clip"
  with pytest.raises(ValueError, match="interventions.balance"):
    iv.from_config(config, voting)
  with pytest.raises(ValueError, match="interventions.coherence="):
    iv.Interventions(coherence=1.5)
  assert iv.role_agents(workflows.get("orch_workers", m=4)) == {
      "orchestrator": 1, "worker": 4, "synthesizer": 1}
