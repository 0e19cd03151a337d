"""Reading a finished or running run back: its config, a checkpoint's policy, per-role export."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from marl_jax.models import save_pretrained
from marl_jax.trainer import build
from marl_jax.trainer import checkpoints as checkpointing


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: --workdir must be a run directory "
                            "written by launch/train.py.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_trainable(run: Any, workdir: str, step: int | None = None) -> tuple[int, Any]:
  """(step, trainable) of the newest readable checkpoint (or of `step`)."""
  abstract = jax.eval_shape(lambda: build.train_state(run.config, run)[0])
  ckpt = checkpointing.Checkpointer(workdir)
  if step is not None and step not in ckpt.steps():
    raise ValueError(f"{workdir} has no checkpoint at step {step}; it has {ckpt.steps()}.")
  restored = ckpt.restore(abstract) if step is None else ckpt.restore_step(step, abstract)
  if restored is None:
    raise FileNotFoundError(f"{workdir}/checkpoints holds no readable checkpoint.")
  found, state, _ = restored
  return found, state["trainable"]


def export_roles(run: Any, trainable: Any, out_dir: str) -> dict[str, str]:
  """Writes one Hugging Face directory per role (its slots merged into the base)."""
  store = run.store.replace(trainable=trainable)
  paths = {}
  for role in store.roles:
    path = os.path.join(out_dir, role)
    params = jax.tree.map(jnp.asarray, store.params_for(role))
    save_pretrained(store.config, params, path)
    paths[role] = path
  return paths
