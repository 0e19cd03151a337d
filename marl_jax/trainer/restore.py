"""Reading a finished or running run back: its config, a checkpoint's policy, per-role export."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from marl_jax.models import peft_adapter, save_pretrained
from marl_jax.models.config import as_dtype
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


def export_roles(run: Any, trainable: Any, out_dir: str, *, overwrite: bool = False,
                 dtype: str | None = None) -> dict[str, str]:
  """Writes each role's policy as a Hugging Face directory, out_dir/<role>: the
  base with the role's slots merged in, its tokenizer files and
  generation_config.json, loadable by transformers and vLLM as it is. LoRA
  policies on a frozen base also get out_dir/<role>/lora: the role's adapter
  as a PEFT directory, so one base checkpoint can serve every role.

  dtype: of the exported weights; default the source checkpoint's (bfloat16
  for Qwen3), else the run's param dtype. An out_dir that holds files is
  refused unless overwrite. Returns {role: directory}.
  """
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise FileExistsError(f"Export directory {out_dir} exists and is not empty; choose another "
                          "or pass overwrite=True (launch/evaluate.py --overwrite).")
  store = run.store.replace(trainable=trainable)
  dtype = dtype or _checkpoint_dtype(run.config.model.checkpoint) or store.config.param_dtype
  config = store.config.replace(param_dtype=dtype)
  save_tokenizer = getattr(run.tokenizer, "save_pretrained", None)
  paths = {}
  for role in store.roles:
    path = os.path.join(out_dir, role)
    params = jax.tree.map(lambda x: jnp.asarray(x).astype(as_dtype(dtype)),
                          store.params_for(role))
    save_pretrained(config, params, path)
    if save_tokenizer is not None:  # the tiny world's char tokenizer has no HF form
      save_tokenizer(path)
    adapter = store.adapter_for(role)
    if adapter is not None:
      peft_adapter.save_adapter(adapter, os.path.join(path, "lora"),
                                base_model=run.config.model.checkpoint)
    paths[role] = path
  return paths


def _checkpoint_dtype(checkpoint: str) -> str | None:
  """The dtype a Hugging Face checkpoint directory was saved in, if it says."""
  path = os.path.join(checkpoint, "config.json") if checkpoint else ""
  if not path or not os.path.isfile(path):
    return None
  with open(path) as f:
    hf = json.load(f)
  name = hf.get("torch_dtype") or hf.get("dtype")
  return name if name in ("float32", "bfloat16") else None
