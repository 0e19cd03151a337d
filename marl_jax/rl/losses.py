"""Pure, named policy-gradient losses. Each returns (sum, denominator).

Returning the sum and its denominator separately keeps aggregation exact
across minibatches and devices: the trainer divides the sum of every
minibatch by the denominator of the whole batch.

Per-token quantities are [N, T] arrays over N completions; `mask` marks the
completion tokens (the stop token included: the policy is trained on it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant")
KL_ESTIMATORS = ("k1", "k3")


def ppo_clipped(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                clip_low: float = 0.2, clip_high: float = 0.28, dual_clip: float = 0.0
                ) -> tuple[jax.Array, jax.Array]:
  """Per-token PPO clipped surrogate with an asymmetric clip range, and dual-clip.

    ratio = exp(logp - old_logp)
    loss  = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))
    dual_clip = c > 1, where A < 0:  loss = min(loss, -A * c)

  The dual clip (Ye et al. 2020; verl's compute_policy_loss with clip_ratio_c,
  3.0 in the reference study) bounds the loss of a token whose advantage is
  negative when its ratio has grown past c, as it can in minibatches taken
  off-policy; 0 turns it off.

  Args:
    logp, old_logp: [N, T] logprobs under the current and the rollout policy.
    advantages: [N] (broadcast over tokens) or [N, T].
  Returns:
    (loss [N, T], clipped [N, T] float: 1 where the clipped branch was taken).
  """
  if advantages.ndim == 1:
    advantages = advantages[:, None]
  ratio = jnp.exp(logp - old_logp)
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  loss = jnp.maximum(unclipped, clipped)
  if dual_clip:
    loss = jnp.where(advantages < 0, jnp.minimum(loss, -advantages * dual_clip), loss)
  return loss, (clipped > unclipped).astype(jnp.float32)


def dual_clipped(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                 dual_clip: float) -> jax.Array:
  """[N, T] float: 1 where the dual clip bounds a token's loss (A < 0, ratio > c)."""
  if advantages.ndim == 1:
    advantages = advantages[:, None]
  return ((advantages < 0) & (jnp.exp(logp - old_logp) > dual_clip)).astype(jnp.float32)


def kl_divergence(logp: jax.Array, ref_logp: jax.Array, estimator: str = "k3") -> jax.Array:
  """Per-token estimate of KL(pi || pi_ref) from samples of pi.

    k1 = logp - ref_logp
    k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1   (unbiased, always >= 0)
  """
  if estimator == "k1":
    return logp - ref_logp
  if estimator == "k3":
    delta = ref_logp - logp
    return jnp.exp(delta) - delta - 1.0
  raise ValueError(f"Unknown KL estimator {estimator!r}; valid: {KL_ESTIMATORS}.")


def aggregate(values: jax.Array, mask: jax.Array, mode: str = "seq_mean_token_mean",
              constant: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Reduces per-token values [N, T] to (sum, denominator).

    token_mean:          sum_i,t v / sum_i,t m
    seq_mean_token_mean: sum_i (sum_t v / sum_t m) / N_seq   (the study's default)
    seq_mean_token_sum:  sum_i,t v / N_seq
    constant:            sum_i,t v / (N_seq * constant)      (Dr. GRPO; constant is
                         the maximum response length)
  Rows whose mask is all zero (padding rows) count in no denominator.
  """
  mask = mask.astype(values.dtype)
  masked = values * mask
  denom = denominator(mask, mode, constant)
  if mode == "seq_mean_token_mean":
    return (masked.sum(-1) / jnp.maximum(mask.sum(-1), 1.0)).sum(), denom
  return masked.sum(), denom


def denominator(mask: jax.Array, mode: str = "seq_mean_token_mean",
                constant: float = 1.0) -> jax.Array:
  """The denominator of `aggregate` (it depends on the mask only): a batch
  split into parts has the sum of the parts' denominators."""
  tokens = mask.astype(jnp.float32).sum(-1)
  rows = (tokens > 0).astype(jnp.float32)
  if mode == "token_mean":
    return tokens.sum()
  if mode in ("seq_mean_token_mean", "seq_mean_token_sum"):
    return rows.sum()
  if mode == "constant":
    return rows.sum() * constant
  raise ValueError(f"Unknown loss aggregation {mode!r}; valid: {AGGREGATIONS}.")


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  mask = mask.astype(values.dtype)
  return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)
