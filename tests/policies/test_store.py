"""PolicyStore on a tiny real model: routing, SP == IP at init, hybrid merging, full copies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.generate import continuous, draw, sampler as sampling
from marl_jax.models import decoder, get_preset, init_params
from marl_jax.models.lora import LoraConfig
from marl_jax.models.scoring import token_logprobs
from marl_jax.policies.role_session import split_slots
from marl_jax.policies.store import PolicyStore
from tests.helpers import use_cpu_kernels

CONFIG = get_preset("tiny_s")
ROLES = ("generator", "evaluator", "aggregator")
ROWS = ["generator", "evaluator", "aggregator", "evaluator", "generator", "aggregator"]
PROMPTS = [np.random.RandomState(i).randint(3, 128, size=4 + 3 * i).tolist() for i in range(6)]
GREEDY = sampling.SamplingParams(temperature=0.0, max_new_tokens=8)
SAMPLED = sampling.SamplingParams(temperature=1.0, max_new_tokens=8)


@pytest.fixture(scope="module")
def base():
  # A larger-than-default init so that greedy continuations depend on the weights.
  params = init_params(CONFIG, jax.random.PRNGKey(0))
  return jax.tree.map(lambda x: x * 4 if x.ndim >= 2 else x, params)


def _perturb_b(store, slot, seed=1, scale=0.3):
  """The store with random B for one LoRA storage slot (all others unchanged)."""
  keys = iter(jax.random.split(jax.random.PRNGKey(seed), 16))
  num = len(store.routing.lora_storage)
  layers = {}
  for name, ab in store.trainable["lora"]["layers"].items():
    b = ab["b"].reshape(ab["b"].shape[0], num, -1, ab["b"].shape[-1])
    b = b.at[:, slot].set(scale * jax.random.normal(next(keys), b[:, slot].shape))
    layers[name] = {"a": ab["a"], "b": b.reshape(ab["b"].shape)}
  return store.replace(trainable={**store.trainable, "lora": {"layers": layers}})


def _score(store, roles, **kw):
  seqs = [p + [5, 6, 7] for p in PROMPTS[: len(roles)]]
  tokens, valid = sampling.left_pad(seqs, 32, len(seqs), CONFIG.pad_id)
  return store.token_logprobs(jnp.asarray(tokens), jnp.asarray(valid), store.route(roles), **kw)[0]


def test_sp_ip_hybrid_sample_identically_at_init_and_equal_the_base(base):
  outs = {mode: PolicyStore.create(CONFIG, base, ROLES, mode=mode).generate(
      PROMPTS, ROWS, jax.random.PRNGKey(7), SAMPLED) for mode in ("shared", "isolated", "hybrid")}
  plain = sampling.generate(CONFIG, base, PROMPTS, jax.random.PRNGKey(7), SAMPLED)
  for out in outs.values():
    np.testing.assert_array_equal(out.tokens, plain.tokens)
    np.testing.assert_array_equal(out.logprobs, plain.logprobs)


def test_each_row_runs_on_its_roles_slot(base):
  store = PolicyStore.create(CONFIG, base, ROLES, mode="isolated")
  changed = _perturb_b(store, store.slot_of("evaluator"))
  is_evaluator = np.array([r == "evaluator" for r in ROWS])
  before, after = np.asarray(_score(store, ROWS)), np.asarray(_score(changed, ROWS))
  np.testing.assert_array_equal(before[~is_evaluator], after[~is_evaluator])
  assert np.all(np.abs(before[is_evaluator] - after[is_evaluator]).max(axis=1) > 1e-3)
  old = store.generate(PROMPTS, ROWS, jax.random.PRNGKey(0), GREEDY)
  new = changed.generate(PROMPTS, ROWS, jax.random.PRNGKey(0), GREEDY)
  np.testing.assert_array_equal(old.tokens[~is_evaluator], new.tokens[~is_evaluator])
  assert not np.array_equal(old.tokens[is_evaluator], new.tokens[is_evaluator])


def test_hybrid_rows_equal_the_base_with_shared_plus_role_deltas_merged(base):
  store = PolicyStore.create(CONFIG, base, ROLES, mode="hybrid", lora=LoraConfig(rank=8, alpha=16))
  for slot in range(len(store.routing.lora_storage)):
    store = _perturb_b(store, slot, seed=slot)
  weights = store.adapter_weights(ROWS)
  assert np.all((weights != 0).sum(axis=1) == 2)
  np.testing.assert_allclose(weights[1], [2.0, 0.0, 8.0, 0.0])  # alpha/r, alpha/role_rank
  routed = np.asarray(_score(store, ROWS))
  for i, role in enumerate(ROWS):
    merged = PolicyStore.create(CONFIG, store.params_for(role), ROLES, mode="shared",
                                kind="full")
    np.testing.assert_allclose(routed[i], np.asarray(_score(merged, [role] * len(ROWS)))[i],
                               atol=2e-4)


@pytest.mark.parametrize("kernels,min_hidden", [(True, None), (False, 0), (False, None)],
                         ids=["cpu_kernels", "decode_layout", "stored_kernels"])
def test_lora_rows_generate_what_their_merged_weights_generate(base, kernels, min_hidden,
                                                               monkeypatch):
  """Routed adapters in the sampler (prefill on the stacked kernels, decode on the
  CPU decode layout, packed or output-major, or the stored kernels) equal each
  role's merged weights."""
  use_cpu_kernels(kernels, monkeypatch)
  if min_hidden is not None:
    monkeypatch.setattr(decoder, "DECODE_LAYOUT_MIN_HIDDEN", min_hidden)
  store = PolicyStore.create(CONFIG, base, ROLES, mode="isolated")
  for slot in range(len(store.routing.lora_storage)):
    store = _perturb_b(store, slot, seed=slot)
  out = store.generate(PROMPTS, ROWS, jax.random.PRNGKey(0), GREEDY)
  for role in ROLES:
    rows = [i for i, r in enumerate(ROWS) if r == role]
    ref = sampling.generate(CONFIG, store.params_for(role), [PROMPTS[i] for i in rows],
                            jax.random.PRNGKey(0), GREEDY)
    np.testing.assert_array_equal(out.tokens[rows], ref.tokens)
    np.testing.assert_allclose(out.logprobs[rows], ref.logprobs, atol=1e-4)


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu_kernels", "decode_layout"])
def test_full_copies_match_each_slots_params_run_alone(base, kernels, monkeypatch):
  # Every decode here reads the CPU decode layout, packed or output-major, per
  # slot under generate_slots' vmap (the tiny model is narrower than the
  # output-major layout's threshold).
  use_cpu_kernels(kernels, monkeypatch)
  monkeypatch.setattr(decoder, "DECODE_LAYOUT_MIN_HIDDEN", 0)
  store = PolicyStore.create(CONFIG, base, ROLES, mode="isolated", kind="full")
  noise = jax.tree.map(lambda x: 0.05 * jax.random.normal(jax.random.PRNGKey(3), x.shape),
                       store.trainable["full"])
  store = store.replace(trainable={"full": jax.tree.map(jnp.add, store.trainable["full"], noise)})
  out = store.generate(PROMPTS, ROWS, jax.random.PRNGKey(0), GREEDY)
  scores = np.asarray(_score(store, ROWS))
  for role in ROLES:
    rows = [i for i, r in enumerate(ROWS) if r == role]
    alone = store.params_for(role)
    ref = sampling.generate(CONFIG, alone, [PROMPTS[i] for i in rows], jax.random.PRNGKey(0),
                            GREEDY)
    np.testing.assert_array_equal(out.tokens[rows], ref.tokens)
    np.testing.assert_allclose(out.logprobs[rows], ref.logprobs, atol=1e-5)
    solo = PolicyStore.create(CONFIG, alone, ROLES, mode="shared", kind="full")
    np.testing.assert_allclose(scores[rows], np.asarray(_score(solo, ROWS))[rows], atol=1e-5)
    # Rows of one role only run that role's copy alone (route 'slot'), to the same scores.
    route = store.route([role] * len(ROWS))
    assert set(route) == {"slot"} and int(route["slot"]) == store.routing.full_slot(role)
    np.testing.assert_allclose(np.asarray(_score(store, [role] * len(ROWS)))[rows], scores[rows],
                               atol=1e-5)


