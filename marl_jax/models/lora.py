"""LoRA adapters in the decoder's multi-slot layout: creation, routing weights, merging.

Layout (see marl_jax.models.decoder): `adapters['layers'][name]` holds
`a` [L, D_in, S*r] and `b` [L, S*r, D_out] for S slots of rank r; slot s owns
columns s*r:(s+1)*r of `a` and the same rows of `b`. A batch row receives
sum_s w[s] * x @ A_s @ B_s, where w = adapter_weights[row] is alpha/r for the
row's slots and 0 elsewhere.

Slots of a smaller rank (the hybrid mode's per-role adapters) are stored
zero-padded to the common rank: the padded columns of A are zero, so the
matching rows of B receive zero gradient and stay zero, and the slot remains
of its own rank through training with any optimizer whose update of a
zero-gradient, zero-valued entry is zero (SGD, Adam, AdamW).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from marl_jax.models import decoder
from marl_jax.models.config import ModelConfig, as_dtype

Adapters = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Low-rank adapter hyper-parameters (the study: rank 64, alpha 32, all linear layers).

  Attributes:
    rank: r, columns of A / rows of B per slot.
    alpha: the update is scaled by alpha / rank.
    targets: linear layers that get an adapter, a subset of
      decoder.LINEAR_NAMES ('q', 'k', 'v', 'o', 'gate', 'up', 'down').
    dtype: storage dtype of A and B (the trainable part stays float32 by
      default even when the base model is bfloat16).
  """

  rank: int = 64
  alpha: float = 32.0
  targets: tuple[str, ...] = decoder.LINEAR_NAMES
  dtype: str = "float32"

  def __post_init__(self):
    if isinstance(self.targets, str) or isinstance(self.targets, list):
      object.__setattr__(self, "targets", tuple(
          [self.targets] if isinstance(self.targets, str) else self.targets))
    if int(self.rank) <= 0:
      raise ValueError(f"LoraConfig.rank must be positive, got {self.rank}.")
    if self.alpha <= 0:
      raise ValueError(f"LoraConfig.alpha must be positive, got {self.alpha}.")
    unknown = [t for t in self.targets if t not in decoder.LINEAR_NAMES]
    if unknown or not self.targets:
      raise ValueError(
          f"LoraConfig.targets={self.targets!r} has unknown or no modules {unknown}; "
          f"choose a non-empty subset of {decoder.LINEAR_NAMES}.")
    as_dtype(self.dtype)

  @property
  def scale(self) -> float:
    """alpha / rank: the routing weight of a slot of this config."""
    return self.alpha / self.rank


def init_adapters(
    config: ModelConfig,
    lora: LoraConfig,
    slot_ranks: Sequence[int],
    rng: jax.Array,
    *,
    share_init: Sequence[int] | None = None,
) -> Adapters:
  """Adapters for len(slot_ranks) slots, stored at rank max(slot_ranks).

  A is uniform in +-1/sqrt(D_in) (PEFT's Kaiming init), B is zero, so every
  slot starts as the identity update. Slots with the same `share_init` id get
  the same A (default: all slots do), so identically configured slots are
  exact copies of each other before any update.
  """
  if not slot_ranks or min(slot_ranks) <= 0:
    raise ValueError(f"init_adapters needs at least one slot of positive rank, got {slot_ranks}.")
  rank = max(slot_ranks)
  share_init = [0] * len(slot_ranks) if share_init is None else list(share_init)
  dtype = as_dtype(lora.dtype)
  n_layers = config.num_layers
  shapes = decoder.linear_shapes(config)
  # Column c of a slot is live when c < that slot's rank.
  live = np.concatenate([np.arange(rank) < r for r in slot_ranks]).astype(np.float32)
  layers = {}
  for name in lora.targets:
    d_in, d_out = shapes[name]
    key = jax.random.fold_in(rng, decoder.LINEAR_NAMES.index(name))
    bound = 1.0 / np.sqrt(d_in)
    per_init = {i: jax.random.uniform(jax.random.fold_in(key, i), (n_layers, d_in, rank),
                                      jnp.float32, -bound, bound) for i in set(share_init)}
    a = jnp.concatenate([per_init[i] for i in share_init], axis=-1) * live
    layers[name] = {"a": a.astype(dtype),
                    "b": jnp.zeros((n_layers, rank * len(slot_ranks), d_out), dtype)}
  return {"layers": layers}


