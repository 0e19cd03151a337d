"""The reference study's four claims, tested on the runs of a sweep.

  1 gains       RL gains over the base in most cells: more than half of the
                (workflow, task, scale, policy) cells have a positive mean
                (over seeds) gain of the final evaluation over the base.
  2 ip_peaks    IP reaches higher peaks but falls off cliffs more often: the
                mean paired (same workflow, task, scale, seed) peak of IP minus
                SP is above zero by more than two standard errors (its sign,
                for a single pair), and the share of IP runs with a terminal cliff
                (analysis.CliffConfig) exceeds SP's. One-role workflows (single)
                are left out: there SP and IP are the same model.
  3 amplify     Under IP, parallel same-role agents amplify their role's
                gradient: the mean ratio of the role's gradient norm with N
                agents to N = 1 (gradients.amplification) is above 1 in most
                pairs. The N = 1 reference is a run of the same workflow with
                n / m = 1 when the sweep has one, else (voting only) the single
                workflow's generator, a proxy.
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

from marl_jax.study.diagnostics import analysis
from marl_jax.study.diagnostics import gradients

MAIN_KEYS = ("workflow", "task", "scale", "policy")
DEFAULT_AGENTS = {"voting": 3, "majority_vote": 3, "orch_workers": 3}
PARALLEL_ROLE = {"voting": "generator", "majority_vote": "generator", "orch_workers": "worker"}
ONE_ROLE = ("single", "majority_vote")


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
    """In the main matrix: no sweep variant, the workflow's default number of agents."""
    c = self.cell
    return not self.run.variant and c["agents"] == DEFAULT_AGENTS.get(c["workflow"], 1)


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


def claim_ip_peaks(scored: Sequence[Scored]) -> Claim:
  statement = "IP reaches higher peaks than SP but falls off terminal cliffs more often."
  pairs = collections.defaultdict(dict)
  for s in scored:
    c = s.cell
    if s.main and c["workflow"] not in ONE_ROLE and c["policy"] in ("shared", "isolated"):
      pairs[(c["workflow"], c["task"], c["scale"], c["seed"])][c["policy"]] = s
  both = [p for p in pairs.values() if len(p) == 2]
  if not both:
    return Claim("ip_peaks", statement, "no data", ["No (workflow, task, scale, seed) has both "
                                                    "an SP and an IP run."])
  diffs = [p["isolated"].summary.peak - p["shared"].summary.peak for p in both]
  rate = {}
  for policy in ("shared", "isolated"):
    runs = [p[policy] for p in both]
    rate[policy] = (sum(r.summary.cliff.found for r in runs), len(runs))
  mean_diff, std_diff, n = analysis.spread(diffs)
  stderr = std_diff / math.sqrt(n) if n else math.nan
  higher = None if math.isnan(mean_diff) else mean_diff > (2 * stderr if n > 1 else 0.0)
  more = rate["isolated"][0] > rate["shared"][0]
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
                                       for w, d in sorted(by_workflow.items())) + ".",
           f"Terminal cliffs: IP {rate['isolated'][0]}/{rate['isolated'][1]}, "
           f"SP {rate['shared'][0]}/{rate['shared'][1]}."]
  return Claim("ip_peaks", statement, _verdict([higher, more]), lines)


def _reference(s: Scored, scored: Sequence[Scored]) -> tuple[Scored, str] | None:
  c = s.cell
  same = lambda o, **kw: all(o.cell[k] == kw.get(k, c[k]) for k in
                             ("workflow", "task", "scale", "policy", "seed"))
  for o in scored:
    if o.cell["agents"] == 1 and same(o):
      return o, PARALLEL_ROLE[c["workflow"]]
  if c["workflow"] == "voting":
    # One role: the single workflow's SP and IP runs are the same model, so
    # either serves (a sweep may run only one of them).
    singles = [o for o in scored if same(o, workflow="single", policy=o.cell["policy"])]
    for o in sorted(singles, key=lambda o: o.cell["policy"] != c["policy"]):
      return o, "generator"
  return None


def amplification_pairs(scored: Sequence[Scored], policy: str = "isolated"
                        ) -> list[tuple[Scored, Scored, float]]:
  """(N-agent run, 1-agent reference, ratio) for the runs of `policy`."""
  out = []
  for s in scored:
    c = s.cell
    if c["policy"] != policy or c["workflow"] not in PARALLEL_ROLE or c["agents"] < 2:
      continue
    found = _reference(s, scored)
    if found:
      ref, ref_role = found
      ratio = gradients.amplification(s.run.records, ref.run.records,
                                      PARALLEL_ROLE[c["workflow"]], role_1=ref_role)
      if not math.isnan(ratio):
        out.append((s, ref, ratio))
  return out


def claim_amplify(scored: Sequence[Scored]) -> Claim:
  statement = "Under IP, parallel agents of one role amplify that role's gradient."
  pairs = amplification_pairs(scored, "isolated")
  if not pairs:
    return Claim("amplify", statement, "no data", [
        "No IP run with N >= 2 parallel agents has a 1-agent reference (a run with "
        "workflow.options n/m = 1, or for voting the single workflow) with gradient norms."])
  ratios = [r for _, _, r in pairs]
  agents = sorted({s.cell["agents"] for s, _, _ in pairs})
  proxies = sum(ref.cell["workflow"] == "single" for _, ref, _ in pairs)
  lines = [f"grad_norm ratio N agents / 1 agent over {len(pairs)} pairs: "
           f"{analysis.format_spread(ratios)}; above 1 in {sum(r > 1 for r in ratios)}/"
           f"{len(ratios)} (N = {agents}: ~N if the agents' gradients align, ~sqrt(N) if "
           "independent).",
           f"References: {len(pairs) - proxies} same-workflow N = 1 runs, {proxies} single-"
           "workflow proxies."]
  sp = [r for _, _, r in amplification_pairs(scored, "shared")]
  if sp:
    lines.append(f"Under SP, for contrast: {analysis.format_spread(sp)}.")
  above = sum(r > 1 for r in ratios) > len(ratios) / 2
  return Claim("amplify", statement, _verdict([above and np.mean(ratios) > 1]), lines)


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


def all_claims(scored: Sequence[Scored], dominant_share: float = 0.6) -> list[Claim]:
  return [claim_gains(scored), claim_ip_peaks(scored), claim_amplify(scored),
          claim_dominant(scored, dominant_share)]
