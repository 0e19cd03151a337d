"""Matplotlib figures of the reports (marl_jax.study.report): curves, heat maps, gradient dynamics.

Every function draws one PNG at `path` and returns the path; figures are
closed after saving, so a report of hundreds of runs does not pile them up.
"""

from __future__ import annotations

import collections
import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from marl_jax.study.diagnostics import analysis  # pylint: disable=wrong-import-position
from marl_jax.study.diagnostics import gradients
from marl_jax.study.diagnostics.claims import Scored  # pylint: disable=wrong-import-position
from marl_jax.study.diagnostics.claims import cells

ROLE_COLORS = {"generator": "tab:blue", "aggregator": "tab:red", "evaluator": "tab:purple",
               "orchestrator": "tab:green", "worker": "tab:orange", "synthesizer": "tab:brown"}
POLICY_STYLE = {"shared": ("tab:blue", "SP"), "isolated": ("tab:orange", "IP"),
                "hybrid": ("tab:green", "hybrid")}


def _save(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def mean_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """Mean over runs at each step any run logged (each step averages the runs that have it)."""
  by_step = collections.defaultdict(list)
  for steps, values in curves:
    for s, v in zip(steps, values):
      if math.isfinite(v):
        by_step[int(s)].append(float(v))
  steps = np.asarray(sorted(by_step))
  return steps, np.asarray([np.mean(by_step[s]) for s in steps])


def _order(values, preferred: Sequence[str]) -> list:
  values = set(values)
  return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def accuracy_curves(scored: Sequence[Scored], task: str, path: str,
                    workflows: Sequence[str] = (), scales: Sequence[str] = ()) -> str | None:
  """Eval accuracy vs step, SP vs IP, one panel per (workflow, scale); base dashed; cliffs 'v'."""
  runs = [s for s in scored if s.main and s.cell["task"] == task]
  if not runs:
    return None
  rows = _order({s.cell["workflow"] for s in runs}, workflows)
  cols = _order({s.cell["scale"] for s in runs}, scales)
  fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.4 * len(cols), 2.4 * len(rows)),
                           squeeze=False, sharey=True)
  for (i, workflow), (j, scale) in ((a, b) for a in enumerate(rows) for b in enumerate(cols)):
    ax = axes[i][j]
    cell = [s for s in runs if s.cell["workflow"] == workflow and s.cell["scale"] == scale]
    bases = [s.summary.base for s in cell if math.isfinite(s.summary.base)]
    if bases:
      ax.axhline(np.mean(bases), color="gray", ls="--", lw=1, label="base")
    for policy, (color, label) in POLICY_STYLE.items():
      mine = [s for s in cell if s.cell["policy"] == policy]
      curves = [analysis.curve(s.run.records) for s in mine]
      for steps, values in curves:
        ax.plot(steps, values, color=color, lw=0.6, alpha=0.35)
      if curves:
        steps, values = mean_curve(curves)
        ax.plot(steps, values, color=color, lw=1.8, label=f"{label} (n={len(mine)})")
      for s in mine:
        if s.summary.cliff.found:
          steps, values = analysis.curve(s.run.records)
          at = int(np.searchsorted(steps, s.summary.cliff.step))
          ax.plot(steps[at], values[at], "v", color="red", ms=7)
    ax.set_title(f"{workflow} / {task} / {scale}", fontsize=8)
    ax.tick_params(labelsize=7)
    if i == len(rows) - 1:
      ax.set_xlabel("step", fontsize=7)
    if j == 0:
      ax.set_ylabel("eval accuracy", fontsize=7)
    if cell:
      ax.legend(fontsize=6, loc="best")
  return _save(fig, path)


def gain_heatmap(scored: Sequence[Scored], path: str, which: str = "end") -> str | None:
  """Mean gain over base (end or peak) per (workflow, policy) x (task, scale) cell."""
  table = cells(scored)
  if not table:
    return None
  rows = sorted({(k[0], k[3]) for k in table})
  cols = sorted({(k[1], k[2]) for k in table})
  grid = np.full((len(rows), len(cols)), np.nan)
  for (workflow, task, scale, policy), group in table.items():
    gains = [s.summary.gain_end if which == "end" else s.summary.gain_peak for s in group]
    grid[rows.index((workflow, policy)), cols.index((task, scale))] = analysis.spread(gains)[0]
  limit = max(0.05, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.05)
  fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2.5, 0.45 * len(rows) + 1.5))
  image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
  for (r, c), value in np.ndenumerate(grid):
    if math.isfinite(value):
      ax.text(c, r, f"{value:+.2f}", ha="center", va="center", fontsize=7)
  ax.set_xticks(range(len(cols)), [f"{t}\n{s}" for t, s in cols], fontsize=7)
  ax.set_yticks(range(len(rows)), [f"{w} {POLICY_STYLE.get(p, (0, p))[1]}" for w, p in rows],
                fontsize=7)
  ax.set_title(f"gain over base at the {which} (mean over seeds)", fontsize=9)
  fig.colorbar(image, ax=ax, shrink=0.8)
  return _save(fig, path)


