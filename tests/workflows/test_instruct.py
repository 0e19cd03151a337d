"""The instruct prompt style: families, stated formats, overrides, and workflows that read replies."""

import pytest

from marl_jax import tasks, workflows
from marl_jax.workflows import parsing
from marl_jax.workflows import prompts
from marl_jax.workflows import rollout
from tests.workflows.test_workflows import PROBLEMS, TASK, run, script


class GsmLike(type(TASK)):
  """Arithmetic problems under the GSM8K family's prompts (the task name decides)."""

  name = "gsm8k_jsonl"


class Own(type(TASK)):
  name = "my_task"


def test_family_of_tasks():
  assert prompts.family_of(TASK) == "tiny_math"
  assert prompts.family_of(tasks.get("tiny_code")) == "tiny_code"
  assert prompts.family_of(GsmLike()) == "gsm8k"
  assert prompts.family_of(Own()) == "math"  # a task of your own: its kind's instruct prompts
  dapo_train = Own()
  dapo_train.formats = {"train": "dapo", "eval": "math"}  # the files task records these
  assert prompts.family_of(dapo_train) == "dapo"
  dapo_train.prompt_family = "math"
  assert prompts.family_of(dapo_train) == "math"
  dapo_train.prompt_family = "latex"
  with pytest.raises(ValueError, match="prompt_family='latex'"):
    prompts.family_of(dapo_train)
  assert prompts.chain("dapo") == ("dapo", "math") and prompts.chain("code") == ("code",)
  assert prompts.kind_of("tiny_code") == "code"


@pytest.mark.parametrize("workflow, template, family, stated", [
    ("single", "generator", "gsm8k", "\\boxed{}"),
    ("single", "generator", "math", "\\boxed{}"),
    ("single", "generator", "dapo", "Answer: $Answer"),
    ("single", "generator", "code", "```python"),
    ("voting", "aggregator", "gsm8k", "'CHOICE: k'"),
    ("eval_opt", "evaluator", "dapo", "'VERDICT: correct' or 'VERDICT: incorrect'"),
    ("eval_opt", "refine", "dapo", "Answer: $Answer"),
    ("orch_workers", "orchestrator", "math", "exactly 3 numbered lines"),
    ("orch_workers", "worker", "gsm8k", "\\boxed{}"),
    ("orch_workers", "synthesizer", "code", "'CHOICE: k'"),
])
def test_instruct_prompts_state_the_final_line(workflow, template, family, stated):
  table = workflows.get(workflow).prompts
  fields = {"problem": "P", "candidates": "C", "answer": "A", "feedback": "F", "m": 3,
            "strategy": "S"}
  assert stated in prompts.render(table, workflow, template, family, fields)


def test_tiny_prompts_are_unchanged():
  table = workflows.get("voting").prompts
  fields = {"problem": "2+3=", "candidates": "1) 5"}
  assert prompts.render(table, "voting", "aggregator", "tiny_math", fields) == (
      "2+3=\nAnswers:\n1) 5\nReply with the number of the best answer.")
  assert prompts.render(table, "voting", "generator", "tiny_code", fields) == "2+3="
  assert prompts.numbered(["5", "9"]) == "1) 5\n2) 9"
  assert prompts.numbered(["a\nb", "c"], "gsm8k") == "Candidate 1:\na\nb\n\nCandidate 2:\nc"


def test_overrides_follow_the_family_chain_and_the_config_form():
  # config.workflow.prompts holds {template: {family: text}} (no tuple keys in a ConfigDict).
  wf = workflows.from_config({"name": "voting", "options": {},
                              "prompts": {"aggregator": {"math": "Kind: {candidates}",
                                                         "dapo": "Dapo: {candidates}"}}})
  fields = {"problem": "P", "candidates": "C"}
  render = lambda family: prompts.render(wf.prompts, "voting", "aggregator", family, fields)
  assert render("gsm8k") == "Kind: C" and render("tiny_math") == "Kind: C"
  assert render("dapo") == "Dapo: C"
  assert render("code").startswith("P\n\nCandidate programs")  # no override for code
  with pytest.raises(ValueError, match="family in"):
    workflows.get("voting", prompts={("voting/aggregator", "latex"): "x"})
  with pytest.raises(ValueError, match="str.format template"):
    workflows.get("voting", prompts={("voting/aggregator", "math"): 3})


