"""The jitted policy update: `(state, batch) -> (state, metrics)`, state donated.

One gradient step of the clipped PPO objective over all rows of a minibatch,
whatever their roles: under SP every row's gradient lands in the one shared
slot; under IP each row's gradient lands in its role's slot (the routing
weights are zero elsewhere), so per-slot gradients, per-slot clipping and
per-slot AdamW state all come out of one backward pass.

With `role_grads`, the loss is also split by role (each role's rows over the
minibatch's global denominator, so the role losses add up to the loss) and
the per-role gradients are taken by one backward pass per role: their norms,
their share of the total squared gradient mass, and the pairwise cosines.
Their sum is the update, so those steps cost R backward passes, not R + 1.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from marl_jax.rl import interventions as interventions_lib
from marl_jax.rl import losses
from marl_jax.rl import slots

SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Static settings of the loss (hashable: a jit static argument)."""

  clip_low: float = 0.2
  clip_high: float = 0.28
  aggregation: str = "seq_mean_token_mean"
  constant: float = 1.0            # Dr. GRPO's normalizer (max response length)
  use_kl: bool = False
  kl_estimator: str = "k3"
  temperature: float = 1.0
  grad_clip: float = 1.0
  chunk_size: int = 128
  remat: bool = False

  def __post_init__(self):
    if self.aggregation not in losses.AGGREGATIONS:
      raise ValueError(f"rl.aggregation={self.aggregation!r} is unknown; valid: "
                       f"{losses.AGGREGATIONS}.")
    if self.kl_estimator not in losses.KL_ESTIMATORS:
      raise ValueError(f"rl.kl_estimator={self.kl_estimator!r} is unknown; valid: "
                       f"{losses.KL_ESTIMATORS}.")


def make_optimizer(lr: float, total_steps: int, warmup_steps: int = 0,
                   weight_decay: float = 0.0, schedule: str = "cosine") -> optax.GradientTransformation:
  """AdamW with linear warmup then cosine decay to 0 (or a constant rate)."""
  if schedule not in SCHEDULES:
    raise ValueError(f"rl.schedule={schedule!r} is unknown; valid: {SCHEDULES}.")
  if schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps, max(total_steps, warmup_steps + 1), end_value=0.0)
  elif warmup_steps:
    lr = optax.linear_schedule(0.0, lr, warmup_steps)
  return optax.adamw(lr, weight_decay=weight_decay)


def init_state(trainable: Any, optimizer: optax.GradientTransformation) -> dict[str, Any]:
  return {"step": jnp.zeros((), jnp.int32), "trainable": trainable,
          "opt_state": optimizer.init(trainable)}


def _loss(trainable, store, batch, route, row_weight, cfg: LossConfig, num_roles: int,
          denom: jax.Array | None = None):
  logp, entropy = store.token_logprobs(
      batch["tokens"], batch["valid"], route, trainable=trainable,
      temperature=cfg.temperature, chunk_size=cfg.chunk_size, remat=cfg.remat)
  mask = batch["mask"]
  pg, clipped = losses.ppo_clipped(logp, batch["old_logp"], batch["advantages"],
                                   cfg.clip_low, cfg.clip_high)
  kl = jnp.zeros_like(pg)
  token_loss = pg
  if cfg.use_kl:
    kl = losses.kl_divergence(logp, batch["ref_logp"], cfg.kl_estimator)
    token_loss = token_loss + batch["kl_coef"][:, None] * kl
  total, own = losses.aggregate(token_loss * row_weight[:, None], mask, cfg.aggregation,
                                cfg.constant)
  denom = own if denom is None else denom  # given: the denominator of every length group
  loss = total / jnp.maximum(denom, 1e-9)
  tokens = mask.astype(jnp.float32)
  by_role = jax.nn.one_hot(batch["role"], num_roles).T * row_weight  # [R, B]
  per_role = lambda x: by_role @ (x * tokens).sum(-1)
  ratio = jnp.exp(logp - batch["old_logp"])
  aux = {"tokens": by_role @ tokens.sum(-1), "entropy": per_role(entropy),
         "clip_frac": per_role(clipped), "kl": per_role(kl),
         "ratio": per_role(ratio), "pg_loss": per_role(pg)}
  return loss, aux


