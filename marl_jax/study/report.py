"""Markdown reports with figures and CSV tables: one per run (`write_run_report`), one per sweep.

  <workdir>/report.md, report_*.png, report_*.csv       write_run_report(workdir)
  <out>/report.md, report_figures/*.png, *.csv          write_sweep_report(sweep_dir)

The run report (the demo's) shows accuracy beside each role's parse rate and
reward over the steps, the run's summary, its gradients by role and its
failure modes. The sweep report holds: the study's four claims tested on the
data (diagnostics.claims), the empirical map (gain over base per workflow x
task x scale x policy, as heat maps and a table with seeds and spreads),
accuracy curves SP vs IP per cell with the base and cliff markers, the cliff
counts over a grid of rules (diagnostics.cliffs), per-role gradient norms
and mass shares, same-role amplification (update, drift and gradient ratios
beside their predictions: diagnostics.amplification), every run's parse
rate per role before any update (diagnostics.roles.start_parse), and a
failure-mode table. Every table is also a CSV beside report.md
(marl_jax.study.tables).
"""

from __future__ import annotations

import collections
import json
import math
import os
from typing import Sequence

import numpy as np

from marl_jax.study import figures
from marl_jax.study import sweep
from marl_jax.study import tables
from marl_jax.study.diagnostics import amplification
from marl_jax.study.diagnostics import analysis
from marl_jax.study.diagnostics import claims as claims_lib
from marl_jax.study.diagnostics import cliffs as cliffs_lib
from marl_jax.study.diagnostics import failure_modes
from marl_jax.study.diagnostics import gradients
from marl_jax.study.diagnostics import roles as roles_lib
from marl_jax.study.tables import AtStep, Int, Num, OutOf, Spread

FIGURES = "report_figures"
RUNS = "runs"  # a published study keeps its runs here (docs/<study>/runs)
WORKFLOW_ORDER = ("single", "voting", "eval_opt", "orch_workers")  # figures: control first
ROLE_ORDER = ("generator", "aggregator", "evaluator", "orchestrator", "worker", "synthesizer")
SCALE_ORDER = ("tiny_s", "tiny_m", "tiny_l", "qwen3_0_6b", "qwen3_1_7b", "qwen3_4b")
FAILURE_HEADER = ("run", "mode", "role", "early", "late", "emerged", "detail")
_fmt = tables.fmt


def cliff_text(cliff: analysis.CliffConfig) -> str:
  if cliff.relative:
    return (f"a terminal cliff is a run whose last {cliff.window} evaluations all sit at least "
            f"{cliff.relative:.0%} of the peak's gain over the base below the peak: it gave "
            f"back that much and did not recover (metric `{cliff.metric}`; "
            "marl_jax.study.diagnostics.analysis).")
  return (f"a terminal cliff is a last evaluation at least {cliff.min_drop:.2f} below the peak "
          f"with none of the last {cliff.window} evaluations back within {cliff.min_drop:.2f} of "
          f"it (metric `{cliff.metric}`; marl_jax.study.diagnostics.analysis).")


def _failure_rows(name: str, modes: Sequence[failure_modes.FailureMode]) -> list[list]:
  return [[name, m.name, m.role, Num(m.early), Num(m.late),
           "yes" if m.emerged else "from start", m.detail] for m in failure_modes.flagged(modes)]


def _failure_table(table: tables.Tables, rows: list[list]) -> list[str]:
  if rows:
    return table("failure_modes", FAILURE_HEADER, rows)
  table("failure_modes", FAILURE_HEADER, [])  # an empty CSV still says 'none flagged'
  return ["None flagged."]


# --- one run -------------------------------------------------------------------


def _role_rows(records: Sequence[dict], k: int = 5) -> list[list]:
  """Per role: parse rate and reward over the first and the last k training steps."""
  parsed, rewards = roles_lib.parse_ok(records), roles_lib.rewards(records)
  empty = (np.zeros(0), np.zeros(0))
  return [[role] + [Num(roles_lib.window_mean(series.get(role, empty), first, k))
                    for series in (parsed, rewards) for first in (True, False)]
          for role in sorted(set(parsed) | set(rewards))]


