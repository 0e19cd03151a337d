"""The judge's rules: stdout tokens, the tests' namespace, exceptions, big values, exits.

The comparison rules are unit-tested on child/compare.py; everything else
runs whole programs, batched (one sandbox pool per test) to stay fast.
"""

import sys
import time

import pytest

from marl_jax.tasks.sandbox import runner as sandbox
from marl_jax.tasks.sandbox.child import compare


def _judged(cases: dict) -> dict:
  """Runs {name: (job, expected status, text the detail must hold)} at once
  and checks each verdict; returns the verdicts by name."""
  names = sorted(cases)
  verdicts = sandbox.run_tests_batch([cases[n][0] for n in names], workers=4)
  by_name = dict(zip(names, verdicts))
  wrong = {n: v for n, v in by_name.items()
           if v.status != cases[n][1] or cases[n][2] not in v.detail}
  assert not wrong, "\n".join(f"{n}: expected {cases[n][1]!r} with "
                              f"{cases[n][2]!r}, got {v}" for n, v in wrong.items())
  return by_name


BIG = "1" + "0" * 400  # 1e400: a float would make it (and its neighbour) inf

TOKEN_CASES = [  # (got, expected, match?)
    ("123456789999", "123456789012", False),
    ("1000000008", "1000000007", False),
    ("1000000006", "1000000007", False),
    ("1000000007", "1000000007", True),
    (BIG[:-1] + "1", BIG, False),
    (BIG, BIG, True),
    ("9" * 5000, "9" * 4999 + "8", False),  # past int()'s 4300-digit limit
    ("9" * 5000, "9" * 5000, True),
    ("7.0", "7", True),  # the same value exactly (LiveCodeBench: Decimal ==)
    ("+7", "7", True),
    ("07", "7", True),
    ("-0", "0", True),
    ("7.0000001", "7", False),  # an integer is never near enough
    ("3", "3.0000001", True),  # a non-integer expected: within 1e-6
    ("0.3333333", "0.33333333", True),
    ("0.34", "0.33", False),
    ("2", "2.5", False),
    ("1000000.5", "1000000.0", True),  # relative 5e-7
    ("1000002.0", "1000000.0", False),  # relative 2e-6
    ("1.0000001e400", "1.0e400", True),
    ("1.6e400", "1.5e400", False),
    ("1e-7", "0.0", True),
    ("1e-5", "0.0", False),
    ("nan", "nan", True),  # identical text; nan is not a number token
    ("nan", "0.5", False),
    ("inf", "1e999", False),
    ("1_000", "1000", False),
    ("0x10", "16", False),
    ("YES", "yes", False),
    ("1e999999999999999999999", "1", False),  # out of decimal's range
    ("1e999999999999999999999", "1e999999999999999999999", True),
]


@pytest.mark.parametrize("got,expected,match", TOKEN_CASES)
def test_tokens_compare_numbers_exactly_or_within_tolerance(got, expected, match):
  assert compare.tokens_match(got, expected) is match


def test_whitespace_is_normalised_like_the_judges():
  match = compare.outputs_match
  assert match("1 2\n3  \n\n", "1 2\n3")
  assert match("1\r\n2\r\n", "1\n2")
  assert match("  1\t2", "1 2")
  assert match("1\n2", "1 2")  # layout over lines does not matter (testlib)
  assert match("", "") and match("\n", "")
  assert not match("", "0")
  assert not match("1 2", "1 2 3") and not match("1 2 3", "1 2")
  assert not match("3\x00", "3")  # NUL is not whitespace
  assert not match("1\xa02", "1 2")  # nor is a no-break space
  assert not match("1\u20282", "1 2")


def test_first_difference_names_the_token():
  assert compare.first_difference("1 2 4", "1 2 3") == (
      "token 3 of 3: expected '3', got '4'")
  assert compare.first_difference("1 2", "1 2 3") == "expected 3 tokens, got 2"
  assert compare.first_difference("1 2", "1 2") is None


def test_long_tokens_compare_fast():
  digits = "7" * 2_000_000
  start = time.monotonic()
  assert compare.outputs_match(digits, digits[:-1] + "7")
  assert not compare.outputs_match(digits[:-1] + "8", digits)
  assert compare.outputs_match(digits + ".5", digits + ".0")  # relative 1e-2000000
  assert not compare.outputs_match("8" + digits[1:] + ".5", digits + ".5")
  assert time.monotonic() - start < 2.0


def _digits(number: int) -> str:
  old = sys.get_int_max_str_digits()
  sys.set_int_max_str_digits(0)
  try:
    return str(number)
  finally:
    sys.set_int_max_str_digits(old)


