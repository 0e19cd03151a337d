"""Device meshes and the placement of parameters, optimizer state, batches and caches.

A mesh has four named axes (`MESH_AXES`):

  data    data parallelism: each group along it (a host, with several processes)
          holds a whole policy to roll out with, and for training too unless
          the state is sharded over data (`state_over_data`).
  fsdp    rows of the batch AND the parameters' embedding dimension (ZeRO-3):
          memory per device falls with it, at the cost of all-gathers.
  tensor  Megatron tensor parallelism over heads, kv heads, MLP and vocab.
  role    the slot axis of the trainable part: isolated policies' full copies
          ([F, ...]) and LoRA slots (columns S*r) are spread over it, so each
          role's copy lives on its own devices (useful for IP with full copies).

`MeshConfig` sizes them (-1 fills the remaining devices) and says whether
parameters and optimizer state are sharded over data as well
(`state_over_data`, ZeRO-3 across replicas); `mesh_config` reads config.mesh,
with per-preset defaults (`default_mesh_config`: tiny and SmolLM models pure
data; Qwen3 0.6B-4B fsdp within each host, data across hosts, state over
both). Arrays are placed by rules (marl_jax.parallel.rules), through
jit in/out shardings (`marl_jax.rl.sharded_update`) and `put`; inside the sampler,
`constrain_rows` / `constrain_kv_cache` are sharding constraints that apply
only while a mesh is set (`jax.set_mesh`) and are no-ops otherwise, so the
single-device path traces exactly as before.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from marl_jax.parallel import rules as rules_lib
from marl_jax.parallel.rules import (BATCH_AXES, MESH_AXES, ROLLOUT_RULES,
                                     STATE_OVER_DATA_RULES, TRAIN_RULES)

__all__ = ["MeshConfig", "MESH_AXES", "BATCH_AXES", "TRAIN_RULES", "ROLLOUT_RULES",
           "STATE_OVER_DATA_RULES",
           "default_mesh_config", "mesh_config", "make_mesh", "local_mesh", "shardings",
           "rows_sharding", "replicated", "put", "local_view", "constrain_rows",
           "constrain_kv_cache", "slot_axis"]


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Sizes of the mesh axes (at most one -1: all remaining devices), and whether
  parameters and optimizer state are also sharded over `data` (ZeRO-3 across
  replicas: `state_rules`)."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  role: int = 1
  state_over_data: bool = False

  def __post_init__(self):
    sizes = self.sizes
    bad = [k for k, v in sizes.items() if not (v == -1 or v >= 1)]
    if bad:
      raise ValueError(f"config.mesh.{bad[0]}={sizes[bad[0]]} is invalid; use a positive "
                       "size or -1 (all remaining devices).")
    if sum(v == -1 for v in sizes.values()) > 1:
      raise ValueError(f"config.mesh has several axes set to -1 ({sizes}); at most one "
                       "axis can take the remaining devices.")

  @property
  def sizes(self) -> dict[str, int]:
    return {name: getattr(self, name) for name in MESH_AXES}

  @property
  def size(self) -> int:
    return int(np.prod([max(v, 1) for v in self.sizes.values()]))

  @property
  def state_rules(self) -> rules_lib.Rules:
    return STATE_OVER_DATA_RULES if self.state_over_data else TRAIN_RULES

  def resolve(self, num_devices: int) -> "MeshConfig":
    """The same config with -1 filled in; checks that it uses every device."""
    sizes = self.sizes
    fixed = int(np.prod([v for v in sizes.values() if v != -1]))
    fill = [k for k, v in sizes.items() if v == -1]
    if fill:
      if num_devices % fixed:
        raise ValueError(f"config.mesh {sizes}: the fixed axes ({fixed} devices) do not "
                         f"divide the {num_devices} devices available.")
      sizes[fill[0]] = num_devices // fixed
    if int(np.prod(list(sizes.values()))) != num_devices:
      raise ValueError(
          f"config.mesh {sizes} uses {int(np.prod(list(sizes.values())))} devices but "
          f"{num_devices} are available; set one axis to -1 to take the rest (to use "
          "fewer devices, hide the others, e.g. CUDA_VISIBLE_DEVICES).")
    return MeshConfig(**sizes, state_over_data=self.state_over_data)


def default_mesh_config(preset: str, num_processes: int = 1) -> MeshConfig:
  """Tiny / SmolLM models: pure data parallel. Qwen3 presets: the state sharded
  over every device (fsdp within a host, data across hosts, state_over_data);
  each host rolls out on its own copy."""
  if preset.startswith("qwen"):
    return MeshConfig(data=num_processes, fsdp=-1, state_over_data=True)
  return MeshConfig(data=-1)


def mesh_config(mesh: Mapping[str, Any], preset: str, num_processes: int = 1) -> MeshConfig:
  """MeshConfig from config.mesh: all axes 0 = the preset's default; else 0 means 1.

  mesh.state_over_data: 'auto' (the preset default's choice), 'yes' or 'no'.
  """
  sizes = {name: int(mesh.get(name, 0)) for name in MESH_AXES}
  over = str(mesh.get("state_over_data", "auto"))
  if over not in ("auto", "yes", "no"):
    raise ValueError(f"config.mesh.state_over_data={over!r} is unknown; valid: auto, yes, no.")
  default = default_mesh_config(preset, num_processes)
  if any(v != 0 for v in sizes.values()):
    default = MeshConfig(**{k: 1 if v == 0 else v for k, v in sizes.items()},
                         state_over_data=default.state_over_data)
  if over == "auto":
    return default
  return dataclasses.replace(default, state_over_data=over == "yes")


def _block(shape: tuple[int, ...], devices: list) -> np.ndarray:
  """Devices of one process arranged in `shape`, topology-aware where possible."""
  try:
    return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError, KeyError):
    return np.asarray(devices, dtype=object).reshape(shape)


def make_mesh(config: MeshConfig, devices: list | None = None) -> Mesh:
  """A mesh over all devices (every process's), axes MESH_AXES, all Auto-sharded.

  With several processes the data axis is split into one contiguous block per
  process, so each process's devices hold whole replicas along
  fsdp/tensor/role (`local_mesh`); that needs data % process_count == 0.
  """
  devices = list(jax.devices() if devices is None else devices)
  config = config.resolve(len(devices))
  shape = tuple(config.sizes.values())
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  processes = sorted({d.process_index for d in devices})
  if len(processes) == 1:
    return jax.make_mesh(shape, MESH_AXES, axis_types, devices=devices)
  if config.data % len(processes):
    raise ValueError(
        f"config.mesh.data={config.data} must be a multiple of the {len(processes)} "
        "processes: each process rolls out its own problems on a full policy replica "
        "held by its own devices. Set mesh.data to the number of hosts (or a multiple) "
        "and mesh.fsdp=-1.")
  local_shape = (config.data // len(processes),) + shape[1:]
  blocks = [_block(local_shape, sorted((d for d in devices if d.process_index == p),
                                       key=lambda d: d.id)) for p in processes]
  return Mesh(np.concatenate(blocks, axis=0), MESH_AXES, axis_types=axis_types)


def local_mesh(mesh: Mesh) -> Mesh:
  """This process's block of `mesh` (the mesh itself with one process)."""
  if jax.process_count() == 1:
    return mesh
  mine = [i for i in range(mesh.devices.shape[0])
          if all(d.process_index == jax.process_index() for d in mesh.devices[i].flat)]
  if not mine or mine != list(range(mine[0], mine[-1] + 1)):
    raise ValueError("local_mesh: this process's devices are not a contiguous block of the "
                     "mesh's data axis; build the mesh with sharding.make_mesh.")
  return Mesh(mesh.devices[mine[0]:mine[-1] + 1], mesh.axis_names,
              axis_types=mesh.axis_types)


def shardings(tree: Any, mesh: Mesh, rules: rules_lib.Rules = TRAIN_RULES) -> Any:
  """NamedShardings of every leaf (arrays or ShapeDtypeStructs) by sharding_rules."""
  specs = rules_lib.tree_specs(tree, dict(mesh.shape), rules)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                      is_leaf=lambda x: isinstance(x, P))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def rows_sharding(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
  """Rows (dim 0) over the batch axes, where divisible; other dims replicated."""
  if not shape:
    return replicated(mesh)
  return NamedSharding(mesh, rules_lib.resolve(rules_lib.ROWS, shape[:1], dict(mesh.shape),
                                               TRAIN_RULES, what="batch rows"))


def put(tree: Any, shardings_tree: Any) -> Any:
  """Places a pytree with these shardings (a tree of them, or one for every leaf).

  jax.Arrays are resharded; host values must be identical on every process
  (each process then keeps only its shards).
  """
  leaves, treedef = jax.tree.flatten(tree)
  if isinstance(shardings_tree, jax.sharding.Sharding):
    targets = [shardings_tree] * len(leaves)
  else:
    targets = treedef.flatten_up_to(shardings_tree)

  def one(x, sharding):
    if isinstance(x, jax.Array) or jax.process_count() == 1:
      return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return treedef.unflatten([one(x, s) for x, s in zip(leaves, targets)])


def local_view(tree: Any, mesh: Mesh) -> Any:
  """The process-local copy of arrays replicated over the data axis, on `local_mesh`.

  No data moves: each array's shards on this process's devices become one
  array on the local mesh with the same PartitionSpec. Arrays sharded over
  'data' have no local replica and are rejected.
  """
  if jax.process_count() == 1:
    return tree
  local = local_mesh(mesh)

  def one(x):
    spec = x.sharding.spec
    if any("data" in ((a,) if isinstance(a, str) else (a or ())) for a in spec):
      raise ValueError(f"local_view: an array sharded over 'data' ({spec}) has no "
                       "process-local replica.")
    target = NamedSharding(local, spec)
    shards = {s.device: s.data for s in x.addressable_shards}
    order = target.addressable_devices_indices_map(x.shape)
    return jax.make_array_from_single_device_arrays(x.shape, target,
                                                    [shards[d] for d in order])

  return jax.tree.map(one, tree)


# --- constraints inside jitted code (no-ops unless a mesh is set) -----------

def _context_mesh_shape() -> dict[str, int] | None:
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else dict(mesh.shape)


def _constrain(x: jax.Array, axes: tuple[str, ...], shape: dict[str, int]) -> jax.Array:
  spec = rules_lib.resolve(axes, x.shape, shape, TRAIN_RULES, what="activation")
  return jax.lax.with_sharding_constraint(x, spec)


def constrain_rows(*arrays: jax.Array | None) -> tuple:
  """Shards dim 0 of each array over the batch axes of the current mesh (None passes)."""
  shape = _context_mesh_shape()
  if shape is None:
    return arrays
  return tuple(None if x is None else _constrain(x, rules_lib.ROWS, shape) for x in arrays)


def constrain_kv_cache(cache: Any) -> Any:
  """KV cache: (k, v) each [L, B, K, T, hd], or per-layer [(k, v)] each [B, K, T, hd];
  rows over the batch axes, kv heads over tensor."""
  shape = _context_mesh_shape()
  if shape is None:
    return cache
  return jax.tree.map(lambda c: _constrain(c, rules_lib.KV_CACHE[5 - c.ndim:], shape), cache)


def slot_axis(num_slots: int) -> str | None:
  """'role' when the current mesh can map a vmapped slot axis of this size onto it."""
  shape = _context_mesh_shape()
  if shape is None or shape.get("role", 1) == 1 or num_slots % shape["role"]:
    return None
  return "role"


def row_shards() -> int:
  """How many ways the current mesh splits rows: its batch axes' sizes multiplied
  (1 without a mesh)."""
  shape = _context_mesh_shape()
  return 1 if shape is None else math.prod(shape.get(a, 1) for a in rules_lib.BATCH_AXES)
