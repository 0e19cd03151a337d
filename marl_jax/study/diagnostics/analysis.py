"""Per-run summary (base, peak and final accuracy, gains) and the terminal-cliff detector.

The accuracy curve is `eval/accuracy` over the evaluation steps of
metrics.jsonl; step 0 is the base model (evaluated before any update).

Terminal cliff (CliffConfig): with a_0 (base) .. a_n (last evaluation) and
peak = max_i a_i, the run has fallen off a cliff when
  1. it has at least `window` evaluations after the base (n >= window),
  2. the last evaluation is at least `min_drop` below the peak
     (accuracy in [0, 1]: 0.10 = ten points), and
  3. none of the last `window` evaluations comes back to within `min_drop`
     of the peak (each is <= peak - min_drop): the fall is not a blip.
The cliff step is the first evaluation after the peak from which every
evaluation to the end stays at or below peak - min_drop. With the defaults
(min_drop 0.10, window 3) and 128 eval problems one evaluation has a
standard error of at most 0.044, so three evaluations in a row ten points
under the peak are unlikely to be noise.

The relative form (CliffConfig.relative = f > 0) puts the floor at
peak - f * (peak - a_0) instead: the run gives back at least the share f of
its peak's gain over the base and does not recover (the same window). A run
that never rose above its base has no relative cliff. The absolute form can
exceed a short run's whole gain (the tiny study gained about 0.10 in 30
steps); the relative form scales with what the run learned, but on a small
gain it flags small, noisier drops: read it beside the sensitivity table
(diagnostics.cliffs).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import numpy as np

from marl_jax.trainer.metrics import read_jsonl

ACCURACY = "eval/accuracy"


@dataclasses.dataclass(frozen=True)
class CliffConfig:
  """The terminal-cliff definition (module docstring)."""

  min_drop: float = 0.10
  window: int = 3
  metric: str = ACCURACY
  relative: float = 0.0  # > 0: the relative form, the share of the peak's gain given back

  def __post_init__(self):
    if not 0.0 < self.min_drop <= 1.0:
      raise ValueError(f"CliffConfig.min_drop={self.min_drop} must be in (0, 1] (accuracy "
                       "points as a fraction).")
    if self.window < 1:
      raise ValueError(f"CliffConfig.window={self.window} must be >= 1 evaluation.")
    if not 0.0 <= self.relative <= 1.0:
      raise ValueError(f"CliffConfig.relative={self.relative} must be in [0, 1] (0: the "
                       "absolute form; else the share of the peak's gain over the base "
                       "given back).")

  def rule(self) -> str:
    """The rule in a few words: 'drop >= 0.10' or 'gives back >= 50% of the gain'."""
    if self.relative:
      return f"gives back >= {self.relative:.0%} of the peak's gain over the base"
    return f"drop >= {self.min_drop:.2f} below the peak"

  def floor(self, base: float, peak: float) -> float | None:
    """The accuracy at or below which an evaluation counts as fallen; None when
    the relative form meets a run that never rose above its base."""
    if not self.relative:
      return peak - self.min_drop
    gain = peak - base
    return peak - self.relative * gain if gain > 1e-12 else None


@dataclasses.dataclass(frozen=True)
class Cliff:
  found: bool
  step: int | None = None   # first step of the fall that never recovered
  drop: float = 0.0         # peak - last evaluation


@dataclasses.dataclass(frozen=True)
class RunSummary:
  """What one run reached. Accuracies are NaN when the run has no evaluation."""

  steps_done: int
  steps_total: int | None
  base: float
  peak: float
  peak_step: int
  final: float
  final_step: int
  cliff: Cliff

  @property
  def finished(self) -> bool:
    return self.steps_total is not None and self.steps_done >= self.steps_total

  @property
  def gain_peak(self) -> float:
    return self.peak - self.base

  @property
  def gain_end(self) -> float:
    return self.final - self.base


def curve(records: Sequence[dict], metric: str = ACCURACY) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of the records that hold `metric`, in step order."""
  points = sorted((r["step"], float(r[metric])) for r in records
                  if isinstance(r.get(metric), (int, float)) and "step" in r)
  if not points:
    return np.zeros(0, int), np.zeros(0)
  steps, values = zip(*points)
  return np.asarray(steps), np.asarray(values)


