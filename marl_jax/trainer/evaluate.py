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
             split: str = "eval", slots: int | None = None) -> dict[str, float]:
  """Accuracy of the workflow and of each role on held-out problems.

  Keys: eval/sampled/... (when config.eval.sampled: at eval.temperature) and
  eval/greedy/... (when config.eval.greedy), each with accuracy,
  accuracy/<role>, parse failures and rates, response lengths; eval/accuracy
  is the headline figure, sampled when it ran, else greedy. `slots`: the
  continuous engine's decode slots as the trainer resolved them (None: rollout.slots).
  """
  config = run.config
  n = num_problems or config.eval.num_problems
  problems = run.task.sample(split, n, seed=config.seed, step=0)
  store = run.store.replace(trainable=trainable)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), rollout.EVAL_KEY)
  modes = [(name, temperature) for name, temperature, on in (
      ("sampled", config.eval.temperature, config.eval.get("sampled", True)),
      ("greedy", 0.0, config.eval.greedy)) if on]
  if not modes:
    raise ValueError("config.eval.sampled and config.eval.greedy are both off: turn one on, "
                     "or set train.eval_every past train.steps to skip evaluations.")
  out: dict[str, float] = {}
  for name, temperature in modes:
    episodes = rollout.run(run.workflow, store, run.task, problems, 1, key,
                           rollout.sampling_params(config.rollout, temperature), run.tokenizer,
                           **rollout.options(config, slots=slots))
    metrics = episodes_lib.role_metrics(episodes)
    out[f"eval/{name}/accuracy"] = metrics.pop("accuracy/mean")
    out[f"eval/{name}/reward"] = metrics.pop("reward/mean")
    for k, v in metrics.items():
      if k.startswith(("accuracy/", "parse/", "parse_rate/", "parse_ok/", "response_length/")):
        out[f"eval/{name}/{k}"] = v
  out["eval/accuracy"] = out[f"eval/{modes[0][0]}/accuracy"]
  return out
