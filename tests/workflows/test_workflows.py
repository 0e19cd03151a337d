"""Workflows under a scripted policy: call graphs, round limits, fallbacks, final answers."""

import dataclasses
import itertools

import jax
import pytest

from marl_jax import tasks, workflows
from marl_jax.generate.sampler import SamplingParams
from marl_jax.models.tokenizers import CharTokenizer
from marl_jax.policies.store import ScriptedPolicy
from marl_jax.workflows import parsing
from marl_jax.workflows import rollout
from marl_jax.workflows.examples.second_opinion import second_opinion

TOK = CharTokenizer()
TASK = tasks.get("arithmetic")
# References 5 and 9; every scripted episode of problem 0 can be right.
PROBLEMS = [tasks.Problem("p0", "2+3=", "5"), tasks.Problem("p1", "4+5=", "9")]


class CodeLikeArithmetic(type(TASK)):
  """Arithmetic scored the same way, but of the 'code' family (for family defaults)."""

  kind = "code"


def script(**replies):
  """respond(role, prompt): each role cycles through its replies (str or callable)."""
  cycles = {role: itertools.cycle(r if isinstance(r, list) else [r]) for role, r in replies.items()}

  def respond(role, prompt):
    reply = next(cycles[role])
    return reply(prompt) if callable(reply) else reply

  return respond


def run(workflow, respond, *, task=TASK, problems=PROBLEMS, group_size=2, new_tokens=48,
        **options):
  policy = ScriptedPolicy(respond, TOK, workflow.roles)
  episodes = rollout.run(workflow, policy, task, problems, group_size, jax.random.PRNGKey(0),
                         SamplingParams(max_new_tokens=new_tokens), TOK, **options)
  return episodes, policy.sampler_calls


def roles_per_sampler_call(calls):
  return [sorted(set(role for role, _ in rows)) + [len(rows)] for rows in calls]


def test_single_is_one_call_per_episode_and_scores_the_answer():
  episodes, calls = run(workflows.get("single"), script(generator=["5", "the answer is 9"]))
  assert roles_per_sampler_call(calls) == [["generator", 4]]
  assert [(e.id, e.group, e.sample) for e in episodes] == [(0, 0, 0), (1, 0, 1), (2, 1, 0),
                                                          (3, 1, 1)]
  assert [e.final_answer for e in episodes] == ["5", "9", "5", "9"]
  assert [e.reward for e in episodes] == [1.0, 0.0, 0.0, 1.0]
  assert [e.calls[0].correct for e in episodes] == [True, False, False, True]
  call = episodes[0].calls[0]
  assert call.completion_tokens == TOK.encode("5") + [TOK.EOS] and not call.truncated
  assert call.prompt_tokens == TOK.apply_chat_template([{"role": "user", "content": "2+3="}])


def test_voting_call_graph_pick_and_per_role_correctness():
  wf = workflows.get("voting", view="answer")
  episodes, calls = run(wf, script(generator=["5", "9", "9"], aggregator="1"), group_size=1)
  assert roles_per_sampler_call(calls) == [["generator", 6], ["aggregator", 2]]
  assert "1) 5\n2) 9\n3) 9\nReply with the number" in calls[1][0][1]
  first, second = episodes
  assert first.final_answer == "5" and first.reward == 1.0
  assert [c.correct for c in first.of("generator")] == [True, False, False]
  assert first.last("aggregator").correct is True and first.last("aggregator").value == 0
  assert second.final_answer == "5" and second.reward == 0.0
  assert [c.correct for c in second.of("generator")] == [False, True, True]
  assert second.last("aggregator").correct is False  # a correct candidate existed


@pytest.mark.parametrize("reply, final, index, failure", [
    ("3", "9", 2, ()),                           # a bare number in range
    ("Candidate 2 is the best.", "9", 1, ()),    # a named candidate
    ("so the answer is 5", "5", 0, ()),          # an answer matching a candidate
    ("7", "9", 1, ("bad_choice",)),              # out of range, not a candidate: majority
    ("no idea", "9", 1, ("bad_choice",)),
    ("", "9", 1, ("empty",)),
])
def test_aggregator_reply_forms_and_majority_fallback(reply, final, index, failure):
  episodes, _ = run(workflows.get("voting"), script(generator=["5", "9", "9"], aggregator=reply),
                    problems=PROBLEMS[:1], group_size=1)
  agg = episodes[0].last("aggregator")
  assert (episodes[0].final_answer, agg.value, agg.parsed.failures) == (final, index, failure)
  metrics = rollout.role_metrics(episodes)
  assert metrics.get(f"parse/aggregator/{failure[0]}" if failure else "none", 0) == len(failure)


