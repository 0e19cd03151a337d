"""The jitted update: routing of gradients to slots, role split, clipping, NaN safety."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.bench import timing
from marl_jax.models import get_preset, init_params
from marl_jax.models.lora import LoraConfig
from marl_jax.policies.store import PolicyStore
from marl_jax.rl import batch as batch_lib
from marl_jax.rl import slots, update

CONFIG = get_preset("tiny_s", num_layers=1)
ROLES = ("generator", "aggregator")
LORA = LoraConfig(rank=4, alpha=8.0)


def _store(mode, kind="lora"):
  base = init_params(CONFIG, jax.random.PRNGKey(0))
  return PolicyStore.create(CONFIG, base, ROLES, mode=mode, kind=kind, lora=LORA,
                            rng=jax.random.PRNGKey(1))


def _batch(store, role_of_rows=(0, 0, 1, 1), seed=0, s=12):
  rng = np.random.default_rng(seed)
  b = len(role_of_rows)
  tokens = rng.integers(3, 100, size=(b, s)).astype(np.int32)
  valid = np.ones((b, s), bool)
  valid[0, :3] = False
  mask = np.zeros((b, s - 1), bool)
  mask[:, -5:] = True
  arrays = dict(tokens=tokens, valid=valid, mask=mask,
                old_logp=np.full((b, s - 1), -4.0, np.float32),
                advantages=np.resize(np.array([1.0, -1.0, 0.5, -0.5], np.float32), b),
                role=np.array(role_of_rows, np.int32), kl_coef=np.zeros(b, np.float32))
  route = store.route([ROLES[r] for r in role_of_rows])
  return jax.tree.map(jnp.asarray, arrays), jax.tree.map(jnp.asarray, route)


def _step(store, arrays, route, role_grads=False, cfg=update.LossConfig(grad_clip=0.0), lr=1e-2):
  opt = update.make_optimizer(lr, total_steps=10, schedule="constant")
  state = update.init_state(jax.tree.map(jnp.copy, store.trainable), opt)
  return update.apply_minibatch(state, store.replace(trainable={}), arrays, route, cfg=cfg,
                           optimizer=opt, num_roles=len(ROLES), role_grads=role_grads)


def test_shared_and_isolated_start_with_equal_loss_and_gradient_mass():
  sp, ip = _store("shared"), _store("isolated")
  _, m_sp = _step(sp, *_batch(sp))
  _, m_ip = _step(ip, *_batch(ip))
  np.testing.assert_allclose(m_sp["loss"], m_ip["loss"], rtol=1e-5)
  assert m_sp["slot_grad_norms"].shape == (1,) and m_ip["slot_grad_norms"].shape == (2,)
  assert np.all(np.asarray(m_ip["slot_grad_norms"]) > 0)


def test_isolated_update_touches_only_the_slots_of_present_roles():
  ip = _store("isolated")
  arrays, route = _batch(ip, role_of_rows=(0, 0, 0, 0))
  new, metrics = _step(ip, arrays, route)
  delta = jax.tree.map(lambda a, b: a - b, new["trainable"], ip.trainable)
  per_slot = np.asarray(slots.slot_sq_norms(ip.routing, delta))
  assert per_slot[0] > 0 and per_slot[1] == 0
  assert float(metrics["slot_grad_norms"][1]) == 0


@pytest.mark.parametrize("mode", ["shared", "isolated"])
def test_role_gradients_add_up_to_the_full_gradient(mode):
  store = _store(mode)
  # 16 rows of 48 tokens: vmapped per-role gradients were wrong at this size on XLA:CPU.
  arrays, route = _batch(store, role_of_rows=(0, 0, 0, 1) * 4, s=48)
  _, full = _step(store, arrays, route)
  new_r, by_role = _step(store, arrays, route, role_grads=True)
  np.testing.assert_allclose(by_role["loss"], full["loss"], rtol=1e-5)
  np.testing.assert_allclose(by_role["slot_grad_norms"], full["slot_grad_norms"], rtol=1e-4)
  gram = np.asarray(by_role["role_gram"])
  total_sq = float(np.sum(np.asarray(full["slot_grad_norms"]) ** 2))
  np.testing.assert_allclose(gram.sum(), total_sq, rtol=1e-4)  # |sum g_r|^2
  if mode == "isolated":  # disjoint slots: orthogonal role gradients
    assert abs(gram[0, 1]) < 1e-6 * np.sqrt(gram[0, 0] * gram[1, 1]) + 1e-12


def test_per_slot_clipping_bounds_each_slot():
  ip = _store("isolated")
  arrays, route = _batch(ip)
  cfg = update.LossConfig(grad_clip=1e-4)
  grads = jax.grad(lambda t: update._loss(t, ip.replace(trainable={}), arrays, route,
                                          jnp.ones(4), cfg, 2)[0])(ip.trainable)
  clipped, before = slots.clip_by_slot(ip.routing, grads, 1e-4)
  after = np.sqrt(np.asarray(slots.slot_sq_norms(ip.routing, clipped)))
  assert np.all(np.asarray(before) > 1e-4)
  np.testing.assert_allclose(after, 1e-4, rtol=1e-4)


def test_non_finite_loss_leaves_state_unchanged():
  sp = _store("shared")
  arrays, route = _batch(sp)
  arrays["advantages"] = arrays["advantages"].at[0].set(jnp.nan)
  new, metrics = _step(sp, arrays, route)
  assert not bool(metrics["finite"])
  for a, b in zip(jax.tree.leaves(new["trainable"]), jax.tree.leaves(sp.trainable)):
    np.testing.assert_array_equal(a, b)


def test_updates_raise_logprob_of_positive_advantage_tokens():
  sp = _store("shared")
  arrays, route = _batch(sp)
  arrays["advantages"] = jnp.array([1.0, 1.0, 1.0, 1.0])
  def mean_logp(trainable):
    logp, _ = sp.token_logprobs(arrays["tokens"], arrays["valid"], route, trainable=trainable)
    return float((logp * arrays["mask"]).sum() / arrays["mask"].sum())
  opt = update.make_optimizer(1e-2, total_steps=10, schedule="constant")
  state = update.init_state(jax.tree.map(jnp.copy, sp.trainable), opt)
  before = mean_logp(sp.trainable)
  for _ in range(5):
    # old_logp = current logp keeps the ratio near 1 (on-policy).
    state, _ = update.apply_minibatch(state, sp.replace(trainable={}), arrays, route,
                                 cfg=update.LossConfig(), optimizer=opt, num_roles=2)
  assert mean_logp(state["trainable"]) > before + 0.05


def test_update_length_buckets_step_by_half_octaves():
  assert batch_lib.length_ladder(200) == [16, 24, 32, 48, 64, 96, 128, 192]
  assert batch_lib.length_ladder(64, per_octave=1) == [16, 32]
  assert batch_lib.length_ladder(80, per_octave=4) == [16, 20, 24, 28, 32, 40, 48, 56, 64]
  assert [batch_lib.length_bucket(n) for n in (1, 16, 17, 25, 33, 97, 129, 193)] == [
      16, 16, 24, 32, 48, 128, 192, 256]
  assert batch_lib.length_bucket(129, per_octave=1) == 256


@pytest.mark.parametrize("mode,aggregation,kind", [("shared", "seq_mean_token_mean", "lora"),
                                                   ("isolated", "token_mean", "lora"),
                                                   ("isolated", "token_mean", "full")])
def test_length_chunks_change_no_number_of_the_update(mode, aggregation, kind):
  """Rows cut into update chunks by length (rl.batch.length_chunks) give the whole batch's step;
  with full copies, chunks by copy (each runs one copy) give it too."""
  store = _store(mode, kind)
  roles = (0, 0, 0, 1) * 6
  names = [ROLES[r] for r in roles]
  arrays, route = _batch(store, role_of_rows=roles, s=48)
  host = {k: np.array(v) for k, v in arrays.items()}
  host["valid"][4:, :30] = False    # 20 short rows (18 tokens), 4 long ones (48)
  host["tokens"][4:, :30] = 0
  host["mask"][5] = False           # an empty row counts in no denominator
  copies = store.full_slots(names)
  chunks = batch_lib.length_chunks(host["valid"], np.arange(24), 8, groups=copies)
  if kind == "full":  # generators: 15 short, 3 long; aggregators: 5 short, 1 long
    assert [(length, padded) for _, length, padded in chunks] == [(24, 8), (48, 8), (48, 8),
                                                                 (48, 8)]
    assert [{names[i] for i in rows} for rows, _, _ in chunks] == [{"generator"}] * 3 + [
        {"aggregator"}]
  else:  # sorted by length: 8 short, 8 short, then 4 short + the 4 long rows
    assert copies is None
    assert [(length, padded) for _, length, padded in chunks] == [(24, 8), (24, 8), (48, 8)]
    assert set(chunks[2][0]) >= {0, 1, 2, 3}
  assert sorted(np.concatenate([rows for rows, _, _ in chunks])) == list(range(24))
  (whole_rows, width, padded), = batch_lib.length_chunks(host["valid"], np.arange(24), 0)
  assert width == 48 and len(whole_rows) == padded == 24
  split = [batch_lib.group_arrays(host, rows, length, padded) for rows, length, padded in chunks]
  assert split[0]["tokens"].shape == (8, 24) and split[-1]["tokens"].shape == (8, 48)
  split_route = tuple(store.route([names[i] for i in rows] + [names[rows[0]]] * (
      padded - len(rows))) for rows, _, padded in chunks)
  assert all(("slot" in r) == (kind == "full") and "index" not in r for r in split_route)
  cfg = update.LossConfig(grad_clip=0.0, aggregation=aggregation)
  whole = jax.tree.map(jnp.asarray, host)
  new_w, m_w = _step(store, whole, route, role_grads=True, cfg=cfg)
  new_g, m_g = _step(store, tuple(jax.tree.map(jnp.asarray, split)),
                     jax.tree.map(jnp.asarray, split_route), role_grads=True, cfg=cfg)
  for key in ("loss", "slot_grad_norms", "role_gram", "tokens", "pg_loss"):
    np.testing.assert_allclose(m_g[key], m_w[key], rtol=2e-4, atol=1e-7, err_msg=key)
  # Adam's first step is ~lr * sign(g): compare the steps, where |g| >> eps they agree.
  for a, b in zip(jax.tree.leaves(new_g["trainable"]), jax.tree.leaves(new_w["trainable"])):
    assert float(np.mean(np.abs(np.asarray(a) - np.asarray(b)))) < 1e-2 * 1e-2
  with pytest.raises(ValueError, match="rl.update_rows"):
    batch_lib.length_chunks(host["valid"], np.arange(24), -1)


def test_a_new_update_length_compiles_the_buckets_up_to_twice_it_at_once():
  """Rows that grow up to HEADROOM x the first chunk's length compile nothing more."""
  store = _store("shared")
  opt = update.make_optimizer(1e-3, total_steps=10, schedule="constant")
  state = update.init_state(jax.tree.map(jnp.copy, store.trainable), opt)
  names = [ROLES[r] for r in (0, 1) * 4]

  def chunk(length):
    arrays, _ = _batch(store, role_of_rows=(0, 1) * 4, s=length)
    return (arrays,), (store.route(names),)

  static = dict(cfg=update.LossConfig(), optimizer=opt, num_roles=2)
  frozen = store.replace(trainable={})
  chunks = {length: chunk(length) for length in (48, 32, 64, 96, 128)}
  with timing.counting_compiles() as compiles:
    state, _ = update.apply_minibatch(state, frozen, *chunks[48], **static)
    first = compiles[0]
    for length in (32, 64, 96):  # buckets <= length_bucket(2 x 48) = 96
      state, _ = update.apply_minibatch(state, frozen, *chunks[length], **static)
    assert compiles[0] == first > 0
    state, _ = update.apply_minibatch(state, frozen, *chunks[128], **static)
    assert compiles[0] > first  # past the headroom