def write_run_report(workdir: str, cliff: analysis.CliffConfig = analysis.CliffConfig(),
                     failure: failure_modes.FailureConfig = failure_modes.FailureConfig()) -> str:
  """Writes <workdir>/report.md (accuracy beside per-role parse rates and rewards,
  summary, gradients, failure modes), its figures and a CSV per table."""
  run = analysis.load_run(workdir)
  if not run.records:
    raise FileNotFoundError(f"{os.path.join(workdir, 'metrics.jsonl')} is missing or empty; "
                            "train the run before writing its report.")
  summary = run.summary(cliff)
  cell = run.cell
  table = tables.Tables(workdir, "report_")
  curve = figures.run_accuracy(run, summary, os.path.join(workdir, "report_accuracy.png"))
  lines = [f"# Run report: {run.name}", "",
           f"{cell['workflow']} / {cell['task']} / {cell['scale']} / {cell['policy']} / "
           f"seed {cell['seed']}; step {summary.steps_done} of {summary.steps_total or '?'}.", "",
           f"![accuracy, parse rates and rewards by role]({os.path.basename(curve)})", ""]
  lines += table("summary", ["base", "peak (step)", "final (step)", "gain at peak",
                             "gain at end", "terminal cliff"],
                 [[Num(summary.base), AtStep(summary.peak, summary.peak_step),
                   AtStep(summary.final, summary.final_step),
                   Num(summary.gain_peak, True), Num(summary.gain_end, True),
                   f"yes, from step {summary.cliff.step} (drop {summary.cliff.drop:.3f})"
                   if summary.cliff.found else "no"]])
  lines += ["", f"Cliff definition: {cliff_text(cliff)}", ""]
  role_rows = _role_rows(run.records)
  if role_rows:
    derived = roles_lib.parse_ok_derived(run.records)
    lines += ["## Roles: parse rates and rewards", "",
              "Parse rate: the share of the role's calls in a training step's rollouts that "
              "parsed cleanly" + (" (derived from the logged failure counts, "
                                  "1 - failures / calls: a lower bound, since a call can fail "
                                  "two ways)" if derived else "") +
              ". Reward: the mean episode reward over the role's calls. "
              "Means over the first and the last 5 training steps.", ""]
    lines += table("roles", ["role", "parse rate, first 5 steps", "parse rate, last 5 steps",
                             "reward, first 5 steps", "reward, last 5 steps"], role_rows)
    lines.append("")
  grads = figures.run_gradients(run, os.path.join(workdir, "report_gradients.png"))
  if grads:
    means = gradients.role_means(run.records)
    shares = gradients.role_means(run.records, "grad_mass_share")
    lines += ["## Gradients by role", "", f"![gradients by role]({os.path.basename(grads)})", ""]
    if len(shares) > 1:
      lines += table("gradients", ["role", "mean grad norm", "mean mass share"],
                     [[r, Num(means[r]), Num(shares.get(r))] for r in sorted(means)])
    else:  # one role holds all the mass by definition
      lines += table("gradients", ["role", "mean grad norm"],
                     [[r, Num(means[r])] for r in sorted(means)])
    lines.append("")
  modes = failure_modes.analyze(workdir, failure)
  if modes:
    lines += ["## Failure modes (sampled rollouts)", ""]
    lines += _failure_table(table, _failure_rows(run.name, modes))
    lines.append("")
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


# --- a sweep ---------------------------------------------------------------------


def runs_dir(sweep_dir: str) -> str:
  """Where a sweep's runs are: the directory itself, or its runs/ (a published study)."""
  nested = os.path.join(sweep_dir, RUNS)
  has_runs = os.path.isdir(sweep_dir) and (
      os.path.exists(os.path.join(sweep_dir, sweep.MANIFEST)) or
      any(os.path.exists(os.path.join(sweep_dir, n, "config.json"))
          for n in os.listdir(sweep_dir)))
  return nested if not has_runs and os.path.isdir(nested) else sweep_dir


def load_sweep(sweep_dir: str) -> list[analysis.RunData]:
  """The runs of a sweep: those in its manifest (sweep.json), else every subdirectory
  holding a config.json (of sweep_dir, or of sweep_dir/runs when sweep_dir has none);
  runs with no metrics yet are left out. Variant runs (named '<point>-<variant>')
  are kept out of the main matrix's cells."""
  sweep_dir = runs_dir(sweep_dir)
  manifest = os.path.join(sweep_dir, sweep.MANIFEST)
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


