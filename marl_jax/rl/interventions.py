"""Per-role training interventions, each off by default (config.interventions).

  per-role KL anchor   not here: rl.kl_role_coefs gives each row a KL weight
                       (rl.batch), so only that role's loss is anchored.
  coherence            the study's gradient-coherence regularizer. Each role's
                       gradient g_r is scaled by
                           1 - lambda * max(0, cos(g_r, gbar_r)),
                       where gbar_r is an EMA of the role's post-scaling gradient,
                           gbar_r <- decay * gbar_r + (1 - decay) * g_r_scaled,
                       updated only when the role has a non-zero gradient. gbar
                       is kept per role in the trainer state
                       (state['interventions']['coherence_ema'], one copy of the
                       trainable pytree per role) and so is checkpointed.
  balance              gradient-mass balancing across roles (new; the study had
                       none). Mass m_r = |g_r|^2, share m_r / sum_k m_k.
                       cap:       roles over `balance_cap` are scaled down so that,
                                  after scaling, no share exceeds the cap (water-
                                  filling); never raises a gradient. When the cap
                                  cannot be met (fewer than 1/cap roles have a
                                  gradient), every active role is scaled down to
                                  the smallest active mass (equal shares).
                       equalize:  every active role is scaled to the mean mass,
                                  raised by at most `balance_max_gain`.
                       per_agent: each role's loss is divided by its number of
                                  parallel agents (the N generators, the M
                                  workers), so N agents weigh as one.
Coherence, cap and equalize act on the per-role gradients of the
`role_grads=True` path of rl.update.apply_minibatch, before they are summed,
clipped per slot and given to AdamW; they force that path on every step.
Under IP with AdamW a constant per-slot factor is mostly absorbed by Adam's
normalisation (it still moves the per-slot clip); these interventions bite
hardest under SP and hybrid, where the roles share parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

BALANCE_MODES = ("off", "cap", "equalize", "per_agent")


@dataclasses.dataclass(frozen=True)
class Interventions:
  """Static intervention settings (hashable: a jit static argument).

  coherence: lambda of the coherence regularizer, in [0, 1]; 0 = off.
  coherence_decay: EMA decay of gbar, in [0, 1).
  coherence_roles: role indices the regularizer scales; () = every role.
  balance: one of BALANCE_MODES.
  balance_cap: the largest share of gradient mass a role may keep (cap).
  balance_max_gain: the largest factor equalize raises a gradient by.
  role_loss_scale: per-role loss factor, one per role ((): all 1); per_agent
    fills it with 1 / agents.
  """

  coherence: float = 0.0
  coherence_decay: float = 0.9
  coherence_roles: tuple[int, ...] = ()
  balance: str = "off"
  balance_cap: float = 0.5
  balance_max_gain: float = 4.0
  role_loss_scale: tuple[float, ...] = ()

  def __post_init__(self):
    if not 0.0 <= self.coherence <= 1.0:
      raise ValueError(f"interventions.coherence={self.coherence} must be in [0, 1] "
                       "(0 turns the regularizer off).")
    if not 0.0 <= self.coherence_decay < 1.0:
      raise ValueError(f"interventions.coherence_decay={self.coherence_decay} must be in [0, 1).")
    if self.balance not in BALANCE_MODES:
      raise ValueError(f"interventions.balance={self.balance!r} is unknown; valid: "
                       f"{BALANCE_MODES}.")
    if not 0.0 < self.balance_cap <= 1.0:
      raise ValueError(f"interventions.balance_cap={self.balance_cap} must be in (0, 1].")
    if self.balance_max_gain < 1.0:
      raise ValueError(f"interventions.balance_max_gain={self.balance_max_gain} must be >= 1.")

  @property
  def needs_role_grads(self) -> bool:
    return self.coherence > 0 or self.balance in ("cap", "equalize")

  @property
  def active(self) -> bool:
    return self.needs_role_grads or bool(self.role_loss_scale)


def role_agents(workflow: Any) -> dict[str, int]:
  """Parallel agents of each role: the largest `agents` of its stages."""
  out = {role: 1 for role in workflow.roles}
  for group in workflow.groups:
    for stage in group:
      out[stage.role] = max(out[stage.role], stage.agents)
  return out


def from_config(config: ml_collections.ConfigDict, workflow: Any) -> Interventions:
  """The Interventions of config.interventions for this workflow's roles.

  A config without an `interventions` block (runs made before it existed)
  gets every intervention off.
  """
  ic = config.get("interventions")
  if ic is None:
    return Interventions()
  roles = tuple(workflow.roles)
  chosen = tuple(ic.get("coherence_roles", ()) or ())
  unknown = sorted(set(chosen) - set(roles))
  if unknown:
    raise ValueError(f"interventions.coherence_roles has {unknown}, not roles of workflow "
                     f"{workflow.name!r}; its roles are {roles}.")
  balance = ic.get("balance", "off")
  scale: tuple[float, ...] = ()
  if balance == "per_agent":
    agents = role_agents(workflow)
    scale = tuple(1.0 / agents[r] for r in roles)
  return Interventions(
      coherence=float(ic.get("coherence", 0.0)),
      coherence_decay=float(ic.get("coherence_decay", 0.9)),
      coherence_roles=tuple(roles.index(r) for r in chosen),
      balance=balance, balance_cap=float(ic.get("balance_cap", 0.5)),
      balance_max_gain=float(ic.get("balance_max_gain", 4.0)), role_loss_scale=scale)


def init_state(state: dict[str, Any], cfg: Interventions, num_roles: int) -> dict[str, Any]:
  """Adds the interventions' persistent state to the trainer state (when one needs any).

  Coherence keeps gbar: one float32 copy of the trainable pytree per role,
  zeros (cos = 0, factor 1) until a role's first gradient.
  """
  if cfg.coherence <= 0:
    return state
  ema = jax.tree.map(lambda x: jnp.zeros((num_roles, *x.shape), jnp.float32),
                     state["trainable"])
  return {**state, "interventions": {"coherence_ema": ema}}


def row_scale(role: jax.Array, num_roles: int, cfg: Interventions | None) -> jax.Array:
  """[B] loss weight of each row: its role's role_loss_scale (1 without one)."""
  if cfg is None or not cfg.role_loss_scale:
    return jnp.ones(role.shape, jnp.float32)
  if len(cfg.role_loss_scale) != num_roles:
    raise ValueError(f"Interventions.role_loss_scale has {len(cfg.role_loss_scale)} entries "
                     f"for {num_roles} roles.")
  return jnp.asarray(cfg.role_loss_scale, jnp.float32)[role]