def test_update_programs_compiled_ahead_stop_at_the_longest_possible_row():
  """A run's rows cannot outgrow max_prompt_len + max_new_tokens: no bucket past it
  compiles ahead (SmolLM2's rows of <= 608 tokens compiled up to 1,216)."""
  chunk = {"tokens": np.zeros((8, 512), np.int32), "valid": np.ones((8, 512), bool)}
  uncapped = [b for b, _ in update._PROGRAMS._widened(chunk)]
  capped = [b for b, specs in update._PROGRAMS._widened(chunk, longest=608)]
  assert max(uncapped) == batch_lib.length_bucket(1024) > batch_lib.length_bucket(608)
  assert max(capped) == batch_lib.length_bucket(608) and set(capped) < set(uncapped)
  assert min(capped) == min(uncapped)  # shorter rows later still compile nothing
  # a chunk already at (or past) the cap keeps its own length
  assert max(b for b, _ in update._PROGRAMS._widened(chunk, longest=300)) == 512


def test_warmup_starts_above_zero_and_cosine_ends_at_zero():
  """The first update moves the policy (lr / warmup), as the reference's warmup does."""
  rate = update.learning_rate(1e-4, total_steps=10, warmup_steps=4)
  rates = [float(rate(k)) for k in range(11)]
  np.testing.assert_allclose(rates[:4], [2.5e-5, 5e-5, 7.5e-5, 1e-4], rtol=1e-5)
  assert rates[4] == pytest.approx(1e-4) and rates[-1] == pytest.approx(0.0, abs=1e-12)
  assert all(a >= b for a, b in zip(rates[3:], rates[4:]))
  constant = update.learning_rate(1e-4, total_steps=10, warmup_steps=2, schedule="constant")
  assert float(constant(0)) == pytest.approx(5e-5) and float(constant(5)) == pytest.approx(1e-4)
  with pytest.raises(ValueError, match="rl.warmup_steps=-1"):
    update.learning_rate(1e-4, total_steps=10, warmup_steps=-1)


def test_clear_programs_releases_the_updates_compiled_code():
  # Counts the executables the CPU client holds. (Memory mappings, what the limit
  # is on, are no measure here: the kernel merges neighbouring ones, so their
  # count after a release depends on what the worker compiled before: CI saw
  # jax.clear_caches() alone give back every mapping this test's compiles made.)
  client = jax.devices()[0].client
  store = _store("isolated")
  arrays, route = _batch(store, s=20)  # a length no other test compiles
  jax.clear_caches()
  update.clear_programs()
  gc.collect()
  before = len(client.live_executables())
  _step(store, (arrays,), (route,))  # chunks: the path that compiles ahead (_Programs)
  compiled = len(client.live_executables()) - before
  jax.clear_caches()  # alone, it leaves the update's programs (held by shape) alive
  gc.collect()
  kept = len(client.live_executables()) - before
  update.clear_programs()
  gc.collect()
  assert compiled > kept >= 3  # each bucket compiled ahead: its grads, add and apply
  assert len(client.live_executables()) <= before
