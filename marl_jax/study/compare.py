"""Sweeps that differ in one setting, side by side: the mechanism study's report (docs/mechanisms).

An arm is one sweep directory (a sweep's --dir, or a published study with its
runs/) and a name: 'reference' for docs/mechanisms/reference. Every arm is
scored by the same claim tests as a sweep report (diagnostics.claims), on the
(workflow, task) cells every arm has (an arm's other cells are named and left
to its own report, so each figure compares like with like), and
write_comparison puts, per arm:
  - each claim's verdict;
  - the figures the verdicts rest on, as mean ± standard error (n runs or pairs):
    the gain over the base, the IP - SP peak and final gaps over paired runs,
    terminal cliffs of IP and SP under the absolute and the relative rule, and
    per workflow the same-role amplification ratios (update norm, drift) of IP
    N agents against its N = 1 reference, with their predictions;
  - the accuracy of SP, IP and the N = 1 references, mean over seeds;
  - each role's learning rate and update norm over the IP runs of one seed;
and links to each arm's own report (launch/report.py --dir=<arm>).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from marl_jax.study import figures
from marl_jax.study import report as report_lib
from marl_jax.study import tables
from marl_jax.study.diagnostics import amplification
from marl_jax.study.diagnostics import analysis
from marl_jax.study.diagnostics import claims as claims_lib
from marl_jax.study.diagnostics import cliffs

WORKFLOWS = ("voting", "orch_workers", "eval_opt")


@dataclasses.dataclass
class Arm:
  name: str
  path: str
  scored: list[claims_lib.Scored]

  @classmethod
  def load(cls, name: str, path: str, cliff: analysis.CliffConfig) -> "Arm":
    runs = report_lib.load_sweep(path)
    if not runs:
      raise FileNotFoundError(f"Arm {name!r}: no run in {path!r} has a config.json and metrics "
                              "yet; run its sweep (launch/sweep.py) first.")
    return cls(name, path, claims_lib.score(runs, cliff))

  @property
  def main(self) -> list[claims_lib.Scored]:
    return [s for s in self.scored if s.main]


def common_cells(arms: Sequence[Arm]) -> tuple[list[Arm], dict[str, list[str]]]:
  """The arms restricted to the (workflow, task) cells all of them have, and per
  arm the cells left out ('workflow/task')."""
  key = lambda s: (s.cell["workflow"], s.cell["task"])
  have = [{key(s) for s in a.scored} for a in arms]
  common = set.intersection(*have)
  kept = [Arm(a.name, a.path, [s for s in a.scored if key(s) in common]) for a in arms]
  return kept, {a.name: sorted("/".join(k) for k in h - common)
                for a, h in zip(arms, have) if h - common}


def parse_arms(text: str) -> list[tuple[str, str]]:
  """'name=dir,...' or 'dir,...' (named by the directory) -> [(name, dir)]."""
  out = []
  for item in filter(None, (x.strip() for x in text.split(","))):
    name, path = item.split("=", 1) if "=" in item else (
        os.path.basename(os.path.normpath(item)), item)
    out.append((name, path))
  names = [n for n, _ in out]
  if len(out) < 2 or len(set(names)) != len(names):
    raise ValueError(f"--compare={text!r} must name two or more arms with distinct names "
                     "('reference=docs/mechanisms/reference,joint=docs/mechanisms/joint').")
  return out


def _gaps(arm: Arm, field: str) -> tables.MeanSE:
  diffs = [getattr(p["isolated"].summary, field) - getattr(p["shared"].summary, field)
           for p in claims_lib.paired(arm.scored)]
  return tables.MeanSE(tuple(diffs), signed=True)


def _cliffs(arm: Arm, rule: analysis.CliffConfig) -> str:
  both = claims_lib.paired(arm.scored)
  if not both:
    return "-"
  ip, sp = (cliffs.count([p[policy].run for p in both], rule) for policy in ("isolated", "shared"))
  _, _, p = cliffs.paired_excess(ip, sp)
  return f"IP {ip.cliffs}/{ip.runs}, SP {sp.cliffs}/{sp.runs} (p = {p:.2f})"


def _pairs(arm: Arm, workflow: str) -> list[amplification.Pair]:
  """IP same-workflow amplification pairs with a working reference and both figures."""
  return [p for p in claims_lib.amplification_pairs(arm.scored, "isolated")
          if p.run.cell["workflow"] == workflow and not p.proxy and not p.ref_broken
          and p.measured]


def _ratio(arm: Arm, workflow: str, figure: str) -> str:
  pairs = _pairs(arm, workflow)
  if not pairs:
    return "-"
  cell = tables.MeanSE(tuple(p.ratios[figure] for p in pairs)).md()
  aligned, independent = amplification.mean_prediction(pairs, figure)
  return f"{cell}; predicted {aligned:.2f} aligned, {independent:.2f} independent"


def _steps(arm: Arm, workflow: str) -> str:
  pairs = [p for p in _pairs(arm, workflow) if p.prediction]
  if not pairs:
    return "-"
  steps = np.asarray([p.prediction.steps for p in pairs], float)
  lr = np.mean([p.prediction.lr_ratio for p in pairs])
  return f"{steps[:, 0].mean():.2f} vs {steps[:, 1].mean():.2f} (lr ratio {lr:.2f})"


def _broken(arm: Arm) -> str:
  pairs = claims_lib.amplification_pairs(arm.scored, "isolated")
  bad = sorted({p.ref.name for p in pairs if p.ref_broken})
  return f"{len(bad)}" + (f" ({', '.join(bad)})" if bad else "")


def comparison_rows(arms: Sequence[Arm], cliff: analysis.CliffConfig
                    ) -> list[tuple[str, list[tables.Cell]]]:
  """(figure, a cell per arm) for the comparison table."""
  absolute, relative = (claims_lib.cliff_rules(cliff) if not cliff.relative
                        else claims_lib.cliff_rules(cliff)[::-1])
  rows = [
      ("runs: main matrix / N = 1 references",
       [f"{len(a.main)} / {len(a.scored) - len(a.main)}" for a in arms]),
      ("claim 1: gain at the end over the base (per run)",
       [tables.MeanSE(tuple(s.summary.gain_end for s in a.main), signed=True) for a in arms]),
      ("claim 2: peak IP − SP (per paired run)", [_gaps(a, "peak") for a in arms]),
      ("claim 2: final IP − SP (per paired run)", [_gaps(a, "final") for a in arms]),
      (f"claim 2: terminal cliffs, {absolute.rule()}", [_cliffs(a, absolute) for a in arms]),
      (f"claim 2: terminal cliffs, {relative.rule()}", [_cliffs(a, relative) for a in arms]),
  ]
  present = {s.cell["workflow"] for a in arms for s in a.scored}
  for workflow in [w for w in WORKFLOWS if w in present]:
    if not any(_pairs(a, workflow) for a in arms):
      continue
    rows += [
        (f"claim 3: {workflow} update norm, N agents / 1 (per pair)",
         [_ratio(a, workflow, "update_norm") for a in arms]),
        (f"claim 3: {workflow} drift, N agents / 1", [_ratio(a, workflow, "drift") for a in arms]),
        (f"claim 3: {workflow} optimizer steps an iteration of the role, N vs 1",
         [_steps(a, workflow) for a in arms])]
  rows.append(("claim 3: references that start broken (left out)", [_broken(a) for a in arms]))
  return rows


def _curves(runs: Sequence[claims_lib.Scored], metric: str):
  return figures.mean_curve([analysis.curve(s.run.records, metric) for s in runs])


def accuracy_grid(arms: Sequence[Arm], path: str) -> str | None:
  """Rows (workflow, task), columns arms: SP, IP and IP N = 1, mean over seeds."""
  keys = sorted({(s.cell["workflow"], s.cell["task"]) for a in arms for s in a.scored},
                key=lambda k: (WORKFLOWS.index(k[0]) if k[0] in WORKFLOWS else 9, k[1]))
  if not keys:
    return None
  fig, axes = figures.plt.subplots(len(keys), len(arms), squeeze=False, sharey="row",
                                   figsize=(3.2 * len(arms), 2.3 * len(keys)))
  groups = (("shared", True, "tab:blue", "-", "SP"), ("isolated", True, "tab:orange", "-", "IP"),
            ("isolated", False, "0.45", "--", "IP, N = 1"))
  for row, (workflow, task) in enumerate(keys):
    for col, arm in enumerate(arms):
      ax = axes[row][col]
      for policy, main, color, ls, label in groups:
        runs = [s for s in arm.scored if s.main == main and s.cell["policy"] == policy
                and (s.cell["workflow"], s.cell["task"]) == (workflow, task)]
        if runs:
          steps, values = _curves(runs, analysis.ACCURACY)
          ax.plot(steps, values, ls, color=color, lw=1.2, label=f"{label} ({len(runs)} seeds)")
      ax.set_title(f"{arm.name}: {workflow} / {task}", fontsize=8)
      figures.labels(ax, figures.STEP, figures.EVAL_ACCURACY)
      if ax.lines:
        ax.legend(fontsize=6)
  return figures.save(fig, path)


def role_traces(arms: Sequence[Arm], path: str, seed: int = 0) -> str | None:
  """Per arm and workflow, the IP run of `seed` on math: each role's lr/<role> and
  update_norm/<role> per step (the rate that climbs back, the steps it takes)."""
  runs = {(a.name, s.cell["workflow"]): s.run for a in arms for s in a.main
          if s.cell["policy"] == "isolated" and s.cell["task"] == "math"
          and s.cell["seed"] == seed}
  workflows = [w for w in WORKFLOWS if any(k[1] == w for k in runs)]
  if not workflows:
    return None
  fig, axes = figures.plt.subplots(2 * len(workflows), len(arms), squeeze=False, sharex=True,
                                   sharey="row",
                                   figsize=(3.2 * len(arms), 2.0 * 2 * len(workflows)))
  for w, workflow in enumerate(workflows):
    for col, arm in enumerate(arms):
      run = runs.get((arm.name, workflow))
      for k, (prefix, label) in enumerate((("lr/", "learning rate\n(per optimizer step)"),
                                           ("update_norm/", "update norm\n||Δθ|| per step"))):
        ax = axes[2 * w + k][col]
        for key in sorted({m for r in (run.records if run else ()) for m in r
                           if m.startswith(prefix)}):
          role = key[len(prefix):]
          steps, values = analysis.curve(run.records, key)
          ax.plot(steps, values, color=figures.ROLE_COLORS.get(role, "0.3"), lw=1, label=role)
        ax.set_title(f"{arm.name}: {workflow} / math, IP, seed {seed}", fontsize=8)
        figures.labels(ax, figures.STEP, label)
        if ax.lines:
          ax.legend(fontsize=6)
  return figures.save(fig, path)


def write_comparison(arms: Sequence[tuple[str, str]], out_dir: str, title: str,
                     cliff: analysis.CliffConfig = analysis.CliffConfig(),
                     dominant_share: float = 0.6) -> str:
  """Writes <out_dir>/report.md (module doc), its figures and CSV; returns its path."""
  loaded, left_out = common_cells([Arm.load(name, path, cliff) for name, path in arms])
  if not any(a.scored for a in loaded):
    raise ValueError("The arms share no (workflow, task) cell: nothing to compare.")
  os.makedirs(os.path.join(out_dir, report_lib.FIGURES), exist_ok=True)
  table = tables.Tables(out_dir, "report_")
  link = lambda a: os.path.relpath(os.path.join(a.path, "report.md"), out_dir)
  lines = [f"# {title}", "",
           f"{len(arms)} arms of one matrix, each a sweep scored by the same claim tests as its "
           "own report: " + ", ".join(f"[{a.name}]({link(a)})" for a in loaded) + ". "
           "Figures are mean ± standard error of the mean (n runs or paired runs); "
           "each table is also a CSV beside this file.", "",
           "Cells compared (every arm has them): " + ", ".join(sorted(
               {f"{s.cell['workflow']}/{s.cell['task']}" for s in loaded[0].scored})) + "." + (
               " Left out here, in their arm's own report: " + "; ".join(
                   f"{name} {', '.join(cells)}" for name, cells in left_out.items()) + "."
               if left_out else ""), "",
           f"Cliffs: {report_lib.cliff_text(cliff)}", "", "## Verdicts", ""]
  verdicts = [{c.key: c for c in claims_lib.all_claims(a.scored, dominant_share, cliff)}
              for a in loaded]
  lines += table("verdicts", ["claim"] + [a.name for a in loaded],
                 [[claim.statement] + [v[key].verdict for v in verdicts]
                  for key, claim in verdicts[0].items()]) + [""]
  lines += ["## What the verdicts rest on", ""]
  rows = comparison_rows(loaded, cliff)
  lines += table("figures", ["figure"] + [a.name for a in loaded],
                 [[name] + [c if isinstance(c, str) else c.md() for c in cells]
                  for name, cells in rows]) + [""]
  out = os.path.join(out_dir, report_lib.FIGURES)
  for caption, path in (
      ("Accuracy: SP, IP and the N = 1 references, mean over seeds",
       accuracy_grid(loaded, os.path.join(out, "compare_accuracy.png"))),
      ("Each role's learning rate and update norm (IP, math, seed 0)",
       role_traces(loaded, os.path.join(out, "compare_roles.png")))):
    lines += report_lib.figure_lines(caption, [path], out_dir)
  lines += ["## Each claim's lines, per arm", ""]
  for arm, v in zip(loaded, verdicts):
    lines += [f"### {arm.name}", ""]
    for claim in v.values():
      lines += [f"**{claim.statement}** — *{claim.verdict}*", ""]
      lines += [f"- {line}" for line in claim.lines] + [""]
  path = os.path.join(out_dir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path