def test_aggregator_correctness_undefined_without_a_correct_candidate():
  episodes, _ = run(workflows.get("voting"), script(generator="4", aggregator="1"),
                    problems=PROBLEMS[:1], group_size=1)
  assert episodes[0].last("aggregator").correct is None
  assert "accuracy/aggregator" not in rollout.role_metrics(episodes)


def test_majority_vote_counts_equivalent_answers_and_breaks_ties_early():
  wf = workflows.get("majority_vote", n=4)
  episodes, calls = run(wf, script(generator=["7", "none", "5.0", "5"]), problems=PROBLEMS[:1],
                        group_size=1)
  assert roles_per_sampler_call(calls) == [["generator", 4]]
  assert episodes[0].final_answer == "5.0" and episodes[0].reward == 1.0  # 5.0 == 5
  assert rollout.role_metrics(episodes)["parse/generator/no_answer"] == 1
  tie, _ = run(workflows.get("majority_vote", n=2), script(generator=["7", "5"]),
               problems=PROBLEMS[:1], group_size=1)
  assert tie[0].final_answer == "7"


def test_eval_opt_refines_until_k_rounds_on_incorrect():
  wf = workflows.get("eval_opt")
  episodes, calls = run(wf, script(generator=["1", "2", "3"], evaluator="incorrect: too small"),
                        problems=PROBLEMS[:1], group_size=1)
  assert roles_per_sampler_call(calls) == [["generator", 1], ["evaluator", 1]] * 2 + [
      ["generator", 1]]
  episode = episodes[0]
  assert [c.turn for c in episode.of("generator")] == [0, 1, 2]
  assert [c.turn for c in episode.of("evaluator")] == [0, 1]
  assert "Your answer:\n2\nFeedback: too small" in calls[4][0][1]
  assert episode.final_answer == "3"
  assert [c.correct for c in episode.of("evaluator")] == [True, True]  # 1 and 2 are wrong


def test_eval_opt_round_limit_follows_the_family_and_options():
  respond = script(generator="1", evaluator="incorrect")
  code_eps, _ = run(workflows.get("eval_opt"), respond, task=CodeLikeArithmetic(),
                    problems=PROBLEMS[:1], group_size=1)
  assert [c.role for c in code_eps[0].calls] == ["generator", "evaluator", "generator"]
  one, _ = run(workflows.get("eval_opt", max_rounds=1), respond, problems=PROBLEMS[:1],
               group_size=1)
  assert [c.role for c in one[0].calls] == ["generator"]
  judged, _ = run(workflows.get("eval_opt", max_rounds=2, judge_last=True), respond,
                  problems=PROBLEMS[:1], group_size=1)
  assert [c.role for c in judged[0].calls] == ["generator", "evaluator"] * 2


def test_eval_opt_stops_on_correct_and_later_stages_hold_only_active_episodes():
  # Problem 0's evaluator approves; problem 1's rejects, so only its episodes go on.
  verdicts = lambda prompt: "Correct." if "2+3=" in prompt else "incorrect: redo"
  episodes, calls = run(workflows.get("eval_opt"), script(generator="5", evaluator=verdicts))
  assert [len(rows) for rows in calls] == [4, 4, 2, 2, 2]
  assert all(e.done and len(e.calls) == 2 for e in episodes[:2])
  assert all(not e.done and len(e.calls) == 5 for e in episodes[2:])


def test_eval_opt_unparseable_verdict_stops_and_is_counted():
  episodes, _ = run(workflows.get("eval_opt"), script(generator="5", evaluator="maybe?"),
                    problems=PROBLEMS[:1], group_size=1)
  episode = episodes[0]
  assert [c.role for c in episode.calls] == ["generator", "evaluator"]
  assert episode.last("evaluator").correct is False and episode.reward == 1.0
  assert rollout.role_metrics(episodes)["parse/evaluator/no_verdict"] == 1