def test_full_copies_sp_equals_ip_at_init_greedy(base, monkeypatch):
  use_cpu_kernels(False, monkeypatch)  # the stored kernels, per slot under generate_slots' vmap
  sp = PolicyStore.create(CONFIG, base, ROLES, mode="shared", kind="full")
  ip = PolicyStore.create(CONFIG, base, ROLES, mode="isolated", kind="full")
  a = sp.generate(PROMPTS, ROWS, jax.random.PRNGKey(0), GREEDY)
  b = ip.generate(PROMPTS, ROWS, jax.random.PRNGKey(0), GREEDY)
  np.testing.assert_array_equal(a.tokens, b.tokens)


def test_reference_policy_is_the_base_and_store_is_a_pytree(base):
  store = _perturb_b(PolicyStore.create(CONFIG, base, ROLES, mode="shared"), 0)
  ref = PolicyStore.create(CONFIG, base, ROLES, mode="shared")
  np.testing.assert_array_equal(_score(store, ROWS, reference=True), _score(ref, ROWS))
  leaves, treedef = jax.tree_util.tree_flatten(store)
  rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
  assert rebuilt.routing == store.routing and rebuilt.config == store.config
  doubled = jax.jit(lambda s: jax.tree.map(lambda x: 2 * x, s))(store)
  assert doubled.mode == "shared"
  np.testing.assert_array_equal(doubled.trainable["lora"]["layers"]["q"]["b"],
                                2 * store.trainable["lora"]["layers"]["q"]["b"])


