"""Reports: the claims computed from (synthetic) sweep data, the sweep and per-run reports."""

import json
import os

import pytest

from marl_jax.trainer.config import get_config
from marl_jax.study import report
from marl_jax.study.diagnostics import analysis
from marl_jax.study.diagnostics import claims
from marl_jax.trainer import rundir

STEPS = 60


def _curve(policy, seed):
  """Eval accuracy every 10 steps: SP climbs steadily; IP peaks higher, then falls."""
  base = 0.30 + 0.01 * seed
  if policy == "shared":
    return [base, 0.36, 0.40, 0.43, 0.45, 0.46, 0.47]
  return [base, 0.45, 0.60, 0.62, 0.40, 0.38, 0.36]


def _write_run(root, workflow, policy, seed, amplify=3.0, rollouts=False):
  name = f"{workflow}-math-tiny_s-{policy}-s{seed}"
  workdir = os.path.join(root, name)
  os.makedirs(workdir)
  config = get_config(f"workflow={workflow},policy={policy},seed={seed},model=tiny_s")
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(rundir.config_dict(config), f)
  roles = {"single": ["generator"], "voting": ["generator", "aggregator"]}[workflow]
  evals = dict(zip(range(0, STEPS + 1, 10), _curve(policy, seed)))
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for step in range(STEPS + 1):
      r = {"step": step}
      if step in evals:
        r["eval/accuracy"] = evals[step]
      if step:
        r["accuracy"] = 0.4
        gen = 0.2 * (amplify if workflow == "voting" else 1.0)
        r.update({"grad_norm/generator": gen, "grad_norm/slot0": gen})
        if workflow == "voting":
          r["grad_norm/aggregator"] = 0.1
          if policy == "shared":
            r.update({"grad_mass_share/generator": 0.8, "grad_mass_share/aggregator": 0.2})
      f.write(json.dumps(r) + "\n")
  if rollouts:
    os.makedirs(os.path.join(workdir, "rollouts"))
    for step, answer in ((10, None), (20, None), (50, "7"), (60, "7")):
      calls = [{"role": "generator", "agent": k, "turn": 0, "text": "x", "tokens": 5,
                "answer": answer if answer else str(k), "parse": "ok"} for k in range(3)]
      with open(os.path.join(workdir, "rollouts", f"step_{step}.jsonl"), "w") as f:
        f.write("".join(json.dumps({"episode": i, "calls": calls}) + "\n" for i in range(4)))
  return workdir


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("sweep"))
  for workflow in ("single", "voting"):
    for policy in ("shared", "isolated"):
      for seed in (0, 1):
        _write_run(root, workflow, policy, seed,
                   rollouts=(workflow, policy, seed) == ("voting", "isolated", 0))
  # A sweep variant ('<point>-lr2'): listed, but not pooled into its cell as a third seed.
  variant = _write_run(os.path.join(root, "other"), "voting", "shared", 0)
  os.rename(variant, os.path.join(root, os.path.basename(variant) + "-lr2"))
  os.makedirs(os.path.join(root, "not-started"))  # no config: not a run yet
  return root


def test_claims_are_computed_from_the_runs(sweep_dir):
  runs = report.load_sweep(sweep_dir)
  assert len(runs) == 9 and [r.variant for r in runs].count("lr2") == 1
  scored = claims.score(runs)
  found = {c.key: c for c in claims.all_claims(scored)}
  assert {k: c.verdict for k, c in found.items()} == {
      "gains": "supported", "ip_peaks": "supported", "amplify": "supported",
      "dominant": "supported"}
  assert "4/4 cells gain at the end" in found["gains"].lines[0]
  assert "4/4 cells with two or more seeds gain by more than one seed std" in found[
      "gains"].lines[0]
  assert "IP higher in 2/2" in found["ip_peaks"].lines[0]  # voting only: single is one role
  assert "standard error 0.000: IP higher" in found["ip_peaks"].lines[0]
  assert "Terminal cliffs: IP 2/2, SP 0/2" in found["ip_peaks"].lines[2]
  assert "3.000 ± 0.000 (n=2)" in found["amplify"].lines[0]  # voting n=3 vs single proxy
  assert "generator dominates in 2/2" in found["dominant"].lines[1]


