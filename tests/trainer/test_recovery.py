"""Checkpoint recovery never wedges or deletes a run (issue 21).

Unit tests drive the Checkpointer directly; the end-to-end ones run the
tiny trainer (random tiny_s, single workflow, 1-3 steps) on damaged workdirs.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.trainer import checkpoints as checkpointing
from marl_jax.trainer import loop as train
from marl_jax.trainer import rundir
from marl_jax.trainer.metrics import read_jsonl
from tests.helpers import REPO, parity_rewards, tiny_config


def _state(x, n=3):
  return {"params": {"w": jnp.full((n, 4), x, jnp.float32)}, "step": jnp.int32(x)}


def _corrupt(step_dir):
  """Overwrites every file of a step's state item, as a torn copy or a bad disk would."""
  for path in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"garbage")


def _tree(root):
  """The run's outputs (rundir.RUN_OUTPUTS) file by file with size and mtime: a
  refusal must change none of them."""
  out = {}
  for base, _, files in os.walk(root):
    for name in files:
      path = os.path.join(base, name)
      rel = os.path.relpath(path, root)
      if rel.split(os.sep)[0] in rundir.RUN_OUTPUTS:
        out[rel] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
  return out


def _slow_rewards(episodes):
  """parity_rewards, with every step lasting over a second: longer than a failing save takes."""
  time.sleep(1.0)
  return parity_rewards(episodes)


def _run(workdir, steps, rewards_of=parity_rewards, **overrides):
  config = tiny_config("workflow=single", steps=steps)
  config.rollout.batch_size = 1
  for key, value in overrides.items():
    section, field = key.split("__")
    config[section][field] = value
  return train.train_and_evaluate(config, str(workdir), rewards_of=rewards_of)


# --- the Checkpointer ------------------------------------------------------------------


def test_unreadable_latest_is_moved_aside_with_its_reason_and_its_step_saved_again(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), max_to_keep=3)
  for step in (1, 2, 3):
    ckpt.save(step, _state(step), {"data_position": step})
  ckpt.close()
  _corrupt(os.path.join(ckpt.directory, "3"))
  # A reader (evaluation, export) skips it and changes nothing on disk.
  assert checkpointing.Checkpointer(str(tmp_path)).restore(_state(0))[0] == 2
  assert os.path.isdir(os.path.join(ckpt.directory, "3"))
  trainer = checkpointing.Checkpointer(str(tmp_path), max_to_keep=3, train=True)
  step, state, _ = trainer.restore(_state(0))
  assert step == 2 and int(state["step"]) == 2
  aside = os.path.join(ckpt.directory, "3.unreadable")
  assert os.path.isdir(aside) and trainer.steps() == [1, 2]
  with open(aside + ".reason.txt") as f:
    assert "step 3" in f.read()
  # The step is saved anew (orbax raised StepAlreadyExistsError here forever).
  trainer.save(3, _state(30), {"data_position": 3}, wait=True)
  trainer.close()
  assert checkpointing.Checkpointer(str(tmp_path)).restore(_state(0))[0] == 3
  assert os.path.isdir(aside)  # kept, never reused as a save target
  # It goes bad again: both copies are kept.
  _corrupt(os.path.join(ckpt.directory, "3"))
  again = checkpointing.Checkpointer(str(tmp_path), max_to_keep=3, train=True)
  assert again.restore(_state(0))[0] == 2
  assert os.path.isdir(aside + ".1") and os.path.isdir(aside)
  assert [u.step for u in checkpointing.set_aside_steps(ckpt.directory)] == [3, 3]
  again.close()


def test_retention_never_deletes_a_step_newer_than_the_resumed_one(tmp_path, monkeypatch):
  ckpt = checkpointing.Checkpointer(str(tmp_path), max_to_keep=3)
  for step in (1, 2, 3):
    ckpt.save(step, _state(step), {"data_position": step})
  ckpt.close()
  _corrupt(os.path.join(ckpt.directory, "3"))
  # Not process 0: another process moves unreadable steps aside, so step 3 stays listed.
  monkeypatch.setattr(checkpointing, "_moves_aside", lambda: False)
  trainer = checkpointing.Checkpointer(str(tmp_path), max_to_keep=1, train=True)
  assert trainer.restore(_state(0))[0] == 2
  for step in (4, 5, 6):
    trainer.save(step, _state(step), {"data_position": step})
  trainer.close()
  assert 3 in trainer.steps() and 6 in trainer.steps() and 4 not in trainer.steps()


