"""A step's update mechanics (rl.schemes) and the per-slot figures that show them.

Every step writes, per policy slot (named by rl.schemes.slot_names: its role
under IP, 'shared' for SP's one slot, so the shared slot's figures appear once):

  lr/<slot>             the rate of the slot's last optimizer step this step (of
                        its next one when it took none)
  opt_steps/<slot>      optimizer steps the slot took this step
  update_norm/<slot>    ||theta_after - theta_before|| of the slot over this step
  drift/<slot>          ||theta - theta_0|| of the slot (theta_0: the run's start)
  update_cos/<slot>     cosine between this step's update of the slot and its
                        previous one (absent at a run's first step, and at the first
                        step after a resume: the previous update is not checkpointed,
                        which would change every checkpoint's structure)
  grad_norm_mb/<slot>, grad_norm_mb_max/<slot>
                        mean and largest pre-clip gradient norm of the slot over its
                        minibatches (the norm the reference's clip reads)

and, with the per-role gradient diagnostics (every rl.role_grad_every steps, as
it costs a forward pass of the base over the step's rows):

  kl_base/<role>        KL(policy || base) on the role's own sampled tokens: the k3
                        estimate from the rollout's logprobs and the base's (adapters
                        off, full copies off) at the sampling temperature.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from marl_jax.rl import batch as batch_lib
from marl_jax.rl import schemes
from marl_jax.rl import slot_adamw
from marl_jax.rl import slots
from marl_jax.rl import update


class Monitor:
  """What the figures of a run carry from step to step: each slot's last update
  (a device pytree like the trainable one). One per run (loop.train_and_evaluate)."""

  def __init__(self):
    self.previous = None
    self.has_previous = None  # [num_slots] bool on the host


def minibatch_plan(batch: batch_lib.TrainBatch, routing: Any, rl_cfg: Any,
                   rng: np.random.Generator) -> list[schemes.Minibatch]:
  """One epoch's minibatches under rl.update_scheme (rl.schemes): the joint
  scheme's rl.minibatches over every row, or each slot's rows cut into
  rl.minibatch_rows; rows shuffled unless rl.shuffle is false."""
  shuffle = rl_cfg.get("shuffle", True)
  if rl_cfg.get("update_scheme", "joint") == "joint":
    return [schemes.Minibatch(rows) for rows in
            batch_lib.minibatches(batch, rl_cfg.minibatches, rng if shuffle else None)]
  return schemes.reference_minibatches(batch.row_roles[:batch.num_calls], routing,
                                       rl_cfg.minibatch_rows, rng if shuffle else None)


def chunk_rows(rl_cfg: Any, update_rows: int, routing: Any) -> int:
  """Rows of an update chunk (rl.batch.length_chunks) under the scheme in force.

  The joint scheme sorts a minibatch of every role's rows by length before it
  cuts chunks, so a role's short rows share chunks. A reference-scheme
  minibatch is one slot's rows in rollout order, under SP every role's rows of
  a few episodes; a chunk as large as the minibatch padded the generators' rows
  to the aggregator's length (an SP step 2.5x the joint one on the same rows,
  bench/update_scheme.py). So where a slot serves several roles (SP, hybrid),
  a reference minibatch is cut into at least 4 chunks (a power of two, >= 8
  rows), which its roles' lengths then sort into; under IP a minibatch is one
  role's rows and stays in chunks of update_rows (smaller ones cost calls:
  1.19x against 0.99x the joint step). Chunks of one minibatch share its
  denominator: the numbers do not change.
  """
  if (update_rows <= 0 or rl_cfg.get("update_scheme", "joint") != "reference"
      or routing.mode == "isolated"):
    return update_rows
  quarter = max(int(rl_cfg.minibatch_rows) // 4, 1)
  return min(update_rows, max(8, 1 << (quarter.bit_length() - 1)))


def warm_variants(routing: Any, rl_cfg: Any, default: tuple[bool, ...]) -> tuple[bool, ...]:
  """The role_grads variants of the update programs a run uses: under the reference
  scheme an IP minibatch holds one role, and its per-role split is never run."""
  if rl_cfg.get("update_scheme", "joint") == "reference" and routing.mode == "isolated":
    return (False,)
  return default


def role_grads_of(minibatch: schemes.Minibatch, batch: batch_lib.TrainBatch,
                  role_grads: bool) -> bool:
  """The per-role split runs on a minibatch of several roles (one role: the slot's norm)."""
  if minibatch.slot is None or not role_grads:
    return role_grads
  return len({batch.row_roles[i] for i in minibatch.rows}) > 1


def control(optimizer: Any, minibatch: schemes.Minibatch, step: int) -> dict[str, Any]:
  """apply_minibatch's `control` keyword for a slot_adamw.SlotAdamW ({} for optax)."""
  if not isinstance(optimizer, slot_adamw.SlotAdamW):
    return {}
  active = np.zeros(optimizer.routing.num_slots, bool)
  if minibatch.slot is None:
    active[:] = True
  else:
    active[minibatch.slot] = True
  return {"control": {"active": jax.device_put(active),
                      "iteration": jax.device_put(np.int32(step))}}


def own_slot_norms(raw: dict, parts: list[dict], plan: list[schemes.Minibatch]) -> dict:
  """raw with each slot's gradient norm averaged over its own minibatches only
  (the reference scheme's minibatches step one slot each)."""
  if not plan or plan[0].slot is None:
    return raw
  norms = np.array(raw["slot_grad_norms"], np.float64)
  for slot in range(len(norms)):
    own = [p["slot_grad_norms"][slot] for p, mb in zip(parts, plan) if mb.slot == slot]
    norms[slot] = np.mean(own) if own else 0.0
  return {**raw, "slot_grad_norms": norms}


@functools.partial(jax.jit, static_argnames=("routing",))
def _figures(before, after, init, previous, has_previous, *, routing):
  delta = jax.tree.map(lambda a, b: a.astype(jnp.float32) - b.astype(jnp.float32), after, before)
  update_sq = slots.slot_sq_norms(routing, delta)
  moved = update_sq > 0
  keep = slots.expand(routing, delta, moved)
  out = {"update_sq": update_sq,
         "drift_sq": slots.slot_sq_norms(routing, jax.tree.map(jnp.subtract, after, init)),
         "dot": slots.slot_inner(routing, delta, previous),
         "previous_sq": slots.slot_sq_norms(routing, previous)}
  previous = jax.tree.map(lambda d, p, k: jnp.where(k, d, p), delta, previous, keep)
  return out, previous, has_previous | moved


def slot_figures(routing: Any, before: Any, after: Any, init: Any, monitor: Monitor
                 ) -> dict[str, np.ndarray]:
  """[num_slots] update and drift norms and the cosine of consecutive updates
  (NaN where a slot has no previous update or did not move); updates `monitor`."""
  if monitor.previous is None:
    monitor.previous = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), after)
    monitor.has_previous = jnp.zeros((routing.num_slots,), bool)
  had = np.asarray(monitor.has_previous)
  out, monitor.previous, monitor.has_previous = _figures(
      before, after, init, monitor.previous, monitor.has_previous, routing=routing)
  out = {k: np.asarray(v, np.float64) for k, v in jax.device_get(out).items()}
  denom = np.sqrt(out["update_sq"] * out["previous_sq"])
  ok = had & (denom > 0)
  cos = np.where(ok, out["dot"] / np.where(ok, denom, 1.0), np.nan)
  return {"update_norm": np.sqrt(out["update_sq"]), "drift": np.sqrt(out["drift_sq"]),
          "update_cos": cos}


