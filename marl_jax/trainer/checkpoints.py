"""Orbax checkpoints of the trainer state, with atomic commits and safe resume.

A checkpoint holds the state pytree (policy slots, optimizer state, step,
any intervention state) and a JSON record (data position, metadata). Orbax
writes each step to a temporary directory and renames it when complete, so
a crash mid-save never damages an earlier checkpoint. Restore walks back
from the latest step when one cannot be read, with a warning.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp


def _target(abstract_state: Any) -> Any:
  """ShapeDtypeStructs to restore into; leaves without a sharding go to the default
  device, so a checkpoint written on any mesh (marl_jax.parallel.sharding) restores on one."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def one(x):
    x = ocp.utils.to_shape_dtype_struct(x)
    return x if x.sharding is not None else jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                 sharding=device)

  return jax.tree.map(one, abstract_state)


class Checkpointer:
  """Saves and restores `(state, record)` pairs under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=("state", "record"))

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, record: dict, *, wait: bool = False) -> None:
    """Saves asynchronously (call `wait()` before exiting, or pass wait=True)."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)), force=True)
    if wait:
      self._manager.wait_until_finished()

  def restore(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
    """Restores the newest readable checkpoint; None when there is none.

    abstract_state: a pytree of jax.ShapeDtypeStruct (e.g. from jax.eval_shape)
      or arrays giving the structure, shapes, dtypes and shardings to restore.
    """
    abstract = _target(abstract_state)
    for step in reversed(self.steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()))
      except Exception as error:  # pylint: disable=broad-except
        logging.warning("Checkpoint at step %d in %s cannot be read (%s: %s); "
                        "falling back to the previous one.", step, self.directory,
                        type(error).__name__, error)
        continue
      return step, restored["state"], dict(restored["record"])
    return None

  def restore_step(self, step: int, abstract_state: Any) -> tuple[int, Any, dict]:
    """Restores one given step (no fallback)."""
    abstract = _target(abstract_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()))
    return step, restored["state"], dict(restored["record"])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
