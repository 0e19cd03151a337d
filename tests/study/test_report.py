"""Reports: the claims computed from (synthetic) sweep data, the sweep and per-run reports,
their figures (labelled axes, colour maps, no empty panels) and their CSV tables."""

import csv
import json
import os

import numpy as np
import pytest

from marl_jax.trainer.config import get_config
from marl_jax.study import figures
from marl_jax.study import report
from marl_jax.study import sweep
from marl_jax.study.diagnostics import analysis
from marl_jax.study.diagnostics import claims
from marl_jax.study.diagnostics import roles
from marl_jax.trainer import rundir

STEPS = 60


def _curve(policy, seed):
  """Eval accuracy every 10 steps: SP climbs steadily; IP peaks higher, then falls."""
  base = 0.30 + 0.01 * seed
  if policy == "shared":
    return [base, 0.36, 0.40, 0.43, 0.45, 0.46, 0.47]
  return [base, 0.45, 0.60, 0.62, 0.40, 0.38, 0.36]


def _write_run(root, workflow, policy, seed, amplify=3.0, rollouts=False):
  """A run's config and metrics. As in real runs, SP logs the per-role gradient
  split every 5 steps (rl.role_grad_every) and IP its role norms every step;
  parse failures are counts (runs from before parse_ok/<role> was logged)."""
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
        r.update({"calls/generator": 4.0, "reward/generator": 0.4, "reward/mean": 0.4})
        if step > STEPS // 2:  # the generator's parses start failing half way
          r["parse/generator/no_answer"] = 2.0
        gen = 0.2 * (amplify if workflow == "voting" else 1.0)
        r["grad_norm/slot0"] = gen
        split = step % 5 == 1  # the per-role split: every 5 steps
        if split or policy == "isolated":
          r["grad_norm/generator"] = gen
        if split:
          r["grad_mass_share/generator"] = 1.0
        if workflow == "voting":
          r.update({"calls/aggregator": 1.0, "reward/aggregator": 0.4})
          if split or policy == "isolated":
            r["grad_norm/aggregator"] = 0.1
          if split:
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
  # IP falls in 2 pairs, SP in none: too few pairs for a paired excess (p = 0.25)
  assert {k: c.verdict for k, c in found.items()} == {
      "gains": "supported", "ip_peaks": "partly supported", "amplify": "supported",
      "dominant": "supported"}
  assert "4/4 cells gain at the end" in found["gains"].lines[0]
  assert "4/4 cells with two or more seeds gain by more than one seed std" in found[
      "gains"].lines[0]
  assert "IP higher in 2/2" in found["ip_peaks"].lines[0]  # voting only: single is one role
  assert "standard error 0.000: IP higher" in found["ip_peaks"].lines[0]
  assert "last 3 evaluations: IP 2/2, SP 0/2, pairs where only IP / only SP fell 2/0, " \
      "one-sided exact p = 0.25" in found["ip_peaks"].lines[2]
  # no update norms logged: the gradient norms, voting n=3 vs the single proxy
  assert found["amplify"].lines[0].startswith("Fallback")
  assert "Gradient norm N agents / 1 agent over 2 pairs: 3.000 ± 0.000 (n=2)" in "\n".join(
      found["amplify"].lines)
  assert "generator dominates in 2/2" in found["dominant"].lines[1]


def test_single_workflow_reference_may_come_from_either_policy(tmp_path):
  """A sweep that runs the one-role single workflow only under SP still has
  the N = 1 reference for Voting under IP (SP and IP are the same model there)."""
  root = str(tmp_path)
  _write_run(root, "single", "shared", 0)
  _write_run(root, "voting", "isolated", 0, amplify=2.0)
  pairs = claims.amplification_pairs(claims.score(report.load_sweep(root)), "isolated")
  assert [(p.ref.cell["workflow"], p.ref.cell["policy"]) for p in pairs] == [
      ("single", "shared")]
  assert pairs[0].proxy and pairs[0].ratios["grad_norm"] == pytest.approx(2.0)


