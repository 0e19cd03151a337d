"""Voting: N generators answer in parallel; an aggregator picks one (or a majority vote)."""

from __future__ import annotations

from marl_jax.workflows import prompts as prompts_lib
from marl_jax.workflows.base import (Stage, Workflow, candidates, check_view, majority_answer, parse_answer, parse_choice, positive)


def voting(n: int = 3, view: str = "full",
           prompts: prompts_lib.PromptTable | None = None) -> Workflow:
  """N generators, then an aggregator whose pick is the final answer.

  Args:
    n: number of generators (agents of the one 'generator' role).
    view: what the aggregator reads of each candidate: 'full' (the completion)
      or 'answer' (the extracted answer; shorter, for tiny models).
    prompts: replacements for ('voting/<template>', family) keys.
  An unparseable pick falls back to the majority vote (parsing.choice).
  """
  n, view = positive("n", n), check_view(view)
  return Workflow(
      name="voting", roles=("generator", "aggregator"),
      stages=(
          Stage("generator", parse_answer, agents=n),
          Stage("aggregator", parse_choice("generator"),
                fields=lambda ep, _: {"candidates": candidates(ep, "generator", view)}),
      ),
      final=lambda episode, task: episode.require("aggregator")[-1].answer,
      prompts=prompts_lib.table("voting", prompts),
      options={"n": n, "view": view})


def majority_vote(n: int = 3, prompts: prompts_lib.PromptTable | None = None) -> Workflow:
  """N generators; the most frequent extracted answer is final (ties: the earliest agent)."""
  n = positive("n", n)
  return Workflow(
      name="majority_vote", roles=("generator",),
      stages=(Stage("generator", parse_answer, agents=n),),
      final=lambda episode, task: majority_answer(episode, "generator", task),
      prompts=prompts_lib.table("majority_vote", prompts),
      options={"n": n})