def slot_rates(optimizer: Any, state: dict, steps: np.ndarray, step: int,
               rate: Any) -> np.ndarray:
  """[num_slots] rate of each slot's last step this iteration (its next one when
  it took none): SlotAdamW's own, or `rate` (the joint schedule) at the
  optimizer's last count."""
  if isinstance(optimizer, slot_adamw.SlotAdamW):
    count = np.asarray(jax.device_get(state["opt_state"]["count"]))
    return np.asarray(optimizer.rates(count - (steps > 0), step), np.float64)
  last = max(int(jax.device_get(state["step"])) - 1, 0)
  value = rate(last) if callable(rate) else rate
  return np.full(len(steps), float(value))


def slot_steps(optimizer: Any, before: Any, state: dict, num_slots: int, parts: int) -> np.ndarray:
  """[num_slots] optimizer steps each slot took this iteration."""
  if isinstance(optimizer, slot_adamw.SlotAdamW):
    return np.asarray(jax.device_get(state["opt_state"]["count"])) - before
  return np.full(num_slots, parts)


def name_figures(routing: Any, figures: dict[str, np.ndarray],
                 grad_norms: list[list[float]]) -> dict[str, float]:
  """The figures (module doc) as metric keys, one per slot."""
  out = {}
  for slot, name in enumerate(schemes.slot_names(routing)):
    for key, values in figures.items():
      if np.isfinite(values[slot]):
        out[f"{key}/{name}"] = float(values[slot])
    if grad_norms[slot]:
      out[f"grad_norm_mb/{name}"] = float(np.mean(grad_norms[slot]))
      out[f"grad_norm_mb_max/{name}"] = float(np.max(grad_norms[slot]))
  return out


