"""Per-device memory of a run on a mesh, computed from shapes alone (no allocation).

State terms are exact: `jax.eval_shape` of `init_params`, of
`PolicyStore.create` (LoRA slots or full copies) and of `optimizer.init`
(AdamW m and v) gives every array's global shape; the sharding rules
(marl_jax.parallel.rules) give its PartitionSpec on the mesh; the per-device
size is the shard shape (global dims divided by their mesh axes) times the
itemsize. Terms:

  params       the frozen base, in param_dtype, by the state rules (TRAIN_RULES,
               or STATE_OVER_DATA_RULES with mesh.state_over_data).
  slots        the trainable part: LoRA a/b of every slot (float32) or the
               full copies [F, ...] (param_dtype).
  optimizer    AdamW m and v, plus one gradient buffer of the trainable size.
  rollout copy base + trainable again where rollouts need another layout: under
               ROLLOUT_RULES (rollout_params='replicated', no fsdp), or under
               TRAIN_RULES when the state is also sharded over data.
Programs (per device, fixed and per row: below) come on top of the state; a
sampler call and an update chunk never run at once, so each is set against
the state alone.

Rows (one prompt + completion, T = prompt_len + max_new_tokens tokens, P the
prompt) are estimated by formula, fitted to the compiled programs' temp bytes
(marl_jax/trainer/measure.py; `launch/plan.py --measure` prints both); c is
the compute itemsize (bf16: 2), t the tensor size where it divides the
dimension, r the LoRA rank, S the number of LoRA slots, C the LM-head chunk:

  KV cache / row     2 L (K/t) T hd c                     (k and v, all layers)
  rollout / row      KV + (H/t) P^2 (5 + c) + 16 V/t      (the cache; one prefill layer's
                                                           scores and probs; the decode
                                                           step's logits)
                     continuous engine: KV + max((H/t) P^2 (5 + c), KV / 2) + 16 V/t
                                                          (or its narrowed decode's copy
                                                           of at most half the cache:
                                                           never at once with a prefill)
  update / row       5/2 L T D c                          (remat 'layer': each layer's input,
                                                           and XLA's copies of it by the scan)
                     + max(layer + attention, 12 C V/t)   (the backward of one layer, or of
                                                           one LM-head chunk: not at once)
    layer            T c (6D + 3(H+2K)hd/t + 4F/t + 14 S r)
    attention        (H/t) T^2 (11 + c)                   (scores, softmax, probs, gradients)
                     remat 'dots' keeps the projections too: + 3 L T c (D + (H+2K)hd/t + 3F/t + S r)
                     remat 'none' keeps every layer: L (2 layer + (H/t) T^2 (8 + c)) + max(...)

The fixed terms (per program, independent of rows) are dominated by copies of
the embedding in the compute dtype (the lookup's, the tied LM head's and its
transpose): sampler c (4 V D + 2 layer weights) / t, and over S > 1 LoRA slots
the copy of those a call's rows use (lora.compact for a stage's call, the
continuous engine's, kept by its session while its calls run the same slots),
at most (S-1)/S of their bytes, and over full copies a copy of each copy a
call routes (PolicyStore.routed: a stage group's roles', every role's for an
episodes session, Workload.routed_roles);
update 4 c V D / t, the
peak of a one-row program (with many rows the compiled remainder is 0.1-1.6
GiB: the term errs on the safe side). All coefficients are fitted to Qwen3
0.6B / 1.7B / 4B at 1,024 and 5,120 tokens, per row within 10%, and hold for
small models whose layers scan (tests/trainer/test_planner.py); the tiny
presets (two unrolled layers, a one-hot embedding, 64-128 tokens) compile to
2-4x the formulas per row, a few MiB that nothing needs to plan.

Rows per device: a rollout stage's or an update's rows are split over the batch
axes (data x fsdp). The study step: the largest stage samples
tasks x group x agents rows at once (64 x 8 x 3 = 1536: Voting's generators,
Orch-Workers' workers); an update covers tasks x group x calls rows (Voting: 4
calls per episode, 2048). `usable` is the fraction of device memory the run
may use (on GPUs set XLA_PYTHON_CLIENT_MEM_FRACTION to at least that; JAX
preallocates 75% by default). Attention is materialised (no flash kernel), so
the T^2 terms dominate long sequences.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from absl import logging
import jax
import numpy as np
import optax

from marl_jax import workflows
from marl_jax.generate import continuous
from marl_jax.models import decoder, presets
from marl_jax.models.config import ModelConfig, as_dtype
from marl_jax.models.lora import LoraConfig
from marl_jax.parallel import rules as rules_lib
from marl_jax.parallel import sharding
from marl_jax.policies.store import PolicyStore

GIB = 1024 ** 3
MIB = 1024 ** 2
_LINEARS_PER_LAYER = 7


@dataclasses.dataclass(frozen=True)
class Hardware:
  """A machine: device count, memory per device, hosts, peak bf16 FLOP/s per device."""

  name: str
  devices: int
  memory_gib: float
  hosts: int = 1
  peak_tflops: float = 0.0


HARDWARE: dict[str, Hardware] = {
    "v5e-8": Hardware("v5e-8", 8, 16.0, 1, 197.0),
    "v4-8": Hardware("v4-8", 4, 32.0, 1, 275.0),
    "1xH100": Hardware("1xH100", 1, 80.0, 1, 989.0),
    "8xH100": Hardware("8xH100", 8, 80.0, 1, 989.0),
}


@dataclasses.dataclass(frozen=True)
class Workload:
  """The study's settings that size the state, the caches and the activations."""

  tasks: int = 64
  group: int = 8
  agents: int = 3            # rows per episode in the largest sampler stage
  calls: int = 4             # calls per episode in an update (Voting: 3 + 1)
  num_roles: int = 3         # IP slots (Orch-Workers; Voting and Eval-Opt have 2)
  prompt_len: int = 4096     # the study config's rollout.max_prompt_len
  max_new_tokens: int = 1024
  lora_rank: int = 64
  lora_alpha: float = 32.0
  param_dtype: str = "float32"
  compute_dtype: str = "bfloat16"
  remat: str = "layer"       # decoder.REMAT_POLICIES (config.rl.remat); True / False accepted
  chunk: int = 128
  engine: str = "continuous"  # config.rollout.engine: the continuous engine's narrowed decode
  routed_roles: int = 1      # roles whose full copies a sampler call (an episodes session) routes

  def __post_init__(self):
    object.__setattr__(self, "remat", decoder.remat_name(self.remat))
    for field in ("tasks", "group", "agents", "calls", "num_roles", "prompt_len",
                  "max_new_tokens", "lora_rank", "chunk", "routed_roles"):
      if getattr(self, field) < 1:
        raise ValueError(f"Workload.{field} must be >= 1, got {getattr(self, field)}.")
    if self.engine not in continuous.ENGINES:
      raise ValueError(f"Workload.engine={self.engine!r} is unknown; valid: {continuous.ENGINES}.")
    as_dtype(self.param_dtype)
    as_dtype(self.compute_dtype)


