"""The benchmark suite behind launch/benchmark.py: named benchmarks and their runner."""

from __future__ import annotations

import os
from typing import Callable

import jax

from marl_jax.bench import generation, rl_step, rollout_long, training
from marl_jax.bench import rollout as rollout_bench
from marl_jax.bench import update_scheme
from marl_jax.bench.timing import matmul_peak_gflops, memory_bandwidth_gbs
from marl_jax.models import cpu_kernels
from marl_jax.models import get_preset, gguf_checkpoint, init_params, load_pretrained
from marl_jax.models.cpu_kernels import selection
from marl_jax.rl import update
from marl_jax.trainer import hostmem


def _torch_threads() -> None:
  import torch
  torch.set_num_threads(os.cpu_count() or 1)


def generate_tiny(repeats: int) -> dict:
  config = get_preset("tiny_m", one_hot_embed=True)
  params = init_params(config, jax.random.PRNGKey(0))
  return generation.compare_generate("generate_tiny_b64", config, params, 64, repeats=repeats)


def generate_smollm2(repeats: int) -> dict:
  path = gguf_checkpoint.find_smollm2_gguf()
  if path:
    config, params = load_pretrained(path)
  else:  # same architecture and size, random weights
    config = get_preset("smollm2_135m")
    params = init_params(config, jax.random.PRNGKey(0))
  out = generation.compare_generate("generate_smollm2_b16", config, params, 16,
                                    repeats=repeats, gguf_path=path)
  out["generate_smollm2_b16/real_weights"] = bool(path)
  return out


def train_tiny(repeats: int) -> dict:
  # The tiny world's update: 128 rows (16 problems x 8 samples) of 96 tokens.
  return training.compare_train_step("train_tiny", get_preset("tiny_m"), 128, 96, 32, repeats)


def train_6m(repeats: int) -> dict:
  return training.compare_train_step("train_6m", training.mid_config(), 32, 128, 64, repeats)


def rollout_sp_ip(repeats: int) -> dict:
  """Every workflow's rollout tokens/s, shared vs isolated (LoRA), at equal batch."""
  out = {}
  for workflow in ("voting", "eval_opt", "orch_workers"):
    best = {mode: r["tokens_per_s"]
            for mode, r in rollout_bench.sp_vs_ip(workflow, repeats=repeats).items()}
    out[f"rollout_{workflow}/sp_tokens_per_s"] = best["shared"]
    out[f"rollout_{workflow}/ip_tokens_per_s"] = best["isolated"]
    out[f"rollout_{workflow}/ip_over_sp"] = best["isolated"] / best["shared"]
  return out


def update_sp_ip(repeats: int) -> dict:
  """The RL update's seconds a step, shared vs isolated full copies (the tiny
  study's policies), on orch_workers: three roles, one with three agents."""
  del repeats
  # Runs in the order shared, isolated, isolated, shared and each mode's mean:
  # one run of each, minutes apart, read the VM's drift (1.22 in one full
  # benchmark run, 0.93 rerun alone).
  seconds = {"shared": [], "isolated": []}
  for mode in ("shared", "isolated", "isolated", "shared"):
    steps = rl_step.rl_steps(6, f"workflow=orch_workers,task=math,model=tiny_m,policy={mode}",
                             overrides=("rollout.batch_size=8",))
    seconds[mode].append(steps["rl_step/update_s"])
  out = {f"update_orch_workers/{mode}_s": sum(s) / len(s) for mode, s in seconds.items()}
  out["update_orch_workers/ip_time_over_sp"] = (out["update_orch_workers/isolated_s"]
                                                / out["update_orch_workers/shared_s"])
  return out


def rollout_long_both(repeats: int, full: bool = False) -> dict:
  """Continuous batching over the lockstep sampler at long-tailed answer lengths
  (bench/rollout_long.py): the 6M Qwen3-shaped model and SmolLM2-135M."""
  return {**rollout_long.rollout_long("6m", repeats, full),
          **rollout_long.rollout_long("smollm2", repeats, full)}


def rollout_long_qwen3(repeats: int, full: bool = False) -> dict:
  """rollout_long on the Qwen3-0.6B shapes (random bf16 weights): an accelerator's
  benchmark, which a run of every benchmark skips on a CPU (ACCELERATOR_ONLY)."""
  return rollout_long.rollout_long("qwen3_0_6b", repeats, full)


