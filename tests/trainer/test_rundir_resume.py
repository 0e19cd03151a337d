"""Which config changes a resumed run accepts (rundir.check_or_save_config)."""

import json
import os

import pytest

from marl_jax.trainer import rundir
from marl_jax.trainer.config import get_config


def test_layout_only_changes_resume_and_the_experiment_must_not_change(tmp_path):
  workdir = str(tmp_path)
  rundir.check_or_save_config(get_config(), workdir)
  layout = get_config()  # how the same update is computed: chunks, compiles, mesh
  layout.rl.update_rows, layout.rl.compile_ahead, layout.mesh.fsdp = 8, False, 2
  rundir.check_or_save_config(layout, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["rl"]["update_rows"] == 8  # the config the run resumes under
  changed = get_config()
  changed.rl.lr, changed.rl.clip_high = 3e-4, 0.3  # a different experiment
  with pytest.raises(ValueError, match=r"rl.clip_high: 0.28 -> 0.3; rl.lr: 0.0001 -> 0.0003"):
    rundir.check_or_save_config(changed, workdir)
