"""Shrunken configs for one-step training tests (random tiny models, local data)."""

from configs import default


def tiny_config(arg: str = "", steps: int = 2):
  config = default.get_config(arg)
  config.model.preset = "tiny_s"
  config.model.init = "random"
  config.rollout.batch_size = 2
  config.rollout.group_size = 2
  config.rollout.max_new_tokens = 6
  config.policy.lora_rank = 2
  config.train.steps = steps
  config.train.checkpoint_every = 1
  config.train.eval_every = steps
  config.train.save_rollouts_every = 1
  config.eval.num_problems = 2
  config.eval.greedy = False
  config.rl.compile_ahead = False  # a few steps: compile only the update programs met
  return config


def parity_rewards():
  """Makes every call's reward the parity of its token sum, so a random tiny model
  gets a learning signal (its real accuracy is 0) and training changes it."""
  import numpy as np
  from marl_jax.rl import batch

  def rewards(episodes):
    r = np.array([sum(c.completion_tokens) % 2 for e in episodes for c in e.calls], np.float32)
    return r, r

  batch.call_rewards = rewards