def rollout_chunks(repeats: int, full: bool = False) -> dict:
  """The continuous engine's decode chunk, 1-32 steps a call (bench/rollout_long.py)."""
  return rollout_long.chunk_sizes("6m", repeats=max(1, repeats // 3), full=full)


def rollout_shrink(repeats: int, full: bool = False) -> dict:
  """The continuous engine's decode narrowed as the queue drains, or not (bench/rollout_long.py)."""
  return rollout_long.shrinking("6m", repeats=max(1, repeats // 3), full=full)


def rollout_share(repeats: int, full: bool = False) -> dict:
  """The continuous engine's rows started from prompts live rows hold, or each
  prefilled (bench/rollout_long.py): the 6M model and SmolLM2-135M."""
  return {**rollout_long.sharing("6m", repeats=max(1, repeats // 3), full=full),
          **rollout_long.sharing("smollm2", repeats=max(1, repeats // 3), full=full)}


def update_scheme_ip(repeats: int) -> dict:
  """A reference-scheme IP update against a joint one on the same rows (bench/update_scheme.py)."""
  return update_scheme.update_schemes(repeats)


def rl_step_demo(repeats: int) -> dict:
  del repeats
  return rl_step.rl_steps(20)


BENCHMARKS: dict[str, Callable[[int], dict]] = {
    "generate_tiny": generate_tiny,
    "generate_smollm2": generate_smollm2,
    "train_tiny": train_tiny,
    "train_6m": train_6m,
    "rollout_sp_ip": rollout_sp_ip,
    "update_sp_ip": update_sp_ip,
    "rl_step": rl_step_demo,
    "update_scheme": update_scheme_ip,
    "rollout_long": rollout_long_both,
    "rollout_long_qwen3": rollout_long_qwen3,
    "rollout_chunks": rollout_chunks,
    "rollout_shrink": rollout_shrink,
    "rollout_share": rollout_share,
}
# benchmarks with a full size (launch/benchmark.py --full)
SIZED = ("rollout_long", "rollout_long_qwen3", "rollout_chunks", "rollout_shrink",
         "rollout_share")
# run on a CPU only where named (--only): hours there
ACCELERATOR_ONLY = ("rollout_long_qwen3",)


def run(only: list[str], repeats: int = 5, full: bool = False) -> dict:
  unknown = set(only) - set(BENCHMARKS)
  if unknown:
    raise ValueError(f"Unknown benchmarks {sorted(unknown)}; available: {list(BENCHMARKS)}.")
  _torch_threads()
  results = {"matmul_peak_gflops": matmul_peak_gflops(),
             "memory_bandwidth_gbs": memory_bandwidth_gbs(),
             # Both sides run under these malloc settings (marl_jax/trainer/hostmem.py).
             "host_malloc_tuned": hostmem.active(),
             # The decode step's hand-written kernels (marl_jax/models/cpu_kernels), or why not.
             "cpu_kernels": cpu_kernels.unavailable_reason() or "on",
             # The machine the ratios hold for (the kernels' selection keys on it), and how
             # the sampler picks the kernels (MARL_JAX_CPU_KERNELS: auto, 1 or 0).
             "cpu": selection.machine()["cpu"], "cpu_flags": selection.machine()["flags"],
             "cpu_kernels_mode": selection.mode()}
  for name, bench in BENCHMARKS.items():
    if not only and name in ACCELERATOR_ONLY and jax.default_backend() == "cpu":
      print(f"{name}: skipped on a CPU (an accelerator's benchmark; --only={name} runs it)")
    elif not only or name in only:
      # Each XLA:CPU executable holds ~3 memory mappings; past vm.max_map_count (65,530)
      # the next compile fails ("LLVM compilation error: Cannot allocate memory": met
      # in one process that ran rollout_share's two models, then rollout_long's full copies).
      jax.clear_caches()
      update.clear_programs()
      figures = bench(repeats, full) if name in SIZED else bench(repeats)
      for key, value in figures.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}", flush=True)
      results.update(figures)
  results["matmul_peak_gflops_end"] = matmul_peak_gflops()
  peak = max(results["matmul_peak_gflops"], results["matmul_peak_gflops_end"])
  # Every achieved rate against the run's best peak.
  for key in [k for k in results if k.endswith("gflops") and "/" in k]:
    results[key.replace("sampler_gflops", "gflops").replace("gflops", "fraction_of_peak")] = (
        results[key] / peak)
  for key in [k for k in results if k.endswith("sampler_gflops")]:
    # The prefill's roofline is the peak; decode reads every weight once per
    # step, so its roofline is min(peak, arithmetic intensity x bandwidth).
    figure = lambda name: results[key.replace("sampler_gflops", name)]
    decode_roofline = min(peak, figure("flops_per_weight_byte") * results["memory_bandwidth_gbs"])
    roofline = (figure("prefill_gflop") + figure("decode_gflop")) / (
        figure("prefill_gflop") / peak + figure("decode_gflop") / decode_roofline)
    results[key.replace("sampler_gflops", "roofline_gflops")] = roofline
    results[key.replace("sampler_gflops", "fraction_of_roofline")] = results[key] / roofline
  return results
