"""Reward functions as plug-ins: shaped rewards, the verifier's accuracy, clear failures."""

import math
import os

import pytest

from marl_jax import tasks
from marl_jax.tasks import rewards
from marl_jax.trainer import loop as train
from marl_jax.trainer.metrics import read_jsonl
from marl_jax.workflows.examples import partial_credit
from tests.helpers import tiny_config

EXAMPLE = "marl_jax.workflows.examples.partial_credit"


def _problems(task, n=3):
  return task.sample("train", n, seed=0, step=0)


def test_a_float_reward_shapes_the_reward_and_the_verifier_keeps_the_verdict():
  task = rewards.with_reward(tasks.get("countdown"), partial_credit.partial_credit)
  problem = _problems(task, 1)[0]
  right, near = int(problem.reference), int(problem.reference) + 1
  scores = task.verify_batch([problem] * 4, [str(right), str(near), f"It is {right}.", "no idea"])
  assert [s.reward for s in scores] == pytest.approx([1.0, 0.25, 0.9, -0.1])
  assert [s.status for s in scores][:2] == ["correct", "wrong"]
  assert scores[2].status == "correct"  # the task's own lenient reading still finds it
  assert task.kind == "math" and task.name == "countdown"
  assert task.prompt_family == "tiny_math"  # the inner task's, so the prompts do not change


def test_a_score_is_taken_whole_and_a_batched_function_is_called_once():
  calls = []

  @rewards.batched
  def judge(problems, completions):
    calls.append(len(completions))
    return [tasks.Score(2.0, "correct", "judged") for _ in completions]

  task = rewards.with_reward(tasks.get("arithmetic"), judge)
  problems = _problems(task)
  scores = task.verify_batch(problems, ["1"] * len(problems))
  assert calls == [len(problems)]
  assert all(s.reward == 2.0 and s.status == "correct" and s.detail == "judged" for s in scores)


@pytest.mark.parametrize("value, match", [
    (math.nan, r"returned nan for problem 'arithmetic:"),
    ("high", r"returned 'high' for problem"),
])
def test_a_non_finite_reward_names_the_problem(value, match):
  task = rewards.with_reward(tasks.get("arithmetic"), lambda p, c: value)
  with pytest.raises(rewards.RewardError, match=match):
    task.verify_batch(_problems(task, 1), ["3"])


def test_a_reward_that_raises_is_named_with_its_error():
  def broken(problem, completion):
    raise KeyError("score table")

  task = rewards.with_reward(tasks.get("arithmetic"), broken)
  with pytest.raises(rewards.RewardError, match="reward function broken raised "
                                                "KeyError"):
    task.verify_batch(_problems(task, 1), ["3"])


@pytest.mark.parametrize("spec, match", [
    ("no_colon", "must be 'package.module:function'"),
    ("no_such_pkg.mod:f", "module 'no_such_pkg.mod' cannot be imported"),
    (f"{EXAMPLE}:missing", "has no function 'missing'"),
])
def test_bad_reward_names_say_what_is_wrong(spec, match):
  with pytest.raises(ValueError, match=match):
    rewards.load(spec)


def _countdown_config(reward_fn: str):
  config = tiny_config(f"workflow=single,import={EXAMPLE}", steps=1)
  config.task.name = "countdown"
  config.task.reward_fn = reward_fn
  return config


def test_a_custom_task_and_reward_train_from_the_config(tmp_path):
  config = _countdown_config(f"{EXAMPLE}:partial_credit")
  assert isinstance(tasks.from_config(config.task), rewards.RewardTask)
  train.train_and_evaluate(config, str(tmp_path))
  last = read_jsonl(str(tmp_path / "metrics.jsonl"))[-1]
  assert last["step"] == 1 and "reward/mean" in last and 0.0 <= last["accuracy"] <= 1.0


def broken_reward(problem, completion):
  raise ZeroDivisionError("division by zero")


def test_a_failing_reward_stops_the_step_naming_problem_and_role_without_a_checkpoint(tmp_path):
  config = _countdown_config(f"{__name__}:broken_reward")
  config.eval.num_problems = 1
  with pytest.raises(rewards.RewardError, match=r"problem 'arithmetic:\d+-\d+'.*checkpoint"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.isdir(tmp_path / "checkpoints" / "1")


def test_a_rewarded_task_copies_and_pickles_whole():
  import copy
  import pickle
  task = rewards.with_reward(tasks.get("countdown"), partial_credit.partial_credit)
  for clone in (copy.deepcopy(task), pickle.loads(pickle.dumps(task))):
    assert clone.name == "countdown" and clone.prompt_family == "tiny_math"
    problem = _problems(clone, 1)[0]
    assert clone.verify(problem, problem.reference).reward == 1.0
