"""Markdown reports with figures: one per run (`write_run_report`), one per sweep.

  <workdir>/report.md, <workdir>/report_*.png          write_run_report(workdir)
  <sweep>/report.md, <sweep>/report_figures/*.png       write_sweep_report(sweep_dir)

The sweep report holds: the study's four claims tested on the data
(diagnostics.claims), the empirical map (gain over base per workflow x task
x scale x policy, as heat maps and a table with seeds and spreads), accuracy
curves SP vs IP per cell with the base and cliff markers, per-role gradient
norms and mass shares, same-role amplification, and a failure-mode table.
"""

from __future__ import annotations

import json
import math
import os
from typing import Sequence

from marl_jax.study import figures
from marl_jax.study import sweep
from marl_jax.study.diagnostics import analysis
from marl_jax.study.diagnostics import claims as claims_lib
from marl_jax.study.diagnostics import failure_modes
from marl_jax.study.diagnostics import gradients

FIGURES = "report_figures"
WORKFLOW_ORDER = ("single", "voting", "eval_opt", "orch_workers")  # figures: control first


def _fmt(x: float | None, signed: bool = False) -> str:
  if x is None or not math.isfinite(x):
    return "-"
  return f"{x:+.3f}" if signed else f"{x:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _cliff_text(cliff: analysis.CliffConfig) -> str:
  return (f"a terminal cliff is a last evaluation at least {cliff.min_drop:.2f} below the peak "
          f"with none of the last {cliff.window} evaluations back within {cliff.min_drop:.2f} of "
          f"it (metric `{cliff.metric}`; marl_jax.study.diagnostics.analysis).")


def _failure_rows(name: str, modes: Sequence[failure_modes.FailureMode]) -> list[list[str]]:
  return [[name, m.name, m.role, _fmt(m.early), _fmt(m.late),
           "yes" if m.emerged else "from start", m.detail] for m in failure_modes.flagged(modes)]


# --- one run -------------------------------------------------------------------


def write_run_report(workdir: str, cliff: analysis.CliffConfig = analysis.CliffConfig(),
                     failure: failure_modes.FailureConfig = failure_modes.FailureConfig()) -> str:
  """Writes <workdir>/report.md (accuracy curve, summary, gradients, failure modes)."""
  run = analysis.load_run(workdir)
  if not run.records:
    raise FileNotFoundError(f"{os.path.join(workdir, 'metrics.jsonl')} is missing or empty; "
                            "train the run before writing its report.")
  summary = run.summary(cliff)
  cell = run.cell
  curve = figures.run_accuracy(run, summary, os.path.join(workdir, "report_accuracy.png"))
  lines = [f"# Run report: {run.name}", "",
           f"{cell['workflow']} / {cell['task']} / {cell['scale']} / {cell['policy']} / "
           f"seed {cell['seed']}; step {summary.steps_done} of {summary.steps_total or '?'}.", "",
           f"![accuracy]({os.path.basename(curve)})", ""]
  lines += _table(["base", "peak (step)", "final (step)", "gain at peak", "gain at end",
                   "terminal cliff"],
                  [[_fmt(summary.base), f"{_fmt(summary.peak)} ({summary.peak_step})",
                    f"{_fmt(summary.final)} ({summary.final_step})",
                    _fmt(summary.gain_peak, True), _fmt(summary.gain_end, True),
                    f"yes, from step {summary.cliff.step} (drop {summary.cliff.drop:.3f})"
                    if summary.cliff.found else "no"]])
  lines += ["", f"Cliff definition: {_cliff_text(cliff)}", ""]
  grads = figures.run_gradients(run, os.path.join(workdir, "report_gradients.png"))
  if grads:
    means = gradients.role_means(run.records)
    shares = gradients.role_means(run.records, "grad_mass_share")
    lines += ["## Gradients by role", "", f"![gradients]({os.path.basename(grads)})", ""]
    lines += _table(["role", "mean grad norm", "mean mass share"],
                    [[r, _fmt(means[r]), _fmt(shares.get(r))] for r in sorted(means)])
    lines.append("")
  modes = failure_modes.analyze(workdir, failure)
  if modes:
    lines += ["## Failure modes (sampled rollouts)", ""]
    rows = _failure_rows(run.name, modes)
    lines += _table(["run", "mode", "role", "early", "late", "emerged", "detail"], rows) \
        if rows else ["None flagged."]
    lines.append("")
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


# --- a sweep ---------------------------------------------------------------------


def load_sweep(sweep_dir: str) -> list[analysis.RunData]:
  """The runs of a sweep: those in its manifest (sweep.json), else every subdirectory
  holding a config.json; runs with no metrics yet are left out. Variant runs
  (named '<point>-<variant>') are kept out of the main matrix's cells."""
  manifest = os.path.join(sweep_dir, "sweep.json")
  if os.path.exists(manifest):
    with open(manifest) as f:
      entries = [(r["name"], r["workdir"]) for r in json.load(f)["runs"]]
    entries = [(n, w if os.path.isabs(w) or os.path.exists(w) else os.path.join(sweep_dir, n))
               for n, w in entries]
  elif os.path.isdir(sweep_dir):
    entries = [(n, os.path.join(sweep_dir, n)) for n in sorted(os.listdir(sweep_dir))
               if os.path.exists(os.path.join(sweep_dir, n, "config.json"))]
  else:
    raise FileNotFoundError(f"Sweep directory {sweep_dir!r} does not exist.")
  runs = [analysis.load_run(w, n) for n, w in entries if os.path.isdir(w)]
  runs = [r for r in runs if r.records and r.config]
  for run in runs:  # '<point>-<variant>' (marl_jax.study.sweep naming) marks a variant run
    c = run.cell
    point = sweep.run_name({**c, "model": c["scale"]})
    if run.name.startswith(point + "-"):
      run.variant = run.name[len(point) + 1:]
  return runs


