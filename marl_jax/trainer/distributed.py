"""Multi-process runs: jax.distributed start-up, process-0 duties, the per-process data split.

Start-up (`initialize`, from config.mesh.distributed): 'on' always calls
`jax.distributed.initialize()` (JAX's own cluster detection: Cloud TPU VM
metadata, SLURM, Open MPI, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID); 'auto' does so only when the environment names several
processes (`multi_process_env`); 'off' never. The TPU scripts pass 'on'.

How one RL step runs on P processes (`Parallel`, used by marl_jax.trainer.loop):

  1. Every process draws the same problems (a pure function of seed and step)
     and keeps its contiguous block (`Parallel.share`): process p rolls out
     problems [p*n/P, (p+1)*n/P) with all their group samples, so GRPO groups
     never straddle processes and advantages are exact locally.
  2. Rollouts run on the process's own devices (`sharding.local_mesh`), on
     the replica of the policy that those devices already hold (the mesh's
     data axis spans processes; parameters are never sharded over it), so
     rollouts need no cross-host traffic and no lockstep between hosts.
  3. Each process packs its calls into a TrainBatch; `Parallel.gather` pads
     them to common (rows, length), all-gathers them (process-major) and
     every process then holds the same global batch. Minibatches are drawn
     from it with the same seed everywhere, and each is placed with its rows
     over the batch axes of the global mesh (`sharding.put`), so the jitted
     update sees one global batch: losses are normalised over all rows.
  4. Rollout metrics (accuracy, lengths, counts) are combined across
     processes (`Parallel.combine_metrics`); process 0 alone writes metrics
     and rollouts; orbax writes each process's shards of the checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import zlib
from typing import Any, Iterator, Mapping, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from marl_jax.parallel import sharding
from marl_jax.rl import sharded_update
from marl_jax.rl import update
from marl_jax.rl.batch import pad_rows
from marl_jax.trainer import planner

DISTRIBUTED_MODES = ("auto", "on", "off")
ROLLOUT_PARAMS = ("auto", "sharded", "replicated")
# Rollout metrics that are counts (summed over processes); the others are means.
_SUMMED_PREFIXES = ("episodes", "calls/", "completion_tokens/", "prompt_tokens/",
                    "prompt_truncated/", "parse/", "rollout_tokens_per_s")


def multi_process_env(environ: Mapping[str, str] | None = None) -> bool:
  """Whether the environment describes a job of several processes."""
  env = os.environ if environ is None else environ
  if env.get("JAX_COORDINATOR_ADDRESS") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  for key in ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
    if "," in env.get(key, ""):
      return True
  return any(int(env.get(key, "1") or 1) > 1
             for key in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))


def initialize(mode: str = "auto", **kwargs) -> bool:
  """Starts jax.distributed per `mode` (module doc); returns whether it runs.

  Must run before anything touches a device. Idempotent. `kwargs` go to
  jax.distributed.initialize (coordinator_address, num_processes, ...).
  """
  if mode not in DISTRIBUTED_MODES:
    raise ValueError(f"config.mesh.distributed={mode!r} is unknown; valid: {DISTRIBUTED_MODES}.")
  if jax.distributed.is_initialized():
    return True
  if mode == "off" or (mode == "auto" and not kwargs and not multi_process_env()):
    return False
  for key, name in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
    if os.environ.get(key) and name not in kwargs:  # jax reads only the coordinator's
      kwargs[name] = int(os.environ[key])
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def is_main() -> bool:
  """True on the process that writes metrics, reports and rollouts (process 0)."""
  return jax.process_index() == 0


def share(items: Sequence[Any], index: int | None = None, count: int | None = None) -> list:
  """This process's contiguous block of items; every block has the same size."""
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  if len(items) % count:
    raise ValueError(f"{len(items)} problems per step cannot be split evenly over {count} "
                     "processes; make rollout.batch_size a multiple of the process count.")
  size = len(items) // count
  return list(items[index * size:(index + 1) * size])


