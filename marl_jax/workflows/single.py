"""Single: one generator answers; the control cell of the study."""

from __future__ import annotations

from marl_jax.workflows import prompts as prompts_lib
from marl_jax.workflows.base import Stage, Workflow, parse_answer


def single(prompts: prompts_lib.PromptTable | None = None) -> Workflow:
  """One generator call; its answer is final.

  Args:
    prompts: {('single/generator', family): template} replacements.
  """
  return Workflow(
      name="single", roles=("generator",),
      stages=(Stage("generator", parse_answer),),
      final=lambda episode, task: episode.require("generator")[-1].answer,
      prompts=prompts_lib.table("single", prompts))
