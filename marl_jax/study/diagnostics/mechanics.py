"""The update mechanics a run trained under, and what they predict for same-role amplification.

  Mechanics.of(config)   from a run's config.json: rl.update_scheme ('joint'
                         when absent: every run before the option existed),
                         rl.minibatch_rows, rl.aggregation, rl.epochs,
                         rl.minibatches, the policy mode and the lr schedule
  learning_rates(run)    per training step: lr/<role> as logged, else the
                         config's schedule (runs from before lr/<role>)
  Load.of(records, role) the role's and the batch's rows and tokens per step
  predict(...)           claim 3's predicted ratios, N agents vs 1

How a role's rows become a gradient and an update (one row's gradient g, a
role with r rows in an optimizer step whose loss is divided by D):
  joint      one optimizer step per minibatch (rl.minibatches) over every
             role's rows, its loss divided by the whole minibatch's
             denominator: rows (seq_mean_*) or tokens (token_mean). The role's
             gradient is |sum g| / D: r / D if its rows' gradients align,
             sqrt(r) / D if they are independent. More agents add rows to
             the numerator and to the denominator, so voting n = 3 vs n = 1
             (3 + 1 against 1 + 1 rows an episode) predicts (3/4) / (1/2) =
             1.5 aligned and (sqrt(3)/4) / (1/2) = 0.87 independent, and
             orch_workers m = 3 vs 1 (3 + 2 against 1 + 2) 1.8 and 1.04.
  reference  the slot's rows (its role's under IP, all under SP) cut into
             minibatches of rl.minibatch_rows (a last short one), one step
             each, each loss divided by its own rows: K = ceil(rows /
             minibatch_rows) steps per epoch, each gradient a mean (ratio 1
             aligned, sqrt(rows per step of the 1-agent run / of the N-agent
             run) independent).
Under Adam a step moves each parameter by about lr whatever the gradient's
scale, so a role's update norm per iteration is ~ K * lr when its K steps
align and ~ sqrt(K) * lr when they are independent: the predicted update-norm
ratio is the ratio of mean K * lr (aligned) or mean sqrt(K) * lr (independent)
over the window. Under the joint scheme K is the same for both runs, so the
prediction is the ratio of their learning rates (1 on the same schedule):
Adam normalises the larger gradient away. Drift ||theta_t - theta_0|| sums
(or random-walks) the updates, so its predicted ratio is the update norm's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from marl_jax.rl import update
from marl_jax.study.diagnostics import gradients

SCHEMES = ("joint", "reference")
SEQ_MODES = ("seq_mean_token_mean", "seq_mean_token_sum", "constant")


@dataclasses.dataclass(frozen=True)
class Mechanics:
  """The update mechanics of one run (module docstring), with the defaults of
  runs from before each field existed."""

  scheme: str = "joint"
  minibatch_rows: int = 0
  aggregation: str = "seq_mean_token_mean"
  epochs: int = 1
  minibatches: int = 1
  own_slot: bool = True        # the role has a slot of its own (not SP)
  lr: float | None = None
  schedule: str = "cosine"
  warmup_steps: int = 0
  total_steps: int | None = None
  # the schedule the trainer ran when lr/<role> was not yet logged: ticks once
  # per iteration, clamped at 0 past total_steps (learning_rate reproduces it)
  plain_schedule: bool = True

  @classmethod
  def of(cls, config: dict[str, Any]) -> "Mechanics":
    rl = config.get("rl", {}) or {}
    scheme = rl.get("update_scheme", "joint")
    return cls(scheme=scheme if scheme in SCHEMES else "joint",
               minibatch_rows=int(rl.get("minibatch_rows", 0) or 0),
               aggregation=rl.get("aggregation", "seq_mean_token_mean"),
               epochs=max(int(rl.get("epochs", 1) or 1), 1),
               minibatches=max(int(rl.get("minibatches", 1) or 1), 1),
               own_slot=(config.get("policy", {}) or {}).get("mode") != "shared",
               lr=rl.get("lr"), schedule=rl.get("schedule", "cosine"),
               warmup_steps=int(rl.get("warmup_steps", 0) or 0),
               total_steps=(config.get("train", {}) or {}).get("steps"),
               plain_schedule=rl.get("schedule_ticks", "iteration") == "iteration" and
               rl.get("schedule_tail", "clamp") == "clamp")

  def describe(self) -> str:
    if self.scheme == "joint":
      per = "one optimizer step" if self.minibatches * self.epochs == 1 else \
          f"{self.minibatches * self.epochs} optimizer steps"
      return (f"joint scheme ({per} per iteration over every role's rows, loss divided by "
              f"the whole batch's {self._unit()}; aggregation {self.aggregation})")
    return (f"reference scheme ({self.minibatch_rows or 'all'}-row minibatches of each slot's "
            f"rows, one step each, loss divided by the minibatch's own {self._unit()}; "
            f"aggregation {self.aggregation})")

  def _unit(self) -> str:
    return "tokens" if self.aggregation == "token_mean" else "rows"

  def steps_per_epoch(self, slot_rows: float) -> float:
    """Optimizer steps a slot takes per epoch on slot_rows rows (module docstring)."""
    if self.scheme == "joint":
      return float(self.minibatches)
    if self.minibatch_rows <= 0 or slot_rows <= 0:
      return 1.0
    return float(math.ceil(slot_rows / self.minibatch_rows - 1e-9))

  def schedule_lr(self, steps: Sequence[int]) -> np.ndarray | None:
    """The learning rate of training steps `steps` (1-based; the rate of the
    step's first optimizer step) from the config; None when it cannot be
    reproduced (no rl.lr, or a schedule that ticks per update or is periodic:
    such runs log lr/<role>)."""
    if self.lr is None or not self.total_steps or not self.plain_schedule:
      return None
    try:
      rate = update.learning_rate(float(self.lr), int(self.total_steps), self.warmup_steps,
                                  self.schedule)
    except ValueError:
      return None
    ticks = self.epochs * (self.minibatches if self.scheme == "joint" else 1)
    ks = (np.asarray(steps, int) - 1).clip(min=0) * ticks
    if not callable(rate):
      return np.full(len(ks), float(rate))
    return np.asarray(rate(jnp.asarray(ks)), float)  # optax schedules take arrays


def learning_rates(records: Sequence[dict], mechanics: Mechanics
                   ) -> tuple[np.ndarray, np.ndarray, str] | None:
  """(steps, learning rate, source) per training step: the largest logged
  lr/<role or slot> (any slot that moves can cause a fall), else the config's
  schedule ('logged' / 'schedule'); None when neither is known."""
  logged = {}
  for r in records:
    values = [float(v) for k, v in r.items() if k.startswith("lr/") and
              isinstance(v, (int, float)) and math.isfinite(v)]
    if values:
      logged[r["step"]] = max(values)
  if logged:
    steps = np.asarray(sorted(logged))
    return steps, np.asarray([logged[s] for s in steps]), "logged"
  steps = np.asarray(sorted({r["step"] for r in records if "step" in r and r["step"] > 0}))
  if mechanics.total_steps:
    steps = np.arange(1, int(mechanics.total_steps) + 1)
  rates = mechanics.schedule_lr(steps) if len(steps) else None
  return None if rates is None else (steps, rates, "schedule")


@dataclasses.dataclass(frozen=True)
class Load:
  """Mean rows and completion tokens per training step over a window: the
  role's and the whole batch's (from calls/<role>, completion_tokens/<role>)."""

  role_rows: float
  role_tokens: float
  total_rows: float
  total_tokens: float

  @classmethod
  def of(cls, records: Sequence[dict], role: str,
         window: gradients.Window = (0.0, 1.0)) -> "Load | None":
    calls = gradients.role_means(records, "calls", window)
    tokens = gradients.role_means(records, "completion_tokens", window)
    if not calls.get(role):
      return None
    return cls(calls[role], tokens.get(role, calls[role]), sum(calls.values()),
               sum(tokens.values()) or sum(calls.values()))


def step_gradient(mechanics: Mechanics, load: Load, steps: float) -> tuple[float, float]:
  """(aligned, independent) norm of the role's gradient in one optimizer step,
  in units of one row's gradient norm (module docstring); steps: per epoch."""
  per_row = load.role_tokens / load.role_rows  # a row's weight in a token-sum loss
  weight = 1.0 if mechanics.aggregation == "seq_mean_token_mean" else per_row
  rows = load.role_rows / steps
  if mechanics.scheme == "joint":
    total = load.total_tokens if mechanics.aggregation == "token_mean" else load.total_rows
    denominator = total / steps
  else:
    slot_rows = rows if mechanics.own_slot else load.total_rows / steps
    slot_tokens = slot_rows * (per_row if mechanics.own_slot
                               else load.total_tokens / load.total_rows)
    denominator = slot_tokens if mechanics.aggregation == "token_mean" else slot_rows
  return weight * rows / denominator, weight * math.sqrt(rows) / denominator


@dataclasses.dataclass(frozen=True)
class Prediction:
  """Predicted ratios of a role's figures, N agents over 1 (module docstring)."""

  gradient: tuple[float, float]       # (aligned, independent) per optimizer step
  update: tuple[float, float]         # (aligned, independent) per iteration, under Adam
  steps: tuple[float, float]          # optimizer steps per iteration: (N agents, 1 agent)
  steps_logged: bool                  # from opt_steps/<role> (else from the config)
  lr_ratio: float                     # mean learning rate, N agents over 1
  lr_source: str                      # 'logged', 'schedule' or 'assumed equal'
  scheme: str                         # the N-agent run's Mechanics.describe()


def _steps_and_lr(records: Sequence[dict], role: str, mechanics: Mechanics, load: Load,
                  window: gradients.Window) -> tuple[np.ndarray, np.ndarray, bool, str]:
  """Per training step in the window: optimizer steps of the role's slot and its lr."""
  steps = np.asarray(sorted({r["step"] for r in records if f"calls/{role}" in r}))
  if not len(steps):
    return np.zeros(0), np.zeros(0), False, "assumed equal"
  steps = steps[gradients.in_window(steps, window)]
  logged = gradients.role_series(records, "opt_steps").get(role)
  slot_rows = load.role_rows if mechanics.own_slot else load.total_rows
  k = np.full(len(steps), mechanics.epochs * mechanics.steps_per_epoch(slot_rows))
  if logged is not None:
    found = dict(zip(logged[0].tolist(), logged[1].tolist()))
    k = np.asarray([found.get(int(s), kk) for s, kk in zip(steps, k)])
  lr_logged = gradients.role_series(records, "lr").get(role)
  if lr_logged is not None:
    found = dict(zip(lr_logged[0].tolist(), lr_logged[1].tolist()))
    lr = np.asarray([found.get(int(s), math.nan) for s in steps])
    if np.isfinite(lr).all():
      return k, lr, logged is not None, "logged"
  lr = mechanics.schedule_lr(steps)
  if lr is None:
    return k, np.ones(len(steps)), logged is not None, "assumed equal"
  return k, lr, logged is not None, "schedule"


def _ratio(a: float, b: float) -> float:
  return float(a / b) if b > 0 else math.nan


def predict(run_n: tuple[dict, Sequence[dict]], run_1: tuple[dict, Sequence[dict]],
            role: str, role_1: str | None = None,
            window: gradients.Window = (0.0, 1.0)) -> Prediction | None:
  """Claim 3's predicted ratios for `role`, the N-agent run over the 1-agent one.

  run_n, run_1: (config dict, metric records). role_1: the role's name in the
  1-agent run (the single workflow's generator stands for voting's). None when
  either run logged no calls of the role in the window.
  """
  role_1 = role_1 or role
  parts = []
  for (config, records), name in ((run_n, role), (run_1, role_1)):
    mechanics = Mechanics.of(config)
    load = Load.of(records, name, window)
    if load is None:
      return None
    k, lr, steps_logged, lr_source = _steps_and_lr(records, name, mechanics, load, window)
    if not len(k):
      return None
    per_epoch = float(np.mean(k)) / mechanics.epochs
    parts.append((mechanics, load, k, lr, steps_logged, lr_source,
                  step_gradient(mechanics, load, max(per_epoch, 1.0))))
  (m_n, _, k_n, lr_n, logged_n, src_n, g_n), (_, _, k_1, lr_1, logged_1, src_1, g_1) = parts
  sources = {src_n, src_1}
  if len(sources) > 1:  # one run's rate is unknown: compare the steps alone
    lr_n, lr_1, source = np.ones(len(k_n)), np.ones(len(k_1)), "assumed equal"
  else:
    source = sources.pop()
  aligned = _ratio(np.mean(k_n * lr_n), np.mean(k_1 * lr_1))
  independent = _ratio(np.mean(np.sqrt(k_n) * lr_n), np.mean(np.sqrt(k_1) * lr_1))
  return Prediction(gradient=(g_n[0] / g_1[0], g_n[1] / g_1[1]),
                    update=(aligned, independent),
                    steps=(float(np.mean(k_n)), float(np.mean(k_1))),
                    steps_logged=logged_n and logged_1,
                    lr_ratio=_ratio(np.mean(lr_n), np.mean(lr_1)), lr_source=source,
                    scheme=m_n.describe())