def test_routing_metadata_and_errors(base):
  ip = PolicyStore.create(CONFIG, base, ROLES, mode="isolated")
  assert [ip.slot_of(r) for r in ROLES] == [0, 1, 2]
  hybrid = PolicyStore.create(CONFIG, base, ROLES, mode="hybrid")
  assert [hybrid.routing.slots_of(r) for r in ROLES] == [(0, 1), (0, 2), (0, 3)]
  assert hybrid.routing.role_rank == 16 and hybrid.routing.num_slots == 4
  with pytest.raises(ValueError, match="'critic'.*generator"):
    ip.adapter_weights(["generator", "critic"])
  with pytest.raises(ValueError, match="mode 'solo'.*shared.*isolated.*hybrid"):
    PolicyStore.create(CONFIG, base, ROLES, mode="solo")
  with pytest.raises(ValueError, match="kind 'qlora'.*lora.*full"):
    PolicyStore.create(CONFIG, base, ROLES, kind="qlora")
  with pytest.raises(ValueError, match="role_rank"):
    PolicyStore.create(CONFIG, base, ROLES, mode="hybrid", role_rank=128)


def test_a_session_routes_rows_by_role_as_generate_does(base):
  """Rows submitted to a session of two of three IP LoRA roles (their slots trained apart)
  draw generate's tokens for the same keys; a role outside the session is refused."""
  store = PolicyStore.create(CONFIG, base, ROLES, mode="isolated")
  for slot in range(3):
    store = _perturb_b(store, slot, seed=slot + 1)
  rows = [r for r in ROWS if r != "evaluator"]
  prompts = [p for p, r in zip(PROMPTS, ROWS) if r != "evaluator"]
  want = store.generate(prompts, rows, jax.random.PRNGKey(2), SAMPLED, engine="continuous",
                        slots=2)
  session = store.session(["generator", "aggregator"], SAMPLED, slots=2, max_prompt_len=32)
  handles = session.submit(prompts, rows, draw.row_keys(jax.random.PRNGKey(2), len(rows)))
  got = {}
  while not session.idle:
    got.update({done.row: done.tokens for done in session.step()})
  for i, handle in enumerate(handles):
    np.testing.assert_array_equal(got[handle], want.tokens[i, :want.lengths[i]])
  with pytest.raises(ValueError, match=r"unknown \['evaluator'\]"):
    session.submit(PROMPTS[:1], ["evaluator"], np.zeros((1, 2), np.uint32))


