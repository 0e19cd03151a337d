"""Synthetic arithmetic (`12+34=` -> `46`) for tiny character-level models.

Knobs: `digits` (max digits per operand), `operators` (from "+-*"), `terms`
(operands per expression). An expression's split is a hash of its text (see
synthetic.py), so train and eval never share an expression.
"""

import numpy as np

from marl_jax.tasks import base
from marl_jax.tasks import synthetic
from marl_jax.tasks.math import task as math_task

_OPERATORS = "+-*"


def evaluate(operands: list, operators: list) -> int:
  """Value of o0 op1 o1 op2 o2 ... with `*` binding tighter than `+`/`-`."""
  total, sign, product = 0, 1, operands[0]
  for op, value in zip(operators, operands[1:]):
    if op == "*":
      product *= value
    else:
      total += sign * product
      sign, product = (1 if op == "+" else -1), value
  return total + sign * product


class ArithmeticTask(math_task.MathVerifier, synthetic.SyntheticTask):
  """Expressions like `7*12-5=`; the reference is the integer value."""

  name = "arithmetic"

  def __init__(self, digits: int = 2, operators: str = "+-", terms: int = 2,
               train_size: int = 10000, eval_size: int = 500,
               eval_fraction: float = 0.1, data_seed: int = 0,
               strictness: str = "lenient"):
    math_task.MathVerifier.__init__(self, strictness=strictness)
    synthetic.SyntheticTask.__init__(self, train_size, eval_size,
                                     eval_fraction, data_seed)
    if not (isinstance(digits, int) and 1 <= digits <= 18):
      raise ValueError(f"digits must be an int in [1, 18], got {digits!r}")
    if not operators or any(op not in _OPERATORS for op in operators):
      raise ValueError(f"operators must be drawn from {_OPERATORS!r}, got "
                       f"{operators!r}")
    if not (isinstance(terms, int) and terms >= 2):
      raise ValueError(f"terms must be an int >= 2, got {terms!r}")
    self.digits, self.operators, self.terms = digits, operators, terms

  def draw(self, rng: np.random.Generator) -> tuple:
    operands = [int(x) for x in rng.integers(0, 10**self.digits, self.terms)]
    ops = [self.operators[int(i)]
           for i in rng.integers(0, len(self.operators), self.terms - 1)]
    text = str(operands[0]) + "".join(o + str(v) for o, v in zip(ops, operands[1:]))
    return text, evaluate(operands, ops)

  def split_key(self, text: str, item) -> str:
    return text

  def make_problem(self, text: str, item, rng: np.random.Generator) -> base.Problem:
    return base.Problem(f"arithmetic:{text}", text + "=", str(item),
                        {"expression": text})
