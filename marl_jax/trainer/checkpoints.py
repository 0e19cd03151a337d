"""Orbax checkpoints of the trainer state: atomic commits, safe resume, nothing deleted.

A checkpoint holds the state pytree (policy slots, optimizer state, step,
any intervention state) and a JSON record (data position, metadata). Orbax
writes each step to `<step>.orbax-checkpoint-tmp` and renames it when
complete, so a crash mid-save never damages an earlier checkpoint.

What a training run (`Checkpointer(..., train=True)`) adds to orbax:
  * an unreadable step is never deleted and never reused as a save target:
    once a readable older step is found, the newer unreadable ones are moved
    to `checkpoints/<step>.unreadable` with the reason in
    `<step>.unreadable.reason.txt` (orbax lists only integer names, so they
    leave its step list and its retention);
  * retention (orbax's LatestN, `max_to_keep`) never deletes a step newer than
    the one the run resumed from;
  * uncommitted `*.orbax-checkpoint-tmp` directories of a killed save are
    removed when the run starts (what orbax's cleanup_tmp_directories does,
    but before the run lists its steps); readers leave them alone, since a
    trainer may be writing one;
  * a failed asynchronous save surfaces as CheckpointSaveError naming the step
    and the cause at the next `check()` (the loop calls it every step), not
    at the next save many steps later.
Readers (evaluation, export: `train=False`) skip unreadable steps with a
warning and change nothing on disk.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from typing import Any, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

UNREADABLE = ".unreadable"
_REASON = ".reason.txt"
_TMP = ".orbax-checkpoint-tmp"  # orbax's atomicity TMP_DIR_SUFFIX
_SET_ASIDE = re.compile(r"^(\d+)\.unreadable(\.\d+)?$")


class CheckpointSaveError(RuntimeError):
  """An asynchronous checkpoint save failed; the earlier checkpoints are untouched."""


@dataclasses.dataclass(frozen=True)
class Unreadable:
  """A checkpoint step that could not be restored, and why."""
  step: int
  reason: str
  path: str

  def short(self, limit: int = 320) -> str:
    # One line: orbax's errors span lines (a pytree key path) or dump a whole
    # tensorstore spec after the cause; the head names the cause.
    text = " ".join(self.reason.split()) or "?"
    return text if len(text) <= limit else text[:limit] + "..."


def _target(abstract_state: Any) -> Any:
  """ShapeDtypeStructs to restore into; leaves without a sharding go to the default
  device, so a checkpoint written on any mesh (marl_jax.parallel.sharding) restores on one."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def one(x):
    x = ocp.utils.to_shape_dtype_struct(x)
    return x if x.sharding is not None else jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                 sharding=device)

  return jax.tree.map(one, abstract_state)


@dataclasses.dataclass
class _KeepNewerThanResumed:
  """Preserves every step that was on disk when the run resumed and is newer
  than the resumed one (orbax's LatestN alone would count them among the
  newest and delete older, good steps, or delete them once newer saves exist)."""
  protected: set = dataclasses.field(default_factory=set)

  def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
    del context
    return [c.step in self.protected for c in checkpoints]


def _moves_aside() -> bool:
  """One process moves unreadable steps aside on a shared checkpoint directory."""
  return jax.process_index() == 0


def _remove_uncommitted(directory: str) -> None:
  """Deletes the *.orbax-checkpoint-tmp directories of saves a crash or kill cut
  short (never committed, so never a checkpoint). Orbax's own
  cleanup_tmp_directories does this in the background, racing the first save
  and this run's listing; here it is done before the manager starts."""
  for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
    if _TMP in name:
      logging.warning("Removing %s: a checkpoint save that never completed.", name)
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def set_aside_steps(directory: str) -> list[Unreadable]:
  """Steps moved aside as unreadable (by an earlier run), with their recorded reasons."""
  found = []
  for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
    match = _SET_ASIDE.match(name)
    path = os.path.join(directory, name)
    if not match or not os.path.isdir(path):
      continue
    try:
      with open(path + _REASON) as f:
        reason = f.readline().strip()
    except OSError:
      reason = "(no reason file)"
    found.append(Unreadable(int(match.group(1)), f"set aside by an earlier start: {reason}",
                            path))
  return sorted(found, key=lambda u: u.step)


