"""Synthetic one-line functions for tiny character-level models.

The prompt shows a few input/output pairs and ends with `def f(x): return `;
the answer is the expression (or a whole `def f(x): return ...` line). The
answer is run in the sandbox against hidden inputs the prompt did not show.

    f(1)=5
    f(2)=8
    f(4)=14
    def f(x): return          ->  x*3+2

Knobs: `operators` (from "+-*%"), `depth` (max operations), `max_const`,
`shown` and `hidden` examples, `max_input`. A function's split is a hash
of its behaviour on fixed probe inputs (see synthetic.py), so two
expressions that compute the same function never straddle train and eval.
"""

from typing import Optional

import numpy as np

from marl_jax.tasks import base
from marl_jax.tasks import synthetic
from marl_jax.tasks.code import task as code

_OPERATORS = "+-*%"
_HIGH = "*%"
_PROBES = tuple(range(16))
_HEADER = "def f(x): return "


def _apply(value: int, op: str, const: int) -> int:
  if op == "+":
    return value + const
  if op == "-":
    return value - const
  if op == "*":
    return value * const
  return value % const


class TinyCodeTask(code.CodeVerifier, synthetic.SyntheticTask):
  """Write `f(x)` from examples; checked on hidden inputs in the sandbox."""

  name = "tiny_code"

  def __init__(self, operators: str = "+-*", depth: int = 2, max_const: int = 9,
               shown: int = 3, hidden: int = 5, max_input: int = 20,
               train_size: int = 2000, eval_size: int = 200,
               eval_fraction: float = 0.1, data_seed: int = 0,
               timeout_s: float = 5.0, workers: Optional[int] = None):
    code.CodeVerifier.__init__(self, timeout_s=timeout_s, workers=workers)
    synthetic.SyntheticTask.__init__(self, train_size, eval_size,
                                     eval_fraction, data_seed)
    if not operators or any(op not in _OPERATORS for op in operators):
      raise ValueError(f"operators must be drawn from {_OPERATORS!r}, got "
                       f"{operators!r}")
    if not (isinstance(depth, int) and depth >= 1):
      raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    if not (isinstance(max_const, int) and max_const >= 2):
      raise ValueError(f"max_const must be an int >= 2, got {max_const!r}")
    if not (shown >= 1 and hidden >= 1 and max_input + 1 >= shown + hidden):
      raise ValueError(f"need shown >= 1, hidden >= 1 and max_input + 1 >= "
                       f"shown + hidden distinct inputs, got shown={shown}, "
                       f"hidden={hidden}, max_input={max_input}")
    self.operators, self.depth, self.max_const = operators, depth, max_const
    self.shown, self.hidden, self.max_input = shown, hidden, max_input

  def draw(self, rng: np.random.Generator) -> tuple:
    """(expression text, steps) with steps [(op, const), ...] applied to x."""
    steps, text, last = [], "x", None
    for _ in range(int(rng.integers(1, self.depth + 1))):
      op = self.operators[int(rng.integers(len(self.operators)))]
      const = int(rng.integers(2 if op in _HIGH else 1, self.max_const + 1))
      if op in _HIGH and last is not None and last not in _HIGH:
        text = f"({text})"
      text, last = f"{text}{op}{const}", op
      steps.append((op, const))
    return text, steps

  @staticmethod
  def _run(steps: list, x: int) -> int:
    for op, const in steps:
      x = _apply(x, op, const)
    return x

  def split_key(self, text: str, item) -> str:
    return ",".join(str(self._run(item, x)) for x in _PROBES)

  def make_problem(self, text: str, item, rng: np.random.Generator) -> base.Problem:
    steps = item
    inputs = [int(x) for x in rng.choice(self.max_input + 1,
                                         self.shown + self.hidden, replace=False)]
    shown, hidden = inputs[:self.shown], inputs[self.shown:]
    prompt = "".join(f"f({x})={self._run(steps, x)}\n" for x in shown) + _HEADER
    tests = "".join(f"assert f({x}) == {self._run(steps, x)}\n" for x in hidden)
    reference = code.CodeReference(tests=tests, entry_point="f",
                                   solution=_HEADER + text)
    return base.Problem(f"tiny_code:{text}:{','.join(map(str, inputs))}",
                        prompt, reference, {"expression": text})

  def extract(self, text: str) -> Optional[str]:
    """The program for an answer: `x*3+2`, `return x*3+2` or a whole def."""
    if not isinstance(text, str):
      return None
    body = code.extract_code(text) or ""
    line = next((l.strip() for l in body.splitlines() if l.strip()), "")
    if not line:
      return None
    if line.startswith("def "):
      return body.strip()
    if line.startswith("return "):
      line = line[len("return "):]
    return _HEADER + line
