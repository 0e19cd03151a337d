"""Claim 2's cliffs: the relative rule, the sensitivity grid, the learning-rate flag
and the paired test; and the parse rates every run starts from."""

import json
import os

import numpy as np
import pytest

from marl_jax.study import report
from marl_jax.study.diagnostics import analysis
from marl_jax.study.diagnostics import claims
from marl_jax.study.diagnostics import cliffs
from marl_jax.study.diagnostics import roles


def test_relative_cliff_gives_back_a_share_of_the_gain():
  # base 0.30, peak 0.36 (gain 0.06); the last three sit 0.03-0.04 under the peak
  values = [0.30, 0.34, 0.36, 0.32, 0.33, 0.32]
  steps = np.arange(6) * 10
  assert not analysis.detect_cliff(steps, values).found  # 0.10 absolute: more than the gain
  half = analysis.CliffConfig(relative=0.5)
  cliff = analysis.detect_cliff(steps, values, half)
  assert cliff.found and cliff.step == 30 and cliff.drop == pytest.approx(0.04)
  assert not analysis.detect_cliff(steps, values, analysis.CliffConfig(relative=0.75)).found
  # it recovers inside the window: no cliff
  assert not analysis.detect_cliff(steps, [0.30, 0.34, 0.36, 0.32, 0.34, 0.32], half).found
  # a run that never rose above its base has no gain to give back
  assert not analysis.detect_cliff(steps, [0.4, 0.3, 0.2, 0.2, 0.2, 0.2], half).found
  assert half.rule() == "gives back >= 50% of the peak's gain over the base"
  assert analysis.CliffConfig().rule() == "drop >= 0.10 below the peak"
  with pytest.raises(ValueError, match="relative"):
    analysis.CliffConfig(relative=1.5)


