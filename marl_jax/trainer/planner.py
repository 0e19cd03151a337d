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
  transient    one layer's weights and the embedding cast to the compute dtype,
               twice (FSDP gathers / casts of the forward and the backward).

Rows (one prompt + completion, T = prompt_len + max_new_tokens tokens) are
estimated by formula; c is the compute itemsize (bf16: 2), t the tensor size
where it divides the dimension, r the LoRA rank, S the number of LoRA slots:

  KV cache / row     2 L (K/t) T hd c                     (k and v, all layers)
  rollout / row      KV + (H/t) P^2 (8 + c)               (one layer's prefill logits,
                     + 2 L (K/t) P hd c + 16 V/t           softmax; prefill k/v before the
                                                           cache is padded; decode logits)
  update / row       L T D c                              (remat: each layer's input)
                     + T c (6D + 3(H+2K)hd/t + 4F/t + 14 S r)   (one layer's activations)
                     + (H/t) T^2 (12 + c)                 (its attention logits, softmax,
                                                           probs and their gradient)
                     + 12 C V/t                           (one chunk of C=128 logits)
                     without remat, the two per-layer terms count L times.

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

import jax
import numpy as np
import optax

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
  prompt_len: int = 1024
  max_new_tokens: int = 1024
  lora_rank: int = 64
  lora_alpha: float = 32.0
  param_dtype: str = "float32"
  compute_dtype: str = "bfloat16"
  remat: bool = True
  chunk: int = 128

  def __post_init__(self):
    for field in ("tasks", "group", "agents", "calls", "num_roles", "prompt_len",
                  "max_new_tokens", "lora_rank", "chunk"):
      if getattr(self, field) < 1:
        raise ValueError(f"Workload.{field} must be >= 1, got {getattr(self, field)}.")
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
  transient: int
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
  def free(self) -> int:
    return self.usable - self.state - self.transient

  @property
  def max_rollout_rows(self) -> int:
    return max(0, self.free // self.rollout_per_row)

  @property
  def max_update_rows(self) -> int:
    return max(0, self.free // self.update_per_row)

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
  rollout = kv_row + heads * p * p * (8 + c) + 2 * n_layers * kv * p * hd * c + 16 * vocab
  layer = t * c * (6 * d + 3 * (heads + 2 * kv) * hd + 4 * mlp + 2 * _LINEARS_PER_LAYER * lora_cols)
  attention = heads * t * t * (12 + c)
  saved = n_layers * t * d * c if w.remat else (n_layers - 1) * (layer + attention)
  update = saved + layer + attention + 12 * w.chunk * vocab
  return kv_row, rollout, update


def _transient(model: ModelConfig, w: Workload, mesh_shape: Mapping[str, int]) -> int:
  c = np.dtype(as_dtype(w.compute_dtype)).itemsize
  t = mesh_shape.get("tensor", 1)
  per_layer = sum(i * o for i, o in decoder.linear_shapes(model).values()) // t
  return 2 * c * (per_layer + model.vocab_size * model.hidden_size // t)


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
  budget = int(usable * memory_gib * GIB)
  if rollout_params == "auto":  # as marl_jax.trainer.distributed.Parallel decides it
    rollout_params = choose_rollout_params(mesh_shape, terms, budget)
  shards = int(np.prod([mesh_shape[a] for a in rules_lib.BATCH_AXES]))
  per_episode = workload.tasks * workload.group
  return Plan(
      preset=name, mode=mode, kind=kind, hardware=hardware, mesh=mesh_shape,
      params=terms["params"], slots=terms["slots"], optimizer=terms["optimizer"],
      rollout_copy=terms["replica" if rollout_params == "replicated" else "sharded_copy"],
      transient=_transient(model, workload, mesh_shape), kv_per_row=kv_row,
      rollout_per_row=rollout_row, update_per_row=update_row, usable=budget,
      stage_rows=math.ceil(per_episode * workload.agents / shards),
      update_rows=math.ceil(per_episode * workload.calls / shards),
      rollout_params=rollout_params)


def plan_hardware(preset: str, mode: str, kind: str, hardware: Hardware,
                  workload: Workload = Workload(), mesh: sharding.MeshConfig | None = None,
                  **options) -> Plan:
  """plan() on a named machine, with the preset's default mesh unless one is given."""
  mesh = mesh or sharding.default_mesh_config(preset, hardware.hosts)
  sizes = mesh.resolve(hardware.devices).sizes
  return plan(preset, mode, kind, sizes, hardware.memory_gib, workload,
              state_over_data=mesh.state_over_data, hardware=hardware.name, **options)


_COLUMNS = ("model", "policy", "kind", "hardware", "mesh", "params GiB", "slots GiB",
            "opt+grad GiB", "rollout copy GiB", "state GiB", "KV MiB/row", "update MiB/row",
            "max rows/device (rollout, update)", "study step (sampler calls, update chunks)")


def _gib(n: int) -> str:
  return f"{n / GIB:.2f}"


def table(plans: Sequence[Plan]) -> str:
  """A markdown table of plans; GiB per device, per-row terms in MiB."""
  lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
  for p in plans:
    mesh = "x".join(f"{k}{v}" for k, v in p.mesh.items() if v > 1) or "1"
    chunks = p.chunks()
    step = "does not fit" if chunks is None else (
        "one call each" if chunks == (1, 1) else f"{chunks[0]}, {chunks[1]}")
    rows = f"{p.max_rollout_rows}, {p.max_update_rows}" if p.fits else "0"
    cells = (p.preset, {"shared": "SP", "isolated": "IP"}.get(p.mode, p.mode), p.kind,
             p.hardware, mesh, _gib(p.params), _gib(p.slots), _gib(p.optimizer),
             _gib(p.rollout_copy), _gib(p.state), f"{p.kv_per_row / MIB:.0f}",
             f"{p.update_per_row / MIB:.0f}", rows, step)
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def study_table(workload: Workload = Workload(), models: Sequence[str] = (
    "qwen3_0_6b", "qwen3_1_7b", "qwen3_4b"), hardware: Sequence[str] = tuple(HARDWARE),
                **options) -> str:
  """The table of WORKSPACE.md: models x SP/IP x LoRA/full x machines."""
  plans = [plan_hardware(m, mode, kind, HARDWARE[h], workload, **options)
           for m in models for mode in ("shared", "isolated") for kind in ("lora", "full")
           for h in hardware]
  return table(plans)