def _io(program: str, stdin: str, expected: str) -> sandbox.Job:
  return sandbox.Job(program, io_cases=((stdin, expected),), timeout_s=5)


def test_io_cases_judge_integers_exactly_end_to_end():
  echo = "print(input())"
  _judged({
      "near_miss_int": (_io(echo, "123456789999", "123456789012"), "failed",
                        "expected '123456789012', got '123456789999'"),
      "off_by_one_mod": (_io("print(10**9 + 8)", "", "1000000007"), "failed",
                         "token 1 of 1"),
      "above_1e308": (_io(echo, BIG[:-1] + "1", BIG), "failed", "wrong output"),
      # Past int()'s 4300-digit limit, which the sandbox lifts for programs.
      "big_exact": (_io("print(2 ** 20000)", "", _digits(2 ** 20000)), "passed", ""),
      "big_off_by_one": (_io("print(2 ** 20000 + 1)", "", _digits(2 ** 20000)),
                         "failed", "token 1 of 1"),
      "float_within": (_io("print(1 / 3)", "", "0.333333"), "passed", ""),
      "float_outside": (_io("print(1 / 3)", "", "0.3333"), "failed", "token 1"),
      "layout": (_io("print(1)\nprint(2, end='  \\r\\n\\n')", "", "1 2"),
                 "passed", ""),
  })


def _tests(program: str, tests: str, entry_points=()) -> sandbox.Job:
  return sandbox.Job(program, tests=tests, timeout_s=5,
                     entry_points=tuple(entry_points))


PATCHES_MATH = ("import math\nmath.isclose = lambda *a, **k: True\n"
                "def area(r):\n    return 3 * r * r\n")
FAKE_MATH = ("class _M:\n    isclose = staticmethod(lambda *a, **k: True)\n"
             "    pi = 3\nmath = _M()\ndef area(r):\n    return 3 * r * r\n")
HONEST = "import math\ndef area(r):\n    return math.pi * r * r\n"
MBPP_TEST = "assert math.isclose(area(2), 12.566, rel_tol=1e-3)\n"


def test_tests_namespace_is_out_of_the_programs_reach():
  _judged({
      "patched_isclose": (_tests(PATCHES_MATH, MBPP_TEST), "failed",
                          "AssertionError"),
      "fake_math": (_tests(FAKE_MATH, MBPP_TEST), "failed", "AssertionError"),
      "fake_math_named_entry": (_tests(FAKE_MATH, MBPP_TEST, ["area"]),
                                "failed", "AssertionError"),
      "honest_unbound_math": (_tests(HONEST, MBPP_TEST), "passed", ""),
      "honest_named_entry": (_tests(HONEST, MBPP_TEST, ["area"]), "passed", ""),
      # Only the named entry point is the program's; its helper is not.
      "helper_not_exposed": (_tests("def helper():\n    return 1\n"
                                    "def f():\n    return helper()\n",
                                    "assert f() == helper()", ["f"]),
                             "failed", "NameError"),
      # A module name the tests call is the program's function.
      "called_module_name": (_tests("def copy(x):\n    return [x, x]\n",
                                    "assert copy(1) == [1, 1]"), "passed", ""),
      # Names the tests bind themselves are never looked up in the program.
      "tests_own_check": (_tests("def check(c):\n    pass\n"
                                 "def f(x):\n    return 0\n",
                                 "def check(candidate):\n"
                                 "    assert candidate(2) == 4\ncheck(f)\n",
                                 ["f"]), "failed", "AssertionError"),
  })


RAISES_STOP = "def f(x):\n    raise StopIteration\n"


def test_stop_iteration_from_the_program_never_ends_a_loop():
  _judged({
      "all_map": (_tests(RAISES_STOP, "assert all(map(lambda x: f(x) == x, [1, 2]))"),
                  "failed", "program raised StopIteration"),
      "all_map_direct": (_tests(RAISES_STOP, "assert all(map(f, [1, 2]))"),
                         "failed", "RuntimeError"),
      "zip_map": (_tests(RAISES_STOP, "for got, want in zip(map(f, [1, 2]), [2, 4]):\n"
                                      "    assert got == want\n"), "failed",
                  "RuntimeError"),
      "iter_sentinel": (_tests("def f():\n    raise StopIteration\n",
                               "assert [x for x in iter(f, 0)] == []\n"
                               "assert f() == 1\n"), "failed", "RuntimeError"),
      "async_stop": (_tests("def f(x):\n    raise StopAsyncIteration\n",
                            "assert all(map(f, [1]))"), "failed",
                     "StopAsyncIteration"),
      "tests_may_expect_it": (_tests(RAISES_STOP, "try:\n    f(1)\n"
                                     "except RuntimeError as e:\n"
                                     "    assert 'StopIteration' in str(e)\n"
                                     "else:\n    raise AssertionError\n"),
                              "passed", ""),
  })


