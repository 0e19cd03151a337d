"""Run summaries, the terminal-cliff detector, failure modes and gradient dynamics."""

import json
import math
import os

import numpy as np
import pytest

from marl_jax.study.diagnostics import analysis
from marl_jax.study.diagnostics import failure_modes
from marl_jax.study.diagnostics import gradients


def _records(evals, every=10, extra=None):
  """Metric records with eval/accuracy every `every` steps (evals[0] at step 0)."""
  out = []
  for i, acc in enumerate(evals):
    record = {"step": i * every, "eval/accuracy": acc}
    if extra:
      record.update(extra(i * every))
    out.append(record)
  return out


# --- summaries and cliffs ----------------------------------------------------------


def test_cliff_found_when_the_fall_from_the_peak_never_recovers():
  values = [0.2, 0.5, 0.6, 0.45, 0.44, 0.43]
  cliff = analysis.detect_cliff(np.arange(6) * 10, values)
  assert cliff.found and cliff.step == 30
  assert cliff.drop == pytest.approx(0.17)


@pytest.mark.parametrize("values,why", [
    ([0.2, 0.6, 0.45, 0.58, 0.4], "a blip back near the peak inside the window"),
    ([0.2, 0.3, 0.4, 0.5, 0.6], "monotone gains"),
    ([0.2, 0.6, 0.55, 0.52, 0.51], "a drop under min_drop"),
    ([0.6, 0.2, 0.2], "too few evaluations for the window"),
])
def test_no_cliff(values, why):
  assert not analysis.detect_cliff(np.arange(len(values)), values).found, why


def test_cliff_definition_is_configurable_and_validated():
  values = [0.2, 0.6, 0.6, 0.6, 0.45]
  assert not analysis.detect_cliff(range(5), values).found  # default window 3
  assert analysis.detect_cliff(range(5), values, analysis.CliffConfig(window=1)).found
  assert not analysis.detect_cliff(range(5), values, analysis.CliffConfig(0.2, 1)).found
  with pytest.raises(ValueError, match="min_drop"):
    analysis.CliffConfig(min_drop=0.0)
  with pytest.raises(ValueError, match="window"):
    analysis.CliffConfig(window=0)


def test_summary_base_peak_final_and_gains():
  records = _records([0.2, 0.5, 0.6, 0.45, 0.44, 0.43])
  records.insert(1, {"step": 5, "accuracy": 0.3})  # a train step without eval
  s = analysis.summarize(records, total_steps=50)
  assert (s.base, s.peak, s.peak_step, s.final, s.final_step) == (0.2, 0.6, 20, 0.43, 50)
  assert s.gain_peak == pytest.approx(0.4) and s.gain_end == pytest.approx(0.23)
  assert s.finished and s.cliff.found
  assert not analysis.summarize(records, total_steps=60).finished
  empty = analysis.summarize([{"step": 3, "accuracy": 0.1}])
  assert math.isnan(empty.base) and not empty.cliff.found and empty.steps_done == 3


def test_cell_and_spread():
  config = {"workflow": {"name": "voting", "options": {"n": 1}}, "task": {"family": "code"},
            "model": {"preset": "tiny_l"}, "policy": {"mode": "isolated"}, "seed": 2}
  assert analysis.cell_of(config) == {"workflow": "voting", "task": "code", "scale": "tiny_l",
                                      "policy": "isolated", "seed": 2, "agents": 1}
  config["workflow"]["options"] = {}
  assert analysis.cell_of(config)["agents"] == 3  # the workflow's default
  assert analysis.spread([1.0, 3.0, float("nan")]) == (2.0, pytest.approx(np.sqrt(2)), 2)
  assert analysis.format_spread([0.1], signed=True) == "+0.100 ± 0.000 (n=1)"


# --- gradient dynamics --------------------------------------------------------------


def _grad_records(scale, share=None, steps=5):
  out = []
  for step in range(1, steps + 1):
    r = {"step": step, "grad_norm/generator": scale * (1 + 0.1 * step),
         "grad_norm/aggregator": 0.5, "grad_norm/slot0": 9.0}
    if share is not None:
      r.update({"grad_mass_share/generator": share, "grad_mass_share/aggregator": 1 - share})
    out.append(r)
  return out


def test_role_series_skip_slots_and_dominant_role_reads_mass_share():
  records = _grad_records(1.0, share=0.8)
  assert gradients.roles_of(records) == ["aggregator", "generator"]
  steps, values = gradients.role_series(records)["generator"]
  assert list(steps) == [1, 2, 3, 4, 5] and values[0] == pytest.approx(1.1)
  assert gradients.dominant_role(records) == ("generator", pytest.approx(0.8))
  assert gradients.dominant_role(_grad_records(1.0)) is None  # no split logged


def test_same_role_amplification_compares_n_agents_with_one():
  three, one = _grad_records(3.0), _grad_records(1.0)
  assert gradients.amplification(three, one, "generator") == pytest.approx(3.0)
  assert gradients.amplification(three, one, "aggregator") == pytest.approx(1.0)
  proxy = [{"step": r["step"], "grad_norm/worker": r["grad_norm/generator"]} for r in one]
  assert gradients.amplification(three, proxy, "generator", role_1="worker") == pytest.approx(3.0)
  assert math.isnan(gradients.amplification(three, [], "generator"))
  late = gradients.role_means(three, window=(0.5, 1.0))["generator"]
  assert late == pytest.approx(3.0 * (1 + 0.1 * 4))  # steps 3..5 (>= 2.5)
  with pytest.raises(ValueError, match="window"):
    gradients.role_means(three, window=(0.5, 0.2))