def test_no_readable_checkpoint_lists_every_failure_and_moves_nothing(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), max_to_keep=3)
  ckpt.save(1, _state(1), {"data_position": 1})
  ckpt.save(2, _state(2), {"data_position": 2}, wait=True)
  ckpt.close()
  trainer = checkpointing.Checkpointer(str(tmp_path), train=True)
  assert trainer.restore(_state(0, n=5)) is None  # another architecture: other shapes
  assert [u.step for u in trainer.unreadable] == [2, 1]
  assert all("shape" in u.short() for u in trainer.unreadable)
  assert trainer.steps() == [1, 2]


def _assert_threads_released(before, wait_s=10.0):
  """No more threads than `before` once the ones being joined have ended (a
  closed queue's feeder thread ends a moment after close returns)."""
  deadline = time.time() + wait_s
  while threading.active_count() > before and time.time() < deadline:
    time.sleep(0.05)
  assert threading.active_count() <= before, [t.name for t in threading.enumerate()]


def _mount_tmpfs(path, size):
  """Mounts a small tmpfs at path, or skips saying why it cannot."""
  if not sys.platform.startswith("linux") or os.geteuid() != 0:
    pytest.skip("a full disk needs a small tmpfs: mounting one needs root on Linux")
  os.makedirs(path, exist_ok=True)
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                        capture_output=True, text=True, check=False)
  if done.returncode:
    pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")


def _umount(path):
  subprocess.run(["umount", "-l", path], capture_output=True, check=False)


def test_a_failed_async_save_surfaces_at_once_and_leaves_no_tmp_behind(tmp_path):
  workdir = str(tmp_path / "run")
  _mount_tmpfs(workdir, "256k")
  threads = threading.active_count()
  ckpt = None
  try:
    ckpt = checkpointing.Checkpointer(workdir, max_to_keep=3, train=True)
    ckpt.save(1, _state(1), {"data_position": 1}, wait=True)
    big = {"params": {"w": jnp.asarray(np.random.default_rng(0).normal(size=(400, 400)),
                                       jnp.float32)}, "step": jnp.int32(2)}
    ckpt.save(2, big, {"data_position": 2})
    deadline = time.time() + 60
    with pytest.raises(checkpointing.CheckpointSaveError,
                       match=r"step 2 .*(No space left|RESOURCE_EXHAUSTED)"):
      while time.time() < deadline:  # the loop's per-step check, without a next save
        ckpt.check()
        time.sleep(0.05)
    assert glob.glob(os.path.join(ckpt.directory, "*-tmp*"))  # the torn save is still there
    reopened = checkpointing.Checkpointer(workdir, max_to_keep=3, train=True)
    assert not glob.glob(os.path.join(ckpt.directory, "*-tmp*"))
    assert reopened.restore(_state(0))[0] == 1  # the earlier checkpoint is intact
    reopened.close()
    ckpt.abandon()  # after its failed save: logs, never raises, and releases orbax's threads
    _assert_threads_released(threads)
  finally:
    if ckpt is not None:
      ckpt.abandon()  # safe twice
    _umount(workdir)


# --- the trainer -----------------------------------------------------------------------


