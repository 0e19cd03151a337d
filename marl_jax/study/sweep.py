"""Sweeps: a sweep config expanded into runs, run locally N at a time, with a status table.

A sweep config (configs/sweeps.py) has
  axes.workflow, axes.task, axes.model, axes.policy, axes.seed   tuples; their
      product is the matrix, one run per point
  args       extra `get_config` arguments for every run ('study=1', '')
  overrides  'field=value' for every run (passed as --config.<field>=<value>)
  variants   named extra runs: variants.<name>.when ('workflow=voting,policy=
             isolated': the matrix points they copy), .args, .overrides;
             a variant run is named '<point>-<name>'
  exclude    matrix points not to run, each 'axis=value,...' (all must match),
             e.g. 'workflow=single,policy=isolated': one role, so the same run
             as its shared twin
  base_config  the run config file (configs/default.py)
Each run gets its own workdir <root>/<workflow>-<task>-<model>-<policy>-s<seed>
and runs as `python launch/train.py --config=<base_config>:<args> --workdir=..
--config.<override> ...`. A run is done when its metrics.jsonl reaches
train.steps; an interrupted one resumes (training resumes from its last
checkpoint), so re-running a sweep runs only what is not done.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.util
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import ml_collections

from marl_jax.study.diagnostics import failure_modes
from marl_jax.trainer import config as config_lib
from marl_jax.trainer.metrics import read_jsonl

AXES = ("workflow", "task", "model", "policy", "seed")
STATE_FILE = "sweep_state.json"   # in each workdir: the local runner's record of the run
LOG_FILE = "sweep.log"            # in each workdir: the run's stdout and stderr
MANIFEST = "sweep.json"           # in the sweep root: the runs and their commands


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run of a sweep: its name, config arguments, overrides and workdir."""

  name: str
  point: tuple[tuple[str, str], ...]   # the matrix point: ((axis, value), ...)
  args: str
  overrides: tuple[str, ...]
  workdir: str
  base_config: str = "configs/default.py"

  def command(self, python: str = "python", launcher: str = "launch/train.py",
              base_config: str | None = None) -> list[str]:
    return [python, launcher, f"--config={base_config or self.base_config}:{self.args}",
            f"--workdir={self.workdir}", *(f"--config.{o}" for o in self.overrides)]

  def shell_command(self) -> str:
    return shlex.join(self.command())


@dataclasses.dataclass(frozen=True)
class RunStatus:
  name: str
  state: str            # pending | running | partial | failed | done
  step: int
  steps: int | None
  base: float | None
  last: float | None
  minutes: float | None = None  # the last launch's wall time, once it has ended


def _parse_pairs(text: str, field: str) -> dict[str, str]:
  out = {}
  for item in filter(None, (text or "").split(",")):
    if "=" not in item:
      raise ValueError(f"sweep {field} item {item!r} is not key=value.")
    key, value = item.split("=", 1)
    out[key.strip()] = value.strip()
  return out


def _point_filter(text: str, field: str) -> dict[str, str]:
  """An 'axis=value,...' filter of matrix points (variants' `when`, `exclude`)."""
  when = _parse_pairs(text, field)
  unknown = sorted(set(when) - set(AXES))
  if unknown:
    raise ValueError(f"sweep.{field} names {unknown}; valid axes: {AXES}.")
  return when


def run_name(point: dict[str, Any]) -> str:
  return f"{point['workflow']}-{point['task']}-{point['model']}-{point['policy']}-s{point['seed']}"


def expand(sweep: ml_collections.ConfigDict, root: str) -> list[RunSpec]:
  """The runs of a sweep config, matrix order then variants, each in <root>/<name>."""
  axes = sweep.axes
  missing = [a for a in AXES if not tuple(axes.get(a, ()) or ())]
  if missing:
    raise ValueError(f"sweep.axes.{missing[0]} is empty; every axis of {AXES} needs a value.")
  extra = _parse_pairs(sweep.get("args", ""), "args")
  clash = sorted(set(extra) & set(AXES))
  if clash:
    raise ValueError(f"sweep.args sets {clash}, which are sweep axes; set sweep.axes.{clash[0]}.")
  overrides = tuple(sweep.get("overrides", ()) or ())
  variants = [(f"-{vname}", _point_filter(v.get("when", ""), f"variants.{vname}.when"),
               _parse_pairs(v.get("args", ""), f"variants.{vname}.args"),
               tuple(v.get("overrides", ()) or ()))
              for vname, v in sorted((sweep.get("variants") or {}).items())]
  excluded = [_point_filter(e, f"exclude[{i}]")
              for i, e in enumerate(tuple(sweep.get("exclude", ()) or ()))]
  if any(not e for e in excluded):
    raise ValueError("sweep.exclude has an empty filter, which would exclude every run; "
                     "give each one as 'axis=value,...'.")
  matches = lambda point, when: all(point[k] == v for k, v in when.items())
  specs, names = [], set()
  for values in itertools.product(*(tuple(axes[a]) for a in AXES)):
    point = dict(zip(AXES, (str(v) for v in values)))
    if any(matches(point, e) for e in excluded):
      continue
    runs = [("", {}, ())] + [(suffix, vargs, voverrides)
                             for suffix, when, vargs, voverrides in variants
                             if matches(point, when)]
    for suffix, vargs, voverrides in runs:
      name = run_name(point) + suffix
      if name in names:
        raise ValueError(f"sweep has two runs named {name!r}; make the axes' values distinct.")
      names.add(name)
      args = ",".join(f"{k}={v}" for k, v in {**point, **extra, **vargs}.items())
      specs.append(RunSpec(name, tuple(point.items()), args, overrides + voverrides,
                           os.path.join(root, name),
                           sweep.get("base_config", "configs/default.py")))
  return specs


