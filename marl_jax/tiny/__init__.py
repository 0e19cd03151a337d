"""The tiny world's base models: warm-started on scripted role demonstrations, cached.

    model, params = marl_jax.tiny.base_model(config)   # builds on first use, then reuses

One base per tiny preset serves every workflow, task and sharing mode: it is
warm-started (tiny.warm_start: the generator's skill first, then every role)
on demonstrations of every role of every workflow in config.tiny.workflows,
for both task families (tiny.demonstrations), rendered with the run's own
prompts and rollout limits. The base is cached
under cache.cache_dir(config.tiny.cache_dir) (the package ships the entries of
the default config's three presets, cache.SHIPPED_DIR, so a fresh install
starts training at once), keyed by a hash of everything
that decides it (`key_inputs`); anything else in the config (RL, policy,
seed, which workflow or task family is trained) leaves the key unchanged.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from marl_jax import tasks as tasks_lib
from marl_jax import workflows as workflows_lib
from marl_jax.models import get_preset, param_shapes
from marl_jax.models import tokenizers
from marl_jax.models.config import ModelConfig
from marl_jax.tiny import cache
from marl_jax.tiny import warm_start as warm_start_lib
from marl_jax.tiny.demonstrations import Noise
from marl_jax.tiny.warm_start import Limits, Settings, Source

# Bump when demonstrations, batching or the training step change what a
# config produces, so that stale cache entries are never reused.
FORMAT_VERSION = 1
FAMILIES = ("math", "code")


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything a base is built from, resolved from a run config."""

  model: ModelConfig
  settings: Settings
  skill: tuple[Source, ...]
  roles: tuple[Source, ...]
  limits: Limits
  tokenizer: str
  key_inputs: dict


def _section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  if "tiny" not in config:
    raise ValueError("config has no 'tiny' section (the warm-start settings of tiny bases); "
                     "start from configs/default.py, which defines it.")
  return config.tiny


def settings_from(config: ml_collections.ConfigDict) -> Settings:
  """Settings (with Noise) from config.tiny; unknown fields are named in the error."""
  tiny = _section(config).to_dict()
  noise = tiny.pop("noise", {})
  for name in ("cache_dir", "workflows", "math_task", "code_task", "run_workflow_options"):
    tiny.pop(name, None)
  known = {f.name for f in dataclasses.fields(Settings)} - {"noise"}
  unknown = sorted(set(tiny) - known)
  if unknown:
    raise ValueError(f"config.tiny has unknown fields {unknown}; known: {sorted(known)}.")
  noise_known = {f.name for f in dataclasses.fields(Noise)}
  if set(noise) - noise_known:
    raise ValueError(f"config.tiny.noise has unknown fields {sorted(set(noise) - noise_known)}; "
                     f"known: {sorted(noise_known)}.")
  return Settings(noise=Noise(**noise), **tiny)