def merge(params: Any, adapters: Adapters, weights: np.ndarray | jax.Array) -> Any:
  """Base params with sum_s weights[s] * A_s @ B_s added to every adapted weight.

  `weights` [S] is one row of adapter_weights; the result, run without
  adapters, reproduces a row routed with those weights (up to float rounding).
  """
  weights = jnp.asarray(weights, jnp.float32)
  layers = dict(params["layers"])
  for name, ab in adapters["layers"].items():
    a, b = ab["a"].astype(jnp.float32), ab["b"].astype(jnp.float32)
    route = jnp.repeat(weights, a.shape[-1] // weights.shape[0])
    delta = jnp.einsum("lir,lro->lio", a * route, b)
    layers[name] = (layers[name].astype(jnp.float32) + delta).astype(layers[name].dtype)
  return {**params, "layers": layers}


def fold(adapters: Adapters, weights: Sequence[float],
         ranks: Sequence[int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """One adapter equal to sum_s weights[s] * A_s @ B_s (a row routed with `weights`):
  the used slots' own columns side by side, each slot's weight folded into its
  b. ranks[s] is slot s's own rank (hybrid slots are stored zero-padded to the
  common rank); the result's rank is the sum of the used slots' ranks.
  Returns {linear name: (a [L, D_in, R], b [L, R, D_out])} as float32 numpy."""
  out = {}
  for name, ab in adapters["layers"].items():
    a, b = np.asarray(ab["a"], np.float32), np.asarray(ab["b"], np.float32)
    common = a.shape[-1] // len(weights)
    used = [(s, w) for s, w in enumerate(weights) if w]
    out[name] = (
        np.concatenate([a[..., s * common:s * common + ranks[s]] for s, _ in used], axis=-1),
        np.concatenate([w * b[:, s * common:s * common + ranks[s]] for s, w in used], axis=1))
  return out


def select_slots(adapters: Adapters, slots: Sequence[int] | jax.Array,
                 num_slots: int) -> Adapters:
  """The adapters of the given slots only, in that order: one slot for export; inside
  jit (slots traced), the slots a continuous-engine call's rows use. Stacked
  ([L, ...] leaves) or per-layer (a list of layers) adapters."""
  layers, slots = adapters["layers"], jnp.asarray(slots)

  def take(x, axis):  # each slot's [r] block a slice (faster than a gather on XLA:CPU)
    rank = x.shape[axis] // num_slots
    return jnp.concatenate([jax.lax.dynamic_slice_in_dim(x, slots[i] * rank, rank, axis)
                            for i in range(len(slots))], axis=axis)

  pick = lambda layer: {name: {"a": take(ab["a"], ab["a"].ndim - 1),
                               "b": take(ab["b"], ab["b"].ndim - 2)}
                        for name, ab in layer.items()}
  return {"layers": [pick(layer) for layer in layers] if isinstance(layers, list)
          else pick(layers)}


def used_slots(weights: np.ndarray) -> np.ndarray:
  """The slots some row uses: the non-zero columns of adapter_weights [B, S]."""
  return np.flatnonzero(np.any(np.asarray(weights) != 0, axis=0))


def compact(adapters: Adapters, weights: np.ndarray) -> tuple[Adapters, np.ndarray]:
  """Drops the slots that no row uses (all-zero columns of adapter_weights [B, S]).

  The decoder's cost grows with the number of slots it is given, so a batch
  of one role pays for one slot, whatever the number of roles.
  """
  weights = np.asarray(weights)
  used = used_slots(weights)
  if len(used) in (0, weights.shape[1]):
    return adapters, weights
  return select_slots(adapters, used, weights.shape[1]), weights[:, used]