def test_corrupt_latest_checkpoint_resumes_from_the_previous_and_finishes(tmp_path):
  workdir = tmp_path / "run"
  _run(workdir, steps=2)
  before = read_jsonl(str(workdir / "metrics.jsonl"))
  _corrupt(str(workdir / "checkpoints" / "2"))
  _run(workdir, steps=3)
  records = read_jsonl(str(workdir / "metrics.jsonl"))
  assert [r["step"] for r in records] == [0, 1, 2, 3]
  assert records[:2] == before[:2]  # what the resume kept is untouched
  # The redone step's old record and rollout file were kept aside, not overwritten.
  cut = read_jsonl(str(workdir / "metrics.cut.jsonl"))
  assert cut[0]["cut"]["resumed_from_step"] == 1 and cut[1] == before[2]
  assert glob.glob(str(workdir / "rollouts" / "cut" / "step_2.jsonl.*"))
  assert sorted(os.listdir(workdir / "rollouts")) == ["cut", "step_1.jsonl", "step_2.jsonl",
                                                      "step_3.jsonl"]
  assert os.path.isdir(workdir / "checkpoints" / "2.unreadable")
  assert checkpointing.Checkpointer(str(workdir)).steps() == [1, 2, 3]


def test_no_readable_checkpoint_refuses_then_restart_archives(tmp_path):
  workdir = tmp_path / "run"
  _run(workdir, steps=2)
  for step in (1, 2):
    _corrupt(str(workdir / "checkpoints" / str(step)))
  before = _tree(str(workdir))
  with pytest.raises(rundir.NotResumableError) as error:
    _run(workdir, steps=2)
  message = str(error.value)
  assert str(workdir) in message and "step 1 (" in message and "step 2 (" in message
  assert "--workdir" in message and "--config.train.restart=true" in message
  assert _tree(str(workdir)) == before  # nothing moved, deleted or rewritten
  _run(workdir, steps=1, train__restart=True)
  archived = glob.glob(str(workdir / "archive" / "*"))
  assert len(archived) == 1
  assert sorted(os.listdir(os.path.join(archived[0], "checkpoints"))) == ["1", "2"]
  assert [r["step"] for r in read_jsonl(os.path.join(archived[0], "metrics.jsonl"))] == [0, 1, 2]
  assert [r["step"] for r in read_jsonl(str(workdir / "metrics.jsonl"))] == [0, 1]
  # restart=true left in the command resumes once a checkpoint is readable.
  _run(workdir, steps=2, train__restart=True)
  assert len(glob.glob(str(workdir / "archive" / "*"))) == 1
  assert [r["step"] for r in read_jsonl(str(workdir / "metrics.jsonl"))] == [0, 1, 2]


def test_checkpoints_of_another_architecture_are_refused_not_restarted(tmp_path):
  source, workdir = tmp_path / "tiny_s", tmp_path / "tiny_m"
  _run(source, steps=1)
  os.makedirs(workdir)
  shutil.copytree(source / "checkpoints", workdir / "checkpoints")
  shutil.copy(source / "metrics.jsonl", workdir / "metrics.jsonl")
  with pytest.raises(rundir.NotResumableError, match=r"step 1 \(.*shape"):
    _run(workdir, steps=2, model__preset="tiny_m")
  assert os.listdir(workdir / "checkpoints") == ["1"]
  assert read_jsonl(str(workdir / "metrics.jsonl")) == read_jsonl(str(source / "metrics.jsonl"))


_SLOW_SAVE = """
import os, sys, time
sys.path.insert(0, {root!r})
from orbax.checkpoint._src.checkpointers import async_checkpointer as ac
commit = ac._background_wait_for_commit_futures
def slow(directory, *args, **kwargs):
  if os.path.basename(str(directory)) == "2":  # the final name; "2.orbax-checkpoint-tmp" is written
    open({marker!r}, "w").close()
    time.sleep(120)  # the save of step 2 hangs: the test kills the process inside it
  return commit(directory, *args, **kwargs)
ac._background_wait_for_commit_futures = slow
from tests.helpers import parity_rewards, tiny_config
from marl_jax.trainer import loop as train
config = tiny_config("workflow=single", steps=3)
config.rollout.batch_size = 1
train.train_and_evaluate(config, {workdir!r}, rewards_of=parity_rewards)
"""