def _sources(config: ml_collections.ConfigDict
             ) -> tuple[tuple[Source, ...], tuple[Source, ...], dict]:
  """(skill sources, role sources, their description for the key).

  Role sources: every workflow of config.tiny.workflows ({name: chunks per
  round}; the run's config.workflow.name is added with weight 1 if missing)
  with its default options, except the run's own workflow, built with the
  run's options and prompt overrides (unless tiny.run_workflow_options is
  False), for one task per family: the run's task
  (with its options) for its family, config.tiny.<family>_task otherwise.
  Skill sources: the `single` workflow (the generator's plain prompt; the
  run's own if it is single) for each of those tasks.
  """
  tiny = _section(config)
  weights = dict(tiny.workflows)
  weights.setdefault(config.workflow.name, 1)

  # tiny.run_workflow_options = False: the run's workflow with its defaults too,
  # so a variant run (agents=1) starts from the base its matrix run starts from.
  own_options = bool(tiny.get("run_workflow_options", True))

  def get_workflow(name):
    if name == config.workflow.name and own_options:
      return workflows_lib.from_config(config.workflow)
    return workflows_lib.get(name)

  flows, flow_keys = [], []
  for name, weight in weights.items():
    own = name == config.workflow.name and own_options
    flows.append((get_workflow(name), int(weight)))
    flow_keys.append({
        "name": name, "weight": int(weight),
        "options": config.workflow.options.to_dict() if own else {},
        "prompts": sorted(map(repr, config.workflow.prompts.to_dict().items())) if own else []})
  task_list, task_keys = [], []
  for family in FAMILIES:
    own = family == config.task.family
    # resolve: the run's data files (task.train_path, ...) are the task it names,
    # so a base built on them is never cached under the generated task's key.
    name, options = (tasks_lib.resolve(config.task) if own
                     else (tiny.get(f"{family}_task"), {}))
    if not name:
      raise ValueError(f"config.tiny.{family}_task is empty; name the {family} task of the "
                       "tiny world (e.g. 'arithmetic', 'tiny_code').")
    task = tasks_lib.from_config(config.task) if own else tasks_lib.get(name)
    if task.kind != family:
      raise ValueError(f"task {name!r} is a {task.kind} task, but it stands for the {family} "
                       f"family (config.tiny.{family}_task / config.task.family).")
    task_list.append(task)
    task_keys.append({"family": family, "name": name, "options": options})
  single = get_workflow("single")
  skill = tuple(Source(single, task) for task in task_list)
  roles = tuple(Source(flow, task, weight) for task in task_list for flow, weight in flows)
  return skill, roles, {"workflows": flow_keys, "tasks": task_keys}


def plan(config: ml_collections.ConfigDict) -> Plan:
  """Resolves what the base of `config` is built from, and its cache key inputs."""
  mc = config.model
  if not mc.preset.startswith("tiny"):
    raise ValueError(f"marl_jax.tiny builds bases for tiny presets only; config.model.preset "
                     f"is {mc.preset!r}.")
  if mc.tokenizer != "char":
    raise ValueError(f"tiny bases use the character tokenizer; config.model.tokenizer is "
                     f"{mc.tokenizer!r} (set it to 'char').")
  model = get_preset(mc.preset, param_dtype=mc.param_dtype, compute_dtype=mc.compute_dtype)
  settings = settings_from(config)
  skill, roles, source_keys = _sources(config)
  limits = Limits(max_prompt_len=int(config.rollout.max_prompt_len),
                  max_new_tokens=int(config.rollout.max_new_tokens))
  key_inputs = {
      "format": FORMAT_VERSION, "model": model.to_dict(),
      "settings": dataclasses.asdict(settings), "sources": source_keys,
      "limits": dataclasses.asdict(limits), "tokenizer": mc.tokenizer}
  return Plan(model, settings, skill, roles, limits, mc.tokenizer, key_inputs)


def cache_key(config: ml_collections.ConfigDict) -> str:
  return cache.key_of(plan(config).key_inputs)


def base_model(config: ml_collections.ConfigDict) -> tuple[ModelConfig, Any]:
  """(model config, params) of the tiny preset's warm-started base; built once, then cached."""
  p = plan(config)
  directory = cache.cache_dir(_section(config).cache_dir)
  key = cache.key_of(p.key_inputs)
  for where in (directory, cache.SHIPPED_DIR):
    found = cache.load(where, key, param_shapes(p.model))
    if found is not None:
      params, record = found
      logging.info("tiny base %s: cached at %s/%s (generator accuracy %s)", config.model.preset,
                   where, key, record.get("warm_start", {}).get("accuracy"))
      return p.model, jax.tree.map(jnp.asarray, params)
  logging.info("tiny base %s: no cache entry %s in %s; warm-starting.", config.model.preset,
               key, directory)
  start = time.perf_counter()
  tokenizer = tokenizers.load_tokenizer(p.tokenizer)
  params, record = warm_start_lib.warm_start(p.model, p.skill, p.roles, tokenizer, p.settings,
                                             p.limits, log=logging.info)
  entry = cache.save(directory, key, params, {
      "preset": config.model.preset, "key": key, "inputs": p.key_inputs,
      "warm_start": record, "build_seconds": round(time.perf_counter() - start, 1)})
  logging.info("tiny base %s: saved %s", config.model.preset, entry)
  return p.model, jax.tree.map(jnp.asarray, params)