def _positive(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bool:
  """Whether a log scale can show the curves (all values > 0)."""
  return bool(curves) and all(np.all(v > 0) for _, v in curves.values())


def _role_curves(runs: Sequence[Scored], prefix: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  by_role = collections.defaultdict(list)
  for s in runs:
    for role, curve in gradients.role_series(s.run.records, prefix).items():
      by_role[role].append(curve)
  return {role: mean_curve(curves) for role, curves in sorted(by_role.items())}


def gradient_dynamics(scored: Sequence[Scored], task: str, scale: str, path: str,
                      workflows: Sequence[str] = ()) -> str | None:
  """Per-role grad norm (SP, IP; log scale) and SP mass share, mean over seeds."""
  runs = [s for s in scored if s.main and s.cell["task"] == task and s.cell["scale"] == scale]
  if not runs:
    return None
  rows = _order({s.cell["workflow"] for s in runs}, workflows)
  panels = (("grad_norm", "shared"), ("grad_norm", "isolated"), ("grad_mass_share", "shared"))
  fig, axes = plt.subplots(len(rows), 3, figsize=(10, 2.3 * len(rows)), squeeze=False)
  for i, workflow in enumerate(rows):
    for j, (prefix, policy) in enumerate(panels):
      ax = axes[i][j]
      mine = [s for s in runs if s.cell["workflow"] == workflow and s.cell["policy"] == policy]
      curves = _role_curves(mine, prefix)
      for role, (steps, values) in curves.items():
        ax.plot(steps, values, lw=1.3, label=role, color=ROLE_COLORS.get(role))
      if not curves:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes,
                fontsize=8, color="gray")
      if prefix == "grad_norm" and _positive(curves):
        ax.set_yscale("log")
      ax.set_title(f"{workflow} {POLICY_STYLE[policy][1]}: {prefix}", fontsize=8)
      ax.tick_params(labelsize=7)
      if ax.lines:
        ax.legend(fontsize=6)
  fig.suptitle(f"{task} / {scale}", fontsize=9)
  return _save(fig, path)


def run_accuracy(run: analysis.RunData, summary: analysis.RunSummary, path: str) -> str:
  """One run: train accuracy (per step), eval accuracy, base, peak and cliff."""
  fig, ax = plt.subplots(figsize=(6, 3.2))
  steps, values = analysis.curve(run.records, "accuracy")
  if len(steps):
    ax.plot(steps, values, color="tab:gray", lw=0.8, alpha=0.6, label="train (rollouts)")
  steps, values = analysis.curve(run.records)
  if len(steps):
    ax.plot(steps, values, "o-", color="tab:blue", ms=3, label="eval")
    if math.isfinite(summary.base):
      ax.axhline(summary.base, color="gray", ls="--", lw=1, label=f"base {summary.base:.3f}")
    ax.plot(summary.peak_step, summary.peak, "*", color="gold", ms=12, label="peak")
    if summary.cliff.found:
      at = int(np.searchsorted(steps, summary.cliff.step))
      ax.plot(steps[at], values[at], "v", color="red", ms=9, label="cliff")
  ax.set_xlabel("step")
  ax.set_ylabel("accuracy")
  ax.set_title(run.name, fontsize=9)
  ax.legend(fontsize=7)
  return _save(fig, path)


def run_gradients(run: analysis.RunData, path: str) -> str | None:
  """One run: per-role gradient norm and (when logged) share of the gradient mass."""
  norms = gradients.role_series(run.records, "grad_norm")
  shares = gradients.role_series(run.records, "grad_mass_share")
  if not norms:
    return None
  fig, axes = plt.subplots(1, 2 if shares else 1, figsize=(9 if shares else 5, 3), squeeze=False)
  for role, (steps, values) in norms.items():
    axes[0][0].plot(steps, values, label=role, color=ROLE_COLORS.get(role))
  if _positive(norms):
    axes[0][0].set_yscale("log")
  axes[0][0].set_title("grad_norm (pre-clip)", fontsize=9)
  axes[0][0].legend(fontsize=7)
  for role, (steps, values) in shares.items():
    axes[0][1].plot(steps, values, label=role, color=ROLE_COLORS.get(role))
    axes[0][1].set_title("share of gradient mass", fontsize=9)
    axes[0][1].set_ylim(0, 1)
    axes[0][1].legend(fontsize=7)
  return _save(fig, path)
