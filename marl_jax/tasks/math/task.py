"""Math tasks: problems whose reference is a final answer, checked by math.py."""

import concurrent.futures
import os
from typing import Optional, Sequence

from marl_jax.tasks import base
from marl_jax.tasks.math import checking as math_lib


class MathVerifier:
  """Extraction, voting equivalence and scoring shared by all math tasks."""

  kind = "math"

  def __init__(self, strictness: str = "lenient", timeout_s: float = 5.0):
    if strictness not in math_lib.STRICTNESS:
      raise ValueError(f"strictness must be one of {math_lib.STRICTNESS}, "
                       f"got {strictness!r}")
    if not timeout_s > 0:
      raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    self.strictness, self.timeout_s = strictness, timeout_s

  def extract(self, text: str) -> Optional[str]:
    return math_lib.extract_answer(text, self.strictness)

  def same_answer(self, a: Optional[str], b: Optional[str]) -> bool:
    return math_lib.compare(a, b, self.timeout_s).equal

  def verify(self, problem: base.Problem, text: str) -> base.Score:
    answer = self.extract(text)
    if answer is None:
      return base.Score(0.0, "unparsable", "no final answer found")
    try:
      match = math_lib.compare(answer, problem.reference, self.timeout_s)
    except Exception as e:  # pylint: disable=broad-except
      return base.Score(0.0, "error", f"checker failed: {type(e).__name__}: {e}")
    if match.equal:
      return base.Score(1.0, "correct", answer)
    if match.timed_out:
      return base.Score(0.0, "timeout", f"no decision on {answer!r} in "
                                        f"{self.timeout_s:g}s")
    return base.Score(0.0, "wrong", f"{answer!r} vs reference "
                                    f"{problem.reference!r}")

  def verify_batch(self, problems: Sequence[base.Problem],
                   texts: Sequence[str]) -> list:
    """Scores many answers; symbolic checks run on one worker per core."""
    if len(problems) != len(texts):
      raise ValueError(f"verify_batch got {len(problems)} problems but "
                       f"{len(texts)} answers")
    workers = max(1, len(os.sched_getaffinity(0)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      return list(pool.map(self.verify, problems, texts))


class MathTask(MathVerifier, base.LoadedTask):
  """A math task over problems loaded from files."""

  def __init__(self, name: str, loaders: dict, strictness: str = "lenient",
               timeout_s: float = 5.0):
    MathVerifier.__init__(self, strictness, timeout_s)
    base.LoadedTask.__init__(self, name, loaders)