@dataclasses.dataclass
class Plan:
  """Per-device bytes of one (model, policy, kind, mesh) and what fits."""

  preset: str
  mode: str
  kind: str
  hardware: str
  mesh: dict[str, int]
  params: int
  slots: int
  optimizer: int
  rollout_copy: int
  update_fixed: int         # the update chunk program's bytes that do not scale with rows
  rollout_fixed: int        # ... and the sampler call's
  kv_per_row: int
  rollout_per_row: int
  update_per_row: int
  usable: int
  stage_rows: int           # the study's largest stage, rows per device
  update_rows: int          # the study's update, rows per device
  rollout_params: str

  @property
  def state(self) -> int:
    return self.params + self.slots + self.optimizer + self.rollout_copy

  @property
  def max_rollout_rows(self) -> int:
    """Rows of one sampler call that fit beside the state (config.mesh.rollout_rows_per_device=0)."""
    return max(0, (self.usable - self.state - self.rollout_fixed) // self.rollout_per_row)

  @property
  def max_update_rows(self) -> int:
    """Rows of one update chunk that fit beside the state (config.rl.update_rows=0)."""
    return max(0, (self.usable - self.state - self.update_fixed) // self.update_per_row)

  @property
  def fits(self) -> bool:
    """The state fits, with room for at least one row in a rollout and an update."""
    return self.max_rollout_rows >= 1 and self.max_update_rows >= 1

  def chunks(self) -> tuple[int, int] | None:
    """(sampler calls, update chunks) the study step needs per stage / update."""
    if not self.fits:
      return None
    return (math.ceil(self.stage_rows / self.max_rollout_rows),
            math.ceil(self.update_rows / self.max_update_rows))


def _bytes_per_device(tree: Any, mesh_shape: Mapping[str, int], rules: rules_lib.Rules) -> int:
  specs = rules_lib.tree_specs(tree, mesh_shape, rules)
  total = 0
  for x, spec in zip(jax.tree.leaves(tree), jax.tree.leaves(
      specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))):
    shape = list(x.shape)
    for dim, axes in enumerate(spec):
      for axis in (axes,) if isinstance(axes, str) else (axes or ()):
        shape[dim] //= mesh_shape[axis]
    total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
  return total


def abstract_store(model: ModelConfig, mode: str, kind: str, num_roles: int,
                   lora: LoraConfig) -> PolicyStore:
  """The PolicyStore's ShapeDtypeStructs (jax.eval_shape: nothing is allocated)."""
  roles = tuple(f"role{i}" for i in range(num_roles if mode != "shared" else 1))
  return jax.eval_shape(
      lambda base: PolicyStore.create(model, base, roles, mode=mode, kind=kind, lora=lora),
      decoder.param_shapes(model))


def _split(size: int, tensor: int) -> int:
  return size // tensor if size % tensor == 0 else size


def _row_bytes(model: ModelConfig, w: Workload, tensor: int, lora_cols: int
               ) -> tuple[int, int, int]:
  """(KV cache, rollout, update) bytes of one row on one device (module formulas)."""
  c = np.dtype(as_dtype(w.compute_dtype)).itemsize
  n_layers, d, hd = model.num_layers, model.hidden_size, model.head_dim
  heads, kv = _split(model.num_heads, tensor), _split(model.num_kv_heads, tensor)
  mlp, vocab = _split(model.intermediate_size, tensor), _split(model.vocab_size, tensor)
  p, t = w.prompt_len, w.prompt_len + w.max_new_tokens
  kv_row = 2 * n_layers * kv * t * hd * c
  prefill = heads * p * p * (5 + c)
  if w.engine == "continuous":  # a narrowed decode copies up to half the cache (module doc)
    prefill = max(prefill, kv_row // 2)
  rollout = kv_row + prefill + 16 * vocab
  layer = t * c * (6 * d + 3 * (heads + 2 * kv) * hd + 4 * mlp + 2 * _LINEARS_PER_LAYER * lora_cols)
  attention = heads * t * t * (11 + c)
  # The LM head's backward runs before the layers' and frees its chunk first.
  top = max(layer + attention, 12 * w.chunk * vocab)
  if w.remat == "none":
    update = n_layers * (2 * layer + heads * t * t * (8 + c)) + top
  else:
    update = 5 * n_layers * t * d * c // 2 + top
    if w.remat == "dots":
      # Fitted: XLA keeps about three copies of each saved product (0.6B and 4B, 1,024).
      update += 3 * n_layers * t * c * (d + (heads + 2 * kv) * hd + 3 * mlp + lora_cols)
  return kv_row, rollout, update


def _fixed(model: ModelConfig, w: Workload, mesh_shape: Mapping[str, int]) -> tuple[int, int]:
  """(update, sampler) bytes of a program that do not scale with its rows (module doc)."""
  c = np.dtype(as_dtype(w.compute_dtype)).itemsize
  t = mesh_shape.get("tensor", 1)
  per_layer = sum(i * o for i, o in decoder.linear_shapes(model).values()) // t
  embed = model.vocab_size * model.hidden_size // t
  return 4 * c * embed, c * (4 * embed + 2 * per_layer)


def memory_terms(store: PolicyStore, mesh_shape: Mapping[str, int],
                 state_rules: rules_lib.Rules = rules_lib.TRAIN_RULES) -> dict[str, int]:
  """Per-device bytes of a store (concrete or from jax.eval_shape): params, slots,
  optimizer (AdamW m, v + a gradient) under `state_rules`; the rollout copies
  'replica' (ROLLOUT_RULES) and 'sharded_copy' (TRAIN_RULES, 0 if the state has it)."""
  opt = jax.eval_shape(optax.adamw(1e-5).init, store.trainable)
  slots = _bytes_per_device(store.trainable, mesh_shape, state_rules)
  policy = (store.base, store.trainable)
  return {
      "params": _bytes_per_device(store.base, mesh_shape, state_rules),
      "slots": slots,
      "optimizer": _bytes_per_device(opt, mesh_shape, state_rules) + slots,
      "replica": _bytes_per_device(policy, mesh_shape, rules_lib.ROLLOUT_RULES),
      "sharded_copy": (0 if rules_lib.tree_specs(policy, mesh_shape, state_rules)
                       == rules_lib.tree_specs(policy, mesh_shape, rules_lib.TRAIN_RULES)
                       else _bytes_per_device(policy, mesh_shape, rules_lib.TRAIN_RULES))}


def choose_rollout_params(mesh_shape: Mapping[str, int], terms: Mapping[str, int],
                          budget: int) -> str:
  """'replicated' when there is fsdp to undo and state + copy stay within 60% of memory."""
  state = terms["params"] + terms["slots"] + terms["optimizer"]
  if mesh_shape.get("fsdp", 1) > 1 and state + terms["replica"] <= 0.6 * budget:
    return "replicated"
  return "sharded"


def plan(preset: str | ModelConfig, mode: str, kind: str, mesh_shape: Mapping[str, int],
         memory_gib: float, workload: Workload = Workload(), *, usable: float = 0.9,
         rollout_params: str = "auto", state_over_data: bool = False,
         hardware: str = "") -> Plan:
  """Per-device memory of one configuration on a mesh of the given axis sizes."""
  if rollout_params not in ("auto", "sharded", "replicated"):
    raise ValueError(f"rollout_params={rollout_params!r}; valid: auto, sharded, replicated.")
  name = preset if isinstance(preset, str) else "custom"
  model = presets.get_preset(preset) if isinstance(preset, str) else preset
  model = model.replace(param_dtype=workload.param_dtype, compute_dtype=workload.compute_dtype)
  mesh_shape = {axis: int(mesh_shape.get(axis, 1)) for axis in sharding.MESH_AXES}
  lora = LoraConfig(rank=workload.lora_rank, alpha=workload.lora_alpha)
  store = abstract_store(model, mode, kind, workload.num_roles, lora)
  rules = rules_lib.STATE_OVER_DATA_RULES if state_over_data else rules_lib.TRAIN_RULES
  terms = memory_terms(store, mesh_shape, rules)
  lora_cols = sum(r for _, r, _ in store.routing.lora_storage)
  kv_row, rollout_row, update_row = _row_bytes(model, workload, mesh_shape["tensor"], lora_cols)
  update_fixed, rollout_fixed = _fixed(model, workload, mesh_shape)
  budget = int(usable * memory_gib * GIB)
  if rollout_params == "auto":  # as marl_jax.trainer.distributed.Parallel decides it
    rollout_params = choose_rollout_params(mesh_shape, terms, budget)
  layout = rules_lib.ROLLOUT_RULES if rollout_params == "replicated" else rules
  n_slots = len(store.routing.lora_storage)
  if n_slots > 1:  # a sampler call runs a copy of the LoRA slots its rows use
    copied = _bytes_per_device(store.trainable.get("lora"), mesh_shape, layout)
    rollout_fixed += copied * (n_slots - 1) // n_slots
  full = store.trainable.get("full")
  if full is not None:  # ... and a copy of each full copy it routes
    copies = jax.tree_util.tree_leaves(full)[0].shape[0]
    copied = _bytes_per_device(full, mesh_shape, layout) // copies
    rollout_fixed += min(copies, workload.routed_roles) * copied
  shards = int(np.prod([mesh_shape[a] for a in rules_lib.BATCH_AXES]))
  per_episode = workload.tasks * workload.group
  return Plan(
      preset=name, mode=mode, kind=kind, hardware=hardware, mesh=mesh_shape,
      params=terms["params"], slots=terms["slots"], optimizer=terms["optimizer"],
      rollout_copy=terms["replica" if rollout_params == "replicated" else "sharded_copy"],
      update_fixed=update_fixed, rollout_fixed=rollout_fixed, kv_per_row=kv_row,
      rollout_per_row=rollout_row, update_per_row=update_row, usable=budget,
      stage_rows=math.ceil(per_episode * workload.agents / shards),
      update_rows=math.ceil(per_episode * workload.calls / shards),
      rollout_params=rollout_params)


def workload_of(config: Any) -> Workload:
  """The Workload of a run config (marl_jax.trainer.config): its lengths, LoRA rank,
  dtypes, roles and rl.remat; the largest stage and the update as the study's."""
  roles = 3 if config.workflow.name == "orch_workers" else 2
  # a stage's call routes its group's roles; an episodes session every role
  workflow = workflows.from_config(config.workflow)
  routed = (len(workflow.roles) if config.rollout.get("schedule", "stages") == "episodes"
            else max(len({stage.role for stage in group}) for group in workflow.groups))
  return Workload(
      tasks=config.rollout.batch_size, group=config.rollout.group_size, num_roles=roles,
      prompt_len=config.rollout.max_prompt_len, max_new_tokens=config.rollout.max_new_tokens,
      lora_rank=config.policy.lora_rank, lora_alpha=config.policy.lora_alpha,
      param_dtype=config.model.param_dtype, compute_dtype=config.model.compute_dtype,
      remat=config.rl.get("remat", "none"), engine=config.rollout.get("engine", "lockstep"),
      routed_roles=routed)


def run_plan(config: Any, memory_bytes: int | None, num_devices: int = 1, hosts: int = 1,
             model: ModelConfig | None = None, usable: float = 0.9) -> Plan | None:
  """The run's plan on devices of `memory_bytes`; None without a memory size (a CPU)
  or a model to size (`model` defaults to config.model.preset's shapes)."""
  if not memory_bytes or (model is None and config.model.preset not in presets.PRESETS):
    return None
  mesh = sharding.mesh_config(config.mesh, config.model.preset, hosts).resolve(num_devices)
  return plan(model or config.model.preset, config.policy.mode, config.policy.kind,
              mesh.sizes, memory_bytes / GIB, workload_of(config), usable=usable,
              state_over_data=mesh.state_over_data, rollout_params=config.mesh.rollout_params)


def rows_from_memory(config: Any, result: Plan | None) -> tuple[int, int]:
  """(config.mesh.rollout_rows_per_device, config.rl.update_rows) as the run uses them.

  A value set in the config is kept. Left at 0, it comes from device memory: the
  planner's max rows of the longest length (`result`) where the largest stage or
  the update would not fit in one call, else 0 (a stage per sampler call, the
  minibatch whole), as on a device that reports no memory (a CPU). update_rows
  counts rows of the whole batch: per device rows x the batch axes (data x fsdp).
  """
  rollout, update = config.mesh.rollout_rows_per_device, config.rl.update_rows
  if result is None or not result.fits:
    return rollout, update
  if not rollout and result.max_rollout_rows < result.stage_rows:
    rollout = result.max_rollout_rows
  if not update and result.max_update_rows < result.update_rows:
    shards = int(np.prod([result.mesh.get(a, 1) for a in rules_lib.BATCH_AXES]))
    update = result.max_update_rows * shards
  return rollout, update


def require_fit(config: Any, memory_bytes: int | None, num_devices: int = 1, hosts: int = 1,
                model: ModelConfig | None = None, usable: float = 0.9) -> Plan | None:
  """`run_plan`, and a ValueError when one row of the run's longest length
  (rollout.max_prompt_len + max_new_tokens) cannot fit an update chunk or a
  sampler call beside the state -- before anything compiles. None (nothing
  checked) where run_plan gives none.
  """
  result = run_plan(config, memory_bytes, num_devices, hosts, model, usable)
  if result is None:
    return None
  workload = workload_of(config)
  tokens = workload.prompt_len + workload.max_new_tokens
  if result.fits:
    _warn_rows(config, result, tokens)
    _check_slots(config, result, tokens)
    return result
  free = result.usable - result.state
  if free <= 0:
    raise ValueError(
        f"The run's state alone takes {result.state / GIB:.1f} GiB per device (base "
        f"{result.params / GIB:.1f}, trainable {result.slots / GIB:.1f}, optimizer and gradient "
        f"{result.optimizer / GIB:.1f}, rollout copy {result.rollout_copy / GIB:.1f}) of the "
        f"{result.usable / GIB:.1f} usable of {memory_bytes / GIB:.1f} GiB (planner): shard over "
        "more devices (config.mesh.fsdp), set config.model.param_dtype='bfloat16', or use "
        "policy.kind='lora'; `python launch/plan.py` prints the figures.")
  hint = "" if workload.remat == "layer" else ", set rl.remat='layer'"
  raise ValueError(
      f"rollout.max_prompt_len + rollout.max_new_tokens = {tokens} tokens do not fit "
      f"{memory_bytes / GIB:.1f} GiB per device ({result.usable / GIB:.1f} usable, by the planner): "
      f"the state takes {result.state / GIB:.1f} GiB, leaving {free / GIB:.1f}; one update row "
      f"needs {(result.update_fixed + result.update_per_row) / GIB:.1f} GiB with "
      f"rl.remat={workload.remat!r}, one sampler row "
      f"{(result.rollout_fixed + result.rollout_per_row) / GIB:.1f}. Shorten the rows{hint}, "
      "or shard over more "
      "devices (config.mesh.fsdp / tensor); `python launch/plan.py` prints the figures.")


def _check_slots(config: Any, result: Plan, tokens: int) -> None:
  """A ValueError where rollout.slots (continuous engine) asks for more decode slots
  than fit beside the state: every slot holds a cache of the longest row."""
  asked = int(config.rollout.get("slots", 0))
  if config.rollout.get("engine", "lockstep") == "continuous" and asked > result.max_rollout_rows:
    raise ValueError(
        f"rollout.slots={asked} decode slots of {tokens} tokens (rollout.max_prompt_len + "
        f"max_new_tokens) do not fit beside the state: {result.max_rollout_rows} do, by the "
        f"planner ({(result.rollout_fixed + result.rollout_per_row) / MIB:.0f} MiB for the first, "
        f"{result.rollout_per_row / MIB:.0f} MiB each after it); set rollout.slots <= "
        f"{result.max_rollout_rows}, or 0 to take them from memory.")


def rollout_slots(config: Any, memory_bytes: int | None, num_devices: int = 1, hosts: int = 1,
                  model: ModelConfig | None = None, usable: float = 0.9) -> int:
  """The continuous engine's decode slots per device: config.rollout.slots where set
  (a ValueError where they do not fit), else the rows that fit beside the state
  (the planner's max_rollout_rows, at most the study step's largest stage), else
  continuous.DEFAULT_SLOTS (a device that reports no memory: a CPU)."""
  return slots_of_plan(config, run_plan(config, memory_bytes, num_devices, hosts, model, usable))


def slots_of_plan(config: Any, result: Plan | None) -> int:
  """`rollout_slots` from the run's plan (`run_plan`), where the caller has it."""
  asked = int(config.rollout.get("slots", 0))
  if result is None:
    return asked or continuous.DEFAULT_SLOTS
  workload = workload_of(config)
  _check_slots(config, result, workload.prompt_len + workload.max_new_tokens)
  return asked or max(1, min(result.max_rollout_rows, result.stage_rows))


def _warn_rows(config: Any, result: Plan, tokens: int) -> None:
  """Warns where rows per sampler call or update chunk set in the config exceed what
  fits rows of the longest length (shorter rows may fit: a warning, not an error);
  values left at 0 come from memory (`rows_from_memory`)."""
  shards = int(np.prod([result.mesh.get(a, 1) for a in rules_lib.BATCH_AXES]))
  asked = {"config.mesh.rollout_rows_per_device": (
               config.mesh.rollout_rows_per_device, result.max_rollout_rows, 1),
           "config.rl.update_rows": (
               math.ceil(config.rl.update_rows / shards), result.max_update_rows, shards)}
  for field, (rows, fit, scale) in asked.items():
    if rows > fit:
      logging.warning("%s: %d rows per device of up to %d tokens exceed the %d that fit by the "
                      "planner (launch/plan.py); set %s=%d (or 0: from memory) if the run runs "
                      "out of memory.", field, rows, tokens, fit, field, fit * scale)


def plan_hardware(preset: str, mode: str, kind: str, hardware: Hardware,
                  workload: Workload = Workload(), mesh: sharding.MeshConfig | None = None,
                  **options) -> Plan:
  """plan() on a named machine, with the preset's default mesh unless one is given."""
  mesh = mesh or sharding.default_mesh_config(preset, hardware.hosts)
  sizes = mesh.resolve(hardware.devices).sizes
  return plan(preset, mode, kind, sizes, hardware.memory_gib, workload,
              state_over_data=mesh.state_over_data, hardware=hardware.name, **options)
