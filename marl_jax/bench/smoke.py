"""Accelerator smoke run: a rollout and a train step at full size, tokens/s and MFU.

A random-init model of a preset (bf16 parameters and compute) serves one
sampler call (B prompts of P tokens, up to N new tokens; a row that samples
EOS stops, and only generated tokens are counted) and a few jitted PPO
updates on B rows of P + N tokens. Model FLOPs (the usual
"useful work" convention; rematerialisation not counted):

  forward / token   2 M + 4 L H hd c      M = matmul weights (LM head included),
                                          c = attended context (causal average)
  rollout           prefill and decode tokens forward
  update            forward x 3 (full copies: activation and weight gradients)
                    forward x 2 (LoRA: no base-weight gradients; adapters ignored)

MFU = model FLOP/s / (peak bf16 FLOP/s per device x devices); the peak comes
from PEAK_TFLOPS by device kind, else from a measured bf16 matmul (printed
either way). Decode is bound by memory bandwidth, so the rollout also
reports the bytes it must read per step (weights + KV cache) per second.
"""

from __future__ import annotations

import resource
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from marl_jax.bench.timing import interleaved_median_seconds, median_seconds
from marl_jax.generate import continuous
from marl_jax.generate.sampler import SamplingParams
from marl_jax.models import decoder, get_preset
from marl_jax.models.config import as_dtype
from marl_jax.models.lora import LoraConfig
from marl_jax.parallel import sharding
from marl_jax.policies.store import PolicyStore
from marl_jax.rl import update
from marl_jax.trainer import distributed

# Dense bf16 peak per device (vendor figures, no sparsity), by jax device_kind prefix.
PEAK_TFLOPS = {"NVIDIA H100 PCIe": 756.0, "NVIDIA H100": 989.0, "NVIDIA H200": 989.0,
               "NVIDIA A100": 312.0, "NVIDIA L4": 121.0, "TPU v4": 275.0,
               "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v6": 918.0}
PEAK_HBM_GBPS = {"NVIDIA H100 PCIe": 2000.0, "NVIDIA H100": 3350.0, "NVIDIA H200": 4800.0,
                 "NVIDIA A100": 2039.0, "NVIDIA L4": 300.0, "TPU v4": 1200.0,
                 "TPU v5 lite": 819.0, "TPU v5e": 819.0, "TPU v5p": 2765.0, "TPU v6": 1640.0}


def by_device_kind(table: dict[str, float], kind: str) -> float | None:
  """The entry of `table` whose key is the longest prefix of a jax device_kind, or None."""
  for prefix in sorted(table, key=len, reverse=True):
    if kind.startswith(prefix):
      return table[prefix]
  return None


def measured_peak_tflops(n: int = 4096) -> float:
  """Achieved bf16 TFLOP/s of an n x n matmul on the default device."""
  a = jnp.ones((n, n), jnp.bfloat16)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / median_seconds(lambda: f(a), repeats=5) / 1e12


def matmul_weights(config) -> int:
  per_layer = sum(i * o for i, o in decoder.linear_shapes(config).values())
  return config.num_layers * per_layer + config.vocab_size * config.hidden_size


def weight_bytes(config) -> int:
  """The bytes one decode step reads of one copy's matmul weights (LM head included;
  norms and LoRA adapters are a rounding error), stored as config.param_dtype."""
  return matmul_weights(config) * np.dtype(as_dtype(config.param_dtype)).itemsize


def forward_flops(config, tokens: int, context: float,
                  lm_head_tokens: int | None = None) -> float:
  """Model FLOPs of a forward pass over `tokens` tokens that attend to `context`
  keys on average, `lm_head_tokens` of them (all by default) through the LM head."""
  attention = 4 * config.num_layers * config.num_heads * config.head_dim * context
  lm_head = 2 * config.vocab_size * config.hidden_size
  heads = tokens if lm_head_tokens is None else lm_head_tokens
  return tokens * (2 * matmul_weights(config) - lm_head + attention) + heads * lm_head


def _store(preset: str, mode: str, kind: str, rank: int, mesh) -> PolicyStore:
  config = get_preset(preset, param_dtype="bfloat16", compute_dtype="bfloat16")
  init = lambda key: decoder.init_params(config, key)
  if mesh is not None:  # created sharded: no full copy ever sits on one device
    init = jax.jit(init, out_shardings=sharding.shardings(decoder.param_shapes(config), mesh))
  base = init(jax.random.PRNGKey(0))
  roles = ("generator", "aggregator")
  return PolicyStore.create(config, base, roles, mode=mode, kind=kind,
                            lora=LoraConfig(rank=rank, alpha=32.0))


