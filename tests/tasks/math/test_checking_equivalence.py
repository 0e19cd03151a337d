"""Answer equivalence: formats that must match, near misses that must not,
and pathological inputs that must not stall the caller."""

import threading
import time

import pytest

from marl_jax.tasks.math import checking as math_lib
from marl_jax.tasks.math.checking import answers_match

MATCHES = [
    ("72", "72"),
    ("1,000", "1000"),
    ("1,234,567.5", "1234567.5"),
    ("1{,}000", "1000"),
    ("1000.00", "1000"),
    ("0.5", "\\frac{1}{2}"),
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("\\tfrac{1}{2}", "0.5"),
    ("\\frac12", "1/2"),
    ("-\\frac{3}{4}", "-0.75"),
    ("\\frac{-3}{4}", "-\\frac{3}{4}"),
    ("$18", "18"),
    ("\\$18.00", "18"),
    ("18 dollars", "18"),
    ("50\\%", "50"),
    ("50%", "50"),
    ("50 percent", "50"),
    ("-3", "-3.0"),
    ("\\text{5 apples}", "5"),
    ("5 \\text{ apples}", "5"),
    ("3.5 hours.", "3.5"),
    ("18.", "18"),
    ("x = 5", "5"),
    ("\\boxed{\\boxed{7}}", "7"),
    ("$\\frac{1}{2}$", "\\frac12"),
    ("90^\\circ", "90"),
    ("90^{\\circ}", "90"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"),
    ("\\sqrt{8}", "2\\sqrt{2}"),
    ("2\\pi", "\\pi \\cdot 2"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    ("\\text{(B)}", "(B)"),
    ("1e3", "1000"),
]


@pytest.mark.parametrize("predicted,reference", MATCHES)
def test_equivalent_forms_match(predicted, reference):
  assert answers_match(predicted, reference)
  assert answers_match(reference, predicted)


MISMATCHES = [
    ("12", "120"),
    ("1/2", "2"),
    ("0.33", "\\frac{1}{3}"),
    ("-5", "5"),
    ("1000", "100"),
    ("1,000", "1"),
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("\\sqrt{2}", "2"),
    ("x+1", "x-1"),
    ("2x", "2"),
    ("50\\%", "0.5"),
    ("", "5"),
    ("5", ""),
    (None, "5"),
    ("5", None),
    ("1/0", "1"),
]


@pytest.mark.parametrize("predicted,reference", MISMATCHES)
def test_near_misses_do_not_match(predicted, reference):
  assert not answers_match(predicted, reference)


def test_exact_rationals_decide_without_sympy():
  assert math_lib.as_number("\\frac{6}{8}") == math_lib.as_number("0.75")
  assert math_lib.as_number("x") is None
  assert math_lib.as_number("9" * 200) is None


@pytest.mark.parametrize("pathological", ["9**9**9", "9^{9^{9}}", "2^{2^{30}}",
                                          "(10^{100000})!"])
def test_pathological_inputs_are_bounded(pathological):
  start = time.monotonic()
  match = math_lib.compare(pathological, "2", timeout_s=1.0)
  assert not match.equal
  assert time.monotonic() - start < 10.0


def test_a_symbolic_timeout_is_reported_and_the_checker_recovers():
  match = math_lib.compare("9^{9^{9}}", "2", timeout_s=1.0)
  assert match.timed_out and not match.equal
  assert answers_match("\\sqrt{4}", "2")


def test_works_from_worker_threads():
  results = []
  threads = [threading.Thread(target=lambda: results.append(
      answers_match("\\frac{\\pi}{2}", "\\pi/2"))) for _ in range(3)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert results == [True, True, True]