def test_orch_workers_pads_short_plans_and_synthesizer_picks():
  wf = workflows.get("orch_workers", m=3)
  respond = script(orchestrator="1. add them\n- count up", worker=["4", "5", "5"],
                   synthesizer="2")
  episodes, calls = run(wf, respond, problems=PROBLEMS[:1], group_size=1)
  assert roles_per_sampler_call(calls) == [["orchestrator", 1], ["worker", 3], ["synthesizer", 1]]
  strategies = [prompt.split("Strategy: ")[1].split("\n")[0] for _, prompt in calls[1]]
  assert strategies == ["add them", "count up", parsing.FALLBACK_STRATEGY]
  episode = episodes[0]
  assert episode.last("orchestrator").parsed.failures == ("too_few",)
  assert episode.final_answer == "5" and episode.last("synthesizer").correct is True
  assert [c.correct for c in episode.of("worker")] == [False, True, True]
  assert episode.last("orchestrator").correct is None


@pytest.mark.parametrize("synth, final, failures", [
    ("I get 5 myself", "5", ()),      # its own answer, not a worker's
    ("???", "4", ("bad_choice",)),    # majority of workers 4, 4, 6
])
def test_synthesizer_own_answer_and_fallback(synth, final, failures):
  respond = script(orchestrator="a\nb\nc\nd", worker=["4", "4", "6"], synthesizer=synth)
  episodes, _ = run(workflows.get("orch_workers"), respond, problems=PROBLEMS[:1], group_size=1)
  assert episodes[0].last("orchestrator").parsed.failures == ("too_many",)
  assert episodes[0].last("orchestrator").value == ("a", "b", "c")
  assert episodes[0].final_answer == final
  assert episodes[0].last("synthesizer").parsed.failures == failures


def test_empty_and_truncated_completions_have_defined_outcomes():
  episodes, _ = run(workflows.get("single"), script(generator=["", "x" * 60 + " 9"]),
                    problems=PROBLEMS[1:], new_tokens=8)
  empty, cut = episodes[0].calls[0], episodes[1].calls[0]
  assert empty.parsed.failures == ("empty",) and empty.answer is None and episodes[0].reward == 0
  assert cut.truncated and cut.completion_tokens == TOK.encode("x" * 8)
  assert cut.parsed.failures == ("truncated", "no_answer")
  metrics = rollout.role_metrics(episodes)
  assert metrics["parse/generator/empty"] == 1 and metrics["parse/generator/truncated"] == 1


def test_per_role_token_limits_cut_rows_and_truncate_prompts_from_the_left():
  wf = workflows.get("voting")
  episodes, calls = run(wf, script(generator="5", aggregator="1 because"), group_size=1,
                        problems=PROBLEMS[:1], max_new_tokens={"aggregator": 2},
                        max_prompt_len={"aggregator": 20})
  agg = episodes[0].last("aggregator")
  assert agg.completion_tokens == TOK.encode("1 ") and agg.truncated and agg.value == 0
  assert len(agg.logprobs) == 2
  full_prompt = TOK.apply_chat_template([{"role": "user", "content": wf.prompt(
      wf.groups[1][0], episodes[0], 0)}])
  assert agg.prompt_tokens == full_prompt[-20:] and agg.prompt_truncated
  assert not any(c.prompt_truncated or c.truncated for c in episodes[0].of("generator"))
  assert rollout.role_metrics(episodes)["prompt_truncated/aggregator"] == 1


def test_user_defined_workflow_runs_parallel_roles_in_one_sampler_call():
  workflows.register("second_opinion", second_opinion)
  wf = workflows.get("second_opinion", n=2)
  respond = script(solver=["4", "9"], skeptic="5", referee="3")
  episodes, calls = run(wf, respond, problems=PROBLEMS[:1], group_size=2)
  assert roles_per_sampler_call(calls) == [["skeptic", "solver", 6], ["referee", 2]]
  assert [c.role for c in episodes[0].calls] == ["solver", "solver", "skeptic", "referee"]
  assert all(e.final_answer == "5" and e.reward == 1.0 for e in episodes)


def test_calls_per_role_sums_the_agents_of_every_stage_of_the_role():
  """What a rollout session splits full copies' decode slots by (PolicyStore.session)."""
  assert workflows.get("voting", n=3).calls_per_role == {"generator": 3, "aggregator": 1}
  assert workflows.get("orch_workers", m=4).calls_per_role == {
      "orchestrator": 1, "worker": 4, "synthesizer": 1}
  # every stage counts, one that runs only in some episodes (its `when`) too
  assert workflows.get("eval_opt", max_rounds=2).calls_per_role == {
      "generator": 2, "evaluator": 2}
  workflows.register("second_opinion", second_opinion)
  assert workflows.get("second_opinion", n=2).calls_per_role == {
      "solver": 2, "skeptic": 1, "referee": 1}


