"""Builds the objects of a run from its config: model, tokenizer, task, workflow, store."""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import logging
import jax
import ml_collections

from marl_jax import tasks as tasks_lib
from marl_jax import tiny
from marl_jax import workflows as workflows_lib
from marl_jax.models import get_preset, init_params, load_pretrained
from marl_jax.models import tokenizers
from marl_jax.models.config import ModelConfig
from marl_jax.models.lora import LoraConfig
from marl_jax.policies.store import PolicyStore


@dataclasses.dataclass
class Run:
  """Everything a training or evaluation loop needs, built once."""

  config: ml_collections.ConfigDict
  model: ModelConfig
  tokenizer: Any
  task: Any
  workflow: Any
  store: PolicyStore


def model_and_tokenizer(config: ml_collections.ConfigDict) -> tuple[ModelConfig, Any, Any]:
  """(model config, base params, tokenizer) for config.model.

  A checkpoint path (HF directory or .gguf) wins; otherwise a tiny preset
  gets its cached warm-started base (built on first use) unless
  config.model.init is 'random', and any other preset is randomly
  initialised (shapes and speed work only).
  """
  mc = config.model
  if mc.checkpoint:
    model, params = load_pretrained(mc.checkpoint)
    model = model.replace(compute_dtype=mc.compute_dtype)
    tokenizer = tokenizers.load_tokenizer(mc.tokenizer or mc.checkpoint)
    return model, params, tokenizer
  if mc.init not in ("base", "random"):
    raise ValueError(f"config.model.init={mc.init!r} is unknown; valid: ('base', 'random').")
  if mc.preset.startswith("tiny") and mc.init == "base":
    model, params = tiny.base_model(config)
  else:
    logging.warning("%s starts from random weights (model.checkpoint is empty).", mc.preset)
    model = get_preset(mc.preset, param_dtype=mc.param_dtype, compute_dtype=mc.compute_dtype)
    params = init_params(model, jax.random.PRNGKey(config.seed))
  if not mc.tokenizer:
    raise ValueError(f"config.model.tokenizer is empty and preset {mc.preset!r} has no "
                     "checkpoint to read one from; set it to 'char' or a tokenizer path.")
  return model, params, tokenizers.load_tokenizer(mc.tokenizer)


def store(config: ml_collections.ConfigDict, model: ModelConfig, params: Any,
          roles: tuple[str, ...]) -> PolicyStore:
  pc = config.policy
  lora = LoraConfig(rank=pc.lora_rank, alpha=pc.lora_alpha, targets=tuple(pc.lora_targets))
  return PolicyStore.create(model, params, roles, mode=pc.mode, kind=pc.kind, lora=lora,
                            role_rank=pc.role_rank or None,
                            rng=jax.random.fold_in(jax.random.PRNGKey(config.seed), 1))


def build(config: ml_collections.ConfigDict) -> Run:
  model, params, tokenizer = model_and_tokenizer(config)
  wf = workflows_lib.from_config(config.workflow)
  return Run(config=config, model=model, tokenizer=tokenizer,
             task=tasks_lib.from_config(config.task), workflow=wf,
             store=store(config, model, params, tuple(wf.roles)))