def test_voting_reads_instruct_replies():
  respond = script(generator=["2+3 = 5, so \\boxed{5}", "I think \\boxed{6}", "Answer: 5"],
                   aggregator="Candidate 1 and 3 agree.\n\n**CHOICE: 3**")
  episodes, calls = run(workflows.get("voting"), respond, task=GsmLike(),
                        problems=PROBLEMS[:1], group_size=1)
  assert "\\boxed{}" in calls[0][0][1] and "CHOICE: k" in calls[1][0][1]
  assert "Candidate 1:\n2+3 = 5, so \\boxed{5}" in calls[1][0][1]
  agg = episodes[0].last("aggregator")
  assert agg.value == 2 and agg.parsed.failures == () and episodes[0].reward == 1.0
  assert episodes[0].family == "gsm8k"


@pytest.mark.parametrize("option, rounds", [("auto", 2), ("revise", 2), ("stop", 1)])
def test_unreadable_verdict_is_counted_and_follows_its_fallback(option, rounds):
  respond = script(generator="\\boxed{5}", evaluator="Let me think about this problem.")
  wf = workflows.get("eval_opt", max_rounds=2, unreadable_verdict=option)
  episodes, calls = run(wf, respond, task=GsmLike(), problems=PROBLEMS[:1], group_size=1)
  episode = episodes[0]
  assert len(episode.of("generator")) == rounds
  judge = episode.of("evaluator")[0]
  assert judge.parsed.failures == ("no_verdict",) and judge.correct is False
  assert not judge.value.readable and judge.value.correct is False
  if rounds == 2:  # the reply itself is the feedback of the next round
    assert "Let me think about this problem." in calls[2][0][1]
  assert rollout.role_metrics(episodes)["parse/evaluator/no_verdict"] == 1
  with pytest.raises(ValueError, match="unreadable_verdict='approve'"):
    workflows.get("eval_opt", unreadable_verdict="approve")


def test_eval_opt_feedback_is_the_evaluators_reasons():
  respond = script(generator=["\\boxed{6}", "\\boxed{5}"],
                   evaluator="2 + 3 is 5, not 6.\n\nVERDICT: incorrect")
  episodes, calls = run(workflows.get("eval_opt", max_rounds=2), respond, task=GsmLike(),
                        problems=PROBLEMS[:1], group_size=1)
  assert "A reviewer's feedback:\n2 + 3 is 5, not 6." in calls[2][0][1]
  assert "VERDICT" not in calls[2][0][1].split("feedback:")[1].split("Solve")[0]
  assert episodes[0].final_answer == "5" and episodes[0].of("evaluator")[0].correct is True


def test_orch_workers_reads_a_plan_with_a_preamble():
  respond = script(orchestrator="Here are 3 different strategies:\n\n1. Add.\n2. Count up.\n"
                                "3. Use a number line.",
                   worker="\\boxed{5}", synthesizer="All agree.\nCHOICE: 1")
  episodes, calls = run(workflows.get("orch_workers"), respond, task=GsmLike(),
                        problems=PROBLEMS[:1], group_size=1, new_tokens=200)
  assert episodes[0].last("orchestrator").value == ("Add.", "Count up.", "Use a number line.")
  assert episodes[0].last("orchestrator").parsed.failures == ()
  assert "using this strategy: Count up." in calls[1][1][1]
  assert episodes[0].final_answer == "5"


def test_verdict_feedback_and_style_defaults():
  read = parsing.verdict("Step 2 adds 16, not 24.\n**VERDICT: incorrect**", "64")
  assert read.value == parsing.Verdict(False, "Step 2 adds 16, not 24.")
  assert parsing.verdict("VERDICT: incorrect - forgot May", "64").value.feedback == (
      "forgot May")
  assert parsing.verdict("The proposed solution is correct.", "72").value.feedback == ""