def _map_rows(scored: Sequence[claims_lib.Scored]) -> list[list[str]]:
  rows = []
  for key, group in claims_lib.cells(scored).items():
    s = [g.summary for g in group]
    rows.append(["/".join(map(str, key)), str(len(group)),
                 analysis.format_spread([x.base for x in s]),
                 analysis.format_spread([x.peak for x in s]),
                 analysis.format_spread([x.final for x in s]),
                 analysis.format_spread([x.gain_end for x in s], signed=True),
                 f"{sum(x.cliff.found for x in s)}/{len(s)}"])
  return rows


def _figure_lines(title: str, paths: Sequence[str | None], root: str) -> list[str]:
  shown = [p for p in paths if p]
  if not shown:
    return []
  return [f"### {title}", ""] + [f"![{title}]({os.path.relpath(p, root)})" for p in shown] + [""]


def write_sweep_report(sweep_dir: str, cliff: analysis.CliffConfig = analysis.CliffConfig(),
                       failure: failure_modes.FailureConfig = failure_modes.FailureConfig(),
                       dominant_share: float = 0.6, out_dir: str | None = None) -> str:
  """Writes <out_dir>/report.md (default: the sweep's) and its figures; returns its path."""
  out_dir = out_dir or sweep_dir
  runs = load_sweep(sweep_dir)
  if not runs:
    raise FileNotFoundError(f"No run in {sweep_dir!r} has a config.json and metrics yet; run "
                            "the sweep (launch/sweep.py) first.")
  scored = claims_lib.score(runs, cliff)
  out = os.path.join(out_dir, FIGURES)
  os.makedirs(out, exist_ok=True)
  tasks = sorted({s.cell["task"] for s in scored})
  scales = sorted({s.cell["scale"] for s in scored})
  finished = sum(s.summary.finished for s in scored)
  lines = [f"# Sweep report: {os.path.basename(os.path.normpath(sweep_dir))}", "",
           f"{len(scored)} runs with metrics ({finished} finished). Accuracy is `eval/accuracy` "
           "on held-out problems; step 0 is the base model. Spreads are mean ± sample std "
           "over seeds (n = runs).", "", f"Cliffs: {_cliff_text(cliff)}", "",
           "## The study's claims, tested on these runs", ""]
  for claim in claims_lib.all_claims(scored, dominant_share):
    lines += [f"**{claim.statement}** — *{claim.verdict}*", ""]
    lines += [f"- {line}" for line in claim.lines] + [""]

  lines += ["## The empirical map: gain over base", ""]
  lines += _figure_lines("Gain at the end", [figures.gain_heatmap(
      scored, os.path.join(out, "map_gain_end.png"), "end")], out_dir)
  lines += _figure_lines("Gain at the peak", [figures.gain_heatmap(
      scored, os.path.join(out, "map_gain_peak.png"), "peak")], out_dir)
  lines += _table(["cell (workflow/task/scale/policy)", "seeds", "base", "peak", "final",
                   "gain at end", "cliffs"], _map_rows(scored)) + [""]

  lines += ["## Accuracy curves, SP vs IP (dashed: base; red ▼: terminal cliff)", ""]
  for task in tasks:
    lines += _figure_lines(task, [figures.accuracy_curves(
        scored, task, os.path.join(out, f"curves_{task}.png"), workflows=WORKFLOW_ORDER)],
                           out_dir)

  lines += ["## Role-level gradient dynamics", ""]
  for task in tasks:
    for scale in scales:
      lines += _figure_lines(f"{task} / {scale}", [figures.gradient_dynamics(
          scored, task, scale, os.path.join(out, f"gradients_{task}_{scale}.png"),
          workflows=WORKFLOW_ORDER)], out_dir)
  pairs = claims_lib.amplification_pairs(scored, "isolated") + \
      claims_lib.amplification_pairs(scored, "shared")
  if pairs:
    lines += ["### Same-role amplification (grad norm with N agents / N = 1)", ""]
    lines += _table(["run", "reference", "N", "ratio"],
                    [[a.run.name, b.run.name, str(a.cell["agents"]), f"{r:.2f}"]
                     for a, b, r in pairs]) + [""]

  lines += ["## Failure modes (from the sampled rollouts)", "",
            "Flagged when the rate over the last saved steps crosses its threshold "
            "(marl_jax.study.diagnostics.failure_modes); 'emerged' when it had not at the start.", ""]
  rows = []
  for s in scored:
    rows += _failure_rows(s.run.name, failure_modes.analyze(s.run.workdir, failure))
  lines += _table(["run", "mode", "role", "early", "late", "emerged", "detail"], rows) \
      if rows else ["None flagged."]
  lines += ["", "## Runs", ""]
  lines += _table(["run", "steps", "base", "peak (step)", "final", "cliff step"],
                  [[s.run.name, f"{s.summary.steps_done}/{s.summary.steps_total or '?'}",
                    _fmt(s.summary.base), f"{_fmt(s.summary.peak)} ({s.summary.peak_step})",
                    _fmt(s.summary.final),
                    str(s.summary.cliff.step) if s.summary.cliff.found else "-"]
                   for s in scored])
  path = os.path.join(out_dir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path
