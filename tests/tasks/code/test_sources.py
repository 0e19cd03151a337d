"""MBPP, DeepCoder/LiveCodeBench and tiny_code sources: loading, checking, bad input."""

import json

import pytest

import marl_jax.tasks as tasks
from marl_jax.tasks import jsonl

MBPP = [
    {"task_id": 2, "text": "Write a function to find the similar elements "
     "from the given two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple("
             "set(test_tup1) & set(test_tup2))\r\n  return (res) ",
     "test_list": ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                   "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
     "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in "
             "range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n"
             "            result = True\r\n    return result",
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                   "assert is_not_prime(35) == True"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 900, "text": "Write a function that doubles every item.",
     "code": "def double_all(xs):\n    return [2 * x for x in xs]",
     "test_list": ["assert double_all(DATA) == [2, 4, 6]"],
     "test_setup_code": "DATA = [1, 2, 3]", "challenge_test_list": []},
]

DEEPCODER = [
    {"problem": "Read two integers and print their sum.",
     "tests": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
                          {"input": "-5 5\n", "output": "0\n", "testtype": "stdin"}]),
     "metadata": "{}"},
    {"problem": "Return indices of the two numbers adding up to target.",
     "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], "
                     "target: int) -> List[int]:\n        ",
     "tests": [{"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"},
               {"input": "[3,2,4]\n6", "output": "[1, 2]", "testtype": "functional"}],
     "metadata": {"func_name": "twoSum"}},
    {"question": "Square a number.",
     "tests": {"inputs": [[3], [-4]], "outputs": [9, 16], "fn_name": "square"}},
]
DEEPCODER_SOLUTIONS = [
    "a, b = map(int, input().split())\nprint(a + b)",
    "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
    "        seen = {}\n        for i, n in enumerate(nums):\n"
    "            if target - n in seen:\n                return (seen[target - n], i)\n"
    "            seen[n] = i\n",
    "def square(x):\n    return x * x\n",
]


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def test_mbpp_reference_solutions_pass_and_wrong_ones_fail(tmp_path):
  task = tasks.get("mbpp_jsonl", train_path=_write(tmp_path / "mbpp.jsonl", MBPP))
  problems = task.problems("train")
  assert [p.id for p in problems] == ["mbpp:2", "mbpp:3", "mbpp:900"]
  assert "similar_elements((3, 4, 5, 6)" in problems[0].prompt
  good = task.verify_batch(problems, [p.reference.solution for p in problems])
  assert [s.status for s in good] == ["correct"] * 3
  wrong = task.verify(problems[1], "def is_not_prime(n):\n    return n % 2 == 0\n")
  assert wrong.status == "wrong"
  with pytest.raises(ValueError, match="no split 'eval'"):
    task.problems("eval")


def test_deepcoder_stdin_and_functional_tests(tmp_path):
  task = tasks.get("deepcoder_jsonl",
                   eval_path=_write(tmp_path / "dc.jsonl", DEEPCODER))
  problems = task.problems("eval")
  assert problems[0].reference.io_cases == (("1 2\n", "3\n"), ("-5 5\n", "0\n"))
  assert "class Solution" in problems[1].prompt
  scores = task.verify_batch(problems, [f"```python\n{s}\n```" for s in DEEPCODER_SOLUTIONS])
  assert [s.status for s in scores] == ["correct"] * 3
  wrong = ["print(0)", DEEPCODER_SOLUTIONS[1].replace("i)", "i + 1)"),
           "def square(x):\n    return x + x\n"]
  assert [s.status for s in task.verify_batch(problems, wrong)] == ["wrong"] * 3


@pytest.mark.parametrize("name,record,message", [
    ("mbpp_jsonl", {"text": "t", "code": "c"}, "missing field 'test_list'"),
    ("mbpp_jsonl", {"text": "t", "code": "c", "test_list": "assert 1"},
     "field 'test_list' must be list"),
    ("deepcoder_jsonl", {"problem": "p"}, "missing field 'tests'"),
    ("deepcoder_jsonl", {"problem": "p", "tests": "[{"}, "'tests' holds malformed JSON"),
    ("deepcoder_jsonl", {"problem": "p", "tests": [{"input": "1", "output": "1",
                                                   "testtype": "fuzz"}]},
     "unknown testtype 'fuzz'"),
    ("deepcoder_jsonl", {"problem": "p", "tests": [{"input": "1", "output": "1",
                                                   "testtype": "functional"}]},
     "metadata.func_name"),
    ("deepcoder_jsonl", {"tests": []}, "missing field 'problem'"),
])
def test_bad_records_name_file_line_and_field(tmp_path, name, record, message):
  path = _write(tmp_path / "data.jsonl", [MBPP[0] if name == "mbpp_jsonl"
                                          else DEEPCODER[0], record])
  with pytest.raises(jsonl.DataError, match=message) as info:
    tasks.get(name, train_path=path).problems("train")
  assert f"{path}:2" in str(info.value)


def test_malformed_json_line_names_file_and_line(tmp_path):
  path = tmp_path / "broken.jsonl"
  path.write_text(json.dumps(MBPP[0]) + "\n\n{not json\n")
  with pytest.raises(jsonl.DataError, match=r"broken.jsonl:3: malformed JSON"):
    tasks.get("mbpp_jsonl", train_path=str(path)).problems("train")


def test_missing_file_is_named(tmp_path):
  task = tasks.get("deepcoder_jsonl", train_path=str(tmp_path / "nope.jsonl"))
  with pytest.raises(jsonl.DataError, match="nope.jsonl"):
    task.problems("train")


def test_tiny_code_splits_are_disjoint_by_behaviour():
  task = tasks.get("tiny_code", operators="+-*", depth=2, max_const=5,
                   train_size=300, eval_size=60, eval_fraction=0.2)
  def behaviour(problem):
    return tuple(eval(problem.reference.solution.split("return ")[1],  # pylint: disable=eval-used
                      {"x": x}) for x in range(16))
  train = {behaviour(p) for p in task.problems("train")}
  evals = {behaviour(p) for p in task.problems("eval")}
  for step in range(20):
    train |= {behaviour(p) for p in task.sample("train", 16, seed=3, step=step)}
  assert len(evals) > 10 and len(train) > 50
  assert not train & evals


def test_tiny_code_prompts_are_short_ascii_and_solutions_check():
  task = tasks.get("tiny_code", operators="+*%", depth=3, shown=2, hidden=4)
  problems = task.problems("eval")[:6]
  for problem in problems:
    assert problem.prompt.isascii() and len(problem.prompt) < 80
    assert problem.prompt.count("\n") == 2 and problem.prompt.endswith("return ")
    assert problem.reference.tests.count("assert") == 4
  answers = [p.reference.solution.split("return ")[1] for p in problems]
  assert all(s.reward == 1.0 for s in task.verify_batch(problems, answers))
  wrong = [a + "+1" for a in answers]
  assert not any(s.reward for s in task.verify_batch(problems, wrong))


def test_tiny_code_extraction_forms():
  task = tasks.get("tiny_code")
  assert task.extract("x*3+2") == "def f(x): return x*3+2"
  assert task.extract("return x*3+2\nmore text") == "def f(x): return x*3+2"
  assert task.extract("```python\ndef f(x):\n    return x\n```") == \
      "def f(x):\n    return x"
  assert task.extract("   ") is None


def test_tiny_code_knobs_are_validated():
  with pytest.raises(ValueError, match="operators"):
    tasks.get("tiny_code", operators="/")
  with pytest.raises(ValueError, match="distinct inputs"):
    tasks.get("tiny_code", shown=10, hidden=10, max_input=5)
