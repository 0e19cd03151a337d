"""Rollout throughput of a workflow under a sharing mode (SP vs IP), for launch/benchmark.py.

    python -m marl_jax.bench.rollout            # every workflow, shared vs isolated, tiny_m

Both modes run the same problems with the same key on a freshly initialised
store, so (LoRA B = 0) they sample identical tokens and the timings compare
like with like. The first rollout compiles and is not timed.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import jax
import numpy as np

from marl_jax import tasks, workflows
from marl_jax.generate import sampler as sampling
from marl_jax.models import get_preset, init_params
from marl_jax.models.lora import LoraConfig
from marl_jax.models.tokenizers import CharTokenizer
from marl_jax.policies.store import PolicyStore
from marl_jax.workflows import rollout
from marl_jax.workflows.episodes import role_metrics


def rollout_throughput(
    workflow: str,
    mode: str,
    *,
    preset: str = "tiny_m",
    kind: str = "lora",
    lora: LoraConfig = LoraConfig(),
    num_problems: int = 16,
    group_size: int = 4,
    max_new_tokens: int = 64,
    max_prompt_len: int = rollout.DEFAULT_MAX_PROMPT_LEN,
    repeats: int = 5,
    seed: int = 0,
    workflow_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """Completion tokens per second of the fastest of `repeats` timed rollouts.

  The fastest, not the mean: on a shared machine the minimum is the timing
  least disturbed by other processes. A first, compiling rollout is not timed.
  Returns workflow, mode, kind, preset, tokens_per_s, completion_tokens and
  calls (per rollout), seconds (fastest) and seconds_median, compiled_shapes.
  """
  config = get_preset(preset)
  wf = workflows.get(workflow, **dict(workflow_options or {}))
  base = init_params(config, jax.random.PRNGKey(seed))
  store = PolicyStore.create(config, base, wf.roles, mode=mode, kind=kind, lora=lora,
                             rng=jax.random.PRNGKey(seed + 1))
  task = tasks.get("arithmetic")
  problems = task.sample("train", num_problems, seed=seed)
  sampler = sampling.SamplingParams(temperature=0.7, max_new_tokens=max_new_tokens)
  run = lambda: rollout.run(wf, store, task, problems, group_size,
                            jax.random.PRNGKey(seed), sampler, CharTokenizer(),
                            max_prompt_len=max_prompt_len)
  run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    episodes = run()
    times.append(time.perf_counter() - start)
  seconds = min(times)
  metrics = role_metrics(episodes)
  tokens = sum(v for k, v in metrics.items() if k.startswith("completion_tokens/"))
  calls = sum(v for k, v in metrics.items() if k.startswith("calls/"))
  return {"workflow": workflow, "mode": mode, "kind": kind, "preset": preset,
          "tokens_per_s": tokens / seconds, "completion_tokens": int(tokens),
          "calls": int(calls), "seconds": seconds, "seconds_median": float(np.median(times)),
          "compiled_shapes": sampling.compiled_shapes()}


def sp_vs_ip(workflow: str, repeats: int = 5, **options) -> dict[str, dict[str, Any]]:
  """mode -> the fastest rollout_throughput result of SP and IP, measured
  interleaved (shared, isolated, shared, isolated) against drift."""
  best: dict[str, dict[str, Any]] = {}
  for mode in ("shared", "isolated", "shared", "isolated"):
    result = rollout_throughput(workflow, mode, repeats=repeats, **options)
    if mode not in best or result["seconds"] < best[mode]["seconds"]:
      best[mode] = result
  return best


def main() -> None:
  for name in ("single", "voting", "eval_opt", "orch_workers"):
    results = sp_vs_ip(name)
    ratio = results["isolated"]["tokens_per_s"] / results["shared"]["tokens_per_s"]
    print(f"{name:13s} SP {results['shared']['tokens_per_s']:8.0f} tok/s   "
          f"IP {results['isolated']['tokens_per_s']:8.0f} tok/s   IP/SP {ratio:.2f}")


if __name__ == "__main__":
  main()