def _per_role_dot(a: Any, b: Any) -> jax.Array:
  """[R] inner products of matching rows of two stacked pytrees."""
  return sum(jnp.sum((x.astype(jnp.float32) * y.astype(jnp.float32)).reshape(x.shape[0], -1),
                     axis=1) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _scale_roles(grads_r: Any, factors: jax.Array) -> Any:
  return jax.tree.map(
      lambda g: g * factors.reshape(-1, *([1] * (g.ndim - 1))).astype(g.dtype), grads_r)


def coherence_factors(grads_r: Any, ema: Any, lam: float, roles: Sequence[int] = ()
                      ) -> tuple[jax.Array, jax.Array]:
  """(factors [R], cos [R]): 1 - lam * max(0, cos(g_r, gbar_r)) for the chosen roles."""
  dot = _per_role_dot(grads_r, ema)
  norms = jnp.sqrt(_per_role_dot(grads_r, grads_r) * _per_role_dot(ema, ema))
  cos = jnp.where(norms > 0, dot / jnp.maximum(norms, 1e-30), 0.0)
  factors = 1.0 - lam * jnp.maximum(cos, 0.0)
  if roles:
    chosen = np.zeros(cos.shape[0], bool)
    chosen[list(roles)] = True
    factors = jnp.where(chosen, factors, 1.0)
  return factors, cos


def balance_factors(mass: jax.Array, mode: str, cap: float = 0.5,
                    max_gain: float = 4.0) -> jax.Array:
  """[R] factors on the per-role gradients (module docstring) from masses |g_r|^2."""
  active = mass > 0
  count = active.sum()
  safe = jnp.where(active, mass, 1.0)
  if mode == "equalize":
    target = mass.sum() / jnp.maximum(count, 1)
    return jnp.where(active, jnp.minimum(jnp.sqrt(target / safe), max_gain), 1.0)
  if mode != "cap":
    raise ValueError(f"balance_factors mode={mode!r}; valid: ('cap', 'equalize').")
  capped = jnp.zeros(mass.shape, bool)
  for _ in range(mass.shape[0]):  # water-filling: the capped set only grows
    free = jnp.where(capped, 0.0, mass).sum()
    total = free / jnp.maximum(1.0 - capped.sum() * cap, 1e-6)
    capped = capped | (mass > cap * total)
  free = jnp.where(capped, 0.0, mass).sum()
  total = free / jnp.maximum(1.0 - capped.sum() * cap, 1e-6)
  water = jnp.where(capped, jnp.sqrt(cap * total / safe), 1.0)
  smallest = jnp.min(jnp.where(active, mass, jnp.inf))
  equal = jnp.where(active, jnp.sqrt(smallest / safe), 1.0)
  return jnp.where(count * cap > 1.0, water, equal)


def apply(grads_r: Any, state: dict[str, Any], cfg: Interventions
          ) -> tuple[Any, dict[str, Any], dict[str, jax.Array]]:
  """Scales stacked per-role gradients [R, ...]; returns (grads_r, new state, metrics).

  Order: coherence (and its EMA update), then balancing. Metrics are [R]
  arrays: coherence_cos, coherence_scale, balance_scale.
  """
  metrics: dict[str, jax.Array] = {}
  state = dict(state)
  if cfg.coherence > 0:
    if "coherence_ema" not in state:
      raise ValueError("interventions.coherence is on but the trainer state has no "
                       "'interventions' entry; build it with rl.interventions.init_state.")
    ema = state["coherence_ema"]
    factors, cos = coherence_factors(grads_r, ema, cfg.coherence, cfg.coherence_roles)
    grads_r = _scale_roles(grads_r, factors)
    present = _per_role_dot(grads_r, grads_r) > 0
    decay = cfg.coherence_decay

    def update(e, g):
      new = decay * e + (1.0 - decay) * g.astype(jnp.float32)
      return jnp.where(present.reshape(-1, *([1] * (e.ndim - 1))), new, e)

    state["coherence_ema"] = jax.tree.map(update, ema, grads_r)
    metrics.update(coherence_cos=cos, coherence_scale=factors)
  if cfg.balance in ("cap", "equalize"):
    factors = balance_factors(_per_role_dot(grads_r, grads_r), cfg.balance, cfg.balance_cap,
                              cfg.balance_max_gain)
    grads_r = _scale_roles(grads_r, factors)
    metrics["balance_scale"] = factors
  return grads_r, state, metrics


METRIC_KEYS = ("coherence_cos", "coherence_scale", "balance_scale")


def name_metrics(raw: dict, roles: Sequence[str]) -> dict[str, float]:
  """intervention/<metric>/<role> from the raw [R] arrays of rl.update.apply_minibatch."""
  out = {}
  for key in METRIC_KEYS:
    if key in raw:
      values = np.asarray(raw[key])
      out.update({f"intervention/{key}/{role}": float(values[i]) for i, role in enumerate(roles)})
  return out
