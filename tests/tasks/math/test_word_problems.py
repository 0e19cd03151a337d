"""The shipped GSM8K-format word problems: they parse as GSM8K, their answers
verify under marl_jax's math checker, and the generator reproduces them."""

import json

import pytest

import marl_jax.tasks as tasks
from marl_jax.tasks.math import word_problems


def _records(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_shipped_files_parse_as_gsm8k_and_their_answers_verify():
  task = tasks.get("gsm8k_jsonl", train_path=word_problems.TRAIN_FILE,
                   eval_path=word_problems.TEST_FILE)
  for split, size in (("train", 400), ("eval", 100)):
    problems = task.problems(split)
    assert len(problems) == size
    for problem in problems:
      # The worked solution is a model answer that must score correct, and the
      # reference is a small whole number (sized for a 135M model: operands under 10).
      assert task.verify(problem, problem.metadata["solution"]).status == "correct"
      assert 0 <= int(problem.reference) < 50
      assert task.verify(problem, f"#### {int(problem.reference) + 1}").status == "wrong"


def test_held_out_questions_never_appear_in_training():
  train = {r["question"] for r in _records(word_problems.TRAIN_FILE)}
  test = {r["question"] for r in _records(word_problems.TEST_FILE)}
  assert len(train) == 400 and len(test) == 100 and not train & test


def test_records_have_exactly_gsm8k_fields_and_annotations():
  for record in _records(word_problems.TEST_FILE):
    assert set(record) == {"question", "answer"}
    assert "<<" in record["answer"] and record["answer"].split("\n")[-1].startswith("#### ")


def test_generator_reproduces_the_shipped_files(tmp_path):
  paths = word_problems.write(str(tmp_path))
  for split, shipped in (("train", word_problems.TRAIN_FILE),
                         ("test", word_problems.TEST_FILE)):
    with open(paths[split], "rb") as new, open(shipped, "rb") as old:
      assert new.read() == old.read(), f"regenerate {shipped} (see word_problems' docstring)"


def test_check_catches_a_wrong_answer():
  record = {"question": "q", "answer": "It is 2+3 = <<2+3=5>>5.\n#### 6"}
  with pytest.raises(ValueError, match="does not match"):
    word_problems.check(record, 5, "x")
  record = {"question": "q", "answer": "It is 2+3 = <<2+3=6>>6.\n#### 6"}
  with pytest.raises(ValueError, match="annotation"):
    word_problems.check(record, 6, "x")
