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

A minibatch given as a tuple of length chunks (rl.batch.length_chunks) is
accumulated: `group_grads` per chunk (loss and gradient sums), `apply_grads`
once with the minibatch's denominator. `apply_minibatch` compiles those programs
ahead of time per length bucket, up to twice the longest row met, so a run
compiles only when its rows outgrow that.

Which rows make a minibatch, and which slots a step moves, is the update
scheme's (rl.schemes): every slot at once with optax's AdamW (joint), or one
slot per step with slot_adamw.SlotAdamW, which `control` tells which (reference).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marl_jax.models import decoder
from marl_jax.rl import batch as batch_lib
from marl_jax.rl import interventions as interventions_lib
from marl_jax.rl import losses
from marl_jax.rl import schedules
from marl_jax.rl import slot_adamw
from marl_jax.rl import slots

# Re-exported: the schedules live in rl.schedules (rl.slot_adamw reads them too).
SCHEDULES = schedules.SCHEDULES
learning_rate = schedules.learning_rate


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
  remat: str = "none"              # decoder.REMAT_POLICIES (config.rl.remat); True/False accepted
  dual_clip: float = 0.0           # losses.ppo_clipped's c (> 1; reference 3.0); 0: off

  def __post_init__(self):
    # A name either way: LossConfig is a jit static argument, and True and
    # 'layer' must not compile two programs.
    object.__setattr__(self, "remat", decoder.remat_name(self.remat))
    if self.aggregation not in losses.AGGREGATIONS:
      raise ValueError(f"rl.aggregation={self.aggregation!r} is unknown; valid: "
                       f"{losses.AGGREGATIONS}.")
    if self.kl_estimator not in losses.KL_ESTIMATORS:
      raise ValueError(f"rl.kl_estimator={self.kl_estimator!r} is unknown; valid: "
                       f"{losses.KL_ESTIMATORS}.")
    if self.dual_clip and not self.dual_clip > 1:
      raise ValueError(f"rl.dual_clip={self.dual_clip} must be > 1 (the reference's 3.0), "
                       "or 0 to turn the dual clip off.")


def make_optimizer(lr: float, total_steps: int, warmup_steps: int = 0,
                   weight_decay: float = 0.0, schedule: str = "cosine",
                   tail: str = "clamp") -> optax.GradientTransformation:
  """AdamW at learning_rate(...)'s rate, every slot stepping together (the joint
  scheme); rl.slot_adamw.SlotAdamW is the optimizer whose slots step alone."""
  return optax.adamw(learning_rate(lr, total_steps, warmup_steps, schedule, tail),
                     weight_decay=weight_decay)


def init_state(trainable: Any, optimizer: Any) -> dict[str, Any]:
  """The update's state: step, trainable slots, optimizer state (optax's, or a
  slot_adamw.SlotAdamW's per-slot counts and moments)."""
  return {"step": jnp.zeros((), jnp.int32), "trainable": trainable,
          "opt_state": optimizer.init(trainable)}


def _loss(trainable, store, batch, route, row_weight, cfg: LossConfig, num_roles: int):
  """(sum, aux) of a group's rows: the loss before its denominator, which
  losses.denominator gives for the whole minibatch (every length group)."""
  logp, entropy = store.token_logprobs(
      batch["tokens"], batch["valid"], route, trainable=trainable,
      temperature=cfg.temperature, chunk_size=cfg.chunk_size, remat=cfg.remat)
  mask = batch["mask"]
  pg, clipped = losses.ppo_clipped(logp, batch["old_logp"], batch["advantages"],
                                   cfg.clip_low, cfg.clip_high, cfg.dual_clip)
  kl = jnp.zeros_like(pg)
  token_loss = pg
  if cfg.use_kl:
    kl = losses.kl_divergence(logp, batch["ref_logp"], cfg.kl_estimator)
    token_loss = token_loss + batch["kl_coef"][:, None] * kl
  total, _ = losses.aggregate(token_loss * row_weight[:, None], mask, cfg.aggregation,
                              cfg.constant)
  tokens = mask.astype(jnp.float32)
  by_role = jax.nn.one_hot(batch["role"], num_roles).T * row_weight  # [R, B]
  per_role = lambda x: by_role @ (x * tokens).sum(-1)
  ratio = jnp.exp(logp - batch["old_logp"])
  aux = {"tokens": by_role @ tokens.sum(-1), "entropy": per_role(entropy),
         "clip_frac": per_role(clipped), "kl": per_role(kl),
         "ratio": per_role(ratio), "pg_loss": per_role(pg)}
  if cfg.dual_clip:
    aux["dual_clip_frac"] = per_role(losses.dual_clipped(logp, batch["old_logp"],
                                                         batch["advantages"], cfg.dual_clip))
  return total, aux


