"""How a step's rows become optimizer steps: the joint scheme or the reference study's.

  joint      one optimizer step per minibatch (rl.minibatches, shuffled) over
             every role's rows, normalised over all of them; every slot steps
             (today's default, optax AdamW).
  reference  as the reference study's verl trainer: each trainable slot's rows,
             in rollout order (episode-major: a problem's samples sit together;
             rl.shuffle=True shuffles them), cut into minibatches of
             rl.minibatch_rows rows; one optimizer step per minibatch on that
             slot alone (rl.slot_adamw), its loss normalised over its own rows,
             every minibatch scored against the rollout's logprobs (so later
             ones are off-policy and the PPO clip, and rl.dual_clip, act).

A slot's rows are the rows routed to it: every row under SP, its role's rows
under IP; under hybrid the shared slot 0 takes every row and each per-role
slot its role's rows, so a row's gradient reaches the shared slot on slot 0's
steps and its role's slot on that slot's steps (the other part of it is not
applied). When a slot's rows do not fill the last minibatch, that minibatch is
short (its loss normalised over the rows it has): a slot with fewer rows than
rl.minibatch_rows takes one short step, a slot with no rows none.

Programs: with rl.update_rows > 0 (the default) each minibatch is cut into
update chunks of one row count (rl.batch.length_chunks), so the reference
scheme runs the joint scheme's programs, compiled ahead per length bucket;
with rl.update_rows = 0 a minibatch runs whole, a program per minibatch size.
On a mesh each minibatch runs as the joint scheme's do (rl.sharded_update),
with the slots that step replicated beside it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from marl_jax.rl import schedules

UPDATE_SCHEMES = ("joint", "reference")
# The config argument `mechanics` (trainer.config; '' = joint, or reference under study=1):
# joint      the joint scheme, this library's default.
# reference  the reference study's verl trainer, its schedule quirks included.
# clean      the reference's update without its schedule quirks (clamped, per iteration).
MECHANICS = ("joint", "reference", "clean")


@dataclasses.dataclass(frozen=True)
class Minibatch:
  """The row indices of one optimizer step, and the slot it steps (None: every slot)."""

  rows: np.ndarray
  slot: int | None = None


def slot_rows(row_roles: Sequence[str], routing: Any) -> list[np.ndarray]:
  """Per slot, the indices of the rows routed to it, in rollout order."""
  out = [[] for _ in range(routing.num_slots)]
  for i, role in enumerate(row_roles):
    for slot in routing.slots_of(role):
      out[slot].append(i)
  return [np.asarray(rows, np.int64) for rows in out]


def reference_minibatches(row_roles: Sequence[str], routing: Any, minibatch_rows: int,
                          rng: np.random.Generator | None = None) -> list[Minibatch]:
  """The reference scheme's minibatches of a step (module doc), slot by slot.

  Args:
    row_roles: the role of each real row (padding rows left out).
    routing: the store's policies.store.Routing.
    minibatch_rows: rows per minibatch (the reference's 512: 64 prompts x 8 samples).
    rng: shuffles each slot's rows when given (rl.shuffle); None keeps rollout order.
  """
  if isinstance(minibatch_rows, bool) or not isinstance(minibatch_rows, (int, np.integer)) \
      or minibatch_rows < 1:
    raise ValueError(f"rl.minibatch_rows={minibatch_rows!r} must be a positive number of rows "
                     "(the reference study's: 512).")
  out = []
  for slot, rows in enumerate(slot_rows(row_roles, routing)):
    if rng is not None:
      rows = rng.permutation(rows)
    out += [Minibatch(rows[a:a + minibatch_rows], slot)
            for a in range(0, len(rows), minibatch_rows)]
  return out


def slot_names(routing: Any) -> list[str]:
  """The name of each slot in metric keys: the role it serves (IP, hybrid's
  per-role slots), or 'shared' (SP's one slot, hybrid's slot 0)."""
  if routing.mode == "isolated":
    return list(routing.roles)
  return ["shared"] + (list(routing.roles) if routing.mode == "hybrid" else [])


def set_mechanics(c: Any, mechanics: str) -> None:
  """Sets config `c`'s update mechanics (MECHANICS). The reference's were read
  from its code (XHMY/marl-llm-workflows on rllm and a verl fork: dp_actor.py,
  fsdp_workers.py, core_algos.py); each setting says which quirk it reproduces."""
  if mechanics not in MECHANICS:
    raise ValueError(f"Config argument mechanics={mechanics!r} is unknown; valid: {MECHANICS}.")
  if mechanics == "joint":
    return
  rl = c.rl
  # Each policy's rows cut into minibatches of ppo_mini_batch_size = 64 prompts x 8
  # samples = 512 rows, one optimizer step each: a role with N parallel agents takes
  # about N steps an iteration under IP. Here: rl.minibatch_rows' default, a batch's
  # worth of episodes (rollout.batch_size x group_size, whatever overrides set them).
  rl.update_scheme = "reference"
  # Rows kept in rollout order (shuffle=False): a problem's samples, which share
  # their group's statistics, sit in one minibatch.
  rl.shuffle = False
  # clip_ratio_c = 3: later minibatches are off-policy; a negative advantage's loss
  # is bounded once its ratio passes 3.
  rl.dual_clip = 3.0
  # The reference's AdamW weight decay (this library's default is 0.0).
  rl.weight_decay = 0.01
  if mechanics == "reference":
    # Quirk: verl's scheduler advances on update calls, not iterations; here each
    # slot's rate ticks once per optimizer step of that slot, so a slot taking 3
    # steps an iteration reaches the horizon (train.steps ticks) 3x sooner ...
    rl.schedule_ticks = "update"
    # ... and its cosine is HF's, unclamped: 0 at the horizon, then back up to lr.
    rl.schedule_tail = "periodic"


def config_problems(config: Any) -> list[str]:
  """What is wrong with a run config's update mechanics (rl.*), for trainer.config.validate."""
  rl, problems = config.get("rl", {}), []
  get = lambda name, default: rl.get(name, default)
  for name, valid in (("update_scheme", UPDATE_SCHEMES), ("schedule_ticks", schedules.TICKS),
                      ("schedule_tail", schedules.TAILS)):
    if get(name, valid[0]) not in valid:
      problems.append(f"rl.{name}={get(name, None)!r} is unknown; valid: {valid}")
  rows, decay, dual = get("minibatch_rows", 1), get("weight_decay", 0.0), get("dual_clip", 0.0)
  number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
  if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
    problems.append(f"rl.minibatch_rows={rows!r} must be a positive number of rows (the rows "
                    "of one optimizer step of a slot under rl.update_scheme='reference')")
  if not number(decay) or decay < 0:
    problems.append(f"rl.weight_decay={decay!r} must be a number >= 0")
  if not number(dual) or (dual and not dual > 1):
    problems.append(f"rl.dual_clip={dual!r} must be 0 (off) or > 1 (the reference's 3.0)")
  if not isinstance(get("shuffle", True), bool):
    problems.append(f"rl.shuffle={get('shuffle', None)!r} must be true or false")
  scheme = get("update_scheme", "joint")
  if scheme == "joint" and get("schedule_ticks", "iteration") == "update":
    problems.append("rl.schedule_ticks='update' counts each slot's own optimizer steps, which "
                    "only rl.update_scheme='reference' takes; under 'joint' every slot steps "
                    "together: use rl.schedule_ticks='iteration'")
  if scheme == "reference":
    if get("minibatches", 1) != 1:
      problems.append(f"rl.minibatches={get('minibatches', 1)!r} cuts the joint scheme's rows; "
                      "under rl.update_scheme='reference' leave it at 1 and set "
                      "rl.minibatch_rows")
    inter = config.get("interventions", {}) or {}
    blocked = [f"interventions.{name}" for name, off in (("coherence", 0.0), ("balance", "off"))
               if inter.get(name, off) not in (off, "per_agent")]
    if blocked:
      problems.append(f"{', '.join(blocked)} reshape the joint step's per-role gradients, and "
                      "rl.update_scheme='reference' steps each slot alone: turn them off "
                      "(interventions.balance='per_agent' and rl.kl_role_coefs still work)")
  return problems
