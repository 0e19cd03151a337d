"""Every command the docs show runs as far as it can without a model.

Commands are read from README.md, WORKSPACE.md, the config docstrings
(marl_jax/trainer/config.py, configs/*.py; the sweep presets' included) and
the TPU scripts' headers. Each one's flags are parsed by the flags of the
script it names (its DEFINE_* calls, run on a fresh FlagValues, so no script's
main runs); a config flag builds the config with the command's overrides; a
training, evaluation or sweep command then draws its first train batch and
its eval problems from the task the config names. Data paths in a command
(/data/dapo-math-17k.parquet, ...) are replaced by small local files in the
format their name or the command's task.format says, written here from
records in the published layouts (tests/tasks/records.py).
"""

from __future__ import annotations

import ast
import functools
import glob
import importlib
import os
import re
import shlex
import subprocess

from absl import flags
from ml_collections import config_flags
import pytest

import marl_jax.tasks as tasks
from marl_jax.study import sweep as sweep_lib
from tests.helpers import REPO
from tests.tasks import records

DOC_FILES = ("README.md", "WORKSPACE.md", "marl_jax/trainer/config.py", "configs/default.py",
             "configs/demo.py", "configs/sweeps.py") + tuple(sorted(
                 os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "launch/tpu/*.sh"))))

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
_INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
_START = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:\S*python3?\s+(?:launch/\S+\.py|-m\s+marl_jax\S*)"
                    r"|launch/tpu/\S+\.sh|make\s+[\w-]+)(?:\s|$)")
_MAKE = re.compile(r"(?:^|\s)(make\s+[\w-]+)\s*$")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")
_DATA_PATH = re.compile(r"(task\.(train|eval)_path=)([^'\",\s)]+)")
# Stand-in sizes of the benchmarks a command names: an eval.num_problems larger
# than the real file is an error at the first evaluation, so the test sees it too.
_ROWS = {"math500": 500, "humaneval": 164, "aime": 30}
_DEFAULT_ROWS = 1024
# What a data file's name says about its format, when the command does not.
_NAME_FORMATS = (("dapo", "dapo"), ("math", "math"), ("gsm8k", "gsm8k"), ("word_problems", "gsm8k"),
                 ("mbpp", "mbpp"), ("deepcoder", "deepcoder"), ("humaneval", "humaneval"))


def _blocks(path: str) -> list[tuple[str, bool]]:
  """(text, is a fenced code block) where the file's commands live."""
  with open(os.path.join(REPO, path), encoding="utf-8") as f:
    text = f.read()
  if path.endswith(".md"):
    prose = _FENCE.sub("", text)
    return ([(b, True) for b in _FENCE.findall(text)]
            + [(span.replace("\n", " "), False) for span in _INLINE.findall(prose)])
  if path.endswith(".py"):
    return [(ast.get_docstring(ast.parse(text), clean=False) or "", False)]
  return [("\n".join(line[1:] for line in text.splitlines()
                     if line.startswith("#") and not line.startswith("#!")), False)]


def commands(path: str) -> list[str]:
  """The commands of a doc file, continuation lines joined."""
  out = []
  for block, fenced in _blocks(path):
    for line in re.sub(r"\\\n\s*", " ", block).split("\n"):
      line = line.strip()
      if _START.match(line):
        out.append(line)
      elif fenced and line.startswith("--config."):  # flags shown alone: add them to a run
        out.append("python launch/train.py --config=configs/default.py --workdir=runs/x " + line)
      else:
        found = _MAKE.search(line)
        if found and not fenced and len(line.split()) <= 3:  # e.g. `/usr/bin/time make demo`
          out.append(found.group(1))
  return out


ALL = sorted({(path, command) for path in DOC_FILES for command in commands(path)})


def test_the_docs_have_commands():
  # A change to the docs' layout that hid every command would pass silently.
  found = {path for path, _ in ALL}
  assert {"README.md", "WORKSPACE.md", "configs/default.py", "configs/sweeps.py",
          "launch/tpu/train.sh", "marl_jax/trainer/config.py"} <= found
  assert any("task.train_path" in c for _, c in ALL)


# --- the scripts' flags -------------------------------------------------------


class _On:
  """A flags module whose DEFINE_* and mark_* calls go to one FlagValues (and
whose config flags read their --config.<field> overrides from `argv`)."""

  def __init__(self, module, flag_values, **extra):
    self._module, self._fv, self._extra = module, flag_values, extra

  def __getattr__(self, name):
    attr = getattr(self._module, name)
    if name.startswith(("DEFINE", "mark_flag")):
      return functools.partial(attr, flag_values=self._fv,
                               **(self._extra if name.startswith("DEFINE") else {}))
    return attr


