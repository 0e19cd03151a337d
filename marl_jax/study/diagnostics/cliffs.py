"""Terminal cliffs under several rules, and whether updates could have made them.

  RULES         the sensitivity grid: absolute drops of 0.05, 0.10 and 0.15
                below the peak and relative give-backs of 25%, 50% and 75% of
                the peak's gain over the base (analysis.CliffConfig), each
                sustained over the last 2 and the last 3 evaluations
  inspected_lr  the mean learning rate of the updates a rule's window
                inspects, as a share of the run's peak rate
  sensitivity   per rule: how many runs of each group fall off a cliff, and
                how many of them did so while the rate was ~0
  paired_excess whether one group falls more often than the other on the
                same pairs: McNemar's exact one-sided test on the pairs where
                only one of them fell (1 of 36 against 0 is no evidence)

The updates a rule inspects are those between its first and its last
evaluation (for a window of one, those leading to the last evaluation): they
decide whether a run that fell comes back. Where their mean rate is below
LOW_LR of the run's peak rate (a cosine schedule's tail), the parameters
barely move there, so "does not recover" holds by construction and a cliff
there cannot have been caused by those updates. The rate is the logged
lr/<role> (the largest over slots), else the config's schedule
(diagnostics.mechanics.learning_rates).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

from marl_jax.study.diagnostics import analysis
from marl_jax.study.diagnostics import mechanics

LOW_LR = 0.1
WINDOWS = (2, 3)
RULES = tuple(analysis.CliffConfig(min_drop=d, window=w) for w in WINDOWS
              for d in (0.05, 0.10, 0.15)) + tuple(
    analysis.CliffConfig(relative=f, window=w) for w in WINDOWS for f in (0.25, 0.5, 0.75))


def inspected_span(steps: Sequence[int], window: int) -> tuple[int, int] | None:
  """(after, through): the training steps whose updates the last `window`
  evaluations inspect (module docstring); None with too few evaluations."""
  steps = list(steps)
  first = max(window, 2)
  if len(steps) < first:
    return None
  return int(steps[-first]), int(steps[-1])


def inspected_lr(run: analysis.RunData, window: int,
                 metric: str = analysis.ACCURACY) -> float | None:
  """Mean learning rate over the updates the window inspects, over the run's
  peak rate; None when the rate or the evaluations are unknown."""
  rates = mechanics.learning_rates(run.records, mechanics.Mechanics.of(run.config))
  span = inspected_span(analysis.curve(run.records, metric)[0], window)
  if rates is None or span is None:
    return None
  steps, lr, _ = rates
  peak = float(lr.max()) if len(lr) else 0.0
  chosen = lr[(steps > span[0]) & (steps <= span[1])]
  if peak <= 0 or not len(chosen):
    return None
  return float(chosen.mean()) / peak


def low_lr(run: analysis.RunData, window: int, metric: str = analysis.ACCURACY) -> bool:
  share = inspected_lr(run, window, metric)
  return share is not None and share < LOW_LR


@dataclasses.dataclass(frozen=True)
class Count:
  """One group's runs under one rule."""

  found: tuple[bool, ...]      # per run: a terminal cliff
  low: tuple[bool, ...]        # per run: the inspected rate was ~0
  lr_known: int                # runs whose inspected rate is known

  @property
  def cliffs(self) -> int:
    return sum(self.found)

  @property
  def runs(self) -> int:
    return len(self.found)

  @property
  def cliffs_low_lr(self) -> int:
    """Cliffs found where the inspected rate was ~0."""
    return sum(f and l for f, l in zip(self.found, self.low))


def count(runs: Sequence[analysis.RunData], rule: analysis.CliffConfig) -> Count:
  found, low, known = [], [], 0
  for run in runs:
    steps, values = analysis.curve(run.records, rule.metric)
    found.append(analysis.detect_cliff(steps, values, rule).found)
    share = inspected_lr(run, rule.window, rule.metric)
    low.append(share is not None and share < LOW_LR)
    known += share is not None
  return Count(tuple(found), tuple(low), known)


def paired_excess(a: Count, b: Count) -> tuple[int, int, float]:
  """(pairs where only a has a cliff, pairs where only b has, one-sided exact
  p-value that a has more): McNemar's exact test; a and b count the same
  pairs in the same order."""
  only_a = sum(x and not y for x, y in zip(a.found, b.found))
  only_b = sum(y and not x for x, y in zip(a.found, b.found))
  n = only_a + only_b
  p = sum(math.comb(n, k) for k in range(only_a, n + 1)) / 2 ** n
  return only_a, only_b, float(p)


def sensitivity(groups: Mapping[str, Sequence[analysis.RunData]],
                rules: Sequence[analysis.CliffConfig] = RULES
                ) -> list[tuple[analysis.CliffConfig, dict[str, Count]]]:
  """Per rule, each group's Count (groups: e.g. {'isolated': runs, 'shared': runs})."""
  return [(rule, {name: count(runs, rule) for name, runs in groups.items()}) for rule in rules]


def span_shares(runs: Sequence[analysis.RunData], window: int,
                metric: str = analysis.ACCURACY) -> list[float]:
  """The inspected_lr of every run whose rate is known (for a report's spread)."""
  shares = [inspected_lr(run, window, metric) for run in runs]
  return [s for s in shares if s is not None and math.isfinite(s)]