class Checkpointer:
  """Saves and restores `(state, record)` pairs under `<workdir>/checkpoints`.

  train=True is the training run's view (module docstring): it cleans up
  uncommitted saves at start and moves unreadable steps aside on restore.
  """

  def __init__(self, workdir: str, max_to_keep: int = 3, *, train: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.train = train
    # Steps restore() could not read, newest first; filled by restore().
    self.unreadable: list[Unreadable] = []
    if train and _moves_aside():
      _remove_uncommitted(self.directory)
    self._keep = _KeepNewerThanResumed()
    policy = checkpoint_managers.AnyPreservationPolicy(
        [checkpoint_managers.LatestN(n=max_to_keep), self._keep])
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(preservation_policy=policy, create=True),
        item_names=("state", "record"))
    self._saving: int | None = None  # the step of the save in flight, for error messages

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, record: dict, *, wait: bool = False) -> None:
    """Saves asynchronously (call `wait()` before exiting, or pass wait=True).

    Raises CheckpointSaveError when this or the previous save failed."""
    self._surface(self._manager.wait_until_finished)  # the previous save, named by its step
    self._saving = step
    self._surface(lambda: self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)), force=True))
    if wait:
      self.wait()

  def check(self) -> None:
    """Raises CheckpointSaveError if the save in flight has already failed; never
    waits for one still running (the loop calls it after every step)."""
    if self._saving is None:
      return
    # The background commit's error is consumed by orbax's finalize thread, so
    # both places are looked at: the commit thread's, then the finished
    # finalize thread's (joining a finished thread does not wait).
    self._surface(self._manager.check_for_errors)
    if not self._manager.is_saving_in_progress():
      self.wait()

  def _surface(self, call) -> None:
    try:
      call()
    except CheckpointSaveError:
      raise
    except Exception as error:  # pylint: disable=broad-except
      step = self._saving
      self._saving = None
      raise CheckpointSaveError(
          f"Saving the checkpoint of step {step} to {self.directory} failed: "
          f"{type(error).__name__}: {Unreadable(0, str(error), '').short(600)}. The earlier "
          "checkpoints are intact and the uncommitted save is removed at the next start; "
          "free space or fix the directory, then rerun the same command to resume.") from error

  def _read(self, step: int, abstract: Any) -> tuple[int, Any, dict]:
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()))
    return step, restored["state"], dict(restored["record"])

  def restore(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
    """Restores the newest readable checkpoint; None when there is none.

    abstract_state: a pytree of jax.ShapeDtypeStruct (e.g. from jax.eval_shape)
      or arrays giving the structure, shapes, dtypes and shardings to restore.
    Steps that fail are listed in `self.unreadable`. A training Checkpointer
    moves the ones newer than the restored step aside (set_aside); when none
    is readable it moves nothing: the caller decides (the loop refuses).
    """
    abstract = _target(abstract_state)
    self.unreadable = []
    for step in reversed(self.steps()):
      try:
        found = self._read(step, abstract)
      except Exception as error:  # pylint: disable=broad-except
        logging.warning("Checkpoint at step %d in %s cannot be read (%s: %s); "
                        "trying the previous one.", step, self.directory,
                        type(error).__name__, Unreadable(0, str(error), "").short())
        self.unreadable.append(Unreadable(step, f"{type(error).__name__}: {error}",
                                          os.path.join(self.directory, str(step))))
        continue
      if self.train:
        self._set_aside(self.unreadable)
        if jax.process_count() > 1:  # process 0 moved them: every process re-lists after it
          multihost_utils.sync_global_devices("marl_jax_checkpoints_set_aside")
          self._manager.reload()
        # Whatever newer step is still listed (set aside by another process, or
        # not movable) is kept out of the retention's reach.
        self._keep.protected = {s for s in self.steps() if s > step}
      return found
    return None

  def _set_aside(self, unreadable: list[Unreadable]) -> None:
    """Renames each unreadable step to <step>.unreadable and writes its reason beside it."""
    if not unreadable or not _moves_aside():
      return
    for item in unreadable:
      target = item.path + UNREADABLE
      n = 1
      while os.path.exists(target):  # the same step went bad twice: keep both
        target, n = f"{item.path}{UNREADABLE}.{n}", n + 1
      os.rename(item.path, target)
      with open(target + _REASON, "w") as f:  # line 1: the cause (set_aside_steps reads it)
        f.write(f"{item.short()}\n\n{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: step "
                f"{item.step} could not be restored, so the run resumed from an older step; "
                f"this directory was moved aside, not deleted.\n\n{item.reason}\n")
      logging.warning("Checkpoint step %d cannot be read; moved aside to %s (reason in %s).",
                      item.step, target, target + _REASON)
    self._manager.reload()  # orbax caches its step list

  def restore_step(self, step: int, abstract_state: Any) -> tuple[int, Any, dict]:
    """Restores one given step (no fallback)."""
    return self._read(step, _target(abstract_state))

  def wait(self) -> None:
    self._surface(self._manager.wait_until_finished)
    self._saving = None

  def abandon(self) -> None:
    """Closes after the run failed elsewhere, never raising over that failure.

    The save in flight still commits (it is a whole step the rerun need not
    redo); its own failure is logged, not raised. orbax's background threads
    are released here rather than by the garbage collector at some later
    moment. Safe on a Checkpointer already closed."""
    try:
      self.close()
    except Exception as error:  # pylint: disable=broad-except
      logging.warning("Closing the checkpoints of %s after a failure: %s: %s", self.directory,
                      type(error).__name__, Unreadable(0, str(error), "").short())

  def close(self) -> None:
    failed = None
    try:
      self.wait()
    except CheckpointSaveError as error:
      failed = error
    try:
      self._manager.close()
    except Exception:  # pylint: disable=broad-except
      if failed is None:  # after a failed save orbax re-raises it here: report it once
        raise
    if failed is not None:
      raise failed
