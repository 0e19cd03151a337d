"""The reference update scheme's cost against the joint scheme's, on the same rows.

One rollout of the demo's Voting / math / tiny_m cell under IP (full copies:
3 generators and an aggregator, 16 problems x 8 samples, 384 + 128 rows) gives
the rows. Their update (trainer.loop.update_batch, the per-slot figures
included) is timed under rl.update_scheme='joint' (one step of every slot) and
mechanics=reference (each slot's rows in minibatches of a batch's worth, 128
rows: the generator 3 steps, the aggregator 1), the two called in turn each
round, each on a fresh copy of the state. The per-role gradient diagnostics
are off on both sides (the joint scheme's split costs a backward pass per role,
which the reference scheme's one-role minibatches never run). Reported: the
medians and their ratio (the target is at most 1.2), and the XLA compilations
during the timed rounds (0: every program was compiled in the warm-up round).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from marl_jax.bench import timing
from marl_jax.trainer import build as build_lib
from marl_jax.trainer import config as config_lib
from marl_jax.trainer import distributed
from marl_jax.trainer import loop as train


def update_schemes(repeats: int = 5,
                   args: str = "workflow=voting,task=math,model=tiny_m,policy=isolated",
                   overrides: tuple[str, ...] = ()) -> dict[str, Any]:
  """The figures above for the demo's config with `args` and 'field=value'
  overrides (e.g. 'rollout.batch_size=8'; the reference's minibatches stay a
  batch's worth of episodes)."""
  configs = {"joint": config_lib.demo_config(args),
             "reference": config_lib.demo_config(args + ",mechanics=reference")}
  for config in configs.values():
    for override in overrides:
      config_lib.override(config, override)
    config.rl.role_grad_every = 0
  rollout_cfg = configs["reference"].rollout
  configs["reference"].rl.minibatch_rows = rollout_cfg.batch_size * rollout_cfg.group_size
  run = build_lib.build(configs["joint"])
  parallel = distributed.Parallel()
  state, _ = build_lib.train_state(configs["joint"], run)
  _, batch, _ = train.rollout_batch(run, state, 0, parallel)
  init = run.store.trainable
  updates = {}
  for name, config in configs.items():
    scheme_run = dataclasses.replace(run, config=config)
    start, optimizer = build_lib.train_state(config, scheme_run)
    cfg = train.loss_config(config)

    def one(scheme_run=scheme_run, start=start, optimizer=optimizer, cfg=cfg):
      fresh = jax.tree.map(jnp.copy, start)
      return train.update_batch(scheme_run, fresh, batch, 1, optimizer, cfg, init, parallel)[0]

    updates[name] = one
  with timing.counting_compiles() as compiles:
    jax.block_until_ready([fn() for fn in updates.values()])  # warm-up: every program
    warmed = compiles[0]
    seconds = timing.interleaved_median_seconds(updates, repeats=repeats, warmup=0)
    later = compiles[0] - warmed
  rows = {role: batch.row_roles[:batch.num_calls].count(role) for role in run.store.roles}
  out = {f"update_scheme/{name}_s": value for name, value in seconds.items()}
  out["update_scheme/reference_over_joint"] = seconds["reference"] / seconds["joint"]
  out["update_scheme/compiles_after_warmup"] = int(later)
  out.update({f"update_scheme/rows_{role}": n for role, n in rows.items()})
  return out
