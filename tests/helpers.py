"""Helpers shared by the tests: shrunken training configs, a reward a random
model can learn, and whether a test decodes with marl_jax.models.cpu_kernels."""

import os

import numpy as np
import pytest

from marl_jax.models import cpu_kernels
from marl_jax.trainer.config import get_config

# The repository root (the tests run scripts and subprocesses from it).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def use_cpu_kernels(on: bool, monkeypatch=None) -> None:
  """Skips where the kernels cannot run and `on` asks for them; with monkeypatch,
  decode layouts made in the test use them (on, whether or not they win on this
  machine: MARL_JAX_CPU_KERNELS=1) or XLA's own products (off)."""
  if on and not cpu_kernels.available():
    pytest.skip(f"cpu_kernels unavailable: {cpu_kernels.unavailable_reason()}")
  if monkeypatch is not None:
    monkeypatch.setattr(cpu_kernels, "available", lambda: on)
    if on:
      monkeypatch.setenv("MARL_JAX_CPU_KERNELS", "1")


def tiny_config(arg: str = "", steps: int = 2):
  """configs/default.py:arg shrunk to a random tiny_s model and a few rows."""
  config = get_config(arg)
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


def parity_rewards(episodes):
  """Every call's reward is the parity of its token sum, so a random tiny model
  gets a learning signal (its real accuracy is 0) and training changes it;
  pass it as train_and_evaluate(..., rewards_of=parity_rewards)."""
  r = np.array([sum(c.completion_tokens) % 2 for e in episodes for c in e.calls], np.float32)
  return r, r


def memory_mappings() -> int | None:
  """This process's memory mappings (Linux's /proc/self/maps), else None."""
  try:
    with open("/proc/self/maps", "rb") as f:
      return sum(1 for _ in f)
  except OSError:
    return None
