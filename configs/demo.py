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
  c.policy.kind = "full"          # full copies: the tiny models are small enough
  c.rl.lr = 3e-4                  # measured on the tiny_m base: 1e-4 gained +4 points in
  c.rl.warmup_steps = 3           # 30 steps, 3e-4 +14.5 in 60 steps (no collapse)
  c.rl.role_grad_every = 5        # per-role gradient diagnostics cost a backward pass per role
  c.rollout.batch_size = 16
  c.rollout.group_size = 8
  c.train.steps = 60
  c.train.eval_every = 20
  c.train.checkpoint_every = 20
  c.eval.num_problems = 256       # sampled accuracy: one draw per problem; 256 keeps the
  c.eval.greedy = False           # standard error near 3 points
  return c