def test_single_workflow_reference_may_come_from_either_policy(tmp_path):
  """A sweep that runs the one-role single workflow only under SP still has
  the N = 1 reference for Voting under IP (SP and IP are the same model there)."""
  root = str(tmp_path)
  _write_run(root, "single", "shared", 0)
  _write_run(root, "voting", "isolated", 0, amplify=2.0)
  pairs = claims.amplification_pairs(claims.score(report.load_sweep(root)), "isolated")
  assert [(ref.cell["workflow"], ref.cell["policy"]) for _, ref, _ in pairs] == [
      ("single", "shared")]
  assert pairs[0][2] == pytest.approx(2.0)


def test_claims_can_fail(tmp_path):
  root = str(tmp_path)
  for policy in ("shared", "isolated"):
    _write_run(root, "voting", policy, 0, amplify=0.5)
  scored = claims.score(report.load_sweep(root))
  for s in scored:  # every run ends below its base
    s.run.records[-1]["eval/accuracy"] = 0.0
  scored = claims.score([s.run for s in scored])
  verdicts = {c.key: c.verdict for c in claims.all_claims(scored, dominant_share=0.9)}
  assert verdicts == {"gains": "not supported", "ip_peaks": "supported",
                      "amplify": "no data", "dominant": "not supported"}


def test_ip_peaks_need_more_than_noise():
  """Paired IP - SP peaks of mean +0.001 and spread 0.009 (the tiny study's
  first 14 pairs) are not 'IP higher', though IP is higher in half of them."""
  def run(policy, seed, peak):
    config = {"workflow": {"name": "voting"}, "task": {"family": "math"},
              "model": {"preset": "tiny_m"}, "policy": {"mode": policy}, "seed": seed}
    return analysis.RunData(name=f"voting-math-tiny_m-{policy}-s{seed}", workdir="",
                            config=config, records=[{"step": 0, "eval/accuracy": 0.3},
                                                    {"step": 10, "eval/accuracy": peak}])
  diffs = [0.01, -0.008, 0.012, -0.01, 0.005, -0.006, 0.003]
  runs = [r for seed, d in enumerate(diffs)
          for r in (run("shared", seed, 0.4), run("isolated", seed, 0.4 + d))]
  claim = claims.claim_ip_peaks(claims.score(runs))
  assert claim.verdict == "not supported"
  assert "not above zero by two standard errors" in claim.lines[0]


def test_sweep_report_has_every_section_and_its_figures(sweep_dir):
  path = report.write_sweep_report(sweep_dir)
  text = open(path).read()
  for section in ("## The study's claims", "## The empirical map", "## Accuracy curves",
                  "## Role-level gradient dynamics", "Same-role amplification",
                  "## Failure modes", "## Runs"):
    assert section in text, section
  assert "| voting/math/tiny_s/isolated | 2 |" in text
  assert "| voting/math/tiny_s/shared | 2 |" in text  # the -lr2 variant is not a third seed
  assert "| voting-math-tiny_s-shared-s0-lr2 | 60/60 |" in text
  assert "| voting-math-tiny_s-isolated-s0 | voter_collapse | generator | 0.000 | 1.000 | yes" \
      in text
  figures = [line.split("(")[1].rstrip(")") for line in text.splitlines()
             if line.startswith("![")]
  assert len(figures) == 4  # two heat maps, one curve figure, one gradient figure
  for figure in figures:
    assert os.path.getsize(os.path.join(sweep_dir, figure)) > 5000
  with pytest.raises(FileNotFoundError, match="launch/sweep.py"):
    report.write_sweep_report(os.path.join(sweep_dir, "not-started"))


def test_run_report_for_the_demo(sweep_dir):
  workdir = os.path.join(sweep_dir, "voting-math-tiny_s-isolated-s1")
  path = report.write_run_report(workdir, analysis.CliffConfig(min_drop=0.2))
  assert path == os.path.join(workdir, "report.md")
  text = open(path).read()
  assert "| 0.310 | 0.620 (30) | 0.360 (60) | +0.310 | +0.050 | yes, from step 40" in text
  assert os.path.getsize(os.path.join(workdir, "report_accuracy.png")) > 5000
  assert os.path.exists(os.path.join(workdir, "report_gradients.png"))
  with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
    report.write_run_report(os.path.join(sweep_dir, "not-started"))
