"""The run directory: the saved config, and the check that a resumed run is the same run.

<workdir>/config.json     the full config (written once)
<workdir>/launches.jsonl  one record per launch (appended): when, the code's git
                          commit and whether its tracked files were changed, the
                          library versions, the host and the command line; a run
                          resumed across sessions says which code ran each part
<workdir>/metrics.jsonl   one record per step (marl_jax.trainer.metrics)
<workdir>/tensorboard/    event files
<workdir>/checkpoints/    orbax steps (marl_jax.trainer.checkpoints)
<workdir>/rollouts/       sampled rollouts, step_<N>.jsonl
<workdir>/report.md       written by the demo and launch/report.py
<workdir>/metrics.cut.jsonl    records a resume cut from metrics.jsonl (appended, never lost)
<workdir>/rollouts/cut/        rollout files of steps a resume redoes
<workdir>/archive/<time>/      what train.restart=true moved away from an unresumable run
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from typing import Any, Sequence

from absl import logging
import ml_collections

# Fields a resumed run may change without becoming a different experiment.
# The mesh (how the same computation is laid out) may change too, e.g. when a
# preempted run resumes on another slice; so may where metrics are sent
# (metrics.writers: a tracker added to a running experiment), and how the
# update's rows are cut into chunks and when their programs compile
# (rl.update_rows, rl.compile_ahead: the chunks of a minibatch share one
# denominator, so the split changes no number; smaller chunks are the remedy
# for a run that ran out of memory or pads too much).
RESUMABLE_PREFIXES = ("mesh.", "metrics.")
RESUMABLE_CHANGES = ("train.steps", "train.eval_every", "train.checkpoint_every",
                     "train.save_rollouts_every", "train.keep_checkpoints",
                     "train.restart", "eval.num_problems", "rl.update_rows",
                     "rl.compile_ahead")

# What a run writes besides config.json; train.restart=true archives these.
# log.txt stays: this process is appending to it.
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "metrics.cut.jsonl", "rollouts", "tensorboard",
               "wandb", "wandb_run_id.txt")


class NotResumableError(RuntimeError):
  """The workdir holds a run that progressed, but no checkpoint of it can be read."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def config_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def check_or_save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Saves config.json in a new workdir; in an existing one, refuses a different config."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = config_dict(config)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    old, new = _flatten(saved), _flatten(current)
    # Fields only one side has come from a library version that added or
    # removed them; they cannot have been set differently by the user.
    one_sided = sorted(set(old) ^ set(new))
    if one_sided:
      logging.warning("Resuming %s: config fields %s exist only in the saved or only in the "
                      "current config; they are ignored for the comparison.", workdir,
                      one_sided[:20])
    differ = sorted(k for k in set(old) & set(new)
                    if old[k] != new[k] and k not in RESUMABLE_CHANGES
                    and not k.startswith(RESUMABLE_PREFIXES))
    if differ:
      details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ[:12])
      raise ValueError(
          f"--workdir={workdir} holds a run with a different config ({details}). "
          "Use a new --workdir, or the saved config (config.json) to resume.")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(current, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


LAUNCHES = "launches.jsonl"


def _git(*args: str) -> str | None:
  """`git <args>` in the package's checkout; None where it is not one (a wheel)."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def launch_record() -> dict[str, Any]:
  """What code and machine this launch runs (LAUNCHES)."""
  import jax  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  commit = _git("rev-parse", "HEAD")
  changed = _git("status", "--porcelain", "--untracked-files=no") if commit else None
  try:
    version = metadata.version("marl_jax")
  except metadata.PackageNotFoundError:
    version = None
  return {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "commit": commit, "changed_files": None if changed is None else bool(changed),
          "marl_jax": version, "jax": jax.__version__, "python": platform.python_version(),
          "host": platform.node(), "argv": list(sys.argv)}


def record_launch(workdir: str) -> dict[str, Any]:
  """Appends this launch's record to <workdir>/launches.jsonl; returns it."""
  record = launch_record()
  with open(os.path.join(workdir, LAUNCHES), "a") as f:
    f.write(json.dumps(record) + "\n")
  return record


def metrics_steps(workdir: str) -> list[int]:
  """Steps recorded in metrics.jsonl (whole lines only)."""
  steps = []
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for line in f:
        try:
          steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
          continue
  except FileNotFoundError:
    pass
  return steps


def progress(workdir: str, checkpoint_dirs: Sequence[str], first_checkpoint: int) -> list[str]:
  """Evidence that the run in workdir got past what a restart from step 0 redoes
  at no loss; empty when there is none.

  checkpoint_dirs: the step directories found (readable or not, set aside or not).
  first_checkpoint: the step of the run's first save, min(checkpoint_every, steps).
  Metrics alone count once they prove a checkpoint was committed: save(2c)
  waits for save(c) before the metrics of step 2c + 1 are written. A run killed
  before its first commit restarts from 0 (its metrics lines are kept in
  metrics.cut.jsonl), as a preempted run before its first checkpoint must.
  """
  evidence = []
  if checkpoint_dirs:
    evidence.append(f"checkpoint directories {sorted(checkpoint_dirs)}")
  last = max(metrics_steps(workdir), default=0)
  if last > 2 * first_checkpoint:
    evidence.append(f"metrics.jsonl records up to step {last}")
  return evidence


def archive(workdir: str, names: Sequence[str] = RUN_OUTPUTS) -> str:
  """Moves the run's outputs into <workdir>/archive/<UTC time>/ (a rename: nothing is
  copied or deleted); returns that directory. config.json stays (the same config)
  and a copy of it goes along."""
  target = os.path.join(workdir, "archive", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
  base, n = target, 1
  while os.path.exists(target):
    target, n = f"{base}.{n}", n + 1
  os.makedirs(target)
  for name in names:
    if os.path.exists(os.path.join(workdir, name)):
      os.rename(os.path.join(workdir, name), os.path.join(target, name))
  config = os.path.join(workdir, "config.json")
  if os.path.exists(config):
    with open(config) as src, open(os.path.join(target, "config.json"), "w") as dst:
      dst.write(src.read())
  return target


_ROLLOUT = re.compile(r"^step_(\d+)\.jsonl$")


def cut_rollouts(workdir: str, step: int) -> list[str]:
  """Moves rollouts/step_<N>.jsonl with N > step (a resume redoes them) into
  rollouts/cut/, named with the time of the cut; returns the new paths."""
  directory = os.path.join(workdir, "rollouts")
  moved = []
  names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
  stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
  for name in names:
    match = _ROLLOUT.match(name)
    if match and int(match.group(1)) > step:
      moved.append(keep_aside(os.path.join(directory, name), stamp))
  return moved


def keep_aside(path: str, stamp: str | None = None) -> str:
  """Renames a rollout file into rollouts/cut/<name>.<stamp> (never over another)."""
  stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
  directory = os.path.join(os.path.dirname(path), "cut")
  os.makedirs(directory, exist_ok=True)
  target = os.path.join(directory, f"{os.path.basename(path)}.{stamp}")
  base, n = target, 1
  while os.path.exists(target):
    target, n = f"{base}.{n}", n + 1
  os.rename(path, target)
  return target


def not_resumable(workdir: str, evidence: Sequence[str],
                  failures: Sequence[tuple[int, str, str]]) -> NotResumableError:
  """The refusal of a run that progressed but has no readable checkpoint.

  failures: (step, path, why) of every checkpoint step found.
  """
  found = "\n".join(f"  step {step} ({path}): {why}" for step, path, why in failures)
  return NotResumableError(
      f"--workdir={workdir} holds a run that progressed ({'; '.join(evidence)}), but no "
      "checkpoint of it can be read" + (f":\n{found}\n" if found else " (none was found).\n") +
      "Nothing of the run was moved, deleted or rewritten. Either use a new --workdir to start a new run, or rerun with "
      "--config.train.restart=true to move what is there (checkpoints, metrics, rollouts, "
      f"tensorboard) to {os.path.join(workdir, 'archive')}/<time>/, deleting nothing, and "
      "start again from step 0 in this workdir.")
