"""Eval-Opt: a generator answers, an evaluator judges, the generator refines on 'incorrect'."""

from __future__ import annotations

from marl_jax.workflows import prompts as prompts_lib
from marl_jax.workflows.base import (Stage, Workflow, check_view, parse_answer, parse_verdict, positive, show)

DEFAULT_ROUNDS = {"math": 3, "code": 2}


def eval_opt(max_rounds: int | None = None, view: str = "full", judge_last: bool = False,
             prompts: prompts_lib.PromptTable | None = None) -> Workflow:
  """Answer, judge, refine, ... for at most K rounds; the last answer is final.

  A round is one generator answer (turn k) and, if another round may follow,
  the evaluator's verdict on it (turn k). 'correct' (or an unparseable
  verdict, see parsing) ends the episode; 'incorrect: <feedback>' starts
  round k + 1 with the 'refine' prompt. So an episode makes at most K
  generator calls and K - 1 evaluator calls.

  Args:
    max_rounds: K; default by task family, DEFAULT_ROUNDS (math 3, code 2).
    view: what the evaluator and the refining generator see of the answer:
      'full' (the completion) or 'answer' (the extracted answer).
    judge_last: also judge the K-th answer (K evaluator calls; the verdict
      cannot change the final answer but scores the evaluator).
    prompts: replacements for ('eval_opt/<template>', family) keys.
  """
  view = check_view(view)
  if max_rounds is not None:
    max_rounds = positive("max_rounds", max_rounds)
  most = max_rounds or max(DEFAULT_ROUNDS.values())

  def rounds(episode):
    return max_rounds or DEFAULT_ROUNDS.get(episode.family, most)

  def judged(episode):
    return {"answer": show(episode.last("generator"), view)}

  def refine(episode, _):
    return {**judged(episode), "feedback": episode.last("evaluator").value.feedback or "none"}

  stages = []
  for turn in range(most):
    stages.append(Stage(
        "generator", parse_answer, template="generator" if turn == 0 else "refine",
        fields=refine if turn else lambda ep, _: {}, turn=turn,
        when=lambda ep, t=turn: t < rounds(ep)))
    stages.append(Stage(
        "evaluator", parse_verdict("generator"), fields=lambda ep, _: judged(ep), turn=turn,
        when=lambda ep, t=turn: t < rounds(ep) - (0 if judge_last else 1),
        stop=lambda ep: ep.last("evaluator").value.correct))
  return Workflow(
      name="eval_opt", roles=("generator", "evaluator"), stages=tuple(stages),
      final=lambda episode, task: episode.last("generator").answer,
      prompts=prompts_lib.table("eval_opt", prompts),
      options={"max_rounds": max_rounds, "view": view, "judge_last": judge_last})
