"""Reward functions as plug-ins: shape a task's reward without subclassing Task.

A reward function takes a problem and the workflow's final text and returns
a float or a `Score`:

    def exact_match(problem: Problem, completion: str) -> float: ...

    @rewards.batched           # or one call for every answer of a step
    def judge(problems: Sequence[Problem], completions: Sequence[str]) -> list[float]: ...

`with_reward(task, fn)` keeps the task's problems and its verifier and
replaces the reward: a float is the reward and the task's own verdict still
says whether the answer is correct (so accuracy stays the task's ground
truth); a `Score` gives both. Rewards need not lie in [0, 1]: format
penalties and partial credit are fine. GRPO advantages are
(r - mean(group)) / std(group) with rl.normalize_std (the default), so only
differences within a group matter and a constant offset or scale has no
effect; without std normalisation the scale sets the step size.

From the command line: --config.task.reward_fn=my_pkg.rewards:exact_match
(the module is imported by name).
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable, Optional, Sequence

from marl_jax.tasks.base import Problem, Score, Task


class RewardError(RuntimeError):
  """A reward function raised or returned a non-finite value; `index` is the answer's."""

  def __init__(self, message: str, index: int):
    super().__init__(message)
    self.index = index


def batched(fn: Callable) -> Callable:
  """Marks fn as batched: fn(problems, completions) -> a reward per completion."""
  fn.batched = True
  return fn


def load(spec: str) -> Callable:
  """The function named 'package.module:function' (the module is imported)."""
  module_name, sep, attr = spec.partition(":")
  if not sep or not module_name or not attr:
    raise ValueError(f"task.reward_fn={spec!r} must be 'package.module:function'.")
  try:
    module = importlib.import_module(module_name)
  except ImportError as error:
    raise ValueError(f"task.reward_fn={spec!r}: module {module_name!r} cannot be imported "
                     f"({error}).") from error
  fn = getattr(module, attr, None)
  if not callable(fn):
    raise ValueError(f"task.reward_fn={spec!r}: {module_name} has no function {attr!r}.")
  return fn


class RewardTask(Task):
  """`task` with its reward computed by `fn` (module docstring)."""

  def __init__(self, task: Task, fn: Callable, name: str = ""):
    self.task, self.fn = task, fn
    # The task's own name: prompts and the tiny bases are chosen by it, and a
    # reward changes neither.
    self.name, self.kind = task.name, task.kind
    self.reward_name = name or getattr(fn, "__name__", "reward")
    self.batched = bool(getattr(fn, "batched", False))

  def __getattr__(self, attr: str) -> Any:  # the task's own knobs and helpers
    task = self.__dict__.get("task")  # absent while copy/pickle rebuild the object
    if task is None:
      raise AttributeError(attr)
    return getattr(task, attr)

  def problems(self, split: str, seed: Optional[int] = None) -> list:
    return self.task.problems(split, seed)

  def sample(self, split: str, n: int, seed: int = 0, step: int = 0) -> list:
    return self.task.sample(split, n, seed=seed, step=step)

  def extract(self, text: str) -> Optional[str]:
    return self.task.extract(text)

  def same_answer(self, a: str, b: str) -> bool:
    return self.task.same_answer(a, b)

  def verify(self, problem: Problem, text: str) -> Score:
    return self.verify_batch([problem], [text])[0]

  def verify_batch(self, problems: Sequence[Problem], texts: Sequence[str]) -> list:
    verdicts = self.task.verify_batch(problems, texts)
    if self.batched:
      values = self._call(lambda: list(self.fn(list(problems), list(texts))), None)
      if len(values) != len(texts):
        raise RewardError(f"batched reward function {self.reward_name} returned {len(values)} "
                          f"rewards for {len(texts)} completions.", 0)
    else:
      values = [self._call(lambda p=p, t=t: self.fn(p, t), i)
                for i, (p, t) in enumerate(zip(problems, texts))]
    return [self._score(v, verdict, problem, i)
            for i, (v, verdict, problem) in enumerate(zip(values, verdicts, problems))]

  def _call(self, thunk: Callable, index: Optional[int]) -> Any:
    try:
      return thunk()
    except Exception as error:  # pylint: disable=broad-except
      raise RewardError(f"reward function {self.reward_name} raised {type(error).__name__}: {error}",
                        index or 0) from error

  def _score(self, value: Any, verdict: Score, problem: Problem, index: int) -> Score:
    score = value if isinstance(value, Score) else None
    reward = score.reward if score else value
    try:
      reward = float(reward)
    except (TypeError, ValueError):
      reward = math.nan
    if not math.isfinite(reward):
      raise RewardError(f"reward function {self.reward_name} returned {value!r} for problem "
                        f"{problem.id!r}; a reward must be a finite number or a Score.", index)
    return score or Score(reward, verdict.status, verdict.detail)


def with_reward(task: Task, fn: Callable | str) -> RewardTask:
  """`task` rewarded by fn (a function or its 'package.module:function' name)."""
  name = fn if isinstance(fn, str) else ""
  return RewardTask(task, load(fn) if isinstance(fn, str) else fn, name=name.rpartition(":")[2])