def readable(name: str) -> str:
  """'tiny_study' -> 'Tiny study'."""
  words = name.replace("_", " ").replace("-", " ").split()
  text = " ".join(words)
  return text[:1].upper() + text[1:]


def sweep_title(sweep_dir: str) -> str:
  """The study's name: the manifest's sweep name ('The tiny sweep'), else the
  directory's name made readable, skipping a generic 'runs' (docs/tiny_study/runs
  is 'Tiny study')."""
  manifest = os.path.join(runs_dir(sweep_dir), sweep.MANIFEST)
  if os.path.exists(manifest):
    with open(manifest) as f:
      name = (json.load(f).get("sweep") or {}).get("name")
    if name:
      return f"The {name} sweep"
  path = os.path.abspath(sweep_dir)
  while os.path.basename(path) in (RUNS, "sweeps") and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return readable(os.path.basename(path)) or "Sweep report"


def _map_rows(scored: Sequence[claims_lib.Scored]) -> list[list]:
  rows = []
  for key, group in claims_lib.cells(scored).items():
    s = [g.summary for g in group]
    rows.append(["/".join(map(str, key)), Int(len(group)),
                 Spread(tuple(x.base for x in s)), Spread(tuple(x.peak for x in s)),
                 Spread(tuple(x.final for x in s)),
                 Spread(tuple(x.gain_end for x in s), signed=True),
                 OutOf(sum(x.cliff.found for x in s), len(s))])
  return rows


def figure_lines(title: str, paths: Sequence[str | None], root: str) -> list[str]:
  shown = [p for p in paths if p]
  if not shown:
    return []
  return [f"### {title}", ""] + [f"![{title}]({os.path.relpath(p, root)})" for p in shown] + [""]


def _logged_every(scored: Sequence[claims_lib.Scored], policy: str, prefix: str) -> int | None:
  """The most common interval at which the policy's runs logged `<prefix>/<role>`."""
  found = collections.Counter(
      figures.interval(steps) for s in scored if s.main and s.cell["policy"] == policy
      for steps, _ in gradients.role_series(s.run.records, prefix).values())
  found.pop(None, None)
  return found.most_common(1)[0][0] if found else None


def _gradient_note(scored: Sequence[claims_lib.Scored]) -> list[str]:
  """What was logged when, in words: the figures plot only the steps both policies logged."""
  def every(k):
    return "every step" if k == 1 else f"every {k} steps" if k else "never"

  parts = []
  for policy, label in (("shared", "SP"), ("isolated", "IP")):
    norm, share = (_logged_every(scored, policy, p) for p in ("grad_norm", "grad_mass_share"))
    if norm == share and norm:
      parts.append(f"{label} runs logged per-role gradient norms and mass shares {every(norm)}")
    elif norm or share:
      parts.append(f"{label} runs logged per-role gradient norms {every(norm)} and mass shares "
                   f"{every(share)}")
  if not parts:
    return []
  return ["What was logged when: " + "; ".join(parts) + ". The per-role split of an update "
          "costs a backward pass per role, so it runs every `rl.role_grad_every` steps; under "
          "IP each role's norm is also its own policy's norm, logged every step. Each figure "
          "plots both policies at the steps both logged (means over seeds), norms on a log "
          "scale. A one-role workflow (single) has no mass-share panel: its share is 1 by "
          "definition.", ""]


def _amplification_section(table: tables.Tables, pairs: Sequence[amplification.Pair]
                           ) -> list[str]:
  """Claim 3's pairs: observed ratios, N agents / 1 agent, beside the predicted ones."""
  def predicted(p, figure, which):
    if not p.prediction:
      return Num(None)
    return Num((p.prediction.gradient if figure == "grad_norm" else p.prediction.update)[which],
               digits=2)

  lines = ["### Same-role amplification (the role with N agents / N = 1)", "",
           "Means over the last third of each run. Update: ||delta theta|| of the role's slot "
           "per iteration; drift: ||theta_t - theta_0||; grad: the pre-clip gradient norm. "
           "Predicted ratios for aligned (al.) and independent (ind.) rows from each run's "
           "update mechanics (marl_jax.study.diagnostics.mechanics); '-' where a run did not "
           "log the figure.", ""]
  return lines + table("amplification", [
      "run", "reference", "N", "update", "drift", "grad", "predicted update al.",
      "predicted update ind.", "predicted grad al.", "predicted grad ind.",
      "reference starts broken"],
      [[p.run.name, p.ref.name, Int(p.run.cell["agents"])] +
       [Num(p.ratios[k], digits=2) for k in amplification.FIGURES] +
       [predicted(p, f, w) for f in ("update_norm", "grad_norm") for w in (0, 1)] +
       [", ".join(p.ref_broken) or "no"] for p in pairs]) + [""]


