"""The demo job: train the tiny world, then compare base and trained on held-out problems."""

from __future__ import annotations

import os
import time

import ml_collections

from marl_jax.study import report
from marl_jax.trainer import console
from marl_jax.trainer import loop as train
from marl_jax.trainer import metrics as metrics_lib


def summary(workdir: str) -> dict[str, float]:
  """Base (step 0) and final held-out accuracies of a finished run."""
  evals = [r for r in metrics_lib.read_jsonl(f"{workdir}/metrics.jsonl") if "eval/accuracy" in r]
  if len(evals) < 2:
    raise ValueError(f"{workdir}/metrics.jsonl has {len(evals)} evaluations; a finished run "
                     "has one at step 0 and one at the end.")
  base, final = evals[0], evals[-1]
  out = {"base/sampled": base["eval/sampled/accuracy"],
         "trained/sampled": final["eval/sampled/accuracy"], "steps": final["step"]}
  if "eval/greedy/accuracy" in base:
    out["base/greedy"] = base["eval/greedy/accuracy"]
    out["trained/greedy"] = final["eval/greedy/accuracy"]
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains, writes <workdir>/report.md and prints the run in a few lines, the
  held-out accuracy table last (the libraries' log is <workdir>/log.txt)."""
  start = time.time()
  name = (f"{config.workflow.name} / {config.task.family} / {config.policy.mode} policy / "
          f"{config.model.preset}")
  print(f"{name}: {config.train.steps} RL steps in {workdir} (log: "
        f"{os.path.join(workdir, console.LOG_NAME)})", flush=True)
  train.train_and_evaluate(config, workdir)
  result = summary(workdir)
  path = report.write_run_report(workdir)
  minutes = (time.time() - start) / 60
  print(f"report: {path}")
  print(f"\n{name}: {result['steps']} RL steps, {minutes:.1f} min")
  print(f"{'held-out accuracy':<22}{'base':>8}{'trained':>9}{'gain':>8}")
  for mode in ("sampled", "greedy"):
    if f"base/{mode}" in result:
      b, t = result[f"base/{mode}"], result[f"trained/{mode}"]
      label = f"{mode} (T={config.eval.temperature})" if mode == "sampled" else mode
      print(f"{label:<22}{b:>8.3f}{t:>9.3f}{t - b:>+8.3f}")
  return result
