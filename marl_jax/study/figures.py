"""Matplotlib figures of the reports (marl_jax.study.report): curves, heat maps, gradient dynamics.

Every function draws one PNG at `path` and returns the path (None when there
is nothing to draw); figures are closed after saving, so a report of hundreds
of runs does not pile them up. Every axes carries labelled axes with units,
and a panel is drawn only when it has data: a reader should never have to
guess what a line measures or wonder why a box is empty.
"""

from __future__ import annotations

import collections
import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib import colors as mcolors  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import ticker  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from marl_jax.study.diagnostics import analysis  # pylint: disable=wrong-import-position
from marl_jax.study.diagnostics import gradients
from marl_jax.study.diagnostics import roles as roles_lib
from marl_jax.study.diagnostics.claims import Scored  # pylint: disable=wrong-import-position
from marl_jax.study.diagnostics.claims import cells

ROLE_COLORS = {"generator": "tab:blue", "aggregator": "tab:red", "evaluator": "tab:purple",
               "orchestrator": "tab:green", "worker": "tab:orange", "synthesizer": "tab:brown"}
POLICY_STYLE = {"shared": ("tab:blue", "SP"), "isolated": ("tab:orange", "IP"),
                "hybrid": ("tab:green", "hybrid")}
POLICY_LINE = {"shared": "-", "isolated": "--", "hybrid": ":"}

STEP = "RL step"
EVAL_ACCURACY = "eval accuracy\n(fraction of held-out problems)"
GRAD_NORM = "gradient norm\n(L2, before clipping; log scale)"
MASS_SHARE = "share of gradient mass\n(|g_role|² / Σ_roles |g|²)"
PARSE_OK = "calls parsed cleanly\n(fraction of the role's calls)"
REWARD = "mean episode reward\n(over the role's calls)"
GAIN = "gain over base\n(eval accuracy, fraction of held-out problems)"


def save(fig, path: str) -> str:
  fig.tight_layout()
  # 'tight' grows the canvas to what is drawn: legends placed outside the axes
  # were cut at the right edge.
  fig.savefig(path, dpi=90, bbox_inches="tight")
  plt.close(fig)
  return path


def labels(ax, x: str, y: str, size: int = 7) -> None:
  ax.set_xlabel(x, fontsize=size)
  ax.set_ylabel(y, fontsize=size)
  ax.tick_params(labelsize=size)


def mean_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """Mean over runs at each step any run logged (each step averages the runs that have it)."""
  by_step = collections.defaultdict(list)
  for steps, values in curves:
    for s, v in zip(steps, values):
      if math.isfinite(v):
        by_step[int(s)].append(float(v))
  steps = np.asarray(sorted(by_step), int)
  return steps, np.asarray([np.mean(by_step[s]) for s in steps])


def order(values, preferred: Sequence[str]) -> list:
  """The values in the preferred order, the rest sorted after them."""
  values = set(values)
  return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def interval(steps: Sequence[int]) -> int | None:
  """The usual spacing of logged steps (median difference); None with fewer than two."""
  steps = np.unique(np.asarray(steps, int))
  return int(np.median(np.diff(steps))) if len(steps) > 1 else None


def common_grid(step_sets: Sequence[Sequence[int]]) -> np.ndarray:
  """The steps every non-empty set logged: where curves logged at different
  intervals (SP's per-role split every k steps, IP's norms every step) can be
  compared point for point."""
  sets = [set(int(s) for s in steps) for steps in step_sets if len(steps)]
  return np.asarray(sorted(set.intersection(*sets)) if sets else [], int)


def colour_scale(values: np.ndarray) -> tuple[str, float, float]:
  """(colour map, vmin, vmax) for a heat map of `values` (NaN ignored).

  One-signed values get a sequential map from 0 (light) to the largest
  magnitude (dark): a diverging map would suggest a sign change that is not
  there. Only mixed signs get the diverging map, centred at 0.
  """
  finite = np.asarray(values, float)[np.isfinite(values)]
  top = max(0.05, float(np.abs(finite).max())) if len(finite) else 0.05
  if len(finite) and finite.min() < 0 < finite.max():
    return "RdBu", -top, top
  if len(finite) and finite.max() <= 0:
    return "Reds_r", -top, 0.0
  return "Blues", 0.0, top


