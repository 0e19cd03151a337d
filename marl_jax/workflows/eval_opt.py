"""Eval-Opt: a generator answers, an evaluator judges, the generator refines on 'incorrect'."""

from __future__ import annotations

from marl_jax.workflows import prompts as prompts_lib
from marl_jax.workflows.base import (Stage, Workflow, check_view, parse_answer, parse_verdict, positive, show)

DEFAULT_ROUNDS = {"math": 3, "code": 2}
# What an episode does after a verdict that cannot be read (parsing: no_verdict).
UNREADABLE_VERDICT = ("auto", "stop", "revise")


def eval_opt(max_rounds: int | None = None, view: str = "full", judge_last: bool = False,
             unreadable_verdict: str = "auto",
             prompts: prompts_lib.PromptTable | None = None) -> Workflow:
  """Answer, judge, refine, ... for at most K rounds; the last answer is final.

  A round is one generator answer (turn k) and, if another round may follow,
  the evaluator's verdict on it (turn k). 'correct' ends the episode;
  'incorrect' starts round k + 1 with the 'refine' prompt (its {feedback}:
  the evaluator's reasons). So an episode makes at most K generator calls
  and K - 1 evaluator calls. A verdict that cannot be read is counted
  (parse/evaluator/no_verdict), scored as a wrong verdict, and then handled
  by `unreadable_verdict`.

  Args:
    max_rounds: K; default by task family, DEFAULT_ROUNDS (math 3, code 2).
    view: what the evaluator and the refining generator see of the answer:
      'full' (the completion) or 'answer' (the extracted answer).
    judge_last: also judge the K-th answer (K evaluator calls; the verdict
      cannot change the final answer but scores the evaluator).
    unreadable_verdict: 'stop' (keep the answer and end the episode, so a
      malformed judge never rewrites an answer), 'revise' (another round, the
      reply itself as feedback), or 'auto': 'stop' for the tiny world's
      families (their bases were trained with it), 'revise' for the others.
    prompts: replacements for ('eval_opt/<template>', family) keys.
  """
  view = check_view(view)
  if unreadable_verdict not in UNREADABLE_VERDICT:
    raise ValueError(f"workflow option unreadable_verdict={unreadable_verdict!r} is unknown; "
                     f"use one of {UNREADABLE_VERDICT}.")
  if max_rounds is not None:
    max_rounds = positive("max_rounds", max_rounds)
  most = max_rounds or max(DEFAULT_ROUNDS.values())

  def rounds(episode):
    return max_rounds or DEFAULT_ROUNDS.get(prompts_lib.kind_of(episode.family), most)

  def stops(episode):
    verdict = episode.require("evaluator")[-1].value
    if verdict.readable:
      return verdict.correct
    fallback = unreadable_verdict
    if fallback == "auto":
      fallback = "stop" if prompts_lib.style_of(episode.family) == "tiny" else "revise"
    return fallback == "stop"

  def judged(episode):
    return {"answer": show(episode.require("generator")[-1], view)}

  def refine(episode, _):
    return {**judged(episode),
            "feedback": episode.require("evaluator")[-1].value.feedback or "none"}

  stages = []
  for turn in range(most):
    stages.append(Stage(
        "generator", parse_answer, template="generator" if turn == 0 else "refine",
        fields=refine if turn else lambda ep, _: {}, turn=turn,
        when=lambda ep, t=turn: t < rounds(ep)))
    stages.append(Stage(
        "evaluator", parse_verdict("generator"), fields=lambda ep, _: judged(ep), turn=turn,
        when=lambda ep, t=turn: t < rounds(ep) - (0 if judge_last else 1),
        stop=stops))
  return Workflow(
      name="eval_opt", roles=("generator", "evaluator"), stages=tuple(stages),
      final=lambda episode, task: episode.require("generator")[-1].answer,
      prompts=prompts_lib.table("eval_opt", prompts),
      options={"max_rounds": max_rounds, "view": view, "judge_last": judge_last,
               "unreadable_verdict": unreadable_verdict})