def run(preset: str = "qwen3_0_6b", *, batch: int = 64, prompt_len: int = 512,
        new_tokens: int = 512, mode: str = "shared", kind: str = "lora", rank: int = 64,
        steps: int = 3, mesh_config: sharding.MeshConfig | None = None) -> dict[str, Any]:
  """Times one rollout and `steps` updates; returns figures (see the module doc)."""
  devices = jax.device_count()
  mesh = None
  if devices > 1 or mesh_config is not None:
    mesh = sharding.make_mesh(mesh_config or sharding.default_mesh_config(
        preset, jax.process_count()))
  par = distributed.Parallel(mesh)
  store = _store(preset, mode, kind, rank, mesh)
  store = par.place_store(store)
  config = store.config
  kind_name = jax.devices()[0].device_kind
  out: dict[str, Any] = {"preset": preset, "device_kind": kind_name, "devices": devices,
                         "mesh": dict(mesh.shape) if mesh else None, "batch": batch,
                         "prompt_len": prompt_len, "new_tokens": new_tokens, "mode": mode,
                         "kind": kind}
  peak = by_device_kind(PEAK_TFLOPS, kind_name)
  out["peak_tflops_table"] = peak
  out["peak_tflops_measured"] = measured_peak_tflops(4096 if kind_name != "cpu" else 512)
  peak = peak or out["peak_tflops_measured"]
  rng = np.random.default_rng(0)
  roles = [store.roles[i % len(store.roles)] for i in range(batch)]
  prompts = [list(rng.integers(10, config.vocab_size, prompt_len)) for _ in range(batch)]
  sp = SamplingParams(temperature=1.0, max_new_tokens=new_tokens)
  with par.rollout_store(store, store.trainable) as policy:
    policy.generate(prompts, roles, jax.random.PRNGKey(0), sp)  # compile
    start = time.perf_counter()
    gen = policy.generate(prompts, roles, jax.random.PRNGKey(1), sp)
    seconds = time.perf_counter() - start
  generated = int(gen.lengths.sum())
  # The prefill runs the LM head at each row's last position only.
  flops = (forward_flops(config, batch * prompt_len, prompt_len / 2, lm_head_tokens=batch)
           + forward_flops(config, generated - batch, prompt_len + new_tokens / 2))
  kv = continuous.cache_bytes(config, 1, 1)  # a token's keys and values, all layers
  read = new_tokens * (weight_bytes(config) + batch * kv * (prompt_len + new_tokens / 2))
  out.update(rollout_s=seconds, rollout_tokens_per_s=generated / seconds,
             rollout_mfu=flops / seconds / (peak * 1e12 * devices),
             decode_read_gbps=read / seconds / 1e9 / devices,
             peak_hbm_gbps=by_device_kind(PEAK_HBM_GBPS, kind_name))
  out.update(_train(store, par, batch, prompt_len + new_tokens, new_tokens, steps, peak))
  stats = jax.local_devices()[0].memory_stats() or {}
  out["peak_memory_gib"] = stats.get("peak_bytes_in_use", 0) / 1024 ** 3 or None
  return out


def synthetic_rows(vocab_size: int, rows: int, length: int, new_tokens: int,
                   num_roles: int = 1) -> dict[str, np.ndarray]:
  """An update batch of random tokens: rows of `length`, the last `new_tokens`
  scored, roles assigned round-robin."""
  rng = np.random.default_rng(1)
  mask = np.zeros((rows, length - 1), bool)
  mask[:, -new_tokens:] = True
  return dict(tokens=rng.integers(10, vocab_size, (rows, length)).astype(np.int32),
              valid=np.ones((rows, length), bool), mask=mask,
              old_logp=np.full((rows, length - 1), -2.0, np.float32),
              advantages=rng.normal(size=rows).astype(np.float32),
              role=(np.arange(rows) % num_roles).astype(np.int32),
              kl_coef=np.zeros(rows, np.float32))


def _train(store, par, rows: int, length: int, new_tokens: int, steps: int, peak: float
           ) -> dict[str, float]:
  arrays = synthetic_rows(store.config.vocab_size, rows, length, new_tokens, len(store.roles))
  return train_timing(store, par, arrays, steps, peak)


def train_timing(store, par, arrays: dict[str, np.ndarray], steps: int, peak: float | None,
                 remat: bool = True,
                 alongside: dict[str, Callable[[], Any]] | None = None) -> dict[str, float]:
  """Median seconds of the jitted PPO update on `arrays` (one row per sequence).

  peak: TFLOP/s per device (None: no update_mfu); returns update_s,
  update_tokens_per_s, update_flops (model FLOPs a step), update_gflops (model
  FLOP/s), update_mfu, update_loss and update_page_faults (this process's
  minor page faults a step, over the two steps after the compiling one, before
  `alongside` runs). `alongside`: other steps (name
  -> fn) timed in turn with ours, round by round
  (timing.interleaved_median_seconds); their medians come back as `<name>_s`.
  """
  rows, length = arrays["tokens"].shape
  route = store.route([store.roles[r] for r in arrays["role"]])
  optimizer = update.make_optimizer(1e-6, 100, schedule="constant")
  state = par.place_state(update.init_state(jax.tree.map(jnp.copy, store.trainable), optimizer))
  static = dict(cfg=update.LossConfig(remat=remat), optimizer=optimizer,
                num_roles=len(store.roles))
  frozen, batch = store.replace(trainable={}), par.put_rows(arrays)
  carry = {"state": state}

  def step():
    carry["state"], carry["metrics"] = par.apply_minibatch(carry["state"], frozen, batch, route,
                                                      **static)
    return carry["metrics"]

  jax.block_until_ready(step())  # compile
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(2):
    jax.block_until_ready(step())
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 2
  seconds = interleaved_median_seconds({"update": step, **(alongside or {})}, steps)
  metrics = carry["metrics"]
  others = {f"{name}_s": seconds[name] for name in alongside or {}}
  seconds = seconds["update"]
  passes = 3 if store.kind == "full" else 2
  flops = passes * forward_flops(store.config, rows * length, length / 2)
  return {"update_s": seconds, "update_tokens_per_s": rows * length / seconds,
          "update_flops": flops, "update_gflops": flops / seconds / 1e9 / jax.device_count(),
          "update_mfu": peak and flops / seconds / (peak * 1e12 * jax.device_count()),
          "update_loss": float(metrics["loss"]),
          # Host page faults a step: XLA:CPU's buffers mapped afresh (marl_jax/trainer/hostmem.py).
          "update_page_faults": faults, **others}
