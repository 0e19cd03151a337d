"""AdamW whose policy slots step alone: per-slot step counts, rates and masks.

optax.adamw keeps one step count for the whole trainable tree and moves every
entry at every step, so a slot whose gradient is zero (its role had no rows in
the minibatch) is still moved by its moments, and weight-decayed. The
reference study's trainer (PyTorch, one optimizer per policy) leaves such a
slot untouched. Here the moments, the weight decay and the step count of a
slot change only on a step where it is `active`, and each slot's rate is the
schedule at its own tick: the iteration (rl.schedule_ticks='iteration') or its
own count of optimizer steps ('update'). The update rule is optax.adamw's
(b1 0.9, b2 0.999, eps 1e-8; decoupled weight decay, scaled by the rate).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from marl_jax.rl import schedules
from marl_jax.rl import slots


@dataclasses.dataclass(frozen=True)
class SlotAdamW:
  """Static settings (hashable: a jit static argument). `routing` is the
  store's policies.store.Routing (which entries of the tree are which slot's)."""

  routing: Any
  lr: float
  total_steps: int
  warmup_steps: int = 0
  schedule: str = "cosine"
  tail: str = "clamp"
  ticks: str = "iteration"
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8

  def __post_init__(self):
    if self.ticks not in schedules.TICKS:
      raise ValueError(f"rl.schedule_ticks={self.ticks!r} is unknown; valid: {schedules.TICKS}.")
    self.rate_fn()  # checks the schedule's fields

  def rate_fn(self):
    return schedules.learning_rate(self.lr, self.total_steps, self.warmup_steps,
                                   self.schedule, self.tail)

  def init(self, params: Any) -> dict[str, Any]:
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return {"count": jnp.zeros((self.routing.num_slots,), jnp.int32), "mu": zeros(),
            "nu": zeros()}

  def ticks_of(self, count: Any, iteration: Any) -> jax.Array:
    """[num_slots] tick of each slot's next step, from its step count (before it)."""
    count = jnp.asarray(count)
    if self.ticks == "update":
      return count
    return jnp.broadcast_to(jnp.asarray(iteration, count.dtype), count.shape)

  def rates(self, count: Any, iteration: Any) -> jax.Array:
    """[num_slots] rate of each slot's next step."""
    return schedules.rate_at(self.rate_fn(), self.ticks_of(count, iteration))

  def step(self, grads: Any, state: dict[str, Any], params: Any, active: jax.Array,
           iteration: jax.Array) -> tuple[Any, dict[str, Any]]:
    """One AdamW step of the `active` slots ([num_slots] bool); (params, state).

    Inactive slots keep their parameters, moments and count bit for bit.
    """
    rates = self.rates(state["count"], iteration)
    count = state["count"] + active.astype(jnp.int32)
    steps = jnp.maximum(count, 1).astype(jnp.float32)
    at = lambda values: slots.expand(self.routing, params, values)
    on, lr = at(active), at(rates)
    correct1, correct2 = at(1 - self.b1 ** steps), at(1 - self.b2 ** steps)
    b1, b2, eps, decay = self.b1, self.b2, self.eps, self.weight_decay

    def leaf(p, g, m, v, on, lr, c1, c2):
      m_new = b1 * m + (1 - b1) * g
      v_new = b2 * v + (1 - b2) * g * g
      u = (m_new / c1) / (jnp.sqrt(v_new / c2) + eps) + decay * p
      p_new = p - (lr * u).astype(p.dtype)
      return (jnp.where(on, p_new, p), jnp.where(on, m_new.astype(m.dtype), m),
              jnp.where(on, v_new.astype(v.dtype), v))

    out = jax.tree.map(leaf, params, grads, state["mu"], state["nu"], on, lr, correct1, correct2)
    pick = lambda i: jax.tree.map(lambda _, o: o[i], params, out)
    return pick(0), {"count": count, "mu": pick(1), "nu": pick(2)}