def minibatch_grad_norms(parts: list[dict], plan: list[schemes.Minibatch],
                         num_slots: int) -> list[list[float]]:
  """Per slot, its pre-clip gradient norm on each minibatch that stepped it."""
  out = [[] for _ in range(num_slots)]
  for raw, mb in zip(parts, plan):
    for slot in range(num_slots) if mb.slot is None else (mb.slot,):
      out[slot].append(float(raw["slot_grad_norms"][slot]))
  return out


@functools.partial(jax.jit, static_argnames=("temperature",))
def _base_logp(store, rows, *, temperature: float):
  return store.token_logprobs(rows["tokens"], rows["valid"], {}, reference=True,
                              temperature=temperature)[0]


def kl_base(store: Any, batch: batch_lib.TrainBatch, host: dict[str, np.ndarray],
            update_rows: int, temperature: float, compile_ahead: bool = True,
            longest: int | None = None, base_logp: np.ndarray | None = None) -> dict[str, float]:
  """kl_base/<role> (module doc) of a step's rows, `host` its arrays on the host.

  The base scores the rows in update chunks (rl.batch.length_chunks of
  update_rows rows, compiled ahead like the update's), so memory stays that of
  a chunk; `base_logp` ([B, S - 1], e.g. the KL penalty's base reference) is
  used instead when given.
  """
  roles = batch.roles
  k3 = np.zeros(len(roles))
  tokens = np.zeros(len(roles))

  def add(old, base, mask, role):
    delta = np.where(mask, base.astype(np.float64) - old, 0.0)
    value = (np.exp(delta) - delta - 1.0) * mask
    np.add.at(k3, role, value.sum(-1))
    np.add.at(tokens, role, mask.sum(-1))

  if base_logp is not None:
    add(host["old_logp"], np.asarray(base_logp), host["mask"], host["role"])
  else:
    frozen = store.replace(trainable={})
    static = {"temperature": temperature}
    for rows, length, padded in batch_lib.length_chunks(
        host["valid"], np.arange(batch.num_calls), update_rows):
      chunk = batch_lib.group_arrays(host, rows, length, padded)
      scored = {k: jax.device_put(chunk[k]) for k in ("tokens", "valid")}
      program = update.program_ahead(_base_logp, (frozen,), scored, static, compile_ahead,
                                     longest)
      add(chunk["old_logp"], np.asarray(program(frozen, scored)), chunk["mask"], chunk["role"])
  return {f"kl_base/{role}": float(k3[i] / tokens[i]) for i, role in enumerate(roles)
          if tokens[i] > 0}


def start(state: dict, optimizer: Any) -> tuple[Any, np.ndarray | None]:
  """What the figures need from before a step's update: a copy of the trainable
  slots (the update donates the state) and SlotAdamW's per-slot step counts."""
  before = jax.tree.map(jnp.copy, state["trainable"])
  counts = None
  if isinstance(optimizer, slot_adamw.SlotAdamW):
    counts = np.asarray(jax.device_get(state["opt_state"]["count"]))
  return before, counts


def figures(routing: Any, optimizer: Any, state: dict, started: tuple[Any, np.ndarray | None],
            init: Any, monitor: Monitor, parts: list[dict], plan: list[schemes.Minibatch],
            step: int, rate: Any) -> dict[str, float]:
  """Every per-slot figure of the module doc but kl_base, named, after a step's update.

  `started` is start()'s, `plan` the minibatches of `parts` (the raw metrics of
  each optimizer step), `rate` the joint optimizer's schedule (build.learning_rate).
  """
  before, counts = started
  steps = slot_steps(optimizer, counts, state, routing.num_slots, len(parts))
  values = slot_figures(routing, before, state["trainable"], init, monitor)
  values["lr"] = slot_rates(optimizer, state, steps, step, rate)
  values["opt_steps"] = steps.astype(np.float64)
  return name_figures(routing, values, minibatch_grad_norms(parts, plan, routing.num_slots))
