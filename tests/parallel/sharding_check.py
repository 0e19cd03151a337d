"""Sharded-vs-single-device checks, run in a subprocess with simulated CPU devices.

XLA's device count is fixed when jax starts, and the test suite runs on one
device, so tests/parallel/test_sharding.py runs this script with
XLA_FLAGS=--xla_force_host_platform_device_count=N and reads the one JSON line
it prints last. Modes:

  parity        train step (whole and in update chunks) and rollout (SP LoRA,
                IP full copies) on meshes vs one device; a checkpoint saved on fsdp=8 restored on
                data=2 x fsdp=4 and on one device.
  trainer DIR   one training step of the real loop on fsdp=8, saved in DIR.
  reference DIR two steps of the real loop under rl.update_scheme='reference'
                (IP full copies, voting) on fsdp=2 x role=2, saved in DIR.
  continuous DIR one step of the real loop with the continuous engine and
                episodes flowing through the workflow (IP LoRA, voting) on
                data=2 x fsdp=2, saved in DIR.
  multiprocess  one of two processes (4 devices each) of a jax.distributed job.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
import optax

from marl_jax.generate.sampler import SamplingParams
from marl_jax.models import get_preset, init_params
from marl_jax.models.lora import LoraConfig
from marl_jax.parallel import sharding
from marl_jax.policies.store import PolicyStore
from marl_jax.rl import batch as batch_lib
from marl_jax.rl import update
from marl_jax.trainer import checkpoints as checkpointing
from marl_jax.trainer import distributed

MODEL = get_preset("tiny_s", num_layers=1)
ROLES = ("generator", "aggregator")
ROW_ROLES = (0, 0, 1, 1, 0, 1, 0, 1)
LOSS = update.LossConfig(grad_clip=0.0)
OPTIMIZER = optax.sgd(0.5)  # linear in the gradient: parity of params is parity of grads


def store(mode: str, kind: str) -> PolicyStore:
  base = init_params(MODEL, jax.random.PRNGKey(0))
  return PolicyStore.create(MODEL, base, ROLES, mode=mode, kind=kind,
                            lora=LoraConfig(rank=4, alpha=8.0), rng=jax.random.PRNGKey(1))


def batch(seed: int = 0, rows: int = 8, length: int = 12) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  valid = np.ones((rows, length), bool)
  valid[0, :3] = False
  mask = np.zeros((rows, length - 1), bool)
  mask[:, -5:] = True
  return dict(tokens=rng.integers(3, 100, (rows, length)).astype(np.int32), valid=valid,
              mask=mask, old_logp=np.full((rows, length - 1), -4.0, np.float32),
              advantages=rng.normal(size=rows).astype(np.float32),
              role=np.resize(np.array(ROW_ROLES, np.int32), rows),
              kl_coef=np.zeros(rows, np.float32))


def max_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def specs(tree) -> list[str]:
  return sorted({str(getattr(x.sharding, "spec", "single device"))
                 for x in jax.tree.leaves(tree)})


def fresh_state(s: PolicyStore) -> dict:
  return update.init_state(jax.tree.map(jnp.copy, s.trainable), OPTIMIZER)


def train_parity(s: PolicyStore, par: distributed.Parallel) -> dict:
  """One update through Parallel.apply_minibatch vs update.apply_minibatch on one device."""
  arrays = batch()
  route = s.route([ROLES[r] for r in arrays["role"]])
  static = dict(cfg=LOSS, optimizer=OPTIMIZER, num_roles=len(ROLES))
  frozen = s.replace(trainable={})
  ref, ref_m = update.apply_minibatch(fresh_state(s), frozen, jax.tree.map(jnp.asarray, arrays),
                                 jax.tree.map(jnp.asarray, route), **static)
  state = par.place_state(fresh_state(s))
  placed = par.place_store(frozen)
  new, m = par.apply_minibatch(state, placed, par.put_rows(arrays), route, **static)
  return {"loss": [float(ref_m["loss"]), float(m["loss"])],
          "grad_norms": [np.asarray(ref_m["slot_grad_norms"]).tolist(),
                         np.asarray(m["slot_grad_norms"]).tolist()],
          "trainable_diff": max_diff(ref["trainable"], new["trainable"]),
          "moved": max_diff(ref["trainable"], s.trainable),
          "state_specs": specs(new["trainable"]), "base_specs": specs(placed.base)}


def chunked_train_parity(s: PolicyStore, par: distributed.Parallel) -> dict:
  """One update of 16 rows as two length chunks through Parallel.apply_minibatch (each
  chunk's rows a multiple of the batch axes' devices) vs the whole minibatch on one
  device, with the per-role gradient split on."""
  arrays = batch(seed=2, rows=16, length=40)
  arrays["valid"][8:, :28] = False  # 12 and 40 tokens: the chunks differ in shape
  roles = [ROLES[r] for r in arrays["role"]]
  static = dict(cfg=LOSS, optimizer=OPTIMIZER, num_roles=len(ROLES), role_grads=True)
  frozen = s.replace(trainable={})
  ref, ref_m = update.apply_minibatch(fresh_state(s), frozen, jax.tree.map(jnp.asarray, arrays),
                                      jax.tree.map(jnp.asarray, s.route(roles)), **static)
  chunks, routes = [], []
  for rows, length, padded in batch_lib.length_chunks(arrays["valid"], np.arange(16), 4,
                                                      multiple=par.row_multiple):
    chunks.append(par.put_rows(batch_lib.group_arrays(arrays, rows, length, padded)))
    row_roles = [roles[i] for i in rows]
    routes.append(s.route(row_roles + [row_roles[0]] * (padded - len(rows))))
  new, m = par.apply_minibatch(par.place_state(fresh_state(s)), par.place_store(frozen),
                               tuple(chunks), tuple(routes), **static)
  return {"chunks": [np.shape(c["tokens"]) for c in chunks], "multiple": par.row_multiple,
          "loss": [float(ref_m["loss"]), float(m["loss"])],
          "trainable_diff": max_diff(ref["trainable"], new["trainable"]),
          "moved": max_diff(ref["trainable"], s.trainable),
          "state_specs": specs(new["trainable"])}


def rollout_parity(s: PolicyStore, par: distributed.Parallel, temperatures: tuple) -> dict:
  """PolicyStore.generate under Parallel.rollout_store vs on one device, same key."""
  rng = np.random.default_rng(1)
  prompts = [list(rng.integers(3, 100, int(n))) for n in rng.integers(3, 11, 6)]
  roles = [ROLES[i % 2] for i in range(6)]
  out = {}
  placed = par.place_store(s)
  for name, temperature in temperatures:
    sp = SamplingParams(temperature=temperature, max_new_tokens=5)
    ref = s.generate(prompts, roles, jax.random.PRNGKey(3), sp)
    with par.rollout_store(placed, placed.trainable) as view:
      got = view.generate(prompts, roles, jax.random.PRNGKey(3), sp)
      base_specs = specs(view.base)
    out[name] = {"tokens_equal": bool(np.array_equal(ref.tokens, got.tokens)),
                 "lengths_equal": bool(np.array_equal(ref.lengths, got.lengths)),
                 "logp_diff": float(np.max(np.abs(ref.logprobs - got.logprobs)))}
  out["rollout_base_specs"] = base_specs
  return out


def checkpoint_across_meshes(workdir: str) -> dict:
  s = store("isolated", "full")
  state = update.init_state(jax.tree.map(lambda x: x + 0.01, s.trainable), optax.adamw(1e-3))
  saved_mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=8))
  saved = sharding.put(state, sharding.shardings(state, saved_mesh))
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save(3, saved, {"step": 3}, wait=True)
  out = {"saved_specs": specs(saved["trainable"])}
  other = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=4))
  targets = {"data2_fsdp4": sharding.shardings(state, other),
             "one_device": jax.sharding.SingleDeviceSharding(jax.devices()[0])}
  for name, target in targets.items():
    abstract = jax.tree.map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), state,
        target if name != "one_device" else jax.tree.map(lambda _: target, state))
    step, restored, record = ckpt.restore(abstract)
    out[name] = {"step": step, "record": record, "diff": max_diff(restored, state),
                 "specs": specs(restored["trainable"]),
                 "devices": len(jax.tree.leaves(restored)[1].sharding.device_set)}
  ckpt.close()
  return out


def parity(workdir: str) -> dict:
  """SP LoRA: state over data x fsdp, replicated rollout copy, sampled tokens.
  IP full copies: state over fsdp and role, rollouts in the training layout, greedy."""
  cases = {
      "sp_lora": (("shared", "lora"), dict(data=2, fsdp=4), "replicated", True, 1.0),
      "ip_full": (("isolated", "full"), dict(data=2, fsdp=2, role=2), "sharded", False, 0.0)}
  out = {"devices": jax.device_count()}
  for name, ((mode, kind), axes, rollout_params, over_data, temperature) in cases.items():
    mesh = sharding.make_mesh(sharding.MeshConfig(**axes))
    par = distributed.Parallel(mesh, rollout_params, state_over_data=over_data)
    s = store(mode, kind)
    out[name] = {"train": train_parity(s, par), "chunked": chunked_train_parity(s, par),
                 "rollout": rollout_parity(s, par, ((name, temperature),))}
  out["checkpoint"] = checkpoint_across_meshes(workdir)
  return out


def _loop(config, workdir: str) -> dict:
  """train_and_evaluate(config) here, with the Parallel it made and what it saved."""
  from tests.helpers import parity_rewards  # pylint: disable=g-import-not-at-top
  from marl_jax.trainer import loop as train  # pylint: disable=g-import-not-at-top
  from marl_jax.trainer.metrics import read_jsonl  # pylint: disable=g-import-not-at-top
  seen = {}
  create, save = distributed.Parallel.create, checkpointing.Checkpointer.save

  def spy_create(*args):
    seen["par"] = create(*args)
    return seen["par"]

  def spy_save(self, step, state, record, **kwargs):
    seen["specs"] = specs(state["trainable"])
    seen["sums"] = [float(np.sum(np.asarray(x, np.float64)))
                    for x in jax.tree.leaves(state["trainable"])]
    return save(self, step, state, record, **kwargs)

  distributed.Parallel.create = spy_create
  checkpointing.Checkpointer.save = spy_save
  try:
    train.train_and_evaluate(config, workdir, rewards_of=parity_rewards)
  finally:
    distributed.Parallel.create, checkpointing.Checkpointer.save = create, save
  par = seen["par"]
  return {"mesh": dict(par.mesh.shape) if par.enabled else {},
          "rows_per_call": par.rows_per_call,
          "metrics": read_jsonl(os.path.join(workdir, "metrics.jsonl")),
          "saved_specs": seen["specs"], "saved_sums": seen["sums"]}


def trainer(workdir: str) -> dict:
  """One step of train_and_evaluate on fsdp=8, rollouts in chunks of one row per device."""
  from tests.helpers import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config("workflow=single", steps=1)
  config.rollout.group_size = 8  # 16 rows: two sampler calls of 8 (one row per device)
  config.rl.role_grad_every, config.rl.warmup_steps = 0, 0
  config.mesh.fsdp, config.mesh.rollout_rows_per_device = -1, 1
  return _loop(config, workdir)


def reference_config():
  """Voting under IP full copies and the reference scheme, 2 steps: the generators'
  12 rows an iteration take 3 optimizer steps of 4 rows, the aggregator's 4 one."""
  from tests.helpers import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config("workflow=voting,policy=isolated,kind=full,mechanics=reference")
  config.rl.minibatch_rows = 4
  config.rl.role_grad_every, config.rl.warmup_steps = 1, 0  # kl_base every step
  return config


