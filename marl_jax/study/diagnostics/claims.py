"""The reference study's four claims, tested on the runs of a sweep.

  1 gains       RL gains over the base in most cells: more than half of the
                (workflow, task, scale, policy) cells have a positive mean
                (over seeds) gain of the final evaluation over the base.
  2 ip_peaks    IP reaches higher peaks but falls off cliffs more often: the
                mean paired (same workflow, task, scale, seed) peak of IP minus
                SP is above zero by more than two standard errors (its sign,
                for a single pair), and IP falls off terminal cliffs more often
                than SP on the same pairs (McNemar's exact one-sided test,
                p < 0.05: cliffs.paired_excess), under the report's rule (analysis.CliffConfig: by
                default a drop of 0.10 below the peak over the last 3
                evaluations) and under its other form (cliff_rules: the
                relative form, giving back half of the peak's gain over the
                base). Also reported: how often the learning rate over the
                inspected evaluations was ~0 (diagnostics.cliffs), and the
                counts over a grid of rules (cliffs.RULES). One-role workflows
                (single) are left out: there SP and IP are the same model.
  3 amplify     Under IP, parallel same-role agents amplify their role's
                update: over the last third of each run, the role's update
                norm and its drift with N agents over N = 1
                (diagnostics.amplification) are each above 1 in most pairs
                and on average by two standard errors. Each pair comes with
                the ratios its update mechanics predict (diagnostics.mechanics:
                the loss's denominator, optimizer steps per iteration, the
                learning rate) for aligned and for independent rows. The N = 1
                reference is a run of the same workflow with n / m = 1 when
                the sweep has one, else (voting only) the single workflow's
                generator, a proxy; references with a role that fails to parse
                from the start are listed and left out. Runs that did not log
                update norms and drift (older runs) fall back to the
                gradient-norm ratio, said so in the claim; the gradient-norm
                ratio is also shown, with its prediction, as a secondary figure.
  4 dominant    Under SP, the dominant role captures the gradient mass: in most
                SP runs with >= 2 roles one role's mean share of the gradient
                mass is at least `dominant_share` (default 0.6).
Verdicts: 'supported', 'partly supported', 'not supported', 'no data'.
Every number comes with its spread over seeds (mean ± sample std, n).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from marl_jax.study.diagnostics import amplification
from marl_jax.study.diagnostics import analysis
from marl_jax.study.diagnostics import cliffs
from marl_jax.study.diagnostics import gradients
from marl_jax.study.diagnostics import roles

MAIN_KEYS = ("workflow", "task", "scale", "policy")
DEFAULT_AGENTS = {"voting": 3, "majority_vote": 3, "orch_workers": 3}
ONE_ROLE = ("single", "majority_vote")
MORE_OFTEN_P = 0.05  # claim 2: IP falls more often (cliffs.paired_excess)


@dataclasses.dataclass
class Claim:
  key: str
  statement: str
  verdict: str
  lines: list[str]


@dataclasses.dataclass
class Scored:
  """A run with its summary (the unit every claim works on)."""

  run: analysis.RunData
  summary: analysis.RunSummary

  @property
  def cell(self) -> dict[str, Any]:
    return self.run.cell

  @property
  def main(self) -> bool:
    """In the main matrix: no sweep variant, and not a 1-agent reference of a
    multi-agent workflow (any other agent count is the run's own setting: the
    SmolLM2 run's Voting has 2 generators)."""
    c = self.cell
    return not self.run.variant and (c["agents"] > 1 or DEFAULT_AGENTS.get(c["workflow"], 1) == 1)


def score(runs: Sequence[analysis.RunData],
          cliff: analysis.CliffConfig = analysis.CliffConfig()) -> list[Scored]:
  return [Scored(r, r.summary(cliff)) for r in runs]


def cells(scored: Sequence[Scored], keys: Sequence[str] = MAIN_KEYS
          ) -> dict[tuple, list[Scored]]:
  """Main-matrix runs grouped by `keys` (seeds pooled), in sorted order."""
  out = collections.defaultdict(list)
  for s in scored:
    if s.main:
      out[tuple(s.cell[k] for k in keys)].append(s)
  return dict(sorted(out.items(), key=lambda kv: tuple(map(str, kv[0]))))


def _verdict(parts: Sequence[bool | None]) -> str:
  known = [p for p in parts if p is not None]
  if not known:
    return "no data"
  if all(known) and len(known) == len(parts):
    return "supported"
  return "partly supported" if any(known) else "not supported"


def claim_gains(scored: Sequence[Scored]) -> Claim:
  rows = [(key, [s.summary.gain_end for s in group], [s.summary.gain_peak for s in group])
          for key, group in cells(scored).items()]
  rows = [r for r in rows if analysis.spread(r[1])[2]]
  statement = "RL gains over the base model in most cells."
  if not rows:
    return Claim("gains", statement, "no data", ["No cell has a base and a final evaluation."])
  end = [analysis.spread(e)[0] for _, e, _ in rows]
  peak = [analysis.spread(p)[0] for _, _, p in rows]
  seeded = [e for _, e, _ in rows if analysis.spread(e)[2] > 1]  # a std needs two seeds
  firm = sum(1 for e in seeded if analysis.spread(e)[0] - analysis.spread(e)[1] > 0)
  up = sum(g > 0 for g in end)
  fmt = lambda values: analysis.format_spread(values, signed=True)
  lines = [f"{up}/{len(rows)} cells gain at the end (mean over seeds); "
           f"{sum(g > 0 for g in peak)}/{len(rows)} at the peak; "
           f"{firm}/{len(seeded)} cells with two or more seeds gain by more than one seed "
           "std at the end.",
           f"Gain at the end over cells: {fmt(end)}; at the peak: {fmt(peak)}."]
  best = max(rows, key=lambda r: analysis.spread(r[1])[0])
  worst = min(rows, key=lambda r: analysis.spread(r[1])[0])
  lines.append(f"Best cell {'/'.join(map(str, best[0]))}: {fmt(best[1])}; "
               f"worst {'/'.join(map(str, worst[0]))}: {fmt(worst[1])}.")
  return Claim("gains", statement, _verdict([up > len(rows) / 2]), lines)


def paired(scored: Sequence[Scored]) -> list[dict[str, Scored]]:
  """{'shared': run, 'isolated': run} of every (workflow, task, scale, seed) of the
  main matrix with both, one-role workflows left out."""
  pairs = collections.defaultdict(dict)
  for s in scored:
    c = s.cell
    if s.main and c["workflow"] not in ONE_ROLE and c["policy"] in ("shared", "isolated"):
      pairs[(c["workflow"], c["task"], c["scale"], c["seed"])][c["policy"]] = s
  return [p for _, p in sorted(pairs.items(), key=lambda kv: tuple(map(str, kv[0])))
          if len(p) == 2]


def cliff_rules(cliff: analysis.CliffConfig) -> tuple[analysis.CliffConfig, ...]:
  """The report's rule and its other form: absolute <-> relative (half the gain)."""
  other = dataclasses.replace(cliff, relative=0.0 if cliff.relative else 0.5)
  return cliff, other


def _cliff_lines(both: Sequence[dict[str, Scored]], cliff: analysis.CliffConfig
                 ) -> tuple[list[str], list[bool]]:
  """Claim 2's cliff lines and its tests (IP falls more often, under each form)."""
  groups = {p: [pair[p].run for pair in both] for p in ("isolated", "shared")}
  counts = [(rule, {p: cliffs.count(runs, rule) for p, runs in groups.items()})
            for rule in cliff_rules(cliff)]
  tests = [cliffs.paired_excess(c["isolated"], c["shared"]) for _, c in counts]
  parts = [f"{rule.rule()}, last {rule.window} evaluations: IP {c['isolated'].cliffs}/"
           f"{c['isolated'].runs}, SP {c['shared'].cliffs}/{c['shared'].runs}, pairs where "
           f"only IP / only SP fell {a}/{b}, one-sided exact p = {p:.2f}"
           for (rule, c), (a, b, p) in zip(counts, tests)]
  lines = ["Terminal cliffs (" + "; ".join(parts) + "). IP falls more often where p < "
           f"{MORE_OFTEN_P}."]
  shares = {p: cliffs.span_shares(runs, cliff.window, cliff.metric) for p, runs in groups.items()}
  known = sum(len(v) for v in shares.values())
  if known:
    low = sum(s < cliffs.LOW_LR for v in shares.values() for s in v)
    low_found = sum(c[p].cliffs_low_lr for _, c in counts for p in c)
    lines.append(f"Learning rate over the updates the last {cliff.window} evaluations inspect, "
                 f"as a share of each run's peak rate: IP {analysis.format_spread(shares['isolated'])}"
                 f", SP {analysis.format_spread(shares['shared'])}; below {cliffs.LOW_LR} (~0: "
                 f"no fall or recovery there can come from updates) in {low}/{known} runs"
                 + (f", {low_found} of the cliffs above among them." if low_found else "."))
  else:
    lines.append("The learning rate over the inspected evaluations is unknown (no lr/<role> "
                 "logged and no schedule in the runs' configs).")
  grid = cliffs.sensitivity(groups)
  more = sum(c["isolated"].cliffs > c["shared"].cliffs for _, c in grid)
  fewer = sum(c["isolated"].cliffs < c["shared"].cliffs for _, c in grid)
  lines.append(f"Over the {len(grid)} rules of the sensitivity grid (absolute drops 0.05-0.15, "
               "relative give-backs 25-75%, over the last 2 or 3 evaluations; the table "
               f"below): IP has more cliffs than SP under {more}, fewer under {fewer}.")
  return lines, [a > b and p < MORE_OFTEN_P for a, b, p in tests]


def claim_ip_peaks(scored: Sequence[Scored],
                   cliff: analysis.CliffConfig = analysis.CliffConfig()) -> Claim:
  """Claim 2, with terminal cliffs under `cliff` and its other form (cliff_rules)."""
  statement = "IP reaches higher peaks than SP but falls off terminal cliffs more often."
  both = paired(scored)
  if not both:
    return Claim("ip_peaks", statement, "no data", ["No (workflow, task, scale, seed) has both "
                                                    "an SP and an IP run."])
  diffs = [p["isolated"].summary.peak - p["shared"].summary.peak for p in both]
  mean_diff, std_diff, n = analysis.spread(diffs)
  stderr = std_diff / math.sqrt(n) if n else math.nan
  higher = None if math.isnan(mean_diff) else mean_diff > (2 * stderr if n > 1 else 0.0)
  by_workflow = collections.defaultdict(list)
  for p, d in zip(both, diffs):
    by_workflow[p["shared"].cell["workflow"]].append(d)
  fmt = lambda values: analysis.format_spread(values, signed=True)
  test = ("one pair: its sign, untested against a spread" if n < 2 else
          f"standard error {stderr:.3f}: " + ("IP higher" if higher else
                                               "not above zero by two standard errors"))
  lines = [f"Peak accuracy IP - SP over {len(both)} paired runs: {fmt(diffs)}; "
           f"IP higher in {sum(d > 0 for d in diffs)}/{len(diffs)}; {test}.",
           "By workflow: " + "; ".join(f"{w} {fmt(d)}"
                                       for w, d in sorted(by_workflow.items())) + "."]
  cliff_lines, more = _cliff_lines(both, cliff)
  return Claim("ip_peaks", statement, _verdict([higher] + more), lines + cliff_lines)


def amplification_pairs(scored: Sequence[Scored], policy: str = "isolated"
                        ) -> list[amplification.Pair]:
  """The same-role amplification pairs of `policy`'s runs (diagnostics.amplification)."""
  return amplification.pairs([s.run for s in scored], policy)


def _group_key(p: amplification.Pair) -> tuple[str, str]:
  return p.run.cell["workflow"], "proxy" if p.proxy else "same workflow"


def _prediction_lines(pairs: Sequence[amplification.Pair], figure: str) -> list[str]:
  """Per (workflow, reference kind): the predicted and the observed ratio of `figure`."""
  groups = collections.defaultdict(list)
  for p in pairs:
    groups[_group_key(p)].append(p)
  lines = []
  for (workflow, kind), group in sorted(groups.items()):
    aligned, independent = amplification.mean_prediction(group, figure)
    observed = [p.ratios[figure] for p in group]
    schemes = sorted({p.prediction.scheme for p in group if p.prediction})
    near = collections.Counter(amplification.nearest(p.ratios[figure], p.prediction, figure)
                               for p in group if p.prediction)
    label = "Gradient norm" if figure == "grad_norm" else "Update norm"
    agents = "/".join(str(n) for n in sorted({p.run.cell["agents"] for p in group}))
    text = (f"{label}, {workflow} N = {agents} vs 1 ({kind}, {len(group)} pairs): "
            f"predicted {aligned:.2f} if the rows' gradients align, "
            f"{independent:.2f} if independent; observed {analysis.format_spread(observed)}, "
            "nearest: " + ", ".join(f"{k} {v}" for k, v in sorted(near.items())))
    if figure != "grad_norm":
      steps = [p.prediction.steps for p in group if p.prediction]
      lr = [p.prediction.lr_ratio for p in group if p.prediction]
      sources = sorted({p.prediction.lr_source for p in group if p.prediction})
      logged = all(p.prediction.steps_logged for p in group if p.prediction)
      text += (f" (optimizer steps per iteration {np.mean([a for a, _ in steps]):.2f} vs "
               f"{np.mean([b for _, b in steps]):.2f}, {'logged' if logged else 'from config'};"
               f" learning-rate ratio {np.mean(lr):.2f}, {'/'.join(sources)})")
    lines.append(text + (f"; {'; '.join(schemes)}." if schemes else "."))
  return lines


def claim_amplify(scored: Sequence[Scored]) -> Claim:
  """Claim 3 on update norms and drift (diagnostics.amplification), else gradient norms."""
  statement = ("Under IP, parallel agents of one role amplify that role's update "
               "(judged on update norms and drift over the last third of each run).")
  pairs = amplification_pairs(scored, "isolated")
  if not pairs:
    return Claim("amplify", statement, "no data", [
        "No IP run with N >= 2 parallel agents has a 1-agent reference (a run with "
        "workflow.options n/m = 1, or for voting the single workflow) with update or "
        "gradient norms."])
  broken = [p for p in pairs if p.ref_broken]
  clean = [p for p in pairs if not p.ref_broken]
  lines = []
  if broken:
    lines.append(f"{len(broken)}/{len(pairs)} references start broken (a role parses under "
                 f"{roles.PARSE_FLOOR:.0%} of its calls before any update) and are left out "
                 "of the verdict: " + "; ".join(
                     f"{p.ref.name} ({', '.join(p.ref_broken)})" for p in broken) + ".")
  proxies = sum(p.proxy for p in pairs)
  lines.append(f"References: {len(pairs) - proxies} same-workflow N = 1 runs, {proxies} "
               "single-workflow proxies (another prompt).")
  measured = [p for p in clean if p.measured]
  fmt = analysis.format_spread
  parts = []
  if measured:
    update = [p.ratios["update_norm"] for p in measured]
    drift = [p.ratios["drift"] for p in measured]
    lines.insert(0, f"Update norm ||delta theta|| per iteration, N agents / 1 agent, mean over "
                    f"the last third, {len(measured)} pairs: {fmt(update)}, above 1 in "
                    f"{sum(r > 1 for r in update)}/{len(update)}; drift ||theta_t - theta_0||: "
                    f"{fmt(drift)}, above 1 in {sum(r > 1 for r in drift)}/{len(drift)}.")
    lines.append("Predicted update-norm ratios: under Adam each optimizer step is ~lr in size "
                 "whatever the gradient's scale, so K steps an iteration give ~K*lr if they "
                 "align and ~sqrt(K)*lr if independent; the drift's predicted ratio is the "
                 "update norm's.")
    lines += _prediction_lines(measured, "update_norm")
    parts = [amplification.amplified(update), amplification.amplified(drift)]
    if len(measured) < len(clean):
      lines.append(f"{len(clean) - len(measured)} pairs without update norms or drift "
                   "(older runs) are left out of the verdict.")
  elif not any(p.measured for p in pairs):
    parts = [amplification.amplified([p.ratios["grad_norm"] for p in clean])] if clean else []
    lines.insert(0, "Fallback: these runs did not log update_norm/<role> or drift/<role> (they "
                    "predate those metrics), so the claim is judged on the gradient norm, "
                    "which under Adam is not an update size.")
  grads = [p for p in clean if math.isfinite(p.ratios["grad_norm"])]
  if grads:
    ratios = [p.ratios["grad_norm"] for p in grads]
    lines.append(f"{'Secondary: g' if measured else 'G'}radient norm N agents / 1 agent over "
                 f"{len(grads)} pairs: {fmt(ratios)}, above 1 in {sum(r > 1 for r in ratios)}/"
                 f"{len(ratios)}; its predictions follow from the loss's denominator "
                 "and the update scheme (rows of the role over the rows of the step).")
    lines += _prediction_lines(grads, "grad_norm")
  if broken:
    figure = "update_norm" if all(p.measured for p in broken) else "grad_norm"
    lines += [f"Left out (broken reference), for the record: {t}"
              for t in _prediction_lines(broken, figure)]
  sp = amplification_pairs(scored, "shared")
  sp_update = [p.ratios["update_norm"] for p in sp if math.isfinite(p.ratios["update_norm"])]
  sp_grad = [p.ratios["grad_norm"] for p in sp if math.isfinite(p.ratios["grad_norm"])]
  if sp_update or sp_grad:
    lines.append("Under SP, for contrast: " + "; ".join(
        f"{name} {fmt(v)}" for name, v in (("update norm", sp_update), ("gradient norm", sp_grad))
        if v) + ".")
  if not clean:
    return Claim("amplify", statement, "no data", lines + [
        "Every reference starts broken: no pair can test the claim."])
  return Claim("amplify", statement, _verdict(parts), lines)


def claim_dominant(scored: Sequence[Scored], dominant_share: float = 0.6) -> Claim:
  statement = "Under SP, the dominant role captures the gradient mass."
  found = collections.defaultdict(list)
  for s in scored:
    if s.cell["policy"] == "shared" and s.main:
      dom = gradients.dominant_role(s.run.records)
      if dom:
        found[s.cell["workflow"]].append(dom)
  if not found:
    return Claim("dominant", statement, "no data", [
        "No SP run with >= 2 roles logged a non-zero per-role gradient split "
        "(grad_mass_share; rl.role_grad_every > 0)."])
  lines, hits, total = [], 0, 0
  for workflow, doms in sorted(found.items()):
    roles = collections.Counter(r for r, _ in doms)
    role, count = roles.most_common(1)[0]
    shares = [share for _, share in doms]
    hits += sum(share >= dominant_share for share in shares)
    total += len(shares)
    lines.append(f"{workflow}: {role} dominates in {count}/{len(doms)} runs; dominant share "
                 f"{analysis.format_spread(shares)}.")
  lines.insert(0, f"{hits}/{total} SP runs have a role with a mean share >= {dominant_share}.")
  return Claim("dominant", statement, _verdict([hits > total / 2]), lines)


def all_claims(scored: Sequence[Scored], dominant_share: float = 0.6,
               cliff: analysis.CliffConfig = analysis.CliffConfig()) -> list[Claim]:
  return [claim_gains(scored), claim_ip_peaks(scored, cliff), claim_amplify(scored),
          claim_dominant(scored, dominant_share)]
