"""Checkpoints round-trip, keep the newest, and survive a corrupted latest step."""

import glob
import os

import jax.numpy as jnp
import numpy as np

from marl_jax.trainer.checkpoints import Checkpointer


def _state(x):
  return {"params": {"w": jnp.full((3, 4), x, jnp.float32)}, "step": jnp.int32(x)}


def test_round_trip_and_max_to_keep(tmp_path):
  ckpt = Checkpointer(str(tmp_path), max_to_keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, _state(step), {"data_position": step * 10})
  ckpt.wait()
  assert ckpt.steps() == [2, 3]
  step, state, record = ckpt.restore(_state(0))
  assert step == 3 and record == {"data_position": 30}
  np.testing.assert_array_equal(state["params"]["w"], np.full((3, 4), 3.0))
  ckpt.close()


def test_corrupted_latest_falls_back_to_previous(tmp_path):
  ckpt = Checkpointer(str(tmp_path), max_to_keep=3)
  ckpt.save(1, _state(1), {"data_position": 1})
  ckpt.save(2, _state(2), {"data_position": 2}, wait=True)
  # Damage every data file of step 2.
  for path in glob.glob(os.path.join(ckpt.directory, "2", "state", "**", "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"garbage")
  step, state, record = Checkpointer(str(tmp_path)).restore(_state(0))
  assert step == 1 and record["data_position"] == 1
  assert int(state["step"]) == 1


def test_empty_workdir_restores_nothing(tmp_path):
  assert Checkpointer(str(tmp_path)).restore(_state(0)) is None
