"""Accuracy of a base model in every workflow x task cell (the headroom RL starts from).

    results = workflow_accuracy(config, model, params, num_problems=128)
    print(format_table(results))   # rows: workflows; columns: task families; then roles

Each cell is `rollout.run` of the workflow on held-out problems, one episode
per problem, every role played by the same base parameters (what every
sharing mode is before its first update), at config.eval.temperature.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from marl_jax.models import tokenizers
from marl_jax.models.config import ModelConfig
from marl_jax.tiny import plan
from marl_jax.tiny.warm_start import ParamsPolicy
from marl_jax.workflows import episodes as episodes_lib
from marl_jax.workflows import rollout


def workflow_accuracy(config: ml_collections.ConfigDict, model: ModelConfig, params: Any,
                      num_problems: int = 128) -> dict[tuple[str, str], dict[str, float]]:
  """{(workflow, family): episodes.role_metrics} for the demonstrated workflows and families.

  'accuracy/mean' is the workflow's accuracy (the verifier's verdicts).
  """
  p = plan(config)
  tokenizer = tokenizers.load_tokenizer(p.tokenizer)
  policy = ParamsPolicy(model, params)
  sampling = rollout.sampling_params(config.rollout, config.eval.temperature)
  workflows = {source.workflow.name: source.workflow for source in p.roles}
  tasks = {source.task.kind: source.task for source in p.roles}
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), rollout.EVAL_KEY)  # as evaluate
  out = {}
  for family, task in tasks.items():
    problems = task.sample("eval", num_problems, seed=config.seed, step=0)
    for name, workflow in workflows.items():
      episodes = rollout.run(workflow, policy, task, problems, 1, key, sampling, tokenizer,
                             **rollout.options(config))
      out[(name, family)] = episodes_lib.role_metrics(episodes)
  return out


def format_table(results: dict[tuple[str, str], dict[str, float]]) -> str:
  """Workflow accuracy (rows: workflows, columns: families), then each role's accuracy
  and parse failures per call in every cell."""
  families = sorted({family for _, family in results})
  names = list(dict.fromkeys(name for name, _ in results))
  lines = ["workflow".ljust(14) + "".join(f.rjust(8) for f in families)]
  for name in names:
    lines.append(name.ljust(14) + "".join(
        f"{results[(name, f)]['accuracy/mean']:8.2f}" if (name, f) in results else " " * 8
        for f in families))
  lines.append("\nper role: accuracy (where defined) / parse failures per call")
  for (name, family), metrics in results.items():
    roles = [k.split("/", 1)[1] for k in metrics if k.startswith("calls/")]
    parts = []
    for role in roles:
      calls = metrics[f"calls/{role}"]
      failures = sum(v for k, v in metrics.items() if k.startswith(f"parse/{role}/"))
      accuracy = metrics.get(f"accuracy/{role}")
      shown = "  -  " if accuracy is None else f"{accuracy:.2f}"
      parts.append(f"{role} {shown} / {failures / calls:.2f}")
    lines.append(f"  {name}/{family}: " + ", ".join(parts))
  return "\n".join(lines)