def test_prompt_overrides_and_user_errors():
  wf = workflows.get("voting", prompts={("voting/aggregator", "math"): "Pick: {candidates}"})
  _, calls = run(wf, script(generator="5", aggregator="1"), problems=PROBLEMS[:1], group_size=1)
  assert calls[1][0][1].startswith("Pick: 1) 5")
  with pytest.raises(ValueError, match="voting/aggregator"):
    workflows.get("voting", prompts={("aggregator", "math"): "x"})
  with pytest.raises(ValueError, match="available.*eval_opt"):
    workflows.get("debate")
  with pytest.raises(ValueError, match="no option 'k'.*max_rounds"):
    workflows.get("eval_opt", k=2)
  with pytest.raises(ValueError, match="view"):
    workflows.get("voting", view="summary")
  with pytest.raises(ValueError, match="unknown roles \\['critic'\\]"):
    run(workflows.get("single"), script(generator="5"), max_new_tokens={"critic": 3})
  bad_field = workflows.get("single", prompts={("single/generator", "math"): "{question}"})
  with pytest.raises(ValueError, match="field 'question'"):
    run(bad_field, script(generator="5"))


def test_a_stage_that_reads_a_call_the_episode_lacks_is_named():
  """A stage (or the final rule) reading the calls of a role whose stage did not run
  for this episode: one error naming the workflow, the episode, the reader and the role."""
  voting = workflows.get("voting")
  generator, aggregator = voting.stages
  odd = lambda episode: episode.id % 2 == 1
  skipped = dataclasses.replace(voting, stages=(
      dataclasses.replace(generator, when=odd), aggregator))
  with pytest.raises(workflows.MissingCall, match=r"workflow 'voting', episode 0: the "
                     r"'aggregator' stage reads the 'generator' calls, which this episode does "
                     r"not have\. Put a stage of 'generator' before it"):
    run(skipped, script(generator="5", aggregator="1"))
  no_final = dataclasses.replace(voting, stages=(generator,))
  with pytest.raises(workflows.MissingCall, match=r"episode 0: its final-answer rule reads the "
                     r"'aggregator' calls"):
    run(no_final, script(generator="5"))


def test_role_metrics_count_calls_tokens_rewards_and_accuracy():
  episodes, _ = run(workflows.get("voting"), script(generator=["5", "9", "9"], aggregator="1"))
  metrics = rollout.role_metrics(episodes)
  assert metrics["episodes"] == 4 and metrics["reward/mean"] == 0.5
  assert metrics["calls/generator"] == 12 and metrics["calls/aggregator"] == 4
  assert metrics["completion_tokens/generator"] == 24  # one digit + EOS each
  assert metrics["response_length/aggregator"] == 2
  assert metrics["accuracy/generator"] == 0.5
  assert metrics["accuracy/aggregator"] == 0.5 and metrics["reward/aggregator"] == 0.5


def test_parsers_directly_tiny_style():
  tiny = {"style": "tiny"}
  assert parsing.choice("#2.", ["1", "2"], TASK.extract, **tiny).value == 1
  picked = parsing.choice("so it is 1/2", ["0.25", "0.5"], TASK.extract, same=TASK.same_answer,
                          **tiny)
  assert (picked.value, picked.answer, picked.failures) == (1, "0.5", ())
  assert parsing.verdict("INCORRECT - off by one", "5", **tiny).value == parsing.Verdict(
      False, "off by one")
  assert parsing.verdict("This is not correct: carry the 1", None, **tiny).value.feedback == (
      "carry the 1")
  assert parsing.verdict("Correct!", "5", **tiny).value.correct
  unread = parsing.verdict("maybe?", "5", **tiny)
  assert unread.failures == ("no_verdict",) and unread.value == parsing.Verdict(
      False, readable=False)  # never an approval by default
  assert parsing.strategies("Strategy 1: guess\n\n* check\n3) prove", 3, **tiny).value == (
      "guess", "check", "prove")
  assert parsing.majority([None, None]) is None
  with pytest.raises(ValueError, match="style 'char'"):
    parsing.verdict("correct", "5", style="char")
