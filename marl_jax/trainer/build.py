"""Builds the objects of a run from its config: model, tokenizer, task, workflow, store."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import optax

from marl_jax import tasks as tasks_lib
from marl_jax import tiny
from marl_jax import workflows as workflows_lib
from marl_jax.models import get_preset, init_params, load_pretrained
from marl_jax.models import tokenizers
from marl_jax.models.config import ModelConfig
from marl_jax.models.lora import LoraConfig
from marl_jax.policies.store import PolicyStore
from marl_jax.rl import batch as batch_lib
from marl_jax.rl import interventions
from marl_jax.rl import slot_adamw
from marl_jax.rl import update
from marl_jax.trainer import config as config_lib


@dataclasses.dataclass
class Run:
  """Everything a training or evaluation loop needs, built once."""

  config: ml_collections.ConfigDict
  model: ModelConfig
  tokenizer: Any
  task: Any
  workflow: Any
  store: PolicyStore
  # Every call's (final, role) rewards from the verified episodes
  # (rl.batch.call_rewards); train_and_evaluate(..., rewards_of=) replaces it.
  rewards_of: Callable[..., Any] = batch_lib.call_rewards


def model_and_tokenizer(config: ml_collections.ConfigDict) -> tuple[ModelConfig, Any, Any]:
  """(model config, base params, tokenizer) for config.model.

  A checkpoint path (HF directory or .gguf) wins; otherwise a tiny preset
  gets its cached warm-started base (built on first use) unless
  config.model.init is 'random', and any other preset is randomly
  initialised (shapes and speed work only).
  """
  model_cfg = config.model
  if model_cfg.checkpoint:
    model, params = load_pretrained(model_cfg.checkpoint)
    model = model.replace(compute_dtype=model_cfg.compute_dtype)
    tokenizer = tokenizers.load_tokenizer(model_cfg.tokenizer or model_cfg.checkpoint)
    check_vocabulary(model, tokenizer, model_cfg.tokenizer or model_cfg.checkpoint)
    return model, params, tokenizer
  if model_cfg.init not in ("base", "random"):
    raise ValueError(f"config.model.init={model_cfg.init!r} is unknown; valid: ('base', 'random').")
  if model_cfg.preset.startswith("tiny") and model_cfg.init == "base":
    model, params = tiny.base_model(config)
  else:
    logging.warning("%s starts from random weights (model.checkpoint is empty).", model_cfg.preset)
    model = get_preset(model_cfg.preset, param_dtype=model_cfg.param_dtype,
                       compute_dtype=model_cfg.compute_dtype)
    params = init_params(model, jax.random.PRNGKey(config.seed))
  if not model_cfg.tokenizer:
    raise ValueError(f"config.model.tokenizer is empty and preset {model_cfg.preset!r} has no "
                     "checkpoint to read one from; set it to 'char' or a tokenizer path.")
  tokenizer = tokenizers.load_tokenizer(model_cfg.tokenizer)
  check_vocabulary(model, tokenizer, model_cfg.tokenizer)
  return model, params, tokenizer


def check_vocabulary(model: ModelConfig, tokenizer: Any, source: str) -> None:
  """A tokenizer whose ids exceed the model's embedding rows would index past them."""
  if tokenizer.vocab_size > model.vocab_size:
    raise ValueError(f"The tokenizer of {source!r} has {tokenizer.vocab_size} ids but the model "
                     f"has {model.vocab_size} embedding rows; use the tokenizer made for this "
                     "checkpoint (config.model.tokenizer).")


def store(config: ml_collections.ConfigDict, model: ModelConfig, params: Any,
          roles: tuple[str, ...]) -> PolicyStore:
  policy_cfg = config.policy
  lora = LoraConfig(rank=policy_cfg.lora_rank, alpha=policy_cfg.lora_alpha,
                    targets=tuple(policy_cfg.lora_targets))
  return PolicyStore.create(model, params, roles, mode=policy_cfg.mode, kind=policy_cfg.kind,
                            lora=lora,
                            role_rank=policy_cfg.role_rank or None,
                            rng=jax.random.fold_in(jax.random.PRNGKey(config.seed), 1))


def build(config: ml_collections.ConfigDict) -> Run:
  """The run's objects; plug-in modules named by config.imports are imported first."""
  config_lib.import_modules(tuple(config.get("imports", ())))
  model, params, tokenizer = model_and_tokenizer(config)
  wf = workflows_lib.from_config(config.workflow)
  return Run(config=config, model=model, tokenizer=tokenizer,
             task=tasks_lib.from_config(config.task), workflow=wf,
             store=store(config, model, params, tuple(wf.roles)))


def optimizer(config: ml_collections.ConfigDict, routing: Any = None) -> Any:
  """AdamW with the run's schedule (config.rl: lr, warmup_steps, schedule,
  schedule_tail, weight_decay; the horizon is config.train.steps): optax's,
  every slot stepping together, under rl.update_scheme='joint'; under
  'reference', rl.slot_adamw.SlotAdamW over the store's `routing`, each slot
  stepping alone and ticking by rl.schedule_ticks. Configs saved before those
  fields existed get today's joint optimizer."""
  rl = config.rl
  tail = rl.get("schedule_tail", "clamp")
  if rl.get("update_scheme", "joint") == "reference":
    if routing is None:
      raise ValueError("rl.update_scheme='reference' needs the store's routing for its "
                       "per-slot optimizer: build it with train_state(config, run).")
    return slot_adamw.SlotAdamW(routing, rl.lr, config.train.steps, rl.warmup_steps, rl.schedule,
                                tail, rl.get("schedule_ticks", "iteration"), rl.weight_decay)
  return update.make_optimizer(rl.lr, config.train.steps, rl.warmup_steps, rl.weight_decay,
                               rl.schedule, tail)


def learning_rate(config: ml_collections.ConfigDict) -> Any:
  """The rate optimizer(config) applies at an iteration, by iteration (a
  schedule) or constant (a float); under rl.schedule_ticks='update' each slot
  has its own (the metrics' lr/<slot>)."""
  rl = config.rl
  return update.learning_rate(rl.lr, config.train.steps, rl.warmup_steps, rl.schedule,
                              rl.get("schedule_tail", "clamp"))


def train_state(config: ml_collections.ConfigDict,
                run: Run) -> tuple[dict, optax.GradientTransformation]:
  """The run's ONE train state and its optimizer: a copy of the store's trainable
  slots, the optimizer state, the step, and the interventions' state when
  config.interventions turns any on. Training, restore, export, evaluation and
  the benchmarks all start here, so a checkpoint's structure is this one."""
  opt = optimizer(config, run.store.routing)
  state = update.init_state(jax.tree.map(jnp.copy, run.store.trainable), opt)
  state = interventions.init_state(state, interventions.from_config(config, run.workflow),
                                   len(run.store.roles))
  return state, opt