def flag_values(script: str, argv: list[str]) -> flags.FlagValues:
  """A fresh FlagValues holding the flags `script` defines, for parsing `argv`
  (nothing else of the script runs)."""
  with open(os.path.join(REPO, script), encoding="utf-8") as f:
    tree = ast.parse(f.read(), script)
  keep = []
  for node in tree.body:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      module = getattr(node, "module", None) or ""
      if module in ("absl", "ml_collections") or any(a.name == "hostmem" for a in node.names):
        continue  # the flags modules are the proxies below; hostmem would re-exec
      keep.append(node)
    elif isinstance(node, (ast.Assign, ast.Expr)) and isinstance(node.value, ast.Call):
      func = node.value.func
      if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
          and func.value.id in ("flags", "config_flags")):
        keep.append(node)
    elif isinstance(node, ast.Assign) and not any(isinstance(n, ast.Call)
                                                  for n in ast.walk(node.value)):
      keep.append(node)  # a constant a flag's default may name
  fv = flags.FlagValues()
  namespace = {"flags": _On(flags, fv), "config_flags": _On(config_flags, fv, sys_argv=argv)}
  exec(compile(ast.Module(keep, type_ignores=[]), script, "exec"), namespace)  # pylint: disable=exec-used
  return fv


# --- data files ---------------------------------------------------------------


def _format_of(path: str, split: str, command: str) -> str:
  for key in ((["eval_format"] if split == "eval" else []) + ["format"]):
    named = re.search(rf"task\.{key}=(\w+)", command)
    if named and named.group(1) != "auto":
      return named.group(1)
  name = os.path.basename(path).lower()
  for word, fmt in _NAME_FORMATS:
    if word in name:
      return fmt
  raise AssertionError(f"cannot tell the format of the data file {path!r} the command names; "
                       "name the file after its data set or give --config.task.format")


def with_local_data(tokens: list[str], data_dir: str) -> list[str]:
  """The tokens with every data path that does not exist here replaced by a
  local file in its format (rows cycled to the named data set's size)."""
  command = " ".join(tokens)

  def local(match):
    prefix, split, path = match.groups()
    if path == "humaneval" or os.path.exists(os.path.join(REPO, path)):
      return match.group(0)
    fmt = _format_of(path, split, command)
    rows = next((n for word, n in _ROWS.items() if word in path.lower()), _DEFAULT_ROWS)
    target = os.path.join(data_dir, f"{fmt}_{rows}_{os.path.basename(path)}")
    if not os.path.exists(target):
      source = records.records(fmt)
      records.write(target, [source[i % len(source)] for i in range(rows)])
    return prefix + target

  return [_DATA_PATH.sub(local, token) for token in tokens]


# --- checks -------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _draw(task_key: str, batch: int, eval_n: int, seed: int, train: bool) -> str:
  name, options = ast.literal_eval(task_key)
  task = tasks.get(name, **options)
  if train:
    assert task.splits == ("train", "eval"), (
        f"a training run needs train and eval problems; task {name!r} has {task.splits}")
    assert len(task.sample("train", batch, seed=seed, step=0)) == batch
  assert len(task.sample("eval", eval_n, seed=seed, step=0)) == eval_n
  return name


def first_batch(config, *, train: bool = True, eval_n: int | None = None) -> str:
  """Draws the first train batch and the eval problems of a run's config."""
  name, options = tasks.resolve(config.task)
  return _draw(repr((name, options)), int(config.rollout.batch_size),
               int(eval_n or config.eval.num_problems), int(config.seed), train)


def check_script(script: str, args: list[str], data_dir: str) -> str:
  argv = [script] + with_local_data(args, data_dir)
  fv = flag_values(script, argv)
  fv(argv)
  name = os.path.basename(script)
  if name in ("train.py", "demo.py", "pretrain_tiny.py"):
    return f"config built, task {first_batch(fv['config'].value)}"
  if name == "evaluate.py" and fv["config"].value is not None:
    return f"config built, task {first_batch(fv['config'].value, train=False, eval_n=fv['num_problems'].value)}"
  if name == "sweep.py":
    specs = sweep_lib.select(sweep_lib.expand(fv["sweep"].value, fv["dir"].value), fv["only"].value)
    assert specs, "the sweep selects no run"
    drawn = {first_batch(sweep_lib.run_config(spec)) for spec in specs}
    return f"{len(specs)} run configs built, tasks {sorted(drawn)}"
  return "flags parsed"