# --- failure modes -----------------------------------------------------------------


def _call(role, text, answer=None, agent=0, turn=0, parse="ok", tokens=8, correct=None):
  return {"role": role, "agent": agent, "turn": turn, "text": text, "answer": answer,
          "parse": parse, "correct": correct, "tokens": tokens}


def _write_rollouts(workdir, steps):
  os.makedirs(os.path.join(workdir, "rollouts"), exist_ok=True)
  for step, episodes in steps.items():
    with open(os.path.join(workdir, "rollouts", f"step_{step}.jsonl"), "w") as f:
      for i, calls in enumerate(episodes):
        f.write(json.dumps({"episode": i, "group": i, "reward": 0.0, "calls": calls}) + "\n")


def _voting(answers, pick, parse="ok", tokens=8):
  gens = [_call("generator", f"= {a}", a, agent=k, parse=parse, tokens=tokens)
          for k, a in enumerate(answers)]
  return gens + [_call("aggregator", pick, None, tokens=2)]


def test_voting_collapses_are_flagged_only_when_they_emerge(tmp_path):
  healthy = [_voting([str(i), str(i + 1), str(i + 2)], str(1 + i % 3)) for i in range(8)]
  collapsed = [_voting(["7", "7", "7"], "1", parse="no_answer", tokens=1) for _ in range(8)]
  _write_rollouts(str(tmp_path), {10: healthy, 20: healthy, 30: collapsed, 40: collapsed})
  modes = {m.key: m for m in failure_modes.analyze(str(tmp_path))}
  flagged = {m.key for m in modes.values() if m.flagged}
  assert flagged == {"voter_collapse/generator", "parse_failure/generator",
                     "length_collapse/generator"}
  assert all(modes[k].emerged for k in flagged)
  assert modes["voter_collapse/generator"].early == 0.0
  assert "8.0 -> 1.0" in modes["length_collapse/generator"].detail
  # The aggregator picked candidates 1, 2, 3 in turn early; late, candidates are identical.
  assert not modes["fixed_index/aggregator"].flagged


def test_aggregator_always_picking_one_candidate_is_flagged(tmp_path):
  early = [_voting(["1", "2", "3"], str(1 + i % 3)) for i in range(6)]
  late = [_voting(["1", "2", "3"], "Candidate 2") for _ in range(6)]
  late += [_voting(["4", "4", "5"], "4")]  # an answer-style pick of two candidates: ambiguous
  _write_rollouts(str(tmp_path), {1: early, 2: early, 3: late, 4: late})
  mode = {m.key: m for m in failure_modes.analyze(str(tmp_path))}["fixed_index/aggregator"]
  assert mode.flagged and mode.emerged and mode.late == 1.0
  assert mode.detail == "candidate 2 in 12/12 picks"
  assert mode.early == pytest.approx(1 / 3)


def test_rubber_stamping_evaluator_and_degenerate_orchestrator(tmp_path):
  def eval_opt(verdict, correct):
    return [_call("generator", "= 3", "3"), _call("evaluator", verdict, correct=correct)]

  def orch(plan):
    workers = [_call("worker", "= 1", "1", agent=k) for k in range(3)]
    return [_call("orchestrator", plan)] + workers + [_call("synthesizer", "1")]

  early = [eval_opt("incorrect: check it", True), eval_opt("correct", True),
           orch("add\nsubtract\nguess"), orch("draw\ncount\nsum")]
  late = [eval_opt("correct", False), eval_opt("correct", True), eval_opt("whatever", False),
          orch("add\nadd\nadd"), orch("add\nadd\nadd")]
  _write_rollouts(str(tmp_path), {5: early, 10: early, 15: late, 20: late})
  # A tiny-world run: its replies are read with the tiny parsers, and its eval_opt
  # stops on an unreadable verdict ('whatever'), letting the answer through.
  with open(os.path.join(tmp_path, "config.json"), "w") as f:
    json.dump({"task": {"family": "math", "name": "arithmetic"}}, f)
  assert failure_modes.run_style(str(tmp_path)) == ("tiny", True)
  modes = {m.key: m for m in failure_modes.analyze(str(tmp_path))}
  stamp = modes["rubber_stamp/evaluator"]
  assert stamp.flagged and stamp.emerged and stamp.early == 0.5 and stamp.late == 1.0
  assert stamp.detail == "approves 100% of wrong answers"
  assert modes["degenerate_plan/orchestrator"].flagged
  assert modes["constant_plan/orchestrator"].flagged
  assert modes["degenerate_plan/orchestrator"].early == 0.0
  assert failure_modes.analyze(str(tmp_path / "nothing")) == []
  # Told to revise on an unreadable verdict, the workflow does not let 'whatever' through.
  with open(os.path.join(tmp_path, "config.json"), "w") as f:
    json.dump({"task": {"name": "arithmetic"},
               "workflow": {"options": {"unreadable_verdict": "revise"}}}, f)
  late_rate = {m.key: m for m in failure_modes.analyze(str(tmp_path))}["rubber_stamp/evaluator"]
  assert late_rate.late == pytest.approx(2 / 3)
