"""The run directory: the saved config, and the check that a resumed run is the same run.

<workdir>/config.json     the full config (written once)
<workdir>/metrics.jsonl   one record per step (marl_jax.trainer.metrics)
<workdir>/tensorboard/    event files
<workdir>/checkpoints/    orbax steps (marl_jax.trainer.checkpoints)
<workdir>/rollouts/       sampled rollouts, step_<N>.jsonl
<workdir>/report.md       written by the demo and launch/report.py
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import ml_collections

# Fields a resumed run may change without becoming a different experiment.
# The mesh (how the same computation is laid out) may change too, e.g. when a
# preempted run resumes on another slice; so may where metrics are sent
# (metrics.writers: a tracker added to a running experiment).
RESUMABLE_PREFIXES = ("mesh.", "metrics.")
RESUMABLE_CHANGES = ("train.steps", "train.eval_every", "train.checkpoint_every",
                     "train.save_rollouts_every", "train.keep_checkpoints",
                     "eval.num_problems")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def config_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def check_or_save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Saves config.json in a new workdir; in an existing one, refuses a different config."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = config_dict(config)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    old, new = _flatten(saved), _flatten(current)
    # Fields only one side has come from a library version that added or
    # removed them; they cannot have been set differently by the user.
    one_sided = sorted(set(old) ^ set(new))
    if one_sided:
      logging.warning("Resuming %s: config fields %s exist only in the saved or only in the "
                      "current config; they are ignored for the comparison.", workdir,
                      one_sided[:20])
    differ = sorted(k for k in set(old) & set(new)
                    if old[k] != new[k] and k not in RESUMABLE_CHANGES
                    and not k.startswith(RESUMABLE_PREFIXES))
    if differ:
      details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ[:12])
      raise ValueError(
          f"--workdir={workdir} holds a run with a different config ({details}). "
          "Use a new --workdir, or the saved config (config.json) to resume.")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(current, f, indent=1, sort_keys=True)
  os.replace(tmp, path)
