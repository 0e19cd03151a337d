"""The whole run config is validated before anything is written (issue 21, deliverable 4)."""

import os

import pytest

from marl_jax import workflows
from marl_jax.models import load_pretrained
from marl_jax.trainer import config as config_lib
from marl_jax.trainer import loop as train
from marl_jax.trainer.metrics import read_jsonl
from tests.helpers import parity_rewards, tiny_config


@pytest.mark.parametrize("arg", [f"workflow={w}" for w in workflows.names()] +
                         ["task=code", "policy=isolated,kind=full", "policy=hybrid",
                          "study=1", "study=1,task=code", "study=1,mechanics=clean",
                          "mechanics=reference,policy=isolated", "mechanics=clean,policy=hybrid"])
def test_every_shipped_config_is_valid(arg):
  config_lib.validate(config_lib.get_config(arg))
  config_lib.validate(config_lib.demo_config(arg))
  config_lib.validate(tiny_config(arg))


# (field, bad value, what the message must say: the field, the value and the valid ones)
_BAD = [
    ("model.preset", "tiny_xl", r"model\.preset='tiny_xl' is unknown; valid: .*'tiny_s'"),
    ("model.checkpoint", "/nonexistent/model.gguf", r"model\.checkpoint='/nonexistent"),
    ("task.name", "gsm9k", r"task\.name='gsm9k' is unknown; valid: .*'arithmetic'"),
    ("workflow.name", "debate", r"workflow\.name='debate' is unknown; valid: .*'voting'"),
    ("policy.mode", "solo", r"policy\.mode='solo' is unknown; valid: .*'isolated'"),
    ("policy.kind", "qlora", r"policy\.kind='qlora' is unknown; valid: \('lora', 'full'\)"),
    ("rollout.batch_size", 0, r"rollout\.batch_size=0 must be a number >= 1"),
    ("rollout.group_size", 1, r"rollout\.group_size=1 must be a number >= 2 .*'grpo'"),
    ("train.checkpoint_every", 0, r"train\.checkpoint_every=0 must be a number >= 1"),
    ("train.eval_every", 0, r"train\.eval_every=0 must be a number >= 1"),
    ("rl.estimator", "ppo", r"rl\.estimator='ppo' is unknown; valid: \('grpo', 'rloo'\)"),
    ("rl.grouping", "turn", r"rl\.grouping='turn' is unknown; valid: .*'role_turn'"),
    ("interventions.balance", "max", r"interventions\.balance='max' is unknown"),
    ("rl.update_scheme", "verl", r"rl\.update_scheme='verl' is unknown; valid: \('joint', "
     r"'reference'\)"),
    ("rl.schedule_ticks", "epoch", r"rl\.schedule_ticks='epoch' is unknown; valid: "
     r"\('iteration', 'update'\)"),
    ("rl.schedule_tail", "wrap", r"rl\.schedule_tail='wrap' is unknown; valid: "
     r"\('clamp', 'periodic'\)"),
    ("rl.minibatch_rows", 0, r"rl\.minibatch_rows=0 must be a positive number of rows"),
    ("rl.dual_clip", 0.5, r"rl\.dual_clip=0\.5 must be 0 \(off\) or > 1"),
    ("rollout.long_prompts", "drop", r"rollout\.long_prompts='drop' is unknown; valid: "
     r"\('truncate', 'refuse'\)"),
]


@pytest.mark.parametrize("field,value,match", _BAD, ids=[b[0] for b in _BAD])
def test_an_invalid_field_is_named_with_its_valid_values_and_nothing_is_written(
    field, value, match, tmp_path):
  config = tiny_config("workflow=single", steps=1)
  section, leaf = field.split(".")
  config[section][leaf] = value
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(workdir), rewards_of=parity_rewards)
  assert not workdir.exists()


def test_every_invalid_field_is_named_at_once():
  config = tiny_config("workflow=single")
  config.rollout.batch_size, config.rollout.group_size, config.train.eval_every = 0, 1, 0
  with pytest.raises(ValueError) as error:
    config_lib.validate(config)
  message = str(error.value)
  assert all(f in message for f in ("rollout.batch_size", "rollout.group_size",
                                    "train.eval_every", "--config."))


def test_the_corrected_command_runs_in_the_same_workdir(tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config("workflow=single", steps=1)
  config.rollout.batch_size = 1
  config.policy.kind = "qlora"
  with pytest.raises(ValueError, match="policy.kind"):
    train.train_and_evaluate(config, workdir, rewards_of=parity_rewards)
  config.policy.kind = "lora"  # before: refused as "a different config" (config.json was written)
  train.train_and_evaluate(config, workdir, rewards_of=parity_rewards)
  assert [r["step"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))] == [0, 1]


def test_a_file_that_is_not_gguf_is_named(tmp_path):
  path = tmp_path / "model.gguf"
  path.write_bytes(b"not a gguf file at all")
  with pytest.raises(ValueError, match=rf"{path} is not a readable GGUF file \(GGUF magic invalid\)"):
    load_pretrained(str(path))


def test_an_unknown_remat_policy_is_named_before_anything_is_built():
  config = config_lib.get_config()
  config.rl.remat = "everything"
  with pytest.raises(ValueError, match=r"rl.remat='everything' is unknown; valid: \('none', "):
    config_lib.validate(config)