def _run(name, policy, evals, every=10, seed=0, lr=None, **rl):
  """A RunData whose accuracy follows `evals` (every `every` steps), on a cosine
  schedule over the run, or with lr/<role> logged as lr(step)."""
  steps = every * (len(evals) - 1)
  config = {"workflow": {"name": "voting"}, "task": {"family": "math"},
            "model": {"preset": "tiny_m"}, "policy": {"mode": policy}, "seed": seed,
            "train": {"steps": steps},
            "rl": {"lr": 3e-4, "schedule": "cosine", "warmup_steps": 0, **rl}}
  records = [{"step": 0, "eval/accuracy": evals[0]}]
  for step in range(1, steps + 1):
    r = {"step": step}
    if step % every == 0:
      r["eval/accuracy"] = evals[step // every]
    if lr is not None:
      r["lr/generator"] = lr(step)
    records.append(r)
  return analysis.RunData(name, "", config, records)


def test_learning_rate_over_the_inspected_evaluations():
  run = _run("r", "isolated", [0.3, 0.4, 0.5, 0.6, 0.6, 0.6, 0.6])  # cosine over 60 steps
  assert cliffs.inspected_span([0, 10, 20, 30], 3) == (10, 30)
  assert cliffs.inspected_span([0, 10, 20, 30], 1) == (20, 30)  # the updates before the last
  assert cliffs.inspected_span([0, 10], 3) is None
  # updates 41..60 of a 60-step cosine: mean rate ~0.067 of the peak; 51..60: ~0.017
  share3, share2 = cliffs.inspected_lr(run, 3), cliffs.inspected_lr(run, 2)
  cosine = lambda k: 0.5 * (1 + np.cos(np.pi * k / 60))
  assert share3 == pytest.approx(np.mean([cosine(k) for k in range(40, 60)]), rel=1e-4)
  assert share2 < share3 < cliffs.LOW_LR
  assert cliffs.low_lr(run, 3)
  constant = _run("c", "isolated", [0.3, 0.4, 0.5, 0.6, 0.6, 0.6, 0.6], schedule="constant")
  assert cliffs.inspected_lr(constant, 3) == pytest.approx(1.0)
  # a logged rate wins over the config (a schedule that climbs back, say)
  logged = _run("l", "isolated", [0.3, 0.4, 0.5, 0.6, 0.6, 0.6, 0.6],
                lr=lambda s: 1e-4 if s > 40 else 2e-4)
  assert cliffs.inspected_lr(logged, 3) == pytest.approx(0.5)
  assert cliffs.inspected_lr(analysis.RunData("x", "", {}, run.records[:1]), 3) is None


def _pairs(ip_curves, sp_curves, **kw):
  return [_run(f"voting-math-tiny_m-{p}-s{i}", p, c, seed=i, **kw)
          for i, (a, b) in enumerate(zip(ip_curves, sp_curves))
          for p, c in (("isolated", a), ("shared", b))]


FALL = [0.30, 0.40, 0.50, 0.38, 0.37, 0.36]   # 0.14 below the peak: a cliff by every rule
DIP = [0.30, 0.40, 0.50, 0.44, 0.44, 0.44]    # 0.06 below a 0.20 gain: 0.05 and 25% only
RISE = [0.30, 0.35, 0.40, 0.45, 0.50, 0.55]


def test_sensitivity_grid_and_the_paired_test():
  runs = _pairs([FALL, DIP, RISE], [RISE, RISE, RISE], schedule="constant")
  groups = {p: [r for r in runs if r.cell["policy"] == p] for p in ("isolated", "shared")}
  grid = {(rule.rule(), rule.window): c for rule, c in cliffs.sensitivity(groups)}
  assert len(grid) == len(cliffs.RULES) == 12
  assert grid[("drop >= 0.05 below the peak", 3)]["isolated"].cliffs == 2
  assert grid[("drop >= 0.10 below the peak", 3)]["isolated"].cliffs == 1
  assert grid[("gives back >= 25% of the peak's gain over the base", 2)]["isolated"].cliffs == 2
  assert grid[("gives back >= 50% of the peak's gain over the base", 2)]["isolated"].cliffs == 1
  assert grid[("gives back >= 75% of the peak's gain over the base", 2)]["isolated"].cliffs == 0
  assert all(c["shared"].cliffs == 0 and c["isolated"].low == (False,) * 3
             for c in grid.values())  # a constant rate: never ~0
  count = grid[("drop >= 0.05 below the peak", 3)]
  assert cliffs.paired_excess(count["isolated"], count["shared"]) == (2, 0, 0.25)
  five = cliffs.Count((True,) * 5 + (False,), (False,) * 6, 6)
  none = cliffs.Count((False,) * 6, (False,) * 6, 6)
  assert cliffs.paired_excess(five, none) == (5, 0, pytest.approx(1 / 32))
  assert cliffs.paired_excess(none, none)[2] == 1.0


def test_claim_2_reports_both_forms_the_rate_and_needs_a_paired_excess():
  cosine = _pairs([FALL, DIP, RISE], [RISE, RISE, RISE])  # cosine to 0 at step 50
  rule = analysis.CliffConfig(window=2)  # updates 31..50: ~0.05 of the peak rate
  claim = claims.claim_ip_peaks(claims.score(cosine, rule), rule)
  text = "\n".join(claim.lines)
  assert "drop >= 0.10 below the peak, last 2 evaluations: IP 1/3, SP 0/3" in text
  assert "gives back >= 50% of the peak's gain over the base, last 2 evaluations: IP 1/3" in text
  assert "one-sided exact p = 0.50" in text
  assert claim.verdict == "not supported"  # lower peaks; one cliff against none is no excess
  assert "below 0.1 (~0: no fall or recovery there can come from updates) in 6/6 runs, " \
      "2 of the cliffs above among them" in text
  assert "Over the 12 rules of the sensitivity grid" in text
  many = _pairs([FALL] * 5, [RISE] * 5)
  # five pairs where only IP fell (p = 1/32): more often under both forms, peaks still lower
  assert claims.claim_ip_peaks(claims.score(many)).verdict == "partly supported"


# --- the parse rates a run starts from ------------------------------------------------


def test_start_parse_reads_the_first_training_step_else_the_step_0_evaluation():
  records = [{"step": 0, "eval/sampled/parse_ok/aggregator": 0.9},
             {"step": 1, "calls/aggregator": 64.0, "parse/aggregator/bad_choice": 47.0,
              "calls/generator": 64.0},
             {"step": 2, "calls/aggregator": 64.0}]
  rates, where = roles.start_parse(records)
  assert where == "step 1 rollouts"
  assert rates == pytest.approx({"aggregator": 17 / 64, "generator": 1.0})
  assert roles.broken_roles(rates) == ["aggregator"]
  rates, where = roles.start_parse([records[0]])
  assert (rates, where) == ({"aggregator": 0.9}, "step-0 evaluation (sampled)")
  assert roles.start_parse([{"step": 5, "calls/generator": 4.0}]) == ({}, "")  # resumed late
  assert roles.broken_roles({"a": 0.5, "b": 0.49}) == ["b"]  # the floor itself passes


def test_sweep_report_prints_start_parse_rates_and_the_sensitivity_table(tmp_path):
  root = str(tmp_path / "runs")
  for run in _pairs([FALL], [RISE]):
    os.makedirs(os.path.join(root, run.name))
    with open(os.path.join(root, run.name, "config.json"), "w") as f:
      json.dump(run.config, f)
    with open(os.path.join(root, run.name, "metrics.jsonl"), "w") as f:
      for r in run.records:
        if r["step"] == 1:  # the IP run's aggregator starts broken
          broken = run.cell["policy"] == "isolated"
          r.update({"calls/generator": 24.0, "calls/aggregator": 8.0,
                    "parse/aggregator/bad_choice": 6.0 if broken else 0.0})
        f.write(json.dumps(r) + "\n")
  text = open(report.write_sweep_report(root, out_dir=str(tmp_path))).read()
  assert "## Terminal cliffs: sensitivity to the rule" in text
  assert "| drop >= 0.10 below the peak | 2 | 1/1 | 0/1 | 1 | 0 | 0.50 | 1/1 | 1/1 |" in text
  assert "| drop >= 0.10 below the peak | 3 | 1/1 | 0/1 | 1 | 0 | 0.50 | 0/1 | 0/1 |" in text
  assert "## Parse rates at the start, by role" in text and "1 of 2 runs flagged" in text
  assert ("| voting-math-tiny_m-isolated-s0 | 1.000 | 0.250 | step 1 rollouts | "
          "starts broken: aggregator |") in text
  assert os.path.exists(tmp_path / "report_cliff_sensitivity.csv")
  assert os.path.exists(tmp_path / "report_start_parse.csv")


def test_a_run_with_its_own_agent_count_is_in_the_main_matrix():
  """Voting with 2 generators (the SmolLM2 run) is a main run, paired SP with IP;
  only a 1-agent run of a multi-agent workflow is a claim-3 reference."""
  runs = {}
  for n in (2, 1):
    for policy in ("shared", "isolated"):
      run = _run(f"{policy}-n{n}", policy, [0.1, 0.2, 0.3, 0.3])
      run.config["workflow"]["options"] = {"n": n}
      runs[(n, policy)] = run
  scored = claims.score(list(runs.values()))
  assert [s.run.name for s in scored if s.main] == ["shared-n2", "isolated-n2"]
  gains = claims.claim_gains(scored)
  assert gains.verdict != "no data"
  assert claims.claim_ip_peaks(scored).verdict != "no data"