def test_kill_9_during_an_async_save_resumes_and_leaves_no_tmp(tmp_path):
  from orbax.checkpoint._src.checkpointers import async_checkpointer
  if not hasattr(async_checkpointer, "_background_wait_for_commit_futures"):
    pytest.skip("this orbax has no _background_wait_for_commit_futures to hold a save open")
  workdir, marker = str(tmp_path / "run"), str(tmp_path / "saving")
  proc = subprocess.Popen(
      [sys.executable, "-c", _SLOW_SAVE.format(root=REPO, workdir=workdir, marker=marker)],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and not os.path.exists(marker):
    time.sleep(0.05)
  assert os.path.exists(marker), "the run never reached the save of step 2"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  tmp = glob.glob(os.path.join(workdir, "checkpoints", "*-tmp*"))
  assert tmp  # killed mid-save: the uncommitted step 2 is on disk
  config = tiny_config("workflow=single", steps=3)
  config.rollout.batch_size = 1
  train.train_and_evaluate(config, workdir, rewards_of=parity_rewards)
  assert not glob.glob(os.path.join(workdir, "checkpoints", "*-tmp*"))
  assert checkpointing.Checkpointer(workdir).steps() == [1, 2, 3]
  assert [r["step"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))] == [0, 1, 2, 3]


def test_full_disk_on_the_checkpoint_directory_stops_the_run_and_the_rerun_finishes(tmp_path):
  workdir = tmp_path / "run"
  checkpoints = str(workdir / "checkpoints")
  _mount_tmpfs(checkpoints, "16k")  # smaller than one tiny_s checkpoint (~128k)
  try:
    threads = threading.active_count()
    with pytest.raises(checkpointing.CheckpointSaveError, match=r"step 3 .*No space left"):
      _run(workdir, steps=7, rewards_of=_slow_rewards, train__checkpoint_every=3)
    _assert_threads_released(threads)  # the failed run released orbax's threads
    records = read_jsonl(str(workdir / "metrics.jsonl"))
    # The save of step 3 failed in the background during step 4 (over a second):
    # the run stops after it, not at the next save (step 6).
    assert records[-1]["step"] == 4
    subprocess.run(["mount", "-o", "remount,size=8m", checkpoints], check=True)
    # Nothing was committed (metrics short of step 2 * 3 + 1 prove no commit): a fresh
    # start, the old lines kept aside.
    _run(workdir, steps=3, train__checkpoint_every=3)
    assert not glob.glob(os.path.join(checkpoints, "*-tmp*"))
    assert checkpointing.Checkpointer(str(workdir)).steps() == [3]
    assert [r["step"] for r in read_jsonl(str(workdir / "metrics.jsonl"))] == [0, 1, 2, 3]
    cut = read_jsonl(str(workdir / "metrics.cut.jsonl"))
    assert cut[0]["cut"]["resumed_from_step"] is None and cut[1:] == records
  finally:
    _umount(checkpoints)


def test_metric_cut_keeps_torn_and_later_lines_in_the_side_file(tmp_path):
  from marl_jax.trainer.metrics import MetricWriter
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps({"step": s, "loss": s}) + "\n" for s in range(4)]
  path.write_text("".join(lines[:3]) + '{"step": 3, "lo' + "\n" + lines[3])
  writer = MetricWriter(str(tmp_path), resume_step=1, tensorboard=False)
  writer.close()
  assert path.read_text() == "".join(lines[:2])
  cut = (tmp_path / "metrics.cut.jsonl").read_text().splitlines(keepends=True)
  assert json.loads(cut[0])["cut"]["lines"] == 3
  assert cut[1:] == [lines[2], '{"step": 3, "lo\n', lines[3]]


def test_metrics_alone_count_as_progress_once_they_prove_a_commit(tmp_path):
  """save(2c) waits for save(c) before the metrics of step 2c + 1 are written, so
  those metrics prove checkpoint c was committed; fewer do not (a run killed
  before its first commit restarts from 0, as a preempted one must)."""
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(3)))
  assert rundir.progress(str(tmp_path), [], first_checkpoint=1) == []
  path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(4)))
  assert rundir.progress(str(tmp_path), [], first_checkpoint=1) == [
      "metrics.jsonl records up to step 3"]
  assert rundir.progress(str(tmp_path), [], first_checkpoint=2) == []
  assert rundir.progress(str(tmp_path), ["3.unreadable"], first_checkpoint=2)