def _allgather(x: np.ndarray) -> np.ndarray:
  """[P * n, ...] concatenation of every process's x (same shape on all)."""
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def gather(batch: Any) -> Any:
  """The global TrainBatch: every process's rows, process-major (identity on one process).

  Real rows are no longer a prefix: each process's padding rows follow its
  own. Padding rows carry an all-False mask, so they weigh nothing.
  """
  if jax.process_count() == 1:
    return batch
  arrays = batch.arrays()
  local = np.array([len(arrays["tokens"]), arrays["tokens"].shape[1], batch.num_calls])
  sizes = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, 3)
  rows, length, calls = int(sizes[:, 0].max()), int(sizes[:, 1].max()), sizes[:, 2]
  full = {k: _allgather(v) for k, v in pad_rows(arrays, rows, length).items()}

  def rewards(values):
    padded = _allgather(np.pad(values, (0, int(calls.max()) - len(values))))
    return np.concatenate([padded.reshape(len(calls), -1)[p, :n] for p, n in enumerate(calls)])

  return dataclasses.replace(
      batch, **full, row_roles=[batch.roles[i] for i in full["role"]],
      num_calls=int(calls.sum()), rewards_final=rewards(batch.rewards_final),
      rewards_role=rewards(batch.rewards_role))


def combine_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
  """Rollout metrics over all processes: counts summed, means averaged.

  Processes whose metric keys differ (a role absent from one process's
  share) keep their local values, with a warning.
  """
  metrics = dict(metrics)
  if jax.process_count() == 1:
    return metrics
  keys = sorted(k for k, v in metrics.items() if isinstance(v, (int, float, np.number)))
  digest = np.array([zlib.crc32("\n".join(keys).encode()), len(keys)], np.int64)
  if len(np.unique(np.asarray(multihost_utils.process_allgather(digest)).reshape(-1, 2),
                   axis=0)) != 1:
    logging.warning("Processes report different metric keys; logging process %d's share.",
                    jax.process_index())
    return metrics
  values = np.asarray(multihost_utils.process_allgather(
      np.array([float(metrics[k]) for k in keys], np.float64)))
  for i, key in enumerate(keys):
    column = values.reshape(-1, len(keys))[:, i]
    metrics[key] = float(column.sum() if key.startswith(_SUMMED_PREFIXES) else column.mean())
  return metrics


class Preempted(RuntimeError):
  """Every process saved a checkpoint after a preemption notice; rerun to resume."""


class ChunkedPolicy:
  """A PolicyStore whose generate() samples at most `max_rows` rows per sampler call.

  Bounds the KV cache of a stage (launch/plan.py prints the rows that fit).
  Per-row options (one value per prompt, e.g. `limits`, `row_ids`) are cut
  with their rows. Rows with ids (rollout's) keep `rng`, so they draw what
  the store would draw for them in one call; without ids chunk k samples with
  fold_in(rng, k), and a stage that fits in one call is sampled exactly as by
  the store itself. The continuous engine (engine='continuous') bounds its
  cache by its slots: its stage goes whole.
  """

  def __init__(self, store: Any, max_rows: int):
    if max_rows < 1:
      raise ValueError(f"ChunkedPolicy needs max_rows >= 1, got {max_rows}.")
    self.store, self.max_rows = store, max_rows

  def __getattr__(self, name: str) -> Any:  # everything but generate: the store's
    if name == "store":
      raise AttributeError(name)
    return getattr(self.store, name)

  def replace(self, **changes) -> "ChunkedPolicy":
    return ChunkedPolicy(self.store.replace(**changes), self.max_rows)

  def generate(self, prompts: Sequence[Sequence[int]], roles: Sequence[str], rng: jax.Array,
               sampling_params: Any, **options) -> Any:
    m, n = self.max_rows, len(prompts)
    if n <= m or options.get("engine") == "continuous":
      return self.store.generate(prompts, roles, rng, sampling_params, **options)
    rows = lambda v, i: v[i:i + m] if np.ndim(v) >= 1 and len(v) == n else v
    key = lambda k: rng if options.get("row_ids") is not None else jax.random.fold_in(rng, k)
    parts = [self.store.generate(prompts[i:i + m], roles[i:i + m], key(k), sampling_params,
                                 **{k_: rows(v, i) for k_, v in options.items()})
             for k, i in enumerate(range(0, n, m))]
    fields = [f.name for f in dataclasses.fields(parts[0])]
    return type(parts[0])(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})