def accuracy_curves(scored: Sequence[Scored], task: str, path: str,
                    workflows: Sequence[str] = (), scales: Sequence[str] = ()) -> str | None:
  """Eval accuracy vs step, SP vs IP, one panel per (workflow, scale); base dashed; cliffs 'v'."""
  runs = [s for s in scored if s.main and s.cell["task"] == task]
  if not runs:
    return None
  rows = order({s.cell["workflow"] for s in runs}, workflows)
  cols = order({s.cell["scale"] for s in runs}, scales)
  panels = [(i, j, workflow, scale) for i, workflow in enumerate(rows)
            for j, scale in enumerate(cols)]
  if len(cols) == 1:  # one scale: the workflows side by side, not a tall thin column
    panels = [(0, i, workflow, scale) for i, _, workflow, scale in panels]
  shape = (max(p[0] for p in panels) + 1, max(p[1] for p in panels) + 1)
  fig, axes = plt.subplots(*shape, figsize=(max(8.0, 3.5 * shape[1]), 2.7 * shape[0]),
                           squeeze=False, sharey=True)
  several = False  # any cell with more than one seed: thin lines show them
  for i, j, workflow, scale in panels:
    ax = axes[i][j]
    cell = [s for s in runs if s.cell["workflow"] == workflow and s.cell["scale"] == scale]
    if not cell:  # a (workflow, scale) pair the sweep did not run
      ax.set_visible(False)
      continue
    bases = [s.summary.base for s in cell if math.isfinite(s.summary.base)]
    if bases:
      ax.axhline(np.mean(bases), color="gray", ls="--", lw=1, label="base (step 0)")
    for policy, (color, label) in POLICY_STYLE.items():
      mine = [s for s in cell if s.cell["policy"] == policy]
      curves = [analysis.curve(s.run.records) for s in mine]
      if len(curves) > 1:
        several = True
        for steps, values in curves:
          ax.plot(steps, values, color=color, lw=0.6, alpha=0.35)
      if curves:
        steps, values = mean_curve(curves)
        ax.plot(steps, values, color=color, lw=1.8,
                label=f"{label}, mean of {len(mine)} seeds" if len(mine) > 1 else
                f"{label}, one seed")
      for s in mine:
        if s.summary.cliff.found:
          steps, values = analysis.curve(s.run.records)
          at = int(np.searchsorted(steps, s.summary.cliff.step))
          ax.plot(steps[at], values[at], "v", color="red", ms=7)
    ax.set_title(f"{workflow} / {task} / {scale}", fontsize=8)
    labels(ax, STEP, EVAL_ACCURACY, 6)
    ax.yaxis.set_tick_params(labelleft=True)  # sharey hides them off the first column
    ax.legend(fontsize=6, loc="lower right")
  fig.suptitle(f"{task}: held-out accuracy during RL" +
               (" (thin lines: single seeds)" if several else ""), fontsize=9)
  return save(fig, path)


def gain_heatmap(scored: Sequence[Scored], path: str, which: str = "end",
                 scales: Sequence[str] = ()) -> str | None:
  """Mean gain over base (end or peak) per (workflow, policy) x (task, scale) cell."""
  table = cells(scored)
  if not table:
    return None
  rows = sorted({(k[0], k[3]) for k in table})
  rank = {s: i for i, s in enumerate(order({k[2] for k in table}, scales))}
  cols = sorted({(k[1], k[2]) for k in table}, key=lambda c: (c[0], rank[c[1]]))
  grid = np.full((len(rows), len(cols)), np.nan)
  for (workflow, task, scale, policy), group in table.items():
    gains = [s.summary.gain_end if which == "end" else s.summary.gain_peak for s in group]
    grid[rows.index((workflow, policy)), cols.index((task, scale))] = analysis.spread(gains)[0]
  cmap, vmin, vmax = colour_scale(grid)
  fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 3.2, 0.45 * len(rows) + 1.8))
  image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
  norm = mcolors.Normalize(vmin, vmax)
  for (r, c), value in np.ndenumerate(grid):
    if math.isfinite(value):
      dark = norm(value) > 0.6 if cmap != "RdBu" else abs(norm(value) - 0.5) > 0.3
      if cmap == "Reds_r":
        dark = norm(value) < 0.4
      ax.text(c, r, f"{value:+.2f}", ha="center", va="center", fontsize=7,
              color="white" if dark else "black")
  ax.set_xticks(range(len(cols)), [f"{t}\n{s}" for t, s in cols], fontsize=7)
  ax.set_yticks(range(len(rows)), [f"{w} {POLICY_STYLE.get(p, (0, p))[1]}" for w, p in rows],
                fontsize=7)
  labels(ax, "task / model scale", "workflow and policy (SP shared, IP isolated)")
  seeds = max(len(group) for group in table.values())
  ax.set_title(f"Gain over base at the {which} ({'last' if which == 'end' else 'best'} "
               "evaluation), " + (f"mean over {seeds} seeds" if seeds > 1 else "one seed"),
               fontsize=9)
  bar = fig.colorbar(image, ax=ax, shrink=0.85)
  bar.set_label(GAIN, fontsize=7)
  bar.ax.tick_params(labelsize=7)
  return save(fig, path)