def continuous_config():
  """Voting under IP LoRA, rollouts by the continuous engine, episodes at their own pace."""
  from tests.helpers import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config("workflow=voting,policy=isolated", steps=1)
  config.rollout.engine, config.rollout.schedule, config.rollout.slots = (
      "continuous", "episodes", 8)
  config.rollout.max_new_tokens = 24  # rows of several chunks that stop at different ones
  config.rl.role_grad_every, config.rl.warmup_steps = 0, 0
  return config


def continuous(workdir: str) -> dict:
  """continuous_config's run on data=2 x fsdp=2, with the engine's cache layout."""
  from marl_jax.generate import continuous as engine  # pylint: disable=g-import-not-at-top
  config = continuous_config()
  config.mesh.data, config.mesh.fsdp = 2, 2
  seen, step, compactions = {}, engine.Session.step, {}

  def spy_step(self):
    out = step(self)
    seen.setdefault("cache_specs", specs(self.state["cache"]))
    compactions[id(self)] = self.stats.compactions
    return out

  engine.Session.step = spy_step
  try:
    return {**_loop(config, workdir), **seen, "compactions": sum(compactions.values())}
  finally:
    engine.Session.step = step


def reference(workdir: str) -> dict:
  """reference_config's run on data=1 x fsdp=2 x role=2 (the slots over role)."""
  config = reference_config()
  config.mesh.data, config.mesh.fsdp, config.mesh.role = 1, 2, 2
  return _loop(config, workdir)