def _gram(grads_r: Any) -> jax.Array:
  """[R, R] inner products of R stacked gradient pytrees."""
  def leaf(x):
    flat = x.reshape(x.shape[0], -1).astype(jnp.float32)
    return flat @ flat.T
  return sum(leaf(x) for x in jax.tree.leaves(grads_r))


def group_grads(trainable: Any, store: Any, batch: Any, route: Any, *, cfg: LossConfig,
                num_roles: int, role_grads: bool = False,
                interventions: interventions_lib.Interventions | None = None) -> dict[str, Any]:
  """The loss sum, aux sums, gradient and loss denominator of one group of rows.

  Sums, not means: the chunks of a minibatch (rl.batch.length_chunks) add up,
  and `apply_grads` divides by the minibatch's denominator. With role_grads
  the loss and gradient are stacked per role ([R, ...]): one backward pass
  per role (not jax.vmap: XLA:CPU returned per-role decoder gradients whose
  sum was off by 2-50% for sequences >= 32 tokens; tests/rl/test_update.py
  checks the sum against the full gradient).
  """
  scale = interventions_lib.row_scale(batch["role"], num_roles, interventions)
  grad = lambda w: jax.value_and_grad(functools.partial(
      _loss, store=store, batch=batch, route=route, row_weight=w, cfg=cfg,
      num_roles=num_roles), has_aux=True)(trainable)
  if role_grads:
    onehot = jax.nn.one_hot(batch["role"], num_roles)
    per_role = [grad(onehot[:, r] * scale) for r in range(num_roles)]
    (total, aux), grads = jax.tree.map(lambda *xs: jnp.stack(xs), *per_role)
    aux = jax.tree.map(lambda x: x.sum(0), aux)
  else:
    (total, aux), grads = grad(scale)
  return {"total": total, "aux": aux, "grads": grads,
          "denom": losses.denominator(batch["mask"], cfg.aggregation, cfg.constant)}


def apply_grads(state: dict[str, Any], store: Any, sums: dict[str, Any],
                control: dict[str, jax.Array] | None = None, *,
                optimizer: Any, cfg: LossConfig, role_grads: bool = False,
                interventions: interventions_lib.Interventions | None = None
                ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """The AdamW step from a minibatch's summed `group_grads`; (new state, metrics).

  `optimizer` is an optax transformation (every slot steps: the joint scheme)
  or a slot_adamw.SlotAdamW, which steps only the slots that `control`
  ({'active': [num_slots] bool, 'iteration': int}) marks active.
  """
  denom = jnp.maximum(sums["denom"], 1e-9)
  loss, grads = sums["total"] / denom, jax.tree.map(lambda g: g / denom, sums["grads"])
  istate = state.get("interventions", {})
  metrics = {}
  if role_grads:
    grads_r, loss = grads, loss.sum()
    metrics["role_gram"] = _gram(grads_r)
    metrics["role_slot_sq_norms"] = jax.vmap(
        lambda g: slots.slot_sq_norms(store.routing, g))(grads_r)
    if interventions is not None and interventions.needs_role_grads:
      grads_r, istate, imetrics = interventions_lib.apply(grads_r, istate, interventions)
      metrics.update(imetrics)
    grads = jax.tree.map(lambda g: g.sum(0), grads_r)
  grads, slot_norms = slots.clip_by_slot(store.routing, grads, cfg.grad_clip)
  finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(slot_norms))
  trainable = state["trainable"]
  if isinstance(optimizer, slot_adamw.SlotAdamW):
    trainable, opt_state = optimizer.step(grads, state["opt_state"], trainable,
                                          control["active"], control["iteration"])
  else:
    updates, opt_state = optimizer.update(grads, state["opt_state"], trainable)
    trainable = optax.apply_updates(trainable, updates)
  new = {"step": state["step"] + 1, "trainable": trainable, "opt_state": opt_state}
  if "interventions" in state:
    new["interventions"] = istate
  keep = lambda n, o: jnp.where(finite, n, o)
  new = jax.tree.map(keep, new, {**state, "step": state["step"] + 1})
  metrics.update(loss=loss, finite=finite, slot_grad_norms=slot_norms, **sums["aux"])
  return new, metrics


def _groups(batch: Any, route: Any) -> tuple[tuple, tuple]:
  if isinstance(batch, (tuple, list)):
    return tuple(batch), tuple(route)
  return (batch,), (route,)


def _add(a: Any, b: Any) -> Any:
  return jax.tree.map(jnp.add, a, b)


