"""The task interface: Problem/Score types, sampling, and the registry."""

import pytest

import marl_jax.tasks as tasks
from marl_jax.tasks import base


def _problems(n):
  return [base.Problem(f"p{i}", f"q{i}", str(i)) for i in range(n)]


def test_epoch_sampling_is_deterministic_and_without_replacement():
  problems = _problems(10)
  first_epoch = [p.id for s in range(5) for p in base.epoch_sample(problems, 2, 7, s)]
  assert sorted(first_epoch) == sorted(p.id for p in problems)
  assert base.epoch_sample(problems, 3, 7, 4) == base.epoch_sample(problems, 3, 7, 4)
  assert base.epoch_sample(problems, 3, 7, 4) != base.epoch_sample(problems, 3, 8, 4)
  second = [p.id for s in range(5, 10) for p in base.epoch_sample(problems, 2, 7, s)]
  assert sorted(second) == sorted(first_epoch) and second != first_epoch
  with pytest.raises(ValueError, match="positive"):
    base.epoch_sample(problems, 0, 0, 0)


def test_score_and_problem_types():
  assert base.Score(1.0, "correct").reward == 1.0
  with pytest.raises(ValueError, match="status"):
    base.Score(1.0, "right")
  assert base.Score(-0.1, "wrong").reward == -0.1  # penalties and partial credit are rewards
  with pytest.raises(ValueError, match="reward must be a finite number"):
    base.Score(float("nan"), "correct")
  problem = base.Problem("a", "b", "c", {"k": 1})
  assert problem == base.Problem("a", "b", "c", {"k": 2})
  assert hash(problem) == hash(base.Problem("a", "b", "c"))
  with pytest.raises(AttributeError):
    problem.id = "z"  # frozen


def test_verify_batch_checks_lengths():
  task = tasks.get("arithmetic")
  with pytest.raises(ValueError, match="2 problems but 1 answers"):
    task.verify_batch(task.problems("eval")[:2], ["1"])


def test_unknown_task_lists_the_available_ones():
  with pytest.raises(ValueError) as info:
    tasks.get("gsm9k")
  for name in ("gsm8k_jsonl", "math_jsonl", "dapo_jsonl", "tfds_gsm8k",
               "arithmetic", "humaneval", "mbpp_jsonl", "deepcoder_jsonl",
               "tiny_code"):
    assert name in str(info.value)
    assert name in tasks.available()


def test_unknown_option_lists_the_options():
  with pytest.raises(ValueError, match="no option 'digit'.*digits"):
    tasks.get("arithmetic", digit=3)


def test_unknown_split_lists_the_splits():
  with pytest.raises(ValueError, match=r"no split 'train'.*\('eval',\)"):
    tasks.get("humaneval").problems("train")


def test_every_task_has_the_interface():
  for name in tasks.available():
    assert "timeout_s" in tasks.options(name) or "strictness" in tasks.options(name)
  arithmetic, tiny = tasks.get("arithmetic"), tasks.get("tiny_code")
  assert arithmetic.kind == "math" and tiny.kind == "code"
  assert isinstance(arithmetic, tasks.Task) and isinstance(tiny, tasks.Task)