def _sensitivity_section(table: tables.Tables, scored: Sequence[claims_lib.Scored]
                         ) -> list[str]:
  """Claim 2's cliff counts, SP vs IP on the same pairs, over the grid of rules."""
  both = claims_lib.paired(scored)
  if not both:
    return []
  groups = {p: [pair[p].run for pair in both] for p in ("isolated", "shared")}
  rows = []
  for rule, c in cliffs_lib.sensitivity(groups):
    only_ip, only_sp, p = cliffs_lib.paired_excess(c["isolated"], c["shared"])
    rows.append([rule.rule(), Int(rule.window), OutOf(c["isolated"].cliffs, c["isolated"].runs),
                 OutOf(c["shared"].cliffs, c["shared"].runs), Int(only_ip), Int(only_sp),
                 Num(p, digits=2), OutOf(sum(c["isolated"].low), c["isolated"].lr_known),
                 OutOf(sum(c["shared"].low), c["shared"].lr_known)])
  return ["## Terminal cliffs: sensitivity to the rule", "",
          f"Paired SP and IP runs ({len(both)} pairs, one-role workflows left out). p: McNemar's "
          "exact one-sided test that IP falls more often, on the pairs where only one fell. "
          f"lr ~0: the mean learning rate over the updates the rule's window inspects is below "
          f"{cliffs_lib.LOW_LR} of the run's peak rate (logged lr/<role>, else the config's "
          "schedule), so a cliff there cannot come from those updates "
          "(marl_jax.study.diagnostics.cliffs).", ""] + table(
      "cliff_sensitivity", ["rule", "last k evaluations", "IP cliffs", "SP cliffs",
                            "only IP fell", "only SP fell", "p", "IP lr ~0", "SP lr ~0"],
      rows) + [""]


def _start_parse_section(table: tables.Tables, scored: Sequence[claims_lib.Scored],
                         pairs: Sequence[amplification.Pair]) -> list[str]:
  """Every run's parse rate per role before any update; broken roles flagged."""
  found = {s.run.name: roles_lib.start_parse(s.run.records) for s in scored}
  names = {r for rates, _ in found.values() for r in rates}
  order = [r for r in ROLE_ORDER if r in names] + sorted(names - set(ROLE_ORDER))
  if not order:
    return []
  references = {p.ref.name for p in pairs}
  rows = []
  for s in scored:
    rates, where = found[s.run.name]
    broken = roles_lib.broken_roles(rates)
    flag = ("reference " if s.run.name in references else "") + "starts broken: " + \
        ", ".join(broken) if broken else ""
    rows.append([s.run.name] + [Num(rates.get(r)) for r in order] + [where or "-", flag])
  flagged = sum(1 for row in rows if row[-1])
  return ["## Parse rates at the start, by role", "",
          "The share of each role's calls that parsed cleanly before any update: the first "
          "training step's rollouts (step 1 is sampled from the base), else the step-0 "
          "evaluation. A role below "
          f"{roles_lib.PARSE_FLOOR:.0%} starts broken; a claim-3 reference with a broken role "
          f"is left out of claim 3's verdict. {flagged} of {len(rows)} runs flagged.", ""] + \
      table("start_parse", ["run"] + order + ["measured on", "flag"], rows) + [""]


