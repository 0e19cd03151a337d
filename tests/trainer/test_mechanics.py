"""A run under the reference update scheme: per-slot optimizer steps, rates and
the mechanism figures in metrics.jsonl; a changed scheme is not resumed."""

import json

import numpy as np
import pytest

from marl_jax.trainer import loop as train
from marl_jax.trainer import rundir
from marl_jax.trainer.metrics import read_jsonl
from tests.helpers import parity_rewards, tiny_config


def test_reference_scheme_under_ip_steps_each_role_by_its_rows_and_logs_every_figure(tmp_path):
  config = tiny_config("workflow=voting,policy=isolated,mechanics=reference", steps=2)
  # 2 problems x 2 samples: 12 generator rows (3 agents), 4 aggregator rows.
  config.rl.minibatch_rows = 4
  train.train_and_evaluate(config, str(tmp_path), rewards_of=parity_rewards)
  first, second = read_jsonl(str(tmp_path / "metrics.jsonl"))[1:]
  for record in (first, second):
    assert (record["opt_steps/generator"], record["opt_steps/aggregator"]) == (3, 1)
    assert not any(k.endswith("/shared") for k in record)
    for role in ("generator", "aggregator"):
      assert record[f"update_norm/{role}"] > 0 and record[f"drift/{role}"] > 0
      assert record[f"grad_norm_mb_max/{role}"] >= record[f"grad_norm_mb/{role}"] > 0
      assert f"dual_clip_frac/{role}" in record
  # Per-update ticks, warmup lr * (k + 1) / 5: the generator's 3rd step is its tick 2,
  # the aggregator's 1st its tick 0; in step 2 the generator is past the warmup.
  lr = config.rl.lr
  np.testing.assert_allclose([first["lr/generator"], first["lr/aggregator"]],
                             [lr * 3 / 5, lr / 5], rtol=1e-5)
  np.testing.assert_allclose([second["lr/generator"], second["lr/aggregator"]],
                             [lr, lr * 2 / 5], rtol=1e-5)
  # From theta_0, the first step's update is the drift; consecutive updates have a cosine.
  np.testing.assert_allclose(first["drift/generator"], first["update_norm/generator"], rtol=1e-4)
  assert "update_cos/generator" not in first and -1 <= second["update_cos/generator"] <= 1
  # The rollout of step 1 is the base's own: no KL to it (up to the sampler's numerics).
  assert first["kl_base/generator"] < 1e-6 < second["kl_base/generator"]


def test_resuming_under_a_changed_update_scheme_is_refused_naming_the_fields(tmp_path):
  config = tiny_config("workflow=voting")
  rundir.check_or_save_config(config, str(tmp_path))
  changed = tiny_config("workflow=voting,mechanics=reference")
  with pytest.raises(ValueError, match=r"rl\.dual_clip.*rl\.schedule_ticks.*rl\.shuffle.*"
                                       r"rl\.update_scheme: 'joint' -> 'reference'"):
    rundir.check_or_save_config(changed, str(tmp_path))
  assert json.load(open(tmp_path / "config.json"))["rl"]["update_scheme"] == "joint"


def test_reference_minibatches_of_several_roles_are_cut_into_smaller_chunks():
  import types  # pylint: disable=g-import-not-at-top
  from marl_jax.trainer import mechanics  # pylint: disable=g-import-not-at-top
  from marl_jax.trainer.config import get_config  # pylint: disable=g-import-not-at-top
  rl = get_config("mechanics=reference").rl
  shared, isolated = (types.SimpleNamespace(mode=m) for m in ("shared", "isolated"))
  rl.minibatch_rows = 64  # SP: a minibatch mixes generators and aggregators
  assert mechanics.chunk_rows(rl, 64, shared) == 16 and mechanics.chunk_rows(rl, 8, shared) == 8
  assert mechanics.chunk_rows(rl, 64, isolated) == 64  # one role a minibatch
  assert mechanics.chunk_rows(rl, 0, shared) == 0      # 0: the minibatch whole
  rl.minibatch_rows = 512
  assert mechanics.chunk_rows(rl, 256, shared) == 128
  rl.minibatch_rows = 20
  assert mechanics.chunk_rows(rl, 64, shared) == 8     # never under 8 rows
  assert mechanics.chunk_rows(get_config().rl, 64, shared) == 64  # the joint scheme sorts all