def multiprocess(workdir: str, process_id: str, port: str) -> dict:
  """One of two processes x 4 CPU devices on mesh data=2 x fsdp=4 (module doc)."""
  pid = int(process_id)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  distributed.initialize("on", coordinator_address=f"localhost:{port}", num_processes=2,
                         process_id=pid)
  mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=4))
  par = distributed.Parallel(mesh, state_over_data=True)  # state over all 8 devices
  s = store("isolated", "lora")
  placed = par.place_store(s)
  out = {"process": jax.process_index(), "share": par.share(list(range(8))),
         "local_mesh": dict(sharding.local_mesh(mesh).shape)}
  # Rollouts: each process samples its own prompts on its own replica.
  rng = np.random.default_rng(10 + pid)
  prompts = [list(rng.integers(3, 100, 6)) for _ in range(4)]
  roles = [ROLES[i % 2] for i in range(4)]
  sp = SamplingParams(temperature=1.0, max_new_tokens=4)
  ref = s.generate(prompts, roles, jax.random.PRNGKey(pid), sp)
  with par.rollout_store(placed, placed.trainable) as view:
    got = view.generate(prompts, roles, jax.random.PRNGKey(pid), sp)
  out["rollout_tokens_equal"] = bool(np.array_equal(ref.tokens, got.tokens))
  # The global batch: process 0 has 8 rows of 12 tokens, process 1 16 rows of 16.
  local = [_train_batch(p) for p in range(2)]
  gathered = par.gather(local[pid])
  expected = [batch_lib.pad_rows(b.arrays(), 16, 16) for b in local]
  out["gather_equal"] = all(np.array_equal(gathered.arrays()[k], np.concatenate(
      [e[k] for e in expected])) for k in expected[0])
  out["gather_calls"] = [gathered.num_calls, len(gathered.rewards_final)]
  # One update on the global batch vs the same update on one local device.
  arrays, route = gathered.arrays(), s.route(gathered.row_roles)
  static = dict(cfg=LOSS, optimizer=OPTIMIZER, num_roles=len(ROLES))
  state = par.place_state(fresh_state(s))
  out["state_specs"] = specs(state["trainable"])
  new, metrics = par.apply_minibatch(state, placed.replace(trainable={}), par.put_rows(arrays),
                                route, **static)
  got = fetch(new["trainable"])  # a collective: every process takes part
  if pid == 0:  # the same update on one local device
    ref_state, _ = update.apply_minibatch(
        fresh_state(s), s.replace(trainable={}), jax.tree.map(jnp.asarray, arrays),
        jax.tree.map(jnp.asarray, route), **static)
    out["train_diff"] = max_diff(ref_state["trainable"], got)
    out["moved"] = max_diff(ref_state["trainable"], s.trainable)
  out["loss_finite"] = bool(np.isfinite(float(metrics["loss"])))
  # Every process writes its shards; both restore the same values.
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save(1, new, {"step": 1}, wait=True)
  step, restored, _ = ckpt.restore(new)
  ckpt.close()
  out["restored"] = [step, max_diff(fetch(restored["trainable"]), fetch(new["trainable"]))]
  out["metrics"] = par.combine_metrics({"episodes": pid + 1, "accuracy": float(pid)})
  return out


def fetch(tree):
  """Global values of arrays sharded across processes (an all-gather)."""
  return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)),
                      tree)


def _train_batch(pid: int) -> batch_lib.TrainBatch:
  rows, length = (8, 12) if pid == 0 else (16, 16)
  arrays = batch(seed=pid, rows=rows, length=length)
  calls = rows - 2
  return batch_lib.TrainBatch(
      **arrays, roles=ROLES, row_roles=[ROLES[r] for r in arrays["role"]], num_calls=calls,
      rewards_final=np.arange(calls, dtype=np.float32) + 100 * pid,
      rewards_role=np.zeros(calls, np.float32))


if __name__ == "__main__":
  mode = sys.argv[1]
  result = {"parity": parity, "trainer": trainer, "reference": reference,
            "continuous": continuous,
            "multiprocess": multiprocess}[mode](
      *sys.argv[2:])
  print(json.dumps(result))
