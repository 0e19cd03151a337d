"""Base of generated tasks: fixed eval/train sets plus an endless train stream.

An item's split is a pure function of a key (a stable hash bucket), so the
train and eval splits are disjoint for every seed and step.
"""

import abc
import hashlib
from typing import Optional

import numpy as np

from marl_jax.tasks import base

_SPLIT_SALT = {"train": 1, "eval": 2}


def split_of(key: str, eval_fraction: float) -> str:
  """'eval' for the `eval_fraction` of keys whose hash falls lowest."""
  digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
  bucket = int.from_bytes(digest, "little") / 2.0**64
  return "eval" if bucket < eval_fraction else "train"


class SyntheticTask(base.Task, abc.ABC):
  """Subclasses draw items; this class sorts them into splits."""

  def __init__(self, train_size: int, eval_size: int, eval_fraction: float,
               data_seed: int):
    if not 0.0 < eval_fraction < 1.0:
      raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction!r}")
    for name, size in (("train_size", train_size), ("eval_size", eval_size)):
      if not (isinstance(size, int) and size > 0):
        raise ValueError(f"{name} must be a positive int, got {size!r}")
    self.sizes = {"train": train_size, "eval": eval_size}
    self.eval_fraction, self.data_seed = eval_fraction, data_seed
    self._fixed: dict = {}

  @abc.abstractmethod
  def draw(self, rng: np.random.Generator) -> tuple:
    """A random (text, item); `text` identifies the problem."""

  @abc.abstractmethod
  def split_key(self, text: str, item) -> str:
    """The string whose hash decides the split (equal for equal problems)."""

  @abc.abstractmethod
  def make_problem(self, text: str, item, rng: np.random.Generator) -> base.Problem:
    """The Problem for a drawn item."""

  def _generate(self, split: str, n: int, rng: np.random.Generator,
                distinct: bool) -> list:
    """n problems of `split`; fewer only if the split's space is exhausted."""
    out, seen = [], set()
    for _ in range(200 * n + 1000):
      if len(out) == n:
        break
      text, item = self.draw(rng)
      if (split_of(self.split_key(text, item), self.eval_fraction) != split
          or (distinct and text in seen)):
        continue
      seen.add(text)
      out.append(self.make_problem(text, item, rng))
    if not out:
      raise ValueError(f"task {self.name!r} with these options has no {split} "
                       "problems; widen its knobs or change eval_fraction")
    return out

  def problems(self, split: str, seed: Optional[int] = None) -> list:
    """The split's fixed, distinct problems (from data_seed), permuted by seed."""
    base.check_split(self.name, split, self.splits)
    if split not in self._fixed:
      rng = np.random.default_rng([self.data_seed, _SPLIT_SALT[split]])
      self._fixed[split] = self._generate(split, self.sizes[split], rng, True)
    return base.permuted(self._fixed[split], seed)

  def sample(self, split: str, n: int, seed: int = 0, step: int = 0) -> list:
    """Fresh problems of the split for each (seed, step): an endless stream."""
    base.check_split(self.name, split, self.splits)
    if n <= 0:
      raise ValueError(f"sample size n must be positive, got {n}")
    rng = np.random.default_rng([self.data_seed, _SPLIT_SALT[split], seed, step])
    return self._generate(split, n, rng, False)
