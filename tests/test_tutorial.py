"""docs/tutorial.md works: its files are written and its commands run, on a shrunken budget."""

import os
import re
import shlex
import subprocess
import sys

from marl_jax.trainer.metrics import read_jsonl
from tests.helpers import REPO

TUTORIAL = os.path.join(REPO, "docs", "tutorial.md")
# A random tiny model and a handful of rows: the tutorial's plumbing, not its learning.
SHRINK = ("--config.model.init=random --config.train.steps=1 --config.train.eval_every=1 "
          "--config.rollout.batch_size=2 --config.rollout.group_size=2 "
          "--config.rollout.max_new_tokens=6 --config.eval.num_problems=2 "
          "--config.policy.lora_rank=2 --config.rl.compile_ahead=false")


def _blocks(language):
  text = open(TUTORIAL).read()
  return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def _run(command, tmp_path):
  command = command.replace("\\\n", " ").replace("runs/", f"{tmp_path}/runs/")
  command = command.replace("PYTHONPATH=. ", "")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), REPO])}
  script, *args = shlex.split(command)[1:]
  if (tmp_path / script).exists():  # one of the tutorial's own files
    script = str(tmp_path / script)
  proc = subprocess.run([sys.executable, script, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc


def test_the_tutorials_files_and_commands_run(tmp_path):
  files = {}
  for block in _blocks("python"):
    name = block.splitlines()[0].lstrip("# ").strip()
    assert name.endswith(".py"), f"a python block of the tutorial must start with '# <file>.py'"
    files[name] = block
    (tmp_path / name).write_text(block)
  assert {"my_flow.py", "my_reward.py", "from_python.py"} <= set(files)
  commands = [c.strip() for b in _blocks("sh") for c in re.split(r"\n(?=\S)", b) if c.strip()]
  train = next(c for c in commands if "launch/train.py" in c)
  report = next(c for c in commands if "launch/report.py" in c)
  _run(f"{train} {SHRINK}", tmp_path)
  workdir = tmp_path / "runs" / "my_flow"
  records = read_jsonl(str(workdir / "metrics.jsonl"))
  assert records[-1]["step"] == 1
  assert any(k.endswith("/drafter") for k in records[-1]) and "reward/mean" in records[-1]
  _run(report, tmp_path)
  assert (workdir / "report.md").exists()
  printed = _run("python from_python.py", tmp_path).stdout
  assert "('drafter', 'checker')" in printed
