"""Orch-Workers: an orchestrator plans M strategies, M workers follow them, a synthesizer decides."""

from __future__ import annotations

from marl_jax.workflows import prompts as prompts_lib
from marl_jax.workflows.base import (Stage, Workflow, candidates, check_view, parse_answer, parse_choice, parse_plan, positive)


def orch_workers(m: int = 3, view: str = "full",
                 prompts: prompts_lib.PromptTable | None = None) -> Workflow:
  """Orchestrator -> M workers (one strategy each) -> synthesizer's final answer.

  A plan with fewer than M strategies is padded with parsing.FALLBACK_STRATEGY
  (more: the first M), so every episode runs exactly M workers. The
  synthesizer names the best worker solution or gives its own answer; an
  unusable reply falls back to the workers' majority vote.

  Args:
    m: number of strategies and workers.
    view: what the synthesizer reads of each worker: 'full' or 'answer'.
    prompts: replacements for ('orch_workers/<template>', family) keys.
  """
  m, view = positive("m", m), check_view(view)
  return Workflow(
      name="orch_workers", roles=("orchestrator", "worker", "synthesizer"),
      stages=(
          Stage("orchestrator", parse_plan(m), fields=lambda ep, _: {"m": m}),
          Stage("worker", parse_answer, agents=m,
                fields=lambda ep, i: {"strategy": ep.last("orchestrator").value[i]}),
          Stage("synthesizer", parse_choice("worker", allow_own_answer=True),
                fields=lambda ep, _: {"candidates": candidates(ep, "worker", view)}),
      ),
      final=lambda episode, task: episode.require("synthesizer")[-1].answer,
      prompts=prompts_lib.table("orch_workers", prompts),
      options={"m": m, "view": view})