def _gram(grads_r: Any) -> jax.Array:
  """[R, R] inner products of R stacked gradient pytrees."""
  def leaf(x):
    flat = x.reshape(x.shape[0], -1).astype(jnp.float32)
    return flat @ flat.T
  return sum(leaf(x) for x in jax.tree.leaves(grads_r))


@functools.partial(jax.jit, static_argnames=("cfg", "optimizer", "num_roles", "role_grads",
                                             "interventions"),
                   donate_argnames=("state",))
def train_step(state: dict[str, Any], store: Any, batch: Any, route: Any, *, cfg: LossConfig,
               optimizer: optax.GradientTransformation, num_roles: int,
               role_grads: bool = False,
               interventions: interventions_lib.Interventions | None = None
               ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """One AdamW step on a minibatch; returns the new state and raw metrics.

  `batch` and `route` are a minibatch's arrays and routing, or tuples of
  them, one per length group of its rows (rl.batch.length_groups).

  A non-finite loss or gradient leaves the state unchanged and sets
  metrics['finite'] to False (the trainer raises, naming step and role).
  `interventions` (rl.interventions) scale the per-role gradients before they
  are summed (forcing the role_grads path) or weight each role's loss.
  """
  trainable = state["trainable"]
  # Length groups (rl.batch.length_groups): one loss over every group's rows,
  # normalised by the denominator of them all, so the split changes no number.
  groups = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
  routes = tuple(route) if isinstance(route, (tuple, list)) else (route,)
  denom = sum(losses.denominator(g["mask"], cfg.aggregation, cfg.constant) for g in groups)
  # --- interventions (rl.interventions): per-role loss weights, per-role grads ---
  row_scales = [interventions_lib.row_scale(g["role"], num_roles, interventions) for g in groups]
  role_grads = role_grads or bool(interventions and interventions.needs_role_grads)
  istate = state.get("interventions", {})

  def value_and_grad(row_weights):
    """((loss, aux), grads) of the groups' rows weighted by row_weights (one per group)."""
    outs = [jax.value_and_grad(functools.partial(
        _loss, store=store, batch=g, route=r, row_weight=w, cfg=cfg, num_roles=num_roles,
        denom=denom), has_aux=True)(trainable) for g, r, w in zip(groups, routes, row_weights)]
    return jax.tree.map(lambda *xs: sum(xs), *outs)

  metrics = {}
  if role_grads:
    # One backward pass per role, stacked. Not jax.vmap: XLA:CPU returned
    # per-role decoder gradients whose sum was off by 2-50% (sequences >= 32
    # tokens; tests/test_rl_update.py checks the sum against the full gradient).
    per_role = [value_and_grad([jax.nn.one_hot(g["role"], num_roles)[:, r] * scale
                                for g, scale in zip(groups, row_scales)])
                for r in range(num_roles)]
    stack = lambda *xs: jnp.stack(xs)
    (loss_r, aux_r), grads_r = jax.tree.map(stack, *per_role)
    loss = loss_r.sum()
    aux = jax.tree.map(lambda x: x.sum(0), aux_r)
    grads = jax.tree.map(lambda g: g.sum(0), grads_r)
    metrics["role_gram"] = _gram(grads_r)
    metrics["role_slot_sq_norms"] = jax.vmap(
        lambda g: slots.slot_sq_norms(store.routing, g))(grads_r)
    if interventions is not None and interventions.needs_role_grads:
      grads_r, istate, imetrics = interventions_lib.apply(grads_r, istate, interventions)
      grads = jax.tree.map(lambda g: g.sum(0), grads_r)
      metrics.update(imetrics)
  else:
    (loss, aux), grads = value_and_grad(row_scales)
  grads, slot_norms = slots.clip_by_slot(store.routing, grads, cfg.grad_clip)
  finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(slot_norms))
  updates, opt_state = optimizer.update(grads, state["opt_state"], trainable)
  new = {"step": state["step"] + 1, "trainable": optax.apply_updates(trainable, updates),
         "opt_state": opt_state}
  if "interventions" in state:
    new["interventions"] = istate
  keep = lambda n, o: jnp.where(finite, n, o)
  new = jax.tree.map(keep, new, {**state, "step": state["step"] + 1})
  metrics.update(loss=loss, finite=finite, slot_grad_norms=slot_norms, **aux)
  return new, metrics
