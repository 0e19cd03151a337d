"""Held-out evaluation of a workflow and of each of its roles.

The same eval problems and the same sampling key are used at every
evaluation of a run, so accuracy curves compare policies, not draws.
"""

from __future__ import annotations

from typing import Any

import jax

from marl_jax.workflows import episodes as episodes_lib
from marl_jax.workflows import rollout


def evaluate(run: Any, trainable: Any, *, num_problems: int | None = None,
             split: str = "eval") -> dict[str, float]:
  """Accuracy of the workflow and of each role on held-out problems.

  Keys: eval/accuracy (sampled at the training temperature, the headline
  figure), eval/sampled/..., eval/greedy/... (when config.eval.greedy), each
  with accuracy, accuracy/<role>, parse failures and response lengths.
  """
  config = run.config
  n = num_problems or config.eval.num_problems
  problems = run.task.sample(split, n, seed=config.seed, step=0)
  store = run.store.replace(trainable=trainable)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), rollout.EVAL_KEY)
  modes = [("sampled", config.eval.temperature)]
  if config.eval.greedy:
    modes.append(("greedy", 0.0))
  out: dict[str, float] = {}
  for name, temperature in modes:
    episodes = rollout.run(run.workflow, store, run.task, problems, 1, key,
                           rollout.sampling_params(config.rollout, temperature), run.tokenizer,
                           **rollout.options(config))
    metrics = episodes_lib.role_metrics(episodes)
    out[f"eval/{name}/accuracy"] = metrics.pop("reward/mean")
    for k, v in metrics.items():
      if k.startswith(("accuracy/", "parse/", "response_length/")):
        out[f"eval/{name}/{k}"] = v
  out["eval/accuracy"] = out["eval/sampled/accuracy"]
  return out
