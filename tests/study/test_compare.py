"""Sweeps side by side (marl_jax.study.compare): the mechanism study's report."""

import os
import shutil
import subprocess
import sys

import pytest

from marl_jax.study import compare
from tests.helpers import REPO
from tests.study.test_diagnostics_amplification import STEPS, _config, _records, _write
from tests.study.test_report import _assert_labelled, _csv_rows, _data_axes, _markdown_tables
from tests.study.test_report import drawn  # pylint: disable=unused-import


def _arm(root, name, amplify, ip_gain, cliff, task="math"):
  """Voting, math: SP and IP (3 generators) and IP with one generator, seeds 0-2.
  The N-agent run's generator moves `amplify` times its reference's; IP's
  accuracy rises `ip_gain` above SP's and, with `cliff`, falls back at the end."""
  path = os.path.join(root, name)
  for seed in range(3):
    for policy, agents, suffix in (("shared", 3, ""), ("isolated", 3, ""),
                                   ("isolated", 1, "-voting_n1")):
      records = _records("voting", agents, scale=amplify if agents == 3 else 1.0,
                         opt_steps=3 if agents == 3 else 1, lr=3e-4)
      for r in records:  # evaluations every 5 steps; SP rises 0.15 over the run
        r.pop("eval/accuracy", None)
        if r["step"] % 5 == 0:
          r["eval/accuracy"] = 0.3 + 0.005 * r["step"]
          if policy == "isolated" and agents == 3 and r["step"]:
            fell = cliff and r["step"] >= STEPS - 10  # the last 3 evaluations: back to base
            r["eval/accuracy"] = 0.3 if fell else r["eval/accuracy"] + ip_gain + 0.01 * seed
      config = _config("voting", agents, policy, seed, update_scheme="reference",
                       minibatch_rows=64)
      config["task"]["family"] = task
      _write(path, f"voting-{task}-tiny_m-{policy}-s{seed}{suffix}", config, records)
  return path


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("mechanisms"))
  return root, [("reference", _arm(root, "reference", 3.0, 0.1, cliff=True)),
                ("joint", _arm(root, "joint", 1.0, 0.0, cliff=False))]


def test_each_arm_has_its_own_verdicts_and_figures(arms, tmp_path):
  root, named = arms
  path = compare.write_comparison(named, str(tmp_path), "Mechanisms")
  text = open(path).read()
  found = _markdown_tables(text)
  verdicts, figures = found["report_verdicts.csv"], found["report_figures.csv"]
  assert "| claim | reference | joint |" in text
  amplify = next(r for r in verdicts if r[0].startswith("Under IP, parallel agents"))
  assert amplify[1:] == ["supported", "not supported"]
  rows = {r[0]: r[1:] for r in figures}
  assert rows["runs: main matrix / N = 1 references"] == ["6 / 3", "6 / 3"]
  update = rows["claim 3: voting update norm, N agents / 1 (per pair)"]
  assert update[0].startswith("3.000 ± 0.000 (n=3)") and update[1].startswith("1.000")
  assert rows["claim 3: voting optimizer steps an iteration of the role, N vs 1"][0] \
      .startswith("3.00 vs 1.00")
  peak = rows["claim 2: peak IP − SP (per paired run)"]
  # reference: IP peaks at step 15 (0.475 + 0.01 seed) against SP's 0.45 at the end
  assert peak == ["+0.035 ± 0.006 (n=3)", "+0.010 ± 0.006 (n=3)"]
  absolute = next(v for k, v in rows.items() if k.startswith("claim 2: terminal cliffs"))
  assert absolute == ["IP 3/3, SP 0/3 (p = 0.12)", "IP 0/3, SP 0/3 (p = 1.00)"]
  # Links to each arm's own report; both figures drawn; the CSVs hold the same rows.
  assert f"[reference]({os.path.relpath(os.path.join(root, 'reference'), tmp_path)}/report.md)" \
      in text
  for png in ("compare_accuracy.png", "compare_roles.png"):
    assert os.path.getsize(tmp_path / "report_figures" / png) > 10_000
  assert [r["figure"] for r in _csv_rows(tmp_path / "report_figures.csv")] == list(rows)


def test_only_the_cells_every_arm_has_are_compared(arms, tmp_path):
  """An arm with a cell the others lack (code) has it named and left out, so its
  figures are over the same cells as theirs."""
  root, named = arms
  wide = _arm(str(tmp_path), "wide", 3.0, 0.1, cliff=True)
  code = _arm(str(tmp_path / "code_only"), "x", 1.0, 0.0, cliff=False, task="code")
  for run in os.listdir(code):
    shutil.copytree(os.path.join(code, run), os.path.join(wide, run))
  text = open(compare.write_comparison([("wide", wide), named[1]], str(tmp_path / "out"),
                                       "t")).read()
  rows = {r[0]: r[1:] for r in _markdown_tables(text)["report_figures.csv"]}
  assert rows["runs: main matrix / N = 1 references"] == ["6 / 3", "6 / 3"]
  assert "Cells compared (every arm has them): voting/math. Left out here, in their arm's " \
         "own report: wide voting/code." in text
  with pytest.raises(ValueError, match="share no"):
    compare.write_comparison([named[1], ("code", code)], str(tmp_path / "out2"), "t")


def test_arms_are_named_and_refused_when_unusable(arms, tmp_path):
  root, named = arms
  assert compare.parse_arms("a=x/one,y/two/") == [("a", "x/one"), ("two", "y/two/")]
  with pytest.raises(ValueError, match="two or more arms"):
    compare.parse_arms("x=a,x=b")
  with pytest.raises(FileNotFoundError, match="Arm 'empty'"):
    compare.write_comparison([named[0], ("empty", str(tmp_path))], str(tmp_path), "t")
  proc = subprocess.run([sys.executable, "launch/report.py", f"--compare={named[0][1]}"],
                        cwd=REPO, capture_output=True, text=True)
  assert proc.returncode != 0 and "give --out" in proc.stderr


def test_figures_have_labelled_axes_and_no_empty_panel(arms, drawn):  # pylint: disable=W0621
  loaded = [compare.Arm.load(name, path, compare.analysis.CliffConfig()) for name, path in arms[1]]
  compare.accuracy_grid(loaded, "a.png")
  compare.role_traces(loaded, "b.png")
  assert len(drawn) == 2
  for fig in drawn:
    _assert_labelled(fig)
    assert all(ax.lines for ax in _data_axes(fig))
  # SP, IP and the N = 1 reference in every arm's panel
  assert [len(ax.lines) for ax in _data_axes(drawn[0])] == [3, 3]
  assert [ax.get_ylabel().split("\n")[0] for ax in _data_axes(drawn[1])] == [
      "learning rate", "learning rate", "update norm", "update norm"]