def minibatch_step(state: dict[str, Any], store: Any, batch: Any, route: Any,
         control: dict[str, jax.Array] | None = None, *, cfg: LossConfig,
         optimizer: Any, num_roles: int, role_grads: bool = False,
         interventions: interventions_lib.Interventions | None = None
         ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """One AdamW step on a minibatch (pure; `apply_minibatch` is its jitted form).

  `batch` and `route` are a minibatch's arrays and routing, or tuples of
  them, one per length chunk of its rows (rl.batch.length_chunks): one loss
  over every chunk's rows, normalised by the denominator of them all, so the
  split changes no number. A non-finite loss or gradient leaves the state
  unchanged and sets metrics['finite'] to False (the trainer raises, naming
  step and role). `interventions` (rl.interventions) scale the per-role
  gradients before they are summed (forcing the role_grads path) or weight
  each role's loss. `control` says which slots step (apply_grads).
  """
  role_grads = role_grads or bool(interventions and interventions.needs_role_grads)
  sums = functools.reduce(_add, [
      group_grads(state["trainable"], store, g, r, cfg=cfg, num_roles=num_roles,
                  role_grads=role_grads, interventions=interventions)
      for g, r in zip(*_groups(batch, route))])
  return apply_grads(state, store, sums, control, optimizer=optimizer, cfg=cfg,
                     role_grads=role_grads, interventions=interventions)


_STATIC = ("cfg", "optimizer", "num_roles", "role_grads", "interventions")
_jit_step = jax.jit(minibatch_step, static_argnames=_STATIC, donate_argnames=("state",))
_jit_group_grads = jax.jit(group_grads, static_argnames=_STATIC[:1] + _STATIC[2:])
_jit_add = jax.jit(_add, donate_argnums=0)
_jit_apply = jax.jit(apply_grads, static_argnames=("cfg", "optimizer", "role_grads",
                                                   "interventions"),
                     donate_argnames=("state",))


HEADROOM = 2  # warm-up compiles update buckets up to this multiple of a new length


class _Programs:
  """Ahead-of-time executables of the chunked update, by argument shapes and settings.

  jit compiles a program the first time a shape is met, mid-run. Here a new
  length bucket compiles, at once, every bucket up to HEADROOM times it
  (rl.batch.length_ladder) for every role_grads variant the run will use, from
  shapes alone: nothing compiles again until a row outgrows that.
  """

  def __init__(self):
    self._cache: dict[Any, Any] = {}

  @staticmethod
  def _key(jitted, args: tuple, static: dict[str, Any]) -> tuple:
    return jitted, _signature(args), tuple(sorted(static.items()))

  def clear(self) -> None:
    self._cache.clear()

  def known(self, jitted, args: tuple, static: dict[str, Any]) -> bool:
    return self._key(jitted, args, static) in self._cache

  def get(self, jitted, args: tuple, static: dict[str, Any]):
    key = self._key(jitted, args, static)
    if key not in self._cache:
      self._cache[key] = jitted.lower(*args, **static).compile()
    return self._cache[key]

  @staticmethod
  def _widened(chunk: dict[str, Any], longest: int | None = None):
    """(bucket, chunk's specs at that length) for every length bucket up to HEADROOM
    x the chunk's: RL rows grow as a run trains, and the demo's first rows longer
    than step 0's bucket came at step 10, a mid-run compile. `longest` (the
    longest row a run can make: max_prompt_len + max_new_tokens) caps it at its
    bucket: uncapped, SmolLM2's rows of at most 608 tokens compiled buckets up to
    1,216, 20 minutes of a first step on 2 cores."""
    length = chunk["tokens"].shape[1]
    top = batch_lib.length_bucket(HEADROOM * length)
    if longest:
      top = max(length, min(top, batch_lib.length_bucket(longest)))
    for bucket in sorted({*batch_lib.length_ladder(top), top, length}):
      yield bucket, {k: _spec(v, width=bucket - length) for k, v in chunk.items()}

  def ahead(self, jitted, fixed: tuple, chunk: dict[str, Any], static: dict[str, Any],
            compile_ahead: bool = True, longest: int | None = None):
    """The program of jitted(*fixed, chunk, **static), a function of a chunk of rows
    (e.g. scoring them): a new length compiles every bucket up to HEADROOM x it
    (at most `longest`'s)."""
    args = (*fixed, chunk)
    if compile_ahead and not self.known(jitted, args, static):
      for _, specs in self._widened(chunk, longest):
        self.get(jitted, (*fixed, specs), static)
    return self.get(jitted, args, static)

  def warm(self, state, store, chunk, route, grads_static, apply_static, variants,
           control=None, longest: int | None = None) -> None:
    for _, specs in self._widened(chunk, longest):
      for role_grads in variants:
        args = (state["trainable"], store, specs, route)
        static = {**grads_static, "role_grads": role_grads}
        self.get(_jit_group_grads, args, static)
        sums = jax.eval_shape(functools.partial(group_grads, **static), *args)
        self.get(_jit_add, (sums, sums), {})
        self.get(_jit_apply, (state, store, sums, control),
                 {**apply_static, "role_grads": role_grads})


def _spec(x: Any, width: int = 0) -> jax.ShapeDtypeStruct:
  """x's shape and dtype; [B, S] arrays (tokens, masks, scores) `width` columns wider."""
  shape = tuple(np.shape(x))
  if len(shape) == 2:
    shape = (shape[0], shape[1] + width)
  return jax.ShapeDtypeStruct(shape, x.dtype)


def _signature(args: Any) -> tuple:
  leaves, treedef = jax.tree.flatten(args)
  return treedef, tuple((np.shape(x), np.dtype(x.dtype)) for x in leaves)


_PROGRAMS = _Programs()


def clear_programs() -> None:
  """Releases the update's compiled programs, which `jax.clear_caches()` does not
  reach (they are held here, by shapes). A process that trains many configs one
  after another (a notebook, a test worker) calls both to free their code: each
  XLA:CPU executable keeps ~3 memory mappings, and Linux caps a process at
  vm.max_map_count (65,530 by default), past which compiling crashes."""
  _PROGRAMS.clear()


def program_ahead(jitted, fixed: tuple, chunk: dict[str, Any], static: dict[str, Any],
                  compile_ahead: bool = True, longest: int | None = None):
  """The compiled jitted(*fixed, chunk, **static) for a chunk of update rows, its
  length buckets compiled ahead as the update's are (_Programs.ahead)."""
  return _PROGRAMS.ahead(jitted, fixed, chunk, static, compile_ahead, longest)


def apply_minibatch(state: dict[str, Any], store: Any, batch: Any, route: Any, *, cfg: LossConfig,
               optimizer: optax.GradientTransformation, num_roles: int,
               role_grads: bool = False,
               interventions: interventions_lib.Interventions | None = None,
               warm_role_grads: tuple[bool, ...] | None = None,
               compile_ahead: bool = True, control: dict[str, Any] | None = None,
               longest: int | None = None
               ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """`minibatch_step`, jitted; the state is donated.

  A single array dict is one XLA program. A tuple of update chunks
  (rl.batch.length_chunks: one row count, several lengths) is accumulated:
  each chunk's gradient is a program of its (rows, length) shape, then one
  program applies their sum. Those programs are compiled ahead of time
  (_Programs): a new length bucket compiles every bucket up to HEADROOM times
  it, for each role_grads value in `warm_role_grads` (default: this step's),
  so a run compiles only when its rows outgrow that, and never past the bucket
  of `longest` (the longest row the run can make). compile_ahead=False
  compiles each program when first met instead: less compile time for runs
  of a few steps (tests), compiles mid-run for long ones. `control` (arrays)
  says which slots a slot_adamw.SlotAdamW steps (apply_grads).
  """
  groups, routes = _groups(batch, route)
  if len(groups) == 1 and not isinstance(batch, (tuple, list)):
    return _jit_step(state, store, groups[0], routes[0], control, cfg=cfg, optimizer=optimizer,
                     num_roles=num_roles, role_grads=role_grads, interventions=interventions)
  forced = bool(interventions and interventions.needs_role_grads)
  role_grads = role_grads or forced
  variants = tuple(sorted({v or forced for v in (warm_role_grads or ())} | {role_grads}))
  grads_static = dict(cfg=cfg, num_roles=num_roles, interventions=interventions)
  apply_static = dict(cfg=cfg, optimizer=optimizer, interventions=interventions)
  sums = None
  for g, r in zip(groups, routes):
    args = (state["trainable"], store, g, r)
    static = {**grads_static, "role_grads": role_grads}
    if compile_ahead and not _PROGRAMS.known(_jit_group_grads, args, static):
      _PROGRAMS.warm(state, store, g, r, grads_static, apply_static, variants, control,
                     longest)
    part = _PROGRAMS.get(_jit_group_grads, args, static)(*args)
    sums = part if sums is None else _PROGRAMS.get(_jit_add, (sums, part), {})(sums, part)
  apply = _PROGRAMS.get(_jit_apply, (state, store, sums, control),
                        {**apply_static, "role_grads": role_grads})
  return apply(state, store, sums, control)
