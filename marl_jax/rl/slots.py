"""Per-slot views of a trainable pytree: squared norms and scaling by slot.

The trainable part stores slots in two ways (marl_jax.policies.store): LoRA slots
side by side in the adapters' rank axis (`a` [L, D, S*r], `b` [L, S*r, O])
and full copies on a leading axis ([F, ...]). These helpers reduce or scale a
gradient (or any pytree of that structure) slot by slot, so clipping and
gradient diagnostics are per policy slot in one jitted computation, and lay
per-slot values out like the tree (`expand`), so an optimizer can step some
slots and leave the others untouched.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _lora_sum(adapters: Any, count: int) -> jax.Array:
  total = jnp.zeros((count,), jnp.float32)
  for ab in adapters["layers"].values():
    a, b = ab["a"], ab["b"]
    total += jnp.sum(a.reshape(*a.shape[:-1], count, -1), axis=(0, 1, 3))
    total += jnp.sum(b.reshape(b.shape[0], count, -1, b.shape[-1]), axis=(0, 2, 3))
  return total


def _full_sum(full: Any) -> jax.Array:
  leaves = jax.tree.leaves(full)
  return sum(jnp.sum(x.reshape(x.shape[0], -1), axis=1) for x in leaves)


def slot_sums(routing: Any, tree: dict[str, Any]) -> jax.Array:
  """Sum of the entries of `tree` that belong to each slot: [num_slots]."""
  out = jnp.zeros((routing.num_slots,), jnp.float32)
  if "lora" in tree:
    ids = jnp.asarray([s for s, _, _ in routing.lora_storage])
    out = out.at[ids].add(_lora_sum(tree["lora"], len(routing.lora_storage)))
  if "full" in tree:
    out = out.at[jnp.asarray(routing.full_storage)].add(_full_sum(tree["full"]))
  return out


def slot_sq_norms(routing: Any, tree: dict[str, Any]) -> jax.Array:
  """Squared L2 norm of the part of `tree` that belongs to each slot: [num_slots]."""
  return slot_sums(routing, jax.tree.map(lambda x: x.astype(jnp.float32) ** 2, tree))


def slot_inner(routing: Any, x: dict[str, Any], y: dict[str, Any]) -> jax.Array:
  """Inner product of the parts of two trees that belong to each slot: [num_slots]."""
  return slot_sums(routing, jax.tree.map(
      lambda u, v: u.astype(jnp.float32) * v.astype(jnp.float32), x, y))


def expand(routing: Any, tree: dict[str, Any], values: jax.Array) -> dict[str, Any]:
  """values [num_slots] laid out like `tree`: per leaf, an array that broadcasts
  against it and holds values[slot] where the leaf's entries belong to `slot`."""
  out = {}
  if "lora" in tree:
    f = values[jnp.asarray([s for s, _, _ in routing.lora_storage])]

    def columns(ab):
      col = jnp.repeat(f, ab["a"].shape[-1] // f.shape[0])
      return {"a": col, "b": col[:, None]}

    out["lora"] = {"layers": {k: columns(v) for k, v in tree["lora"]["layers"].items()}}
  if "full" in tree:
    f = values[jnp.asarray(routing.full_storage)]
    out["full"] = jax.tree.map(lambda x: f.reshape(-1, *([1] * (x.ndim - 1))), tree["full"])
  return out


def scale_slots(routing: Any, tree: dict[str, Any], factors: jax.Array) -> dict[str, Any]:
  """Multiplies each slot's part of `tree` by factors[slot]."""
  out = dict(tree)
  if "lora" in tree:
    f = factors[jnp.asarray([s for s, _, _ in routing.lora_storage])]
    count = f.shape[0]

    def scale(ab):
      a, b = ab["a"], ab["b"]
      fa = jnp.repeat(f, a.shape[-1] // count).astype(a.dtype)
      fb = jnp.repeat(f, b.shape[1] // count).astype(b.dtype)
      return {"a": a * fa, "b": b * fb[None, :, None]}

    out["lora"] = {"layers": {k: scale(v) for k, v in tree["lora"]["layers"].items()}}
  if "full" in tree:
    f = factors[jnp.asarray(routing.full_storage)]
    out["full"] = jax.tree.map(
        lambda x: x * f.reshape(-1, *([1] * (x.ndim - 1))).astype(x.dtype), tree["full"])
  return out


def clip_by_slot(routing: Any, grads: dict[str, Any], max_norm: float
                 ) -> tuple[dict[str, Any], jax.Array]:
  """Clips each slot's gradient to max_norm (0 disables); returns (grads, norms before)."""
  norms = jnp.sqrt(slot_sq_norms(routing, grads))
  if not max_norm:
    return grads, norms
  factors = jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-12))
  return scale_slots(routing, grads, factors), norms
