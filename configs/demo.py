r"""The demo: the tiny world's Voting / math / shared-policy cell, sized for ~10 CPU minutes.

  make demo
  python launch/demo.py --workdir=runs/demo --config=configs/demo.py:workflow=eval_opt,policy=isolated

An override of configs/default.py (same arguments); only the budget and the
RL settings measured to work on the tiny bases differ.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "marl_jax_configs_default", os.path.join(os.path.dirname(__file__), "default.py"))
default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default)


def get_config(arg: str | None = None):
  c = default.get_config(arg)
  # Until the warm-started tiny bases land (marl_jax.tiny, issue 5) the demo
  # trains from a random tiny model: the whole pipeline runs, nothing is learned.
  c.model.init = "random"
  c.policy.kind = "full"          # full copies: the tiny models are small enough
  c.rl.lr = 1e-4                  # the stable window on tiny bases is narrow (5e-4 stalls)
  c.rl.warmup_steps = 3
  c.rollout.batch_size = 16
  c.rollout.group_size = 8
  c.train.steps = 10
  c.train.eval_every = 5
  c.train.checkpoint_every = 5
  c.eval.num_problems = 64
  return c
