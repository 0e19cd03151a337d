"""A short RL run in-process: the full step split, and every compilation it triggers.

The demo's job (configs/demo.py: Voting, math, tiny_m, shared full copies,
16 problems x 8 samples) runs `steps` RL steps through marl_jax.trainer.loop's own
step function. Reported: median seconds per step of generation (every
stage's sampling, prompts and parsing), verification, and the update, over
the steps after the first; and the XLA compilations (jax's backend-compile
event) in the first step and in all later steps — which must be zero once
the update's programs are compiled ahead for every length bucket up to the
longest row met (rl.update._Programs); and the real share of the tokens the
update processes, with rl.update_rows' length chunks and without them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from marl_jax.bench import timing
from marl_jax.generate import sampler as sampling
from marl_jax.trainer import build as build_lib
from marl_jax.trainer import config as config_lib
from marl_jax.trainer import loop as train

def rl_steps(steps: int = 20, args: str = "workflow=voting,task=math,model=tiny_m",
             overrides: tuple[str, ...] = ()) -> dict[str, Any]:
  """The figures above for `steps` steps of the demo's config (args) with
  'field=value' overrides (e.g. 'rl.update_rows=0')."""
  config = config_lib.demo_config(args)
  for override in overrides:
    config_lib.override(config, override)
  config.train.steps = steps
  run = build_lib.build(config)
  state, optimizer = build_lib.train_state(config, run)
  init_trainable = run.store.trainable
  cfg = train.loss_config(config)
  compiles = []
  split = {"generate_s": [], "verify_s": [], "update_s": []}
  valid, unchunked = [], []
  with timing.counting_compiles() as count:
    for step in range(steps):
      before = count[0]
      state, metrics, _ = train.rl_step(run, state, step, optimizer, cfg, init_trainable)
      compiles.append(count[0] - before)
      for key in split:
        split[key].append(metrics[f"time/{key}"])
      valid.append(metrics["update/valid_token_fraction"])
      unchunked.append(metrics["update/valid_token_fraction_unchunked"])
  first, later = compiles[0], compiles[1:]
  out = {f"rl_step/{k}": float(np.median(v[1:])) for k, v in split.items()}
  out["rl_step/step_s"] = sum(out[f"rl_step/{k}"] for k in split)
  for key in split:
    out[f"rl_step/{key.replace('_s', '_fraction')}"] = out[f"rl_step/{key}"] / out["rl_step/step_s"]
  out.update({"rl_step/steps": steps,
              "rl_step/update_valid_token_fraction": float(np.mean(valid)),
              "rl_step/update_valid_token_fraction_unchunked": float(np.mean(unchunked)),
              "rl_step/compiles_first_step": first,
              "rl_step/compiles_after_first_step": int(sum(later)),
              "rl_step/compiles_after_step_5": int(sum(later[4:])),
              "rl_step/sampler_shapes": sampling.compiled_shapes()})
  return out
