"""The task interface: problems for train/eval splits, and verified rewards.

A `Task` yields `Problem`s deterministically from a seed and turns a model's
raw final text into a `Score` (a reward plus a status; the built-in tasks
reward 1 for correct and 0 otherwise, a reward function of your own may give
any finite number: marl_jax.tasks.rewards). Workflows
also call `extract` and `same_answer` to compare intermediate answers (a
voter's own answer, a worker's solution), and `verify` on any of them.
"""

import abc
import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import numpy as np

SPLITS = ("train", "eval")
STATUSES = ("correct", "wrong", "unparsable", "timeout", "error")


@dataclasses.dataclass(frozen=True)
class Problem:
  """One problem. `reference` is the answer (math) or a CodeReference (code)."""
  id: str
  prompt: str
  reference: Any
  metadata: dict = dataclasses.field(default_factory=dict, hash=False,
                                     compare=False)


@dataclasses.dataclass(frozen=True)
class Score:
  """A verified answer: a finite reward, status in STATUSES ('correct' is what
  accuracy counts), and why."""
  reward: float
  status: str
  detail: str = ""

  def __post_init__(self):
    if self.status not in STATUSES:
      raise ValueError(f"Score.status must be one of {STATUSES}, got {self.status!r}")
    if not math.isfinite(self.reward):
      raise ValueError(f"Score.reward must be a finite number, got {self.reward!r}")


def check_split(task_name: str, split: str, available: Sequence[str]) -> None:
  if split not in available:
    raise ValueError(f"task {task_name!r} has no split {split!r}; "
                     f"its splits are {tuple(available)}")


def epoch_sample(problems: Sequence[Problem], n: int, seed: int,
                 step: int) -> list:
  """Batch `step` of size n from a without-replacement stream of epochs.

  Epoch e is the permutation of `problems` drawn from (seed, e), so batch
  `step` is a pure function of (seed, step): resuming needs only the step.
  """
  if n <= 0:
    raise ValueError(f"sample size n must be positive, got {n}")
  if not problems:
    raise ValueError("cannot sample from an empty split")
  size, orders, out = len(problems), {}, []
  for index in range(step * n, step * n + n):
    epoch, offset = divmod(index, size)
    if epoch not in orders:
      orders[epoch] = np.random.default_rng([seed, epoch]).permutation(size)
    out.append(problems[int(orders[epoch][offset])])
  return out


class Task(abc.ABC):
  """A source of problems plus the verifier of answers to them."""

  name: str = ""
  kind: str = ""  # "math" or "code"
  splits: tuple = SPLITS

  @abc.abstractmethod
  def problems(self, split: str, seed: Optional[int] = None) -> list:
    """All problems of a split: source order, or permuted by `seed`."""

  def sample(self, split: str, n: int, seed: int = 0, step: int = 0) -> list:
    """The n problems for training step `step`; deterministic in (seed, step)."""
    return epoch_sample(self.problems(split), n, seed, step)

  @abc.abstractmethod
  def extract(self, text: str) -> Optional[str]:
    """The answer (math) or program (code) in model text, or None."""

  @abc.abstractmethod
  def same_answer(self, a: str, b: str) -> bool:
    """Whether two extracted answers count as the same vote."""

  @abc.abstractmethod
  def verify(self, problem: Problem, text: str) -> Score:
    """Scores raw model text (final or intermediate) against the problem."""

  def verify_batch(self, problems: Sequence[Problem],
                   texts: Sequence[str]) -> list:
    """Scores many answers; code tasks run them in parallel sandboxes."""
    if len(problems) != len(texts):
      raise ValueError(f"verify_batch got {len(problems)} problems but "
                       f"{len(texts)} answers")
    return [self.verify(p, t) for p, t in zip(problems, texts)]


def permuted(problems: list, seed: Optional[int]) -> list:
  if seed is None:
    return list(problems)
  order = np.random.default_rng(seed).permutation(len(problems))
  return [problems[int(i)] for i in order]


class LoadedTask(Task, abc.ABC):
  """A task whose splits are loaded once, lazily, by per-split loaders."""

  def __init__(self, name: str, loaders: dict):
    self.name = name
    self._loaders: dict = dict(loaders)
    self.splits = tuple(s for s in SPLITS if s in self._loaders)
    self._cache: dict = {}
    self.sources: dict = {}  # split -> where its problems come from, for errors

  def problems(self, split: str, seed: Optional[int] = None) -> list:
    if split in SPLITS and split not in self.splits:
      raise ValueError(f"task {self.name!r} has no split {split!r} (its splits: "
                       f"{self.splits}); give its data file (a run's config: "
                       f"--config.task.{split}_path=...)")
    check_split(self.name, split, self.splits)
    if split not in self._cache:
      loader: Callable[[], list] = self._loaders[split]
      self._cache[split] = loader()
    return permuted(self._cache[split], seed)

  def sample(self, split: str, n: int, seed: int = 0, step: int = 0) -> list:
    """As Task.sample; the eval split refuses to repeat a problem, which
    would weigh it twice in an accuracy that reads as over n problems."""
    problems = self.problems(split)
    if split == "eval" and n > len(problems):
      source = self.sources.get(split)
      raise ValueError(
          f"task {self.name!r}: {n} eval problems asked, but the eval split"
          f"{f' ({source})' if source else ''} has {len(problems)}; ask for at most "
          f"{len(problems)} (a run's config: --config.eval.num_problems="
          f"{len(problems)}) or give a larger eval file")
    return epoch_sample(problems, n, seed, step)