def write_sweep_report(sweep_dir: str, cliff: analysis.CliffConfig = analysis.CliffConfig(),
                       failure: failure_modes.FailureConfig = failure_modes.FailureConfig(),
                       dominant_share: float = 0.6, out_dir: str | None = None,
                       title: str | None = None) -> str:
  """Writes <out_dir>/report.md (default: the sweep's), its figures and a CSV per
  table; returns its path. title: the report's heading (default: sweep_title)."""
  out_dir = out_dir or sweep_dir
  runs = load_sweep(sweep_dir)
  if not runs:
    raise FileNotFoundError(f"No run in {sweep_dir!r} has a config.json and metrics yet; run "
                            "the sweep (launch/sweep.py) first.")
  scored = claims_lib.score(runs, cliff)
  out = os.path.join(out_dir, FIGURES)
  os.makedirs(out, exist_ok=True)
  table = tables.Tables(out_dir, "report_")
  tasks = sorted({s.cell["task"] for s in scored})
  scales = figures.order({s.cell["scale"] for s in scored}, SCALE_ORDER)
  finished = sum(s.summary.finished for s in scored)
  source = os.path.relpath(runs_dir(sweep_dir), out_dir)  # a link that works where report.md is
  lines = [f"# {title or sweep_title(sweep_dir)}", "",
           f"Sweep report of {len(scored)} runs with metrics ({finished} finished), from "
           f"[{source}]({source}). Accuracy is `eval/accuracy`: the fraction of held-out "
           "problems solved; step 0 is the base model. Spreads are mean ± sample std "
           "over seeds (n = runs). Every table is also a CSV beside this file.", "",
           f"Cliffs: {cliff_text(cliff)}", "",
           "## The study's claims, tested on these runs", ""]
  for claim in claims_lib.all_claims(scored, dominant_share, cliff):
    lines += [f"**{claim.statement}** — *{claim.verdict}*", ""]
    lines += [f"- {line}" for line in claim.lines] + [""]

  lines += ["## The empirical map: gain over base", ""]
  lines += figure_lines("Gain at the end", [figures.gain_heatmap(
      scored, os.path.join(out, "map_gain_end.png"), "end", SCALE_ORDER)], out_dir)
  lines += figure_lines("Gain at the peak", [figures.gain_heatmap(
      scored, os.path.join(out, "map_gain_peak.png"), "peak", SCALE_ORDER)], out_dir)
  lines += table("map", ["cell (workflow/task/scale/policy)", "seeds", "base", "peak", "final",
                         "gain at end", "cliffs"], _map_rows(scored)) + [""]

  lines += ["## Accuracy curves, SP vs IP (dashed: base; red ▼: terminal cliff)", ""]
  for task in tasks:
    lines += figure_lines(task, [figures.accuracy_curves(
        scored, task, os.path.join(out, f"curves_{task}.png"), workflows=WORKFLOW_ORDER,
        scales=SCALE_ORDER)], out_dir)

  lines += _sensitivity_section(table, scored)
  lines += ["## Role-level gradient dynamics", ""] + _gradient_note(scored)
  for task in tasks:
    for scale in scales:
      lines += figure_lines(f"{task} / {scale}", [figures.gradient_dynamics(
          scored, task, scale, os.path.join(out, f"gradients_{task}_{scale}.png"),
          workflows=WORKFLOW_ORDER)], out_dir)
  pairs = claims_lib.amplification_pairs(scored, "isolated") + \
      claims_lib.amplification_pairs(scored, "shared")
  if pairs:
    lines += _amplification_section(table, pairs)
  lines += _start_parse_section(table, scored, pairs)

  lines += ["## Failure modes (from the sampled rollouts)", "",
            "Flagged when the rate over the last saved steps crosses its threshold "
            "(marl_jax.study.diagnostics.failure_modes); 'emerged' when it had not at the start.", ""]
  rows = []
  for s in scored:
    rows += _failure_rows(s.run.name, failure_modes.analyze(s.run.workdir, failure))
  lines += _failure_table(table, rows)
  lines += ["", "## Runs", ""]
  lines += table("runs", ["run", "steps", "base", "peak (step)", "final", "cliff step"],
                 [[s.run.name, OutOf(s.summary.steps_done, s.summary.steps_total),
                   Num(s.summary.base), AtStep(s.summary.peak, s.summary.peak_step),
                   Num(s.summary.final),
                   Int(s.summary.cliff.step if s.summary.cliff.found else None)]
                  for s in scored])
  path = os.path.join(out_dir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path
