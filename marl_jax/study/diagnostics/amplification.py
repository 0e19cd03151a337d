"""Same-role amplification (claim 3): a parallel role's update with N agents against N = 1.

A pair is an IP (or SP) run whose workflow has N >= 2 parallel agents of one
role (voting's generators, orch_workers' workers) and its 1-agent reference:
the same workflow, task, scale, policy and seed with n / m = 1 when the
sweep has it, else (voting only) the single workflow's generator, a proxy
with another prompt. Each pair holds, over the last third of both runs
(WINDOW), the ratio N agents / 1 agent of the role's mean
  update_norm/<role>   ||delta theta|| of its slot per iteration (primary)
  drift/<role>         ||theta_t - theta_0||                       (primary)
  grad_norm/<role>     pre-clip gradient norm                      (secondary)
(NaN where a run did not log the figure: runs from before the trainer
logged update norms and drift), the ratios the mechanics predict
(diagnostics.mechanics.predict), and the roles of either run that fail to
parse at the start (diagnostics.roles.start_parse): a reference that starts
broken is no reference.

`amplified` is the test of a list of ratios: above 1 in most pairs, and the
mean above 1 by more than two standard errors (one pair: above 1).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from marl_jax.study.diagnostics import analysis
from marl_jax.study.diagnostics import gradients
from marl_jax.study.diagnostics import mechanics
from marl_jax.study.diagnostics import roles

PARALLEL_ROLE = {"voting": "generator", "majority_vote": "generator", "orch_workers": "worker"}
WINDOW = (2 / 3, 1.0)
FIGURES = ("update_norm", "drift", "grad_norm")


@dataclasses.dataclass
class Pair:
  """An N-agent run, its 1-agent reference, and the role's ratios (module docstring)."""

  run: analysis.RunData
  ref: analysis.RunData
  role: str
  ref_role: str
  ratios: dict[str, float]                 # FIGURES -> N agents / 1 agent
  prediction: mechanics.Prediction | None
  ref_broken: list[str]                    # reference roles parsing < PARSE_FLOOR at the start
  run_broken: list[str]

  @property
  def proxy(self) -> bool:
    return self.ref.cell["workflow"] != self.run.cell["workflow"]

  @property
  def measured(self) -> bool:
    """Both runs logged the update norm and the drift."""
    return all(math.isfinite(self.ratios[k]) for k in ("update_norm", "drift"))


def reference(run: analysis.RunData, runs: Sequence[analysis.RunData]
              ) -> tuple[analysis.RunData, str] | None:
  """(1-agent reference, the role to read in it) of an N-agent run, or None."""
  c = run.cell
  same = lambda o, **kw: all(o.cell[k] == kw.get(k, c[k]) for k in
                             ("workflow", "task", "scale", "policy", "seed"))
  for o in runs:
    if o.cell["agents"] == 1 and same(o):
      return o, PARALLEL_ROLE[c["workflow"]]
  if c["workflow"] == "voting":
    # One role: the single workflow's SP and IP runs are the same model, so
    # either serves (a sweep may run only one of them).
    singles = [o for o in runs if same(o, workflow="single", policy=o.cell["policy"])]
    for o in sorted(singles, key=lambda o: o.cell["policy"] != c["policy"]):
      return o, "generator"
  return None


def pairs(runs: Sequence[analysis.RunData], policy: str = "isolated",
          window: gradients.Window = WINDOW) -> list[Pair]:
  """The pairs of `policy`'s runs with any of FIGURES logged in both runs."""
  out = []
  for run in runs:
    c = run.cell
    if c["policy"] != policy or c["workflow"] not in PARALLEL_ROLE or c["agents"] < 2:
      continue
    found = reference(run, runs)
    if not found:
      continue
    ref, ref_role = found
    role = PARALLEL_ROLE[c["workflow"]]
    ratios = {k: gradients.amplification(run.records, ref.records, role, window, ref_role, k)
              for k in FIGURES}
    if all(math.isnan(v) for v in ratios.values()):
      continue
    prediction = mechanics.predict((run.config, run.records), (ref.config, ref.records),
                                   role, ref_role, window)
    out.append(Pair(run, ref, role, ref_role, ratios, prediction,
                    roles.broken_roles(roles.start_parse(ref.records)[0]),
                    roles.broken_roles(roles.start_parse(run.records)[0])))
  return out


def amplified(ratios: Sequence[float]) -> bool | None:
  """Above 1 in most pairs and on average by two standard errors (module docstring)."""
  mean, std, n = analysis.spread(ratios)
  if not n:
    return None
  finite = [r for r in ratios if math.isfinite(r)]
  most = sum(r > 1 for r in finite) > n / 2
  margin = 2 * std / math.sqrt(n) if n > 1 else 0.0
  return bool(most and mean > 1 + margin)


def nearest(observed: float, prediction: mechanics.Prediction, figure: str = "update_norm"
            ) -> str:
  """Which prediction an observed ratio is nearest to, on a log scale:
  'aligned', 'independent' or 'none' (a ratio of 1: no amplification)."""
  aligned, independent = (prediction.gradient if figure == "grad_norm" else prediction.update)
  options = {"none": 1.0, "aligned": aligned, "independent": independent}  # ties: 'none'
  if not (observed > 0 and all(v > 0 for v in options.values())):
    return "-"
  return min(options, key=lambda k: abs(math.log(observed) - math.log(options[k])))


def mean_prediction(group: Sequence[Pair], figure: str) -> tuple[float, float]:
  """(aligned, independent) predicted ratio of `figure`, averaged over a group's pairs."""
  found = [p.prediction.gradient if figure == "grad_norm" else p.prediction.update
           for p in group if p.prediction]
  if not found:
    return math.nan, math.nan
  return float(np.mean([a for a, _ in found])), float(np.mean([i for _, i in found]))
