"""Logical axes of every array the trainer holds, and rules mapping them to mesh axes.

Each parameter dimension has a logical name (`PARAM_AXES`); a rule set maps
logical names to mesh axes (`TRAIN_RULES`, `ROLLOUT_RULES`), and
`partition_spec` turns (path in a pytree, shape) into a `PartitionSpec`.
One table serves the base parameters, the trainable part (LoRA `a` [L, D_in,
S*r] / `b` [L, S*r, D_out]; full copies [F, ...]), the optimizer state (its
`mu` / `nu` mirror the trainable tree, so their paths name the same leaves)
and anything else keyed by parameter names: leaves are recognised by the dict
keys on their path, not by their position.

A mesh axis is used for a dimension only when the mesh has it with size > 1,
no other dimension of the array uses it already, and the dimension is
divisible by it; otherwise that dimension stays replicated on it (logged once
per (leaf, axis) at INFO). So every config is valid on every mesh, and a
sharding can only cost memory, never correctness.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from absl import logging
import jax
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor", "role")
# Rows of every activation, batch input and KV cache; `role` is not a batch
# axis: it places slots (module sharding doc), and vmapped slot axes use it.
BATCH_AXES = ("data", "fsdp")

Rules = Mapping[str, tuple[str, ...]]

# Logical name -> mesh axes. 'embed' over fsdp shards every weight matrix
# (ZeRO-3 style: XLA all-gathers one layer at a time inside the layer scan);
# heads / kv_heads / mlp / vocab over tensor is Megatron tensor parallelism
# (q, k, v, gate, up column-parallel; o, down row-parallel).
TRAIN_RULES: Rules = {
    "batch": BATCH_AXES, "vocab": ("tensor",), "embed": ("fsdp",),
    "heads": ("tensor",), "kv_heads": ("tensor",), "mlp": ("tensor",),
    "slots": ("role",), "layers": (), "norm": (), "head_dim": (), "length": (),
}
# ZeRO-3 across replicas too (config.mesh.state_over_data): parameters and
# optimizer state are split over data x fsdp, e.g. over every chip of a pod
# slice; rollouts then run on a per-host copy under TRAIN_RULES or ROLLOUT_RULES.
STATE_OVER_DATA_RULES: Rules = {**TRAIN_RULES, "embed": ("fsdp", "data")}
# Rollouts decode one token at a time: gathering FSDP shards at every step
# costs a full weight transfer per token, so the rollout copy may be kept
# replicated over fsdp (config.mesh.rollout_params; marl_jax.parallel.sharding).
ROLLOUT_RULES: Rules = {**TRAIN_RULES, "embed": ()}

PARAM_AXES: dict[str, tuple[str, ...]] = {
    "embed": ("vocab", "embed"),
    "lm_head": ("embed", "vocab"),
    "final_norm": ("norm",),
    "attn_norm": ("layers", "norm"),
    "mlp_norm": ("layers", "norm"),
    "q": ("layers", "embed", "heads"),
    "k": ("layers", "embed", "kv_heads"),
    "v": ("layers", "embed", "kv_heads"),
    "o": ("layers", "heads", "embed"),
    "gate": ("layers", "embed", "mlp"),
    "up": ("layers", "embed", "mlp"),
    "down": ("layers", "mlp", "embed"),
    "q_bias": ("layers", "heads"),
    "k_bias": ("layers", "kv_heads"),
    "v_bias": ("layers", "kv_heads"),
    "q_norm": ("layers", "head_dim"),
    "k_norm": ("layers", "head_dim"),
}
# Activations and caches (marl_jax.generate.sampler, marl_jax.rl.update).
ROWS = ("batch",)                                                  # [B, ...]
KV_CACHE = ("layers", "batch", "kv_heads", "length", "head_dim")  # [L, B, K, T, hd]

_LOGGED: set[tuple] = set()


def path_names(path: Sequence[Any]) -> tuple[str, ...]:
  """The dict keys on a pytree key path (other key kinds are skipped)."""
  return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def logical_axes(names: Sequence[str]) -> tuple[str, ...] | None:
  """Logical axes of the leaf at a path with these dict keys; None if unknown.

  Full copies get a leading 'slots' axis; LoRA `a` is (layers, in, slots),
  `b` is (layers, slots, out), in and out being the adapted weight's axes.
  """
  if not names:
    return None
  if "lora" in names and names[-1] in ("a", "b") and len(names) >= 2:
    weight = PARAM_AXES.get(names[-2])
    if weight is None or len(weight) != 3:
      return None
    layers, d_in, d_out = weight
    return (layers, d_in, "slots") if names[-1] == "a" else (layers, "slots", d_out)
  axes = PARAM_AXES.get(names[-1])
  if axes is None:
    return None
  return ("slots",) + axes if "full" in names else axes


def resolve(axes: Sequence[str | None], shape: Sequence[int], mesh_shape: Mapping[str, int],
            rules: Rules, *, what: str = "array") -> P:
  """PartitionSpec for an array of `shape` whose dims have these logical axes.

  Extra leading dims (e.g. a per-role stack of a parameter-shaped tree) are
  replicated. Axes are dropped where unusable (module doc).
  """
  axes = (None,) * (len(shape) - len(axes)) + tuple(axes)
  used: set[str] = set()
  spec = []
  for size, name in zip(shape, axes):
    chosen = []
    for mesh_axis in (rules.get(name, ()) if name else ()):
      n = mesh_shape.get(mesh_axis, 1)
      if n == 1 or mesh_axis in used:
        continue
      product = n
      for other in chosen:
        product *= mesh_shape[other]
      if size % product:
        key = (what, name, mesh_axis, size)
        if key not in _LOGGED:
          _LOGGED.add(key)
          logging.info("sharding: %s dim %s=%d is not divisible by %s; kept replicated on it.",
                       what, name, size, "*".join(chosen + [mesh_axis]))
        continue
      chosen.append(mesh_axis)
    used.update(chosen)
    spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
  while spec and spec[-1] is None:
    spec.pop()
  return P(*spec)


def partition_spec(path: Sequence[Any], shape: Sequence[int], mesh_shape: Mapping[str, int],
                   rules: Rules = TRAIN_RULES) -> P:
  """PartitionSpec of one pytree leaf; unknown leaves (counters, step) are replicated."""
  names = path_names(path)
  axes = logical_axes(names)
  if axes is None or len(axes) > len(shape):
    return P()
  return resolve(axes, shape, mesh_shape, rules, what="/".join(names))


def tree_specs(tree: Any, mesh_shape: Mapping[str, int], rules: Rules = TRAIN_RULES) -> Any:
  """PartitionSpecs of every leaf of a pytree of arrays or ShapeDtypeStructs."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: partition_spec(path, x.shape, mesh_shape, rules), tree)