def _log_y(ax) -> None:
  """A log y axis labelled in plain numbers (0.05, 0.1, 0.2, 0.5 within two
  decades; powers of ten beyond): matplotlib's default labels the minor ticks
  as 3x10^-2, 4x10^-2, ... when the range is under a decade, and they overlap.
  Call after plotting: the data's range picks the ticks."""
  ax.set_yscale("log")
  low, high = ax.get_ylim()
  subs = (1.0, 2.0, 5.0) if high / low < 100 else (1.0,)
  ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
  ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
  ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _positive(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bool:
  """Whether a log scale can show the curves (all values > 0)."""
  return bool(curves) and all(np.all(v > 0) for _, v in curves.values())


def _role_curves(runs: Sequence[Scored], prefix: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  by_role = collections.defaultdict(list)
  for s in runs:
    for role, curve in gradients.role_series(s.run.records, prefix).items():
      by_role[role].append(curve)
  return {role: mean_curve(curves) for role, curves in sorted(by_role.items())}


def _on_grid(curve: tuple[np.ndarray, np.ndarray], grid: np.ndarray):
  keep = np.isin(curve[0], grid)
  return curve[0][keep], curve[1][keep]


def _style_legend(ax, roles: Sequence[str], policies: Sequence[str]) -> None:
  """One legend entry per role (colour) and per policy (line style), not per
  line; outside the axes, right of the row, where it hides no data."""
  handles = [Line2D([], [], color=ROLE_COLORS.get(r, "k"), lw=1.5, label=r) for r in roles]
  handles += [Line2D([], [], color="gray", ls=POLICY_LINE[p], lw=1.2,
                     label=POLICY_STYLE[p][1]) for p in policies if p in POLICY_LINE]
  ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
            frameon=False)


def gradient_panels(scored: Sequence[Scored], workflow: str
                    ) -> list[tuple[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]]:
  """The gradient panels of one workflow: [(prefix, {policy: {role: curve}})].

  Each panel's curves are the means over seeds, cut to the steps every
  policy in it logged (common_grid). A mass-share panel is left out for a
  one-role workflow: its share is 1 by definition. Panels without data are
  left out."""
  panels = []
  for prefix in ("grad_norm", "grad_mass_share"):
    by_policy = {}
    for policy in POLICY_STYLE:
      mine = [s for s in scored if s.cell["workflow"] == workflow and s.cell["policy"] == policy]
      curves = _role_curves(mine, prefix)
      if curves:
        by_policy[policy] = curves
    if prefix == "grad_mass_share" and len({r for c in by_policy.values() for r in c}) < 2:
      continue
    grid = common_grid([np.concatenate([c[0] for c in curves.values()])
                        for curves in by_policy.values()])
    by_policy = {p: {r: _on_grid(c, grid) for r, c in curves.items()}
                 for p, curves in by_policy.items()}
    by_policy = {p: {r: c for r, c in curves.items() if len(c[0])}
                 for p, curves in by_policy.items()}
    by_policy = {p: curves for p, curves in by_policy.items() if curves}
    if by_policy:
      panels.append((prefix, by_policy))
  return panels


def gradient_dynamics(scored: Sequence[Scored], task: str, scale: str, path: str,
                      workflows: Sequence[str] = ()) -> str | None:
  """Per-role grad norm and mass share, SP solid and IP dashed, on the steps
  both logged; one row per workflow, mean over seeds."""
  runs = [s for s in scored if s.main and s.cell["task"] == task and s.cell["scale"] == scale]
  rows = [(w, gradient_panels(runs, w))
          for w in order({s.cell["workflow"] for s in runs}, workflows)]
  rows = [(w, panels) for w, panels in rows if panels]
  if not rows:
    return None
  ncols = max(len(panels) for _, panels in rows)
  fig, axes = plt.subplots(len(rows), ncols, figsize=(5.2 * ncols + 1.3, 2.6 * len(rows)),
                           squeeze=False)
  steps_every = set()
  seeds = {s.cell["seed"] for s in runs}
  for i, (workflow, panels) in enumerate(rows):
    for j in range(len(panels), ncols):
      axes[i][j].set_visible(False)  # a one-role workflow has no share panel
    for j, (prefix, by_policy) in enumerate(panels):
      ax = axes[i][j]
      roles = sorted({r for curves in by_policy.values() for r in curves})
      for policy, curves in by_policy.items():
        for role, (steps, values) in curves.items():
          ax.plot(steps, values, ls=POLICY_LINE[policy], marker="o", ms=2, lw=1.2,
                  color=ROLE_COLORS.get(role))
          steps_every.add(interval(steps))
      if prefix == "grad_norm":
        if all(_positive(c) for c in by_policy.values()):
          _log_y(ax)
        ax.set_title(f"{workflow}: per-role gradient norm", fontsize=8)
        labels(ax, STEP, GRAD_NORM if ax.get_yscale() == "log"
                else GRAD_NORM.replace("; log scale", ""))
      else:
        ax.set_ylim(0, 1)
        ax.set_title(f"{workflow}: per-role share of the gradient mass", fontsize=8)
        labels(ax, STEP, MASS_SHARE)
      if j == len(panels) - 1:
        _style_legend(ax, roles, list(by_policy))
  every = sorted(k for k in steps_every if k)
  every_text = f"every {every[0]} steps" if len(every) == 1 else \
      "at the logged steps" if not every else f"every {'/'.join(map(str, every))} steps"
  over = f"mean over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
  fig.suptitle(f"{task} / {scale} ({over}): solid SP, dashed IP; points at the steps "
               f"both policies logged ({every_text})", fontsize=9)
  return save(fig, path)


def _noisy(ax, steps: np.ndarray, values: np.ndarray, color, label: str, ls: str = "-",
           zorder: float = 2) -> None:
  """A per-step series; past 40 points the raw values are faint behind a
  moving mean, since one step's batch is too small to read a trend from."""
  if len(steps) <= 40:
    ax.plot(steps, values, color=color, lw=1.2, ls=ls, marker="o", ms=2, label=label,
            zorder=zorder)
    return
  k = max(3, len(values) // 15)
  smooth = np.convolve(values, np.ones(k) / k, mode="valid")
  ax.plot(steps, values, color=color, lw=0.6, alpha=0.3, zorder=zorder)
  ax.plot(steps[k - 1:], smooth, color=color, lw=1.6, ls=ls, zorder=zorder,
          label=f"{label} (mean of {k} steps)")


def _outside_legend(ax) -> None:
  """The legend right of the axes, where it hides no data."""
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


ROLE_LINES = ("-", "--", ":", "-.")  # roles whose curves coincide stay visible one behind another


def _shared_steps(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> float:
  """The share of steps at which every role has the same value."""
  by_step = collections.defaultdict(list)
  for steps, values in series.values():
    for s, v in zip(steps, values):
      by_step[int(s)].append(float(v))
  full = [v for v in by_step.values() if len(v) == len(series)]
  return sum(np.allclose(v, v[0]) for v in full) / len(full) if full else 0.0


def _same(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> bool:
  """Whether every role's series is the same curve (e.g. all roles share the episode reward)."""
  curves = list(series.values())
  return len(curves) > 1 and all(
      np.array_equal(c[0], curves[0][0]) and np.allclose(c[1], curves[0][1]) for c in curves)


def run_accuracy(run: analysis.RunData, summary: analysis.RunSummary, path: str) -> str:
  """One run, on one step axis: accuracy (train per step, eval, base, peak,
  cliff); each role's share of cleanly parsed calls; each role's reward."""
  parsed, rewards = roles_lib.parse_ok(run.records), roles_lib.rewards(run.records)
  panels = 1 + bool(parsed) + bool(rewards)
  fig, axes = plt.subplots(panels, 1, figsize=(9, 2.6 * panels + 0.4), sharex=True,
                           squeeze=False)
  ax = axes[0][0]
  steps, values = analysis.curve(run.records, "accuracy")
  if len(steps):
    _noisy(ax, steps, values, "tab:gray", "train (this step's rollouts)")
  steps, values = analysis.curve(run.records)
  if len(steps):
    ax.plot(steps, values, "o-", color="tab:blue", ms=3, label="eval (held-out problems)",
            zorder=3)  # the run's measure: above the noisier train curve
    if math.isfinite(summary.base):
      ax.axhline(summary.base, color="gray", ls="--", lw=1, label=f"base {summary.base:.3f}")
    ax.plot(summary.peak_step, summary.peak, "*", color="gold", ms=12, label="peak (eval)",
            zorder=4)
    if summary.cliff.found:
      at = int(np.searchsorted(steps, summary.cliff.step))
      ax.plot(steps[at], values[at], "v", color="red", ms=9, label="terminal cliff", zorder=4)
  ax.set_title(f"{run.name}: accuracy", fontsize=9)
  labels(ax, STEP, "accuracy\n(fraction of problems solved)", 8)
  _outside_legend(ax)
  row = 1
  if parsed:
    ax = axes[row][0]
    for n, (role, (steps, values)) in enumerate(parsed.items()):
      _noisy(ax, steps, values, ROLE_COLORS.get(role), role, ROLE_LINES[n % len(ROLE_LINES)],
             2 + 0.1 * n)
    ax.set_ylim(-0.02, 1.02)
    derived = roles_lib.parse_ok_derived(run.records)
    ax.set_title("each role's calls that parsed cleanly" +
                 (" (derived from failure counts: a lower bound)" if derived else ""), fontsize=9)
    labels(ax, STEP, PARSE_OK, 8)
    _outside_legend(ax)
    row += 1
  if rewards:
    ax = axes[row][0]
    if _same(rewards):  # one line, not N lines drawn on top of each other
      steps, values = next(iter(rewards.values()))
      _noisy(ax, steps, values, "tab:gray", "every role (they share the episode reward)")
    else:
      for n, (role, (steps, values)) in enumerate(rewards.items()):
        _noisy(ax, steps, values, ROLE_COLORS.get(role), role, ROLE_LINES[n % len(ROLE_LINES)],
               2 + 0.1 * n)
    shared = _shared_steps(rewards)
    ax.set_title("each role's reward in training" + (
        f" (equal at {shared:.0%} of steps, where the lines overlap)"
        if 0 < shared < 1 and len(rewards) > 1 else ""), fontsize=9)
    labels(ax, STEP, REWARD, 8)
    _outside_legend(ax)
  for ax in axes[:, 0]:
    ax.xaxis.set_tick_params(labelbottom=True)  # sharex hides them off the last panel
  return save(fig, path)


def run_gradients(run: analysis.RunData, path: str) -> str | None:
  """One run: per-role gradient norm and (with two or more roles) share of the gradient mass,
  each panel saying how often it was logged."""
  norms = gradients.role_series(run.records, "grad_norm")
  shares = gradients.role_series(run.records, "grad_mass_share")
  if not norms:
    return None
  shares = shares if len(shares) > 1 else {}  # one role's share is 1 by definition
  fig, axes = plt.subplots(1, 2 if shares else 1, figsize=(11 if shares else 6.5, 3.4),
                           squeeze=False)
  for ax, series, what in ((axes[0][0], norms, "gradient norm"),
                           (axes[0][-1] if shares else None, shares, "share of gradient mass")):
    if ax is None:
      continue
    for role, (steps, values) in series.items():
      ax.plot(steps, values, label=role, color=ROLE_COLORS.get(role), marker="o", ms=2)
    every = interval(np.concatenate([s for s, _ in series.values()]))
    ax.set_title(f"per-role {what}, logged " + (
        "every step" if every == 1 else f"every {every} steps" if every else "once"), fontsize=9)
    _outside_legend(ax)
  if _positive(norms):
    _log_y(axes[0][0])
  labels(axes[0][0], STEP, GRAD_NORM if _positive(norms)
          else GRAD_NORM.replace("; log scale", ""), 8)
  if shares:
    axes[0][1].set_ylim(0, 1)
    labels(axes[0][1], STEP, MASS_SHARE, 8)
  return save(fig, path)
