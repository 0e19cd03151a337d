"""Compiled memory of the real update and sampler, from shapes alone: the planner's check.

XLA compiles the programs a run executes -- `rl.update.group_grads` (one
update chunk's loss and gradient) and `generate.sampler._generate` (prefill
and decode of one sampler call) -- on `jax.ShapeDtypeStruct`s: nothing is
allocated, and `memory_analysis().temp_size_in_bytes` is what the program
needs beyond its arguments and outputs. Compiled at two row counts, the
difference gives the bytes of one more row; `planner.plan`'s formulas
(`update_per_row`, `rollout_per_row` and the fixed terms) are set against it.

The figures are XLA's buffer assignment on this process's backend (a CPU here,
unless JAX sees an accelerator); a GPU's fusions differ a little.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from marl_jax.generate import sampler
from marl_jax.models import presets
from marl_jax.models.config import ModelConfig
from marl_jax.models.lora import LoraConfig
from marl_jax.policies.store import PolicyStore
from marl_jax.rl import update
from marl_jax.trainer import planner

_S = jax.ShapeDtypeStruct


def abstract_rows(rows: int, length: int, new_tokens: int) -> dict[str, jax.ShapeDtypeStruct]:
  """An update chunk's arrays (rl.batch.TrainBatch's fields) as shapes."""
  del new_tokens  # the mask's values, not its shape, say which tokens are scored
  f32 = jnp.float32
  return dict(tokens=_S((rows, length), jnp.int32), valid=_S((rows, length), bool),
              mask=_S((rows, length - 1), bool), old_logp=_S((rows, length - 1), f32),
              advantages=_S((rows,), f32), role=_S((rows,), jnp.int32), kl_coef=_S((rows,), f32))


def _route(store: PolicyStore, rows: int) -> dict[str, Any]:
  # Every row on the first role: one full copy runs (route 'slot'), as in a stage of one role.
  return store.route([store.roles[0]] * rows, min_batch=rows)


def update_temp_bytes(store: PolicyStore, rows: int, length: int, *, remat: str = "layer",
                      chunk_size: int = 128) -> int:
  """Temp bytes of the compiled update chunk program (group_grads) for `rows` x `length`."""
  cfg = update.LossConfig(remat=remat, chunk_size=chunk_size)
  frozen = store.replace(trainable={})
  compiled = update._jit_group_grads.lower(  # pylint: disable=protected-access
      store.trainable, frozen, abstract_rows(rows, length, 0), _route(store, rows), cfg=cfg,
      num_roles=len(store.roles), role_grads=False, interventions=None).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


def sampler_temp_bytes(store: PolicyStore, rows: int, prompt_len: int, new_tokens: int) -> int:
  """Temp bytes of one compiled sampler call (prefill + decode loop) as an accelerator runs it:
  stacked layers, no CPU decode layout."""
  params = store.base
  full = store.trainable.get("full")
  if full is not None:
    params = jax.tree.map(lambda x: _S(x.shape[1:], x.dtype), full)
  adapters = store.trainable.get("lora")
  weights = None
  if adapters is not None:
    weights = _S((rows, store.adapter_weights([store.roles[0]]).shape[1]), jnp.float32)
  sampling = sampler.SamplingParams(temperature=1.0, max_new_tokens=new_tokens)
  keys, settings, limits = sampler.row_inputs(sampling, jax.random.PRNGKey(0), rows, rows)
  compiled = sampler._generate.lower(  # pylint: disable=protected-access
      store.config, sampling, sampler.draw.DrawSpec.of([sampling]), params,
      _S((rows, prompt_len), jnp.int32), _S((rows, prompt_len), bool), keys, settings, limits,
      adapters, weights, None, unroll=False).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


@dataclasses.dataclass
class Measurement:
  """One program at one length: compiled temp bytes at two row counts, against the formulas."""

  preset: str
  program: str             # 'update' or 'sampler'
  tokens: int              # prompt + completion
  rows: tuple[int, int]
  temp: tuple[int, int]    # compiled temp bytes at those rows
  one_row: int             # compiled temp bytes of one row
  formula_per_row: int
  formula_fixed: int

  @property
  def per_row(self) -> int:
    """Compiled bytes of one more row: the slope between the two row counts."""
    return (self.temp[1] - self.temp[0]) // (self.rows[1] - self.rows[0])

  @property
  def fixed(self) -> int:
    return self.temp[0] - self.rows[0] * self.per_row

  @property
  def formula_one_row(self) -> int:
    return self.formula_fixed + self.formula_per_row

  @property
  def ratio(self) -> float:
    """formula / compiled, per row."""
    return self.formula_per_row / max(self.per_row, 1)


def split_tokens(tokens: int, max_new_tokens: int = 1024) -> tuple[int, int]:
  """(prompt, completion) of a row of `tokens`: the completion at most max_new_tokens
  and at most half the row (1,024 -> 512 + 512; 5,120 -> 4,096 + 1,024)."""
  new = min(max_new_tokens, tokens // 2)
  return tokens - new, new


def _rows(fixed: int, per_row: int) -> tuple[int, int]:
  # Rows enough that the per-row part outweighs the fixed one 16 to 1, as in
  # the chunks a device holds: with few rows of a short sequence XLA's peak
  # sits where part of a row's buffers are dead, and the difference
  # undercounts a row (Qwen3-0.6B's update at 1,024 tokens: 0.14 GiB a row
  # from 1 to 2 rows, 0.33 from 4 to 8, 0.42 from 16 to 32 and from 32 to 64).
  first = max(2, math.ceil(16 * fixed / max(per_row, 1)))
  return first, 2 * first


def measure(preset: str | ModelConfig, tokens: int,
            workload: planner.Workload = planner.Workload(),
            mode: str = "shared", kind: str = "lora", programs: tuple[str, ...] = (
                "update", "sampler"), one_row: bool = True) -> list[Measurement]:
  """Compiles `programs` of one preset at one row length; the formulas of the same
  workload (prompt and completion from split_tokens) beside them. one_row=False
  skips the third compile (of one row; Measurement.one_row is then 0)."""
  prompt, new = split_tokens(tokens, workload.max_new_tokens)
  workload = dataclasses.replace(workload, prompt_len=prompt, max_new_tokens=new)
  plan = planner.plan(preset, mode, kind, {}, 80.0, workload)
  model = presets.get_preset(preset) if isinstance(preset, str) else preset
  model = model.replace(param_dtype=workload.param_dtype, compute_dtype=workload.compute_dtype)
  store = planner.abstract_store(model, mode, kind, workload.num_roles,
                                 LoraConfig(rank=workload.lora_rank, alpha=workload.lora_alpha))
  out = []
  for program in programs:
    if program == "update":
      run = lambda n: update_temp_bytes(store, n, tokens, remat=workload.remat,
                                        chunk_size=workload.chunk)
      per_row, fixed = plan.update_per_row, plan.update_fixed
    elif program == "sampler":
      run = lambda n: sampler_temp_bytes(store, n, prompt, new)
      per_row, fixed = plan.rollout_per_row, plan.rollout_fixed
    else:
      raise ValueError(f"program {program!r} is unknown; valid: update, sampler.")
    rows = _rows(fixed, per_row)
    temp = (run(rows[0]), run(rows[1]))
    one = run(1) if one_row else 0
    out.append(Measurement(plan.preset, program, tokens, rows, temp, one, per_row, fixed))
  return out
