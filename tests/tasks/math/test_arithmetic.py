"""Synthetic arithmetic: values, knobs, determinism, and disjoint splits."""

import pytest

import marl_jax.tasks as tasks
from marl_jax.tasks.math import arithmetic


def test_evaluate_respects_precedence():
  assert arithmetic.evaluate([2, 3, 4], ["+", "*"]) == 14
  assert arithmetic.evaluate([2, 3, 4], ["*", "-"]) == 2
  assert arithmetic.evaluate([10, 3, 2, 5], ["-", "*", "+"]) == 9
  assert arithmetic.evaluate([7], []) == 7


def test_prompts_are_short_ascii_and_references_correct():
  task = tasks.get("arithmetic", digits=3, operators="+-*", terms=3)
  for problem in task.problems("eval")[:50] + task.sample("train", 50, seed=1, step=2):
    expression = problem.prompt[:-1]
    assert problem.prompt.endswith("=") and problem.prompt.isascii()
    assert len(problem.prompt) <= 3 * 3 + 2 + 1
    assert set(expression) <= set("0123456789+-*")
    assert int(problem.reference) == eval(expression)  # pylint: disable=eval-used


def test_knobs_shape_the_problems():
  task = tasks.get("arithmetic", digits=1, operators="*", terms=4)
  for problem in task.sample("train", 30, seed=0, step=0):
    assert problem.prompt.count("*") == 3
    assert all(len(t) == 1 for t in problem.prompt[:-1].split("*"))


def test_splits_are_disjoint_across_seeds_and_steps():
  task = tasks.get("arithmetic", digits=1, operators="+-", terms=2,
                   eval_fraction=0.25, train_size=500, eval_size=100)
  eval_set = {p.prompt for p in task.problems("eval")}
  train_set = {p.prompt for p in task.problems("train")}
  for seed in range(3):
    for step in range(20):
      train_set |= {p.prompt for p in task.sample("train", 32, seed=seed, step=step)}
      eval_set |= {p.prompt for p in task.sample("eval", 8, seed=seed, step=step)}
  # The space holds 200 expressions: every one is seen, each in one split.
  assert len(train_set) + len(eval_set) == 200
  assert not train_set & eval_set
  assert 25 <= len(eval_set) <= 75


def test_fixed_sets_are_distinct_and_deterministic():
  a = tasks.get("arithmetic", eval_size=300)
  b = tasks.get("arithmetic", eval_size=300)
  assert [p.id for p in a.problems("eval")] == [p.id for p in b.problems("eval")]
  assert len({p.id for p in a.problems("eval")}) == 300
  assert a.problems("eval", seed=1) != a.problems("eval")
  assert sorted(p.id for p in a.problems("eval", seed=1)) == sorted(
      p.id for p in a.problems("eval"))
  assert a.sample("train", 16, seed=4, step=9) == b.sample("train", 16, seed=4, step=9)
  assert a.sample("train", 16, seed=4, step=9) != a.sample("train", 16, seed=4, step=10)
  assert tasks.get("arithmetic", data_seed=1).problems("eval") != a.problems("eval")


def test_verification():
  task = tasks.get("arithmetic")
  problem = task.problems("eval")[0]
  assert task.verify(problem, problem.reference).status == "correct"
  assert task.verify(problem, f"{problem.prompt}{problem.reference}").status == "correct"
  assert task.verify(problem, str(int(problem.reference) + 1)).status == "wrong"
  assert task.verify(problem, "?").status == "unparsable"
  assert task.same_answer("12", "12.0") and not task.same_answer("12", "21")


@pytest.mark.parametrize("options,message", [
    ({"digits": 0}, "digits"), ({"operators": "+/"}, "operators"),
    ({"terms": 1}, "terms"), ({"eval_fraction": 1.0}, "eval_fraction"),
    ({"train_size": 0}, "train_size"), ({"strictness": "x"}, "strictness"),
])
def test_bad_knobs_are_named(options, message):
  with pytest.raises(ValueError, match=message):
    tasks.get("arithmetic", **options)


def test_an_empty_split_is_reported():
  task = tasks.get("arithmetic", digits=1, operators="+", terms=2,
                   eval_fraction=0.001)
  with pytest.raises(ValueError, match="no eval problems"):
    task.problems("eval")