class Parallel:
  """How one run is spread over devices and processes; the identity on one device.

  The trainer calls: `place(run)`, `place_state(state)`, `share(problems)`,
  `rollouts(run, trainable)`, `gather(batch)`, `put_rows(arrays)`,
  `apply_minibatch(...)`, `combine_metrics(metrics)`, `preempted(step)`; for a bare
  PolicyStore, `place_store(store)` and `rollout_store(store, trainable)`.
  """

  def __init__(self, mesh: jax.sharding.Mesh | None = None, rollout_params: str = "sharded",
               rollout_rows_per_device: int = 0, state_over_data: bool = False,
               update_rows: int | None = None, slots: int | None = None):
    if rollout_params not in ROLLOUT_PARAMS[1:]:
      raise ValueError(f"rollout_params={rollout_params!r}; valid: {ROLLOUT_PARAMS[1:]}.")
    if rollout_rows_per_device < 0:
      raise ValueError("config.mesh.rollout_rows_per_device must be >= 0 (0: a whole stage "
                       f"per sampler call), got {rollout_rows_per_device}.")
    self.mesh = mesh
    self.update_rows = update_rows  # rl.update_rows as resolved (None: the config's)
    self.slots = slots              # rollout.slots as resolved (None: the config's)
    self.rows_per_call = rollout_rows_per_device
    if mesh is not None and rollout_rows_per_device:
      shape = dict(sharding.local_mesh(mesh).shape)
      self.rows_per_call *= int(np.prod([shape[a] for a in sharding.BATCH_AXES]))
    self.state_rules = (sharding.STATE_OVER_DATA_RULES if state_over_data
                        else sharding.TRAIN_RULES)
    self.rollout_rules = (sharding.ROLLOUT_RULES if rollout_params == "replicated"
                          else sharding.TRAIN_RULES)
    self._base_view: tuple[Any, Any] | None = None

  @classmethod
  def create(cls, config: Any, run: Any) -> "Parallel":
    """From config.mesh (see configs/default.py) for a built run (its store sizes the
    rollout copy); no mesh when one device does it all."""
    mc = config.get("mesh", {})
    mesh_cfg = sharding.mesh_config(mc, config.model.preset, jax.process_count())
    mesh_cfg.resolve(jax.device_count())  # a mesh that does not fit the devices fails here
    rows, update_rows, slots = _rows(config)
    if jax.device_count() == 1:
      return cls(rollout_rows_per_device=rows, update_rows=update_rows, slots=slots)
    mesh = sharding.make_mesh(mesh_cfg)
    mode = mc.get("rollout_params", "auto")
    if mode not in ROLLOUT_PARAMS:
      raise ValueError(f"config.mesh.rollout_params={mode!r} is unknown; valid: "
                       f"{ROLLOUT_PARAMS}.")
    if mode == "auto":
      mode = _rollout_params(run.store, dict(mesh.shape), mesh_cfg.state_rules)
    logging.info("Mesh %s over %d devices (%d processes), state over data: %s; rollout "
                 "parameters %s.", dict(mesh.shape), jax.device_count(), jax.process_count(),
                 mesh_cfg.state_over_data, mode)
    ignored = mesh_ignored_settings(config)
    if ignored:
      logging.warning("On a mesh these settings do not apply: %s. Update programs compile "
                      "when first met.", "; ".join(ignored))
    return cls(mesh, mode, rows, mesh_cfg.state_over_data, update_rows, slots)

  @property
  def enabled(self) -> bool:
    return self.mesh is not None

  @property
  def row_multiple(self) -> int:
    """A multiple every update chunk's row count must be: the batch axes' devices."""
    if not self.enabled:
      return 1
    return int(np.prod([dict(self.mesh.shape)[a] for a in sharding.BATCH_AXES]))

  @property
  def is_main(self) -> bool:
    return is_main()

  # --- placement -----------------------------------------------------------

  def place_store(self, store: Any) -> Any:
    """A PolicyStore (base + trainable) placed by the sharding rules."""
    return store if not self.enabled else sharding.put(
        store, sharding.shardings(store, self.mesh, self.state_rules))

  def place(self, run: Any) -> Any:
    """The run (build.Run) with its store placed (`place_store`)."""
    return run if not self.enabled else dataclasses.replace(run,
                                                            store=self.place_store(run.store))

  def place_state(self, state: Any) -> Any:
    return state if not self.enabled else sharding.put(
        state, sharding.shardings(state, self.mesh, self.state_rules))

  def share(self, problems: Sequence[Any]) -> list:
    return list(problems) if jax.process_count() == 1 else share(problems)

  @contextlib.contextmanager
  def rollout_store(self, store: Any, trainable: Any) -> Iterator[Any]:
    """Yields the store to sample with, holding `trainable`: the process-local
    rollout copy (chunked per config.mesh.rollout_rows_per_device), with the
    rollout mesh set so the sampler shards rows and the KV cache."""
    if not self.enabled:
      store = store.replace(trainable=trainable)
      yield ChunkedPolicy(store, self.rows_per_call) if self.rows_per_call else store
      return
    if self._base_view is None or self._base_view[0] is not store.base:
      self._base_view = (store.base, self._rollout_copy(store.base))
    store = store.replace(base=self._base_view[1], trainable=self._rollout_copy(trainable))
    with jax.set_mesh(sharding.local_mesh(self.mesh)):
      yield ChunkedPolicy(store, self.rows_per_call) if self.rows_per_call else store

  @contextlib.contextmanager
  def rollouts(self, run: Any, trainable: Any) -> Iterator[tuple[Any, Any]]:
    """`rollout_store` for a run: yields (run, trainable) to sample or evaluate with."""
    if not self.enabled and not self.rows_per_call:
      yield run, trainable
      return
    with self.rollout_store(run.store, trainable) as store:
      yield dataclasses.replace(run, store=store), store.trainable

  def _rollout_copy(self, tree: Any) -> Any:
    if self.rollout_rules is not self.state_rules:
      tree = sharding.put(tree, sharding.shardings(tree, self.mesh, self.rollout_rules))
    return sharding.local_view(tree, self.mesh)

  # --- the update ------------------------------------------------------------

  def gather(self, batch: Any) -> Any:
    return gather(batch)

  def put_rows(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Host arrays -> device arrays, rows over the batch axes (one device: device_put,
    which unlike jnp.asarray compiles nothing for a new shape)."""
    if not self.enabled:
      return jax.device_put(dict(arrays))
    return {k: sharding.put(v, sharding.rows_sharding(self.mesh, np.shape(v)))
            for k, v in arrays.items()}

  def apply_minibatch(self, state: Any, store: Any, batch: Mapping[str, Any],
                 route: Mapping[str, Any], **static) -> tuple[Any, Any]:
    """rl.update.apply_minibatch, with explicit shardings on a mesh."""
    if not self.enabled:
      return update.apply_minibatch(state, store, batch, jax.device_put(route), **static)
    for key in ("warm_role_grads", "compile_ahead", "longest"):  # the mesh's programs
      static.pop(key, None)                           # compile as met
    if isinstance(batch, (tuple, list)):  # update chunks (rl.update_rows)
      return sharded_update.apply_chunks_sharded(self.mesh, state, store, batch, route,
                                                 rules=self.state_rules, **static)
    return sharded_update.apply_minibatch_sharded(self.mesh, state, store, batch, route,
                                   rules=self.state_rules, **static)

  def combine_metrics(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
    return combine_metrics(metrics)

  def preempted(self, step: int) -> bool:
    """True at the step where every process should save and stop (TPU preemption notice)."""
    if not jax.distributed.is_initialized():
      return False
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # the preemption service is off
      return False


def _rows(config: Any) -> tuple[int, int, int]:
  """(rows per device per sampler call, rows per update chunk, continuous decode slots):
  the config's, or where left at 0, the planner's from device memory
  (planner.rows_from_memory, planner.rollout_slots)."""
  limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
  result = planner.run_plan(config, limit, jax.device_count(), jax.process_count())
  rows, update_rows = planner.rows_from_memory(config, result)
  slots = planner.slots_of_plan(config, result)
  asked = (config.mesh.rollout_rows_per_device, config.rl.update_rows)
  if (rows, update_rows) != asked:
    logging.info("From %.1f GiB of device memory (planner): %d rows per device per sampler "
                 "call (config.mesh.rollout_rows_per_device), update chunks of %d rows "
                 "(config.rl.update_rows); 0 means whole.", limit / planner.GIB, rows,
                 update_rows)
  return rows, update_rows, slots


def mesh_ignored_settings(config: Any) -> list[str]:
  """The config's settings that a mesh run ignores, each with its value."""
  rl = config.get("rl", {})
  ignored = []
  if rl.get("compile_ahead", False):
    ignored.append("rl.compile_ahead=True (update programs compiled ahead)")
  return ignored


def _rollout_params(store: Any, mesh_shape: Mapping[str, int], state_rules: Any) -> str:
  """The planner's choice for this store, from the device's memory (sharded if unknown)."""
  limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
  if not limit:
    return "sharded"
  terms = planner.memory_terms(store, mesh_shape, state_rules)
  return planner.choose_rollout_params(mesh_shape, terms, int(limit))