def detect_cliff(steps: Sequence[int], values: Sequence[float],
                 config: CliffConfig = CliffConfig()) -> Cliff:
  """The terminal cliff of an accuracy curve (module docstring); values[0] is the base."""
  values = np.asarray(values, float)
  if len(values) < config.window + 1:
    return Cliff(False)
  peak_index = int(np.argmax(values))
  floor = config.floor(float(values[0]), float(values[peak_index]))
  drop = float(values[peak_index] - values[-1])
  tail = values[-config.window:]
  if floor is None or np.any(tail > floor + 1e-12):
    return Cliff(False, drop=max(drop, 0.0))
  start = len(values) - 1
  while start - 1 > peak_index and values[start - 1] <= floor + 1e-12:
    start -= 1
  return Cliff(True, int(steps[start]), drop)


def summarize(records: Sequence[dict], cliff: CliffConfig = CliffConfig(),
              total_steps: int | None = None) -> RunSummary:
  """Base, peak, final accuracy and the cliff of a run's metric records."""
  steps, values = curve(records, cliff.metric)
  done = max((r.get("step", 0) for r in records), default=0)
  if not len(values):
    nan = math.nan
    return RunSummary(done, total_steps, nan, nan, 0, nan, 0, Cliff(False))
  peak = int(np.argmax(values))
  base = float(values[0]) if steps[0] == 0 else math.nan
  return RunSummary(done, total_steps, base, float(values[peak]), int(steps[peak]),
                    float(values[-1]), int(steps[-1]), detect_cliff(steps, values, cliff))


@dataclasses.dataclass
class RunData:
  """One run directory: its name, saved config (a dict) and metric records.

  variant: the sweep variant the run belongs to ('' for the main matrix).
  """

  name: str
  workdir: str
  config: dict[str, Any]
  records: list[dict]
  variant: str = ""

  @property
  def total_steps(self) -> int | None:
    return self.config.get("train", {}).get("steps")

  @property
  def cell(self) -> dict[str, Any]:
    """The run's place in the experiment matrix."""
    return cell_of(self.config)

  def summary(self, cliff: CliffConfig = CliffConfig()) -> RunSummary:
    return summarize(self.records, cliff, self.total_steps)


def cell_of(config: dict[str, Any]) -> dict[str, Any]:
  """workflow, task, scale, policy, seed and agents (N / M; 1 without) of a config dict."""
  workflow = config.get("workflow", {})
  options = workflow.get("options", {}) or {}
  name = workflow.get("name", "?")
  default_agents = {"voting": 3, "majority_vote": 3, "orch_workers": 3}.get(name, 1)
  return {"workflow": name, "task": config.get("task", {}).get("family", "?"),
          "scale": config.get("model", {}).get("preset", "?"),
          "policy": config.get("policy", {}).get("mode", "?"),
          "seed": config.get("seed", 0),
          "agents": int(options.get("n", options.get("m", default_agents)))}


def load_run(workdir: str, name: str | None = None) -> RunData:
  """Reads <workdir>/config.json and metrics.jsonl (either may be missing: {} / [])."""
  config: dict[str, Any] = {}
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    try:
      with open(path) as f:
        config = json.load(f)
    except json.JSONDecodeError as error:
      raise ValueError(f"{path} is not valid JSON ({error}); the run directory is damaged.")
  records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return RunData(name or os.path.basename(os.path.normpath(workdir)), workdir, config, records)


def spread(values: Sequence[float]) -> tuple[float, float, int]:
  """(mean, sample std (0 for one value), count) over the finite values."""
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
  if not len(v):
    return math.nan, math.nan, 0
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def format_spread(values: Sequence[float], digits: int = 3, signed: bool = False) -> str:
  """'mean ± std (n=k)' of the finite values; '-' without any."""
  mean, std, n = spread(values)
  if not n:
    return "-"
  sign = "+" if signed else ""
  return f"{mean:{sign}.{digits}f} ± {std:.{digits}f} (n={n})"