def select(specs: Sequence[RunSpec], patterns: str | Sequence[str]) -> list[RunSpec]:
  """Runs whose names match any of the glob patterns (comma-separated; empty: all)."""
  if isinstance(patterns, str):
    patterns = [p for p in patterns.split(",") if p]
  if not patterns:
    return list(specs)
  return [s for s in specs if any(fnmatch.fnmatch(s.name, p) for p in patterns)]


# --- run configs -------------------------------------------------------------


def config_file(path: str) -> str:
  """The file of a base config: a path to a .py file, or a module's dotted name
  (the package's own is marl_jax.trainer.config), so a sweep needs no checkout."""
  if path.endswith(".py"):
    if not os.path.exists(path):
      raise FileNotFoundError(f"sweep.base_config={path!r} does not exist (relative paths are "
                              f"read from {os.getcwd()}); or name a config module, e.g. "
                              "'marl_jax.trainer.config'.")
    return path
  spec = importlib.util.find_spec(path)
  if spec is None or not spec.origin:
    raise FileNotFoundError(f"sweep.base_config={path!r} is neither a .py file nor an "
                            "importable config module.")
  return spec.origin


def _config_module(path: str):
  spec = importlib.util.spec_from_file_location("sweep_base_config", config_file(path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(path: str, args: str = "") -> ml_collections.ConfigDict:
  """get_config(args) of a config file (as --config=path:args reads it)."""
  return _config_module(path).get_config(args)


def run_config(spec: RunSpec) -> ml_collections.ConfigDict:
  """The config the run trains with (base config + args + overrides), validated."""
  config = load_config(spec.base_config, spec.args)
  for override in spec.overrides:
    config_lib.override(config, override)
  return config


# --- status ------------------------------------------------------------------


def _read_state(workdir: str) -> dict:
  path = os.path.join(workdir, STATE_FILE)
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return {}


def _write_state(workdir: str, **state) -> None:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, STATE_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(state, f)
  os.replace(path + ".tmp", path)


def _alive(pid: int | None, workdir: str) -> bool:
  """Whether `pid` lives and (where /proc shows it) is the run's own process,
  not a later process that reuses its pid: its command line names the run's
  directory (by name: the runner may have been given a relative --dir)."""
  if not pid:
    return False
  try:
    os.kill(pid, 0)
  except OSError:
    return False
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      cmdline = f.read()
  except OSError:
    return True
  # Empty while a process is still being set up: no evidence it is another one.
  return not cmdline or os.fsencode(os.path.basename(os.path.normpath(workdir))) in cmdline


def status(spec: RunSpec, steps: int | None = None) -> RunStatus:
  """Where a run stands, from its metrics.jsonl and the runner's state file."""
  records = read_jsonl(os.path.join(spec.workdir, "metrics.jsonl"))
  step = max((r.get("step", 0) for r in records), default=0)
  evals = [r["eval/accuracy"] for r in sorted(records, key=lambda r: r.get("step", 0))
           if "eval/accuracy" in r]
  base = next((r["eval/accuracy"] for r in records
               if r.get("step") == 0 and "eval/accuracy" in r), None)
  state = _read_state(spec.workdir)
  if records and steps is not None and step >= steps:
    name = "done"
  elif state.get("state") == "running" and _alive(state.get("pid"), spec.workdir):
    name = "running"
  elif state.get("state") == "failed":
    name = "failed"
  else:
    name = "partial" if records else "pending"
  minutes = ((state["ended"] - state["started"]) / 60
             if state.get("ended") and state.get("started") else None)
  return RunStatus(spec.name, name, step, steps, base, evals[-1] if evals else None, minutes)


def total_steps(specs: Sequence[RunSpec]) -> dict[str, int]:
  return {s.name: int(run_config(s).train.steps) for s in specs}


def status_table(statuses: Sequence[RunStatus]) -> str:
  fmt = lambda x, spec=".3f": "-" if x is None else f"{x:{spec}}"
  rows = [("run", "state", "step", "base acc", "last acc", "minutes")]
  rows += [(s.name, s.state, f"{s.step}/{s.steps if s.steps is not None else '?'}",
            fmt(s.base), fmt(s.last), fmt(s.minutes, ".1f")) for s in statuses]
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  counts = {}
  for s in statuses:
    counts[s.state] = counts.get(s.state, 0) + 1
  timed = [s.minutes for s in statuses if s.minutes is not None]
  lines.append(", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
               + (f"; {sum(timed):.0f} run-minutes over {len(timed)} timed runs" if timed else ""))
  return "\n".join(lines)


def write_manifest(root: str, sweep: ml_collections.ConfigDict, specs: Sequence[RunSpec]) -> str:
  """Writes <root>/sweep.json; runs already listed there stay listed (an --only
  subset run later adds its runs, it does not drop the others')."""
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, MANIFEST)
  runs = [{"name": s.name, "point": dict(s.point), "args": s.args,
           "overrides": list(s.overrides), "workdir": s.workdir, "command": s.shell_command()}
          for s in specs]
  if os.path.exists(path):
    with open(path) as f:
      listed = json.load(f).get("runs", [])
    new = {r["name"] for r in runs}
    runs = [r for r in listed if r["name"] not in new] + runs
  with open(path + ".tmp", "w") as f:
    json.dump({"sweep": json.loads(sweep.to_json_best_effort()), "runs": runs}, f, indent=1)
  os.replace(path + ".tmp", path)
  return path


PUBLISHED = ("config.json", "metrics.jsonl")
PUBLISHED_IF_THERE = ("launches.jsonl",)  # runs from before it have none


def publish(specs: Sequence[RunSpec], steps: dict[str, int], out_dir: str,
            rollout_window: int = 2) -> list[str]:
  """Copies the finished runs' results, without checkpoints, into out_dir/<name>/.

  Per run: config.json, metrics.jsonl, launches.jsonl (runs from before it
  have none), and the first and last
  `rollout_window` saved rollout steps (what the failure modes read:
  diagnostics.failure_modes.FailureConfig.window). The copy is a sweep
  directory of its own: launch/report.py reads it, and copying it back into
  a sweep directory marks those runs done, so a resumed sweep runs only the
  rest. Files are replaced atomically. Returns the names published.
  """
  done = []
  for spec in specs:
    if status(spec, steps.get(spec.name)).state != "done":
      continue
    saved = failure_modes.rollout_steps(spec.workdir)
    keep = saved[:rollout_window] + saved[max(rollout_window, len(saved) - rollout_window):]
    files = [os.path.join(spec.workdir, f) for f in PUBLISHED]
    files += [p for p in (os.path.join(spec.workdir, f) for f in PUBLISHED_IF_THERE)
              if os.path.exists(p)]
    files += [p for _, p in keep]
    for src in files:
      dst = os.path.join(out_dir, spec.name, os.path.relpath(src, spec.workdir))
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      shutil.copyfile(src, dst + ".tmp")
      os.replace(dst + ".tmp", dst)
    done.append(spec.name)
  return done


# --- local runner ------------------------------------------------------------


def cpu_slots(parallel: int) -> list[frozenset[int]] | None:
  """Disjoint shares of this process's CPUs, one per concurrent run; None when
  there is nothing to split (one run at a time, fewer CPUs than runs, or no
  sched_setaffinity). Each run's XLA sizes its thread pools to the CPUs it may
  use, so runs on their own cores do not contend for them: two tiny-world runs
  on two cores took 7.7 s a step each pinned and 8.2-8.4 unpinned."""
  if parallel < 2 or not hasattr(os, "sched_setaffinity"):
    return None
  cpus = sorted(os.sched_getaffinity(0))
  if len(cpus) < parallel:
    return None
  return [frozenset(cpus[i * len(cpus) // parallel:(i + 1) * len(cpus) // parallel])
          for i in range(parallel)]


def _launch(spec: RunSpec, python: str, launcher: str, env: dict | None,
            cpus: frozenset[int] | None = None) -> subprocess.Popen:
  os.makedirs(spec.workdir, exist_ok=True)
  base = config_file(spec.base_config)
  log = open(os.path.join(spec.workdir, LOG_FILE), "a")
  log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {spec.shell_command()}\n")
  log.flush()
  proc = subprocess.Popen(spec.command(python, launcher, base), stdout=log,
                          stderr=subprocess.STDOUT, env=env)
  if cpus:  # not preexec_fn, unsafe in a threaded parent; the child starts no thread this early
    try:
      os.sched_setaffinity(proc.pid, cpus)
    except ProcessLookupError:  # it has already exited; its exit code tells why
      pass
  log.close()  # the child holds its own descriptor
  _write_state(spec.workdir, state="running", pid=proc.pid, started=time.time())
  return proc


def with_compilation_cache(env: dict | None, cache_dir: str | None) -> dict | None:
  """`env` (None: this process's) with JAX's persistent compilation cache in
  cache_dir, unless the caller's environment already names one. A sweep's
  runs compile the same programs (every seed of a cell, every cell of a
  scale): the tiny world's run start fell from 63 s to 23 s with a warm cache."""
  if not cache_dir:
    return env
  env = dict(os.environ if env is None else env)
  if not env.get("JAX_COMPILATION_CACHE_DIR"):
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.abspath(cache_dir)
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return env


def run_local(specs: Sequence[RunSpec], parallel: int = 1, *, launcher: str,
              python: str = sys.executable, env: dict | None = None, poll_s: float = 2.0,
              steps: dict[str, int] | None = None, pin_cpus: bool = True,
              compilation_cache: str | None = None,
              out: Callable[[str], None] = print) -> dict[str, int]:
  """Runs every run that is not done, `parallel` subprocesses at a time, each
  on its own share of the CPUs when pin_cpus (cpu_slots), sharing one XLA
  compilation cache when compilation_cache names its directory.

  launcher is the training script (launch/train.py, as launch/sweep.py passes it).
  Returns {name: exit code} of the runs started. A run another runner is
  running is skipped. Ctrl-C or SIGTERM stops the children it started (each
  resumes on the next invocation) and raises KeyboardInterrupt.
  """
  if parallel < 1:
    raise ValueError(f"--parallel={parallel} must be >= 1.")
  steps = steps if steps is not None else total_steps(specs)
  states = {s.name: status(s, steps.get(s.name)).state for s in specs}
  for spec in specs:
    if states[spec.name] == "running":  # two writers would corrupt one workdir
      out(f"skipping {spec.name}: already running as pid "
          f"{_read_state(spec.workdir).get('pid')} (another sweep?); stop it or let it end.")
  todo = [s for s in specs if states[s.name] not in ("done", "running")]
  done = sum(v == "done" for v in states.values())
  out(f"{done} of {len(specs)} runs done; running {len(todo)}, {parallel} at a time.")
  slots = (cpu_slots(parallel) if pin_cpus else None) or [None] * parallel
  env = with_compilation_cache(env, compilation_cache)
  running: dict[str, tuple[subprocess.Popen, RunSpec, int]] = {}
  codes: dict[str, int] = {}
  on_term = _stop_on_sigterm()
  try:
    while todo or running:
      while todo and len(running) < parallel:
        spec = todo.pop(0)
        slot = min(set(range(parallel)) - {r[2] for r in running.values()})
        running[spec.name] = (_launch(spec, python, launcher, env, slots[slot]), spec, slot)
        out(f"started {spec.name} (log: {os.path.join(spec.workdir, LOG_FILE)})")
      time.sleep(poll_s)
      for name, (proc, spec, _) in list(running.items()):
        code = proc.poll()
        if code is None:
          continue
        del running[name]
        codes[name] = code
        st = status(spec, steps.get(name))
        state = "done" if st.state == "done" else ("failed" if code else "exited")
        _write_state(spec.workdir, state=state, returncode=code, ended=time.time(),
                     started=_read_state(spec.workdir).get("started"))
        out(f"{state} {name} (exit {code}, step {st.step}/{st.steps}); "
            f"{len(running)} running, {len(todo)} waiting")
  except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (a scheduler, `kill`)
    for name, (proc, spec, _) in running.items():
      proc.terminate()
      proc.wait()
      _write_state(spec.workdir, state="interrupted", returncode=proc.returncode)
    raise
  finally:
    on_term()
  return codes


def _stop_on_sigterm() -> Callable[[], None]:
  """Makes SIGTERM stop the runner like Ctrl-C, so its children stop with it
  instead of training on unwatched; returns the function that restores the
  previous handler. A no-op outside the main thread."""
  def interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
  try:
    previous = signal.signal(signal.SIGTERM, interrupt)
  except ValueError:  # not the main thread
    return lambda: None
  return lambda: signal.signal(signal.SIGTERM, previous)