EXPECTS_AN_ERROR = ("try:\n    f(-1)\nexcept Exception:\n    pass\nelse:\n"
                    "    raise AssertionError('no error')\nassert f(2) == 4\n")


def test_base_exceptions_from_the_program_fail_the_run():
  body = "def f(x):\n    if x < 0:\n        {}\n    return x * x\n"
  _judged({
      "system_exit": (_tests(body.format("raise SystemExit(0)"), EXPECTS_AN_ERROR),
                      "failed", "program raised SystemExit (exited with code 0)"),
      "keyboard_interrupt": (_tests(body.format("raise KeyboardInterrupt"),
                                    EXPECTS_AN_ERROR), "failed", "KeyboardInterrupt"),
      "custom_base": (_tests("class Out(BaseException):\n    pass\n"
                             + body.format("raise Out()"),
                             EXPECTS_AN_ERROR.replace("Exception", "BaseException")),
                      "failed", "program raised Out"),
      "ordinary_error": (_tests(body.format("raise ValueError('neg')"),
                                EXPECTS_AN_ERROR), "passed", ""),
  })


def test_big_values_cross_intact_or_fail_as_too_large():
  verdicts = _judged({
      "return_10_5000": (_tests("def f():\n    return 10 ** 5000\n",
                                "assert f() == 10 ** 5000\n"
                                "assert f() != 10 ** 5000 + 1\n"), "passed", ""),
      "negative_and_nested": (_tests("def f(x):\n    return {-x: [x, (x,)]}\n",
                                     "v = 7 ** 9000\n"
                                     "assert f(v) == {-v: [v, (v,)]}\n"),
                              "passed", ""),
      "huge_string": (_tests("def f():\n    return 'x' * (80 << 20)\n",
                             "assert len(f()) == 80 << 20\n"), "failed",
                      "output too large"),
      "too_deep": (_tests("def f():\n    v = []\n    for _ in range(1000):\n"
                          "        v = [v]\n    return v\n",
                          "try:\n    f()\nexcept Exception:\n    pass\n"),
                   "failed", "cannot be sent"),
      "huge_stdout": (_io("import sys\nsys.stdout.write('1 ' * (5 << 20))", "",
                          "1"), "failed", "output too large"),
      "stdout_past_fsize": (_io("import sys\nsys.stdout.write('1 ' * (9 << 20))",
                                "", "1"), "failed", "output too large"),
  })
  assert verdicts["huge_string"].elapsed_s < 5.0


def test_program_exits_are_failures_with_their_code():
  _judged({
      "os_exit_70_at_load": (_tests("import os\nos._exit(70)\n", "assert f() == 1"),
                             "failed", "program exited with code 70"),
      "os_exit_70_in_call": (_tests("import os\ndef f():\n    os._exit(70)\n",
                                    "assert f() == 1"), "failed",
                             "program exited with code 70"),
      "sys_exit_3_at_load": (_tests("import sys\nsys.exit(3)\n", "assert f() == 1"),
                             "failed", "program exited with code 3 while loading"),
      "sys_exit_5_in_call": (_tests("import sys\ndef f():\n    sys.exit(5)\n",
                                    "assert f() == 1"), "failed", "exited with code 5"),
      "abort": (_tests("import os\ndef f():\n    os.abort()\n", "assert f() == 1"),
                "failed", "program was killed by signal"),
      "script_os_exit_70": (_io("import os\nprint(1)\nos._exit(70)", "", "1"),
                            "failed", "case 0: program exited with code 70"),
      "script_sys_exit_0": (_io("import sys\nprint(1)\nsys.exit(0)", "", "1"),
                            "passed", ""),
  })


def test_entry_points_are_validated():
  with pytest.raises(TypeError, match="Job.entry_points"):
    sandbox.Job("x = 1", tests="assert x", entry_points="x")
  with pytest.raises(ValueError, match="identifiers"):
    sandbox.Job("x = 1", tests="assert x", entry_points=("1x",))
  with pytest.raises(ValueError, match="io_cases"):
    sandbox.Job("x = 1", io_cases=[("", "")], entry_points=("x",))