def _make_recipe(target: str) -> list[str]:
  with open(os.path.join(REPO, "Makefile"), encoding="utf-8") as f:
    text = f.read()
  variables = dict(re.findall(r"^(\w+)\s*\??=\s*(.*)$", text, re.MULTILINE))
  found = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n?)*)", text, re.MULTILINE)
  assert found, f"the Makefile has no target {target!r}"
  lines = []
  for line in found.group(1).splitlines():
    line = re.sub(r"\$\(PY\)", "python", line.strip())
    lines.append(re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), ""), line))
  return lines


def check(command: str, data_dir: str) -> str:
  tokens = shlex.split(command, comments=True)
  while tokens and _ENV.match(tokens[0]):
    tokens = tokens[1:]
  head = tokens[0]
  if head == "make":
    done = [check(line, data_dir) for line in _make_recipe(tokens[1])
            if re.match(r"python\s+launch/", line)]
    return "; ".join(done) or "make target exists"
  if head.startswith("launch/tpu/"):
    script = os.path.join(REPO, head)
    assert os.path.isfile(script), f"{head} does not exist"
    subprocess.run(["bash", "-n", script], check=True)
    if head.endswith("/train.sh"):  # train.sh RUN_NAME FLAGS: launch/train.py FLAGS on every worker
      return check_script("launch/train.py", tokens[2:] + [
          f"--workdir=/mnt/gcs/bucket/runs/{tokens[1]}", "--config.mesh.distributed=on"], data_dir)
    if head.endswith("/run.sh") and len(tokens) > 1:  # run.sh COMMAND: COMMAND on every worker
      return check(shlex.join(tokens[1:]), data_dir)
    return "script exists, bash -n"
  assert re.search(r"python3?$", head), f"not a python command: {command}"
  if tokens[1] == "-m":
    module = importlib.import_module(tokens[2])
    assert hasattr(module, "main"), f"{tokens[2]} has no main()"
    if tokens[2] == "marl_jax.tasks.math.word_problems":  # it writes files: into the test's
      module.main(tokens[3:] + [f"--out_dir={data_dir}/generated"])
      return "module ran"
    return "module imported"
  return check_script(tokens[1], tokens[2:], data_dir)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("path, command", ALL, ids=[f"{p}: {c[:70]}" for p, c in ALL])
def test_documented_command(path, command, data_dir, monkeypatch):
  del path
  monkeypatch.chdir(REPO)  # the commands run from the repository root
  assert check(command, data_dir)


@pytest.mark.parametrize("preset", ["tiny_long", "smoke"])
def test_sweep_presets_the_docs_do_not_run(preset):
  # Every preset's runs build and draw their first batch (tiny and study run above).
  specs = sweep_lib.expand(sweep_lib.load_config("configs/sweeps.py", preset), "/tmp/sweep")
  assert {first_batch(sweep_lib.run_config(s)) for s in specs}


def test_the_study_preset_without_data_says_which_fields_to_set(monkeypatch):
  monkeypatch.chdir(REPO)
  spec = sweep_lib.expand(sweep_lib.load_config("configs/sweeps.py", "study"), "/tmp/s")[0]
  with pytest.raises(ValueError, match="task.train_path"):
    first_batch(sweep_lib.run_config(spec))


def test_a_data_file_of_the_wrong_format_fails_the_command(data_dir, monkeypatch):
  monkeypatch.chdir(REPO)
  gsm8k = records.write(os.path.join(data_dir, "gsm8k_train.jsonl"), records.GSM8K * 8)
  command = ("python launch/train.py --config=configs/default.py --workdir=runs/x "
             f"--config.task.train_path={gsm8k} --config.task.format=math "
             "--config.task.eval_path=/data/math500.jsonl --config.eval.num_problems=8")
  with pytest.raises(ValueError, match=r"gsm8k_train.jsonl:1: a 'math' record .*fields found "
                                       r"are \['answer', 'question'\]"):
    check(command, data_dir)


def test_more_eval_problems_than_the_file_fails_the_command(data_dir, monkeypatch):
  monkeypatch.chdir(REPO)
  command = ("python launch/train.py --config=configs/default.py:study=1 --workdir=runs/x "
             "--config.task.train_path=/data/dapo-math-17k.parquet "
             "--config.task.eval_path=/data/math500.jsonl")  # study: 512 eval problems
  with pytest.raises(ValueError, match=r"512 eval problems asked.*has 500"):
    check(command, data_dir)