def test_a_session_over_full_copies_decodes_only_the_copies_with_rows(base):
  """IP full copies: a session of two roles draws generate's tokens for the same keys,
  its slots split between the copies' engines by the roles' shares (its KV cache is
  the session's slots, not one pool a copy), and while only one role has rows, only
  that copy's slots are decoded."""
  store = PolicyStore.create(CONFIG, base, ROLES, mode="isolated", kind="full")
  noise = jax.tree.map(lambda x: 0.05 * jax.random.normal(jax.random.PRNGKey(5), x.shape),
                       store.trainable["full"])
  store = store.replace(trainable={"full": jax.tree.map(jnp.add, store.trainable["full"], noise)})
  rows = [r for r in ROWS if r != "evaluator"]
  prompts = [p for p, r in zip(PROMPTS, ROWS) if r != "evaluator"]
  keys = draw.row_keys(jax.random.PRNGKey(2), len(rows))
  want = store.generate(prompts, rows, jax.random.PRNGKey(2), SAMPLED, engine="continuous",
                        slots=2)
  session = store.session(["generator", "aggregator"], SAMPLED, slots=4, max_prompt_len=32,
                          shares={"generator": 3, "aggregator": 1})
  generator, aggregator = session.engines  # one engine per copy
  assert (generator.slots, aggregator.slots) == (3, 1)
  assert session.stats.cache_bytes == continuous.cache_bytes(CONFIG, 4, generator.length)
  gen = [i for i, r in enumerate(rows) if r == "generator"]
  handles = dict(zip(gen, session.submit([prompts[i] for i in gen], ["generator"] * len(gen),
                                         keys[np.asarray(gen)])))
  got = {}
  while not session.idle:
    got.update({done.row: done.tokens for done in session.step()})
  # Only the generator's copy ran.
  assert generator.stats.decode_steps > 0 and generator.stats.rows == len(gen)
  assert aggregator.stats.slot_steps == aggregator.stats.rows == 0
  agg = [i for i, r in enumerate(rows) if r == "aggregator"]
  handles.update(zip(agg, session.submit([prompts[i] for i in agg], ["aggregator"] * len(agg),
                                         keys[np.asarray(agg)])))
  while not session.idle:
    got.update({done.row: done.tokens for done in session.step()})
  for i, handle in handles.items():
    np.testing.assert_array_equal(got[handle], want.tokens[i, :want.lengths[i]])
  assert len(set(handles.values())) == len(rows)


def test_split_slots_gives_each_copy_one_and_the_rest_by_share():
  assert split_slots(8, [3, 1]) == [6, 2]  # 1 + 4.5 and 1 + 1.5: the tie to the first
  assert split_slots(8, [1, 3, 1]) == [2, 4, 2]
  assert split_slots(3, [1, 1, 1]) == [1, 1, 1]
  assert split_slots(5, [1, 100]) == [1, 4]
  assert split_slots(5, [0, 2]) == [1, 4] and split_slots(4, [0, 0]) == [2, 2]
  for slots in range(2, 40):
    assert sum(split_slots(slots, [1, 2])) == slots
  with pytest.raises(ValueError, match=r"3 full copies.*slots=2.*rollout.slots >= 3"):
    split_slots(2, [1, 1, 1])