def test_claims_can_fail(tmp_path):
  root = str(tmp_path)
  for policy in ("shared", "isolated"):
    _write_run(root, "voting", policy, 0, amplify=0.5)
  scored = claims.score(report.load_sweep(root))
  for s in scored:  # every run ends below its base
    s.run.records[-1]["eval/accuracy"] = 0.0
  scored = claims.score([s.run for s in scored])
  verdicts = {c.key: c.verdict for c in claims.all_claims(scored, dominant_share=0.9)}
  # IP peaks higher (one pair: its sign), and falls where SP does not (one pair: p = 0.5)
  assert verdicts == {"gains": "not supported", "ip_peaks": "partly supported",
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


@pytest.fixture
def drawn(monkeypatch):
  """The figures the report functions draw, kept open for inspection."""
  kept = []
  monkeypatch.setattr(figures, "save", lambda fig, path: kept.append(fig) or path)
  yield kept
  figures.plt.close("all")


def _data_axes(fig):
  return [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]


def _assert_labelled(fig):
  for ax in _data_axes(fig):
    assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
  for bar in [ax for ax in fig.axes if hasattr(ax, "_colorbar")]:
    assert bar.get_ylabel(), "unlabelled colour bar"


def test_every_figure_has_labelled_axes_and_no_empty_panel(sweep_dir, drawn):
  scored = claims.score(report.load_sweep(sweep_dir))
  figures.accuracy_curves(scored, "math", "a.png")
  figures.gain_heatmap(scored, "b.png")
  figures.gradient_dynamics(scored, "math", "tiny_s", "c.png", report.WORKFLOW_ORDER)
  run = analysis.load_run(os.path.join(sweep_dir, "voting-math-tiny_s-isolated-s0"))
  figures.run_accuracy(run, run.summary(), "d.png")
  figures.run_gradients(run, "e.png")
  assert len(drawn) == 5
  for fig in drawn:
    _assert_labelled(fig)
    for ax in _data_axes(fig):
      assert ax.lines or ax.images, f"empty panel {ax.get_title()!r}"
  # single: its norm only (its share is 1 by definition, it has no IP run); voting: both
  titles = [ax.get_title() for ax in _data_axes(drawn[2])]
  assert titles == ["single: per-role gradient norm", "voting: per-role gradient norm",
                    "voting: per-role share of the gradient mass"]
  # the run figure shows accuracy beside each role's parse rate and reward
  assert [ax.get_ylabel().split("\n")[0] for ax in _data_axes(drawn[3])] == [
      "accuracy", "calls parsed cleanly", "mean episode reward"]


def test_gradient_panels_plot_sp_and_ip_on_the_steps_both_logged(sweep_dir, drawn):
  scored = claims.score(report.load_sweep(sweep_dir))
  figures.gradient_dynamics(scored, "math", "tiny_s", "c.png", report.WORKFLOW_ORDER)
  sp_steps = set(range(1, STEPS + 1, 5))
  voting_norm = _data_axes(drawn[0])[1]
  styles = {line.get_linestyle() for line in voting_norm.lines}
  assert styles == {"-", "--"}  # SP and IP both drawn
  for line in voting_norm.lines:  # IP logged every step, but is drawn where SP logged too
    assert set(line.get_xdata()) == sp_steps
  assert "every 5 steps" in drawn[0].texts[0].get_text()  # the suptitle says so
  assert figures.common_grid([[1, 6, 11], list(range(1, 13)), []]).tolist() == [1, 6, 11]


def test_colour_map_follows_the_sign_of_the_values(sweep_dir, drawn):
  assert figures.colour_scale(np.array([0.03, 0.15, np.nan])) == ("Blues", 0.0, 0.15)
  assert figures.colour_scale(np.array([-0.2, 0.1])) == ("RdBu", -0.2, 0.2)  # centred at 0
  assert figures.colour_scale(np.array([-0.2, -0.1])) == ("Reds_r", -0.2, 0.0)
  figures.gain_heatmap(claims.score(report.load_sweep(sweep_dir)), "b.png")
  image = drawn[0].axes[0].images[0]
  assert image.get_cmap().name == "Blues" and image.get_clim()[0] == 0.0  # every gain > 0
  assert "gain over base" in drawn[0].axes[1].get_ylabel()


def test_parse_rates_come_from_the_logged_rates_or_from_counts():
  old = [{"step": 1, "calls/generator": 4.0, "parse/generator/no_answer": 1.0,
          "parse/generator/truncated": 1.0}, {"step": 2, "calls/generator": 4.0}]
  steps, values = roles.parse_ok(old)["generator"]
  assert steps.tolist() == [1, 2] and values.tolist() == [0.5, 1.0]
  assert roles.parse_ok_derived(old)
  new = [{"step": 1, "calls/generator": 4.0, "parse/generator/no_answer": 1.0,
          "parse/generator/truncated": 1.0, "parse_ok/generator": 0.75}]
  assert roles.parse_ok(new)["generator"][1].tolist() == [0.75]  # one call failed two ways
  assert not roles.parse_ok_derived(new)
  assert list(roles.rewards([{"step": 1, "reward/mean": 0.5, "reward/generator": 0.4}])) == [
      "generator"]


def _markdown_tables(text):
  """{csv name: markdown rows (cells)} for each table followed by its CSV link."""
  lines, found = text.splitlines(), {}
  for i, line in enumerate(lines):
    if line.startswith("CSV: ["):
      j = i - 2
      rows = []
      while j >= 0 and lines[j].startswith("|"):
        rows.insert(0, [c.strip() for c in lines[j].strip("|").split("|")])
        j -= 1
      found[line.split("[")[1].split("]")[0]] = rows[2:]  # past the header and the rule
  return found


def _csv_rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_every_table_is_a_csv_with_the_same_rows(sweep_dir, tmp_path):
  text = open(report.write_sweep_report(sweep_dir, out_dir=str(tmp_path))).read()
  found = _markdown_tables(text)
  assert set(found) == {"report_map.csv", "report_amplification.csv",
                        "report_failure_modes.csv", "report_runs.csv",
                        "report_cliff_sensitivity.csv", "report_start_parse.csv"}
  for name, rows in found.items():
    written = _csv_rows(tmp_path / name)
    assert [r[0] for r in rows] == [list(w.values())[0] for w in written], name
  runs = {r["run"]: r for r in _csv_rows(tmp_path / "report_runs.csv")}
  row = runs["voting-math-tiny_s-isolated-s0"]  # a value and its step: two numeric columns
  assert (float(row["peak"]), int(row["peak step"])) == (0.62, 30)
  assert (row["steps"], row["steps out of"], row["cliff step"]) == ("60", "60", "40")
  assert runs["voting-math-tiny_s-shared-s0"]["cliff step"] == ""  # '-' in markdown
  cell = {r["cell (workflow/task/scale/policy)"]: r
          for r in _csv_rows(tmp_path / "report_map.csv")}["voting/math/tiny_s/isolated"]
  assert (float(cell["base mean"]), int(cell["base n"])) == (pytest.approx(0.305), 2)
  assert "| voting/math/tiny_s/isolated | 2 | 0.305 ± 0.007 (n=2) |" in text


def test_report_title_names_the_study(sweep_dir, tmp_path):
  assert report.readable("tiny_long") == "Tiny long"
  assert report.sweep_title(sweep_dir).startswith("Sweep")  # pytest's 'sweep0' directory
  study = tmp_path / "my_study"
  os.makedirs(study / "runs")
  _write_run(str(study / "runs"), "voting", "shared", 0)
  assert report.sweep_title(str(study / "runs")) == "My study"  # not 'runs'
  text = open(report.write_sweep_report(str(study))).read()  # the runs are in <dir>/runs
  assert text.startswith("# My study\n") and (study / "report.md").exists()
  with open(study / "runs" / sweep.MANIFEST, "w") as f:
    json.dump({"sweep": {"name": "tiny_long"}, "runs": [
        {"name": "voting-math-tiny_s-shared-s0", "workdir": "voting-math-tiny_s-shared-s0"}]}, f)
  assert report.sweep_title(str(study)) == "The tiny_long sweep"
  text = open(report.write_sweep_report(str(study), title="Long runs")).read()
  assert text.startswith("# Long runs\n")


def test_run_report_shows_roles_over_time(sweep_dir):
  workdir = os.path.join(sweep_dir, "voting-math-tiny_s-shared-s0")
  text = open(report.write_run_report(workdir)).read()
  assert "derived from the logged failure counts" in text  # counts only: an older run
  assert "| generator | 1.000 | 0.500 | 0.400 | 0.400 |" in text
  assert "| aggregator | 1.000 | 1.000 | 0.400 | 0.400 |" in text
  assert _csv_rows(os.path.join(workdir, "report_roles.csv"))[0] == {
      "role": "aggregator", "parse rate, first 5 steps": "1",
      "parse rate, last 5 steps": "1", "reward, first 5 steps": "0.4",
      "reward, last 5 steps": "0.4"}
