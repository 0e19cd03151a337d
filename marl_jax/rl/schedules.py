"""Learning-rate schedules of the update: warmup, then cosine decay or a constant rate.

How a schedule is read is configuration (rl.schedule, rl.schedule_tail,
rl.schedule_ticks): whether the cosine stops at 0 at the horizon (`clamp`) or
goes on past it and climbs back (`periodic`, as the reference study's verl
trainer does), and what a tick is (an RL iteration, or each optimizer step of
a policy slot: rl.slot_adamw).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "constant")
# clamp: 0 from the horizon on (optax). periodic: lr 0.5 (1 + cos(pi k / T)) with k
# unclamped, HF's / verl's get_cosine_schedule_with_warmup at num_cycles=0.5.
TAILS = ("clamp", "periodic")
# iteration: one tick per RL iteration. update: one per optimizer step of a slot.
TICKS = ("iteration", "update")


def _cosine(lr: float, steps: int, tail: str) -> optax.Schedule:
  if tail == "clamp":
    return optax.cosine_decay_schedule(lr, steps, alpha=0.0)
  return lambda k: lr * 0.5 * (1.0 + jnp.cos(jnp.pi * k / steps))


def learning_rate(lr: float, total_steps: int, warmup_steps: int = 0,
                  schedule: str = "cosine", tail: str = "clamp") -> optax.ScalarOrSchedule:
  """The rate of the k-th tick (k = 0, 1, ...): a linear warmup that starts
  above zero, lr * (k + 1) / warmup_steps, as the reference trainer's does (a
  warmup from 0 made a run's first update a no-op), then cosine decay from lr
  to 0 at total_steps, held at 0 after it (tail 'clamp') or going on as
  0.5 lr (1 + cos(pi (k - warmup) / (total - warmup))) past it, back to lr at
  twice the horizon (tail 'periodic'); or a constant rate (a float, not a
  schedule: a schedule adds a step count to the optimizer state; the tail does
  not apply)."""
  if schedule not in SCHEDULES:
    raise ValueError(f"rl.schedule={schedule!r} is unknown; valid: {SCHEDULES}.")
  if tail not in TAILS:
    raise ValueError(f"rl.schedule_tail={tail!r} is unknown; valid: {TAILS}.")
  if warmup_steps < 0:
    raise ValueError(f"rl.warmup_steps={warmup_steps} must be >= 0.")
  warmup = lambda k: lr * jnp.minimum(k + 1, warmup_steps) / max(warmup_steps, 1)
  if schedule == "cosine":
    decay = _cosine(lr, max(total_steps - warmup_steps, 1), tail)
    return optax.join_schedules([warmup, decay], [warmup_steps]) if warmup_steps else decay
  return warmup if warmup_steps else lr


def rate_at(rate: optax.ScalarOrSchedule, ticks) -> jnp.ndarray:
  """A schedule or constant rate at `ticks` (any shape), as a float32 array."""
  ticks = jnp.asarray(ticks)
  if callable(rate):
    return jnp.asarray(rate(ticks), jnp.float32)
  return jnp.full(ticks.shape, rate, jnp.float32)
