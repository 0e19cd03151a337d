"""Sampling settings and the per-row draw of one token: greedy, temperature, top-k, top-p.

Every row carries its own temperature, top-k and top-p (arrays), and draws
from its own key: token j of a row is drawn with `fold_in(row_key, j)`, so a
row's tokens depend on its key and its logits only, never on the batch it
sits in or its place there. The lockstep sampler (sampler.generate) and the
continuous-batching engine (continuous.generate) share this draw, which is
what makes their outputs equal row for row. What varies between rows only
through values is traced; what changes the program (some row samples, the
largest top-k, some row cuts by top-p) is the static `DrawSpec`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to sample. temperature 0 means greedy; top_k 0 and top_p 1 disable them."""

  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  max_new_tokens: int = 64
  stop_ids: tuple[int, ...] = ()

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}.")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}.")
    if self.top_k < 0 or self.max_new_tokens <= 0:
      raise ValueError("SamplingParams.top_k must be >= 0 and max_new_tokens > 0, got "
                       f"top_k={self.top_k}, max_new_tokens={self.max_new_tokens}.")


@dataclasses.dataclass(frozen=True)
class DrawSpec:
  """What the draw program needs (static): whether every row is greedy, the
  largest top-k of any row (0: none cuts by top-k), whether any row cuts by top-p."""

  greedy: bool
  top_k: int
  top_p: bool

  @classmethod
  def of(cls, samplings: Sequence[SamplingParams]) -> "DrawSpec":
    sampled = [s for s in samplings if s.temperature > 0]
    return cls(greedy=not sampled, top_k=max((s.top_k for s in sampled), default=0),
               top_p=any(s.top_p < 1 for s in sampled))

  def covers(self, need: "DrawSpec") -> bool:
    """This program can draw rows that need `need` (it leaves out nothing they use)."""
    return (need.greedy or not self.greedy) and need.top_k <= self.top_k and (
        self.top_p or not need.top_p)


def per_row(sampling: SamplingParams | Sequence[SamplingParams], n: int,
            caller: str) -> list[SamplingParams]:
  """One SamplingParams per row: `sampling` for every row, or its n; their stop_ids agree."""
  samplings = [sampling] * n if isinstance(sampling, SamplingParams) else list(sampling)
  if len(samplings) != n or len({s.stop_ids for s in samplings}) > 1:
    raise ValueError(f"{caller} needs one SamplingParams, or one per prompt, all with the same "
                     "stop_ids.")
  return samplings


def row_settings(samplings: Sequence[SamplingParams]) -> dict[str, np.ndarray]:
  """Per-row temperature [B], top_k [B] and top_p [B] (numpy) of the rows' settings."""
  return {"temperature": np.array([s.temperature for s in samplings], np.float32),
          "top_k": np.array([s.top_k if s.temperature else 0 for s in samplings], np.int32),
          "top_p": np.array([s.top_p if s.temperature else 1.0 for s in samplings], np.float32)}


def row_keys(rng: jax.Array, rows: int, ids: Sequence[int] | None = None) -> jax.Array:
  """One key per row: `rng` itself when it holds one key per row ([rows, 2]),
  else fold_in(rng, ids[i]) for row i, its identity (default: its index i).

  Ids let a caller key a row by what it is rather than where it sits (rollout:
  an episode's call), so the row draws the same tokens in any batch.
  """
  rng = jnp.asarray(rng)
  if rng.ndim == 2:
    if rng.shape[0] != rows or ids is not None:
      raise ValueError(f"got {rng.shape[0]} per-row keys for {rows} rows"
                       + (" and row ids too: give one or the other." if ids is not None else "."))
    return rng
  ids = np.arange(rows) if ids is None else np.asarray(ids, np.int64)
  if ids.shape != (rows,) or (rows and (ids.min() < 0 or ids.max() >= 2**32)):
    raise ValueError(f"row_ids must give each of the {rows} rows an id in [0, 2**32), got "
                     f"{ids.tolist()}.")
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.asarray(ids, jnp.uint32))


def sample(keys: jax.Array, steps: jax.Array, logits: jax.Array, spec: DrawSpec,
           settings: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Draws token `steps[b]` of each row b from logits [B, V]; returns (ids, logprobs).

  The logprob is that of the sampling distribution softmax(logits /
  temperature) before top-k / top-p truncation (temperature 1 for greedy
  rows): the quantity the RL loss recomputes.
  """
  if spec.greedy:
    ids = jnp.argmax(logits, axis=-1)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return ids, jnp.take_along_axis(logp, ids[:, None], -1)[:, 0]
  temperature = settings["temperature"]
  greedy = temperature == 0
  scaled = logits / jnp.where(greedy, 1.0, temperature)[:, None]
  logp = jax.nn.log_softmax(scaled, axis=-1)
  masked = scaled
  if spec.top_k:
    k = settings["top_k"]
    top = jax.lax.top_k(scaled, spec.top_k)[0]
    kth = jnp.take_along_axis(top, jnp.clip(k - 1, 0, spec.top_k - 1)[:, None], -1)
    masked = jnp.where((k[:, None] > 0) & (scaled < kth), -jnp.inf, masked)
  if spec.top_p:
    top_p = settings["top_p"]
    sorted_logits = jnp.sort(masked, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token always).
    keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p[:, None]
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    masked = jnp.where((top_p[:, None] < 1) & (masked < cutoff), -jnp.inf, masked)
  u = jax.vmap(lambda key, step: jax.random.uniform(jax.random.fold_in(key, step), (),
                                                    minval=1e-7))(keys, steps)
  ids = inverse_cdf(jax.nn.softmax(masked, axis=-1), u)
  ids = jnp.where(greedy, jnp.argmax(logits, axis=-1), ids)
  return ids, jnp.take_along_axis(logp, ids[:, None], -1)[:, 0]


def inverse_cdf(probs: jax.Array, u: jax.Array) -> jax.Array:
  """Index i of each row with cdf[i - 1] < u * total <= cdf[i] (probs [B, V], u [B]).

  Inverse-CDF sampling takes one uniform per row instead of a Gumbel per
  vocabulary entry (random bits dominate a CPU decode step otherwise). The
  search runs in two levels, over blocks of ~sqrt(V) entries and then inside
  the chosen block, because a cumulative sum over a whole 49k vocabulary is a
  multi-pass reduce-window on XLA:CPU. Entries of zero mass are never chosen.
  """
  batch, vocab = probs.shape
  block = 1 << max(math.isqrt(vocab) - 1, 0).bit_length()  # a power of two >= sqrt(V)
  blocks = -(-vocab // block)
  probs = jnp.pad(probs, ((0, 0), (0, blocks * block - vocab))).reshape(batch, blocks, block)

  def search(masses, target):
    """First place where the running mass reaches target (> 0, so that places
    of zero mass before it are passed over), and the mass before that place."""
    cdf = jnp.cumsum(masses, axis=-1)
    target = jnp.minimum(target, cdf[:, -1])
    place = jnp.sum(cdf < target[:, None], axis=-1)
    before = jnp.take_along_axis(jnp.pad(cdf, ((0, 0), (1, 0))), place[:, None], -1)[:, 0]
    return place, target - before

  sums = probs.sum(-1)
  chosen, rest = search(sums, u * sums.sum(-1))
  offset, _ = search(jnp.take_along_axis(probs, chosen[:, None, None], 1)[:, 0], rest)
  return chosen * block + offset
