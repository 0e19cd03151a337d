"""Functional tests of marl_jax.tasks.sandbox.runner: verdicts, modes, pool, limits."""

import time

import pytest

from marl_jax.tasks.sandbox import runner as sandbox
from marl_jax.tasks.sandbox.child import tests_side
from marl_jax.tasks.sandbox.child import wire

ADD = "def add(a, b):\n    return a + b\n"


def test_passing_and_failing_tests():
  ok = sandbox.run_tests(ADD, "assert add(1, 2) == 3\nassert add('a', 'b') == 'ab'", 5)
  assert ok.passed and ok.status == "passed"
  bad = sandbox.run_tests(ADD, "assert add(1, 2) == 3\nassert add(2, 2) == 5", 5)
  assert not bad.passed and bad.status == "failed"
  assert "line 2" in bad.detail and "add(2, 2) == 5" in bad.detail


def test_program_errors_are_failures_with_the_reason():
  syntax = sandbox.run_tests("def add(a, b) return a", "assert add(1, 2) == 3", 5)
  assert syntax.status == "failed" and "SyntaxError" in syntax.detail
  raises = sandbox.run_tests("raise ValueError('boom')", "assert True", 5)
  assert raises.status == "failed" and "boom" in raises.detail
  missing = sandbox.run_tests("x = 1", "assert add(1, 2) == 3", 5)
  assert missing.status == "failed" and "NameError" in missing.detail


def test_broken_tests_are_errors_not_failures():
  verdict = sandbox.run_tests(ADD, "assert add(1, 2) ==", 5)
  assert verdict.status == "error" and "tests do not compile" in verdict.detail


def test_exceptions_cross_as_builtin_types():
  program = "def parse(s):\n    return int(s)\n"
  tests = ("try:\n    parse('x')\n    raise AssertionError('no error')\n"
           "except ValueError as e:\n    assert 'invalid literal' in str(e)\n")
  assert sandbox.run_tests(program, tests, 5).passed


def test_values_round_trip_with_their_types():
  program = ("def echo(x):\n    return x\n"
             "def kinds():\n    return [1, 1.5, 'a', b'b', (1, 2), {1, 2},"
             " frozenset([3]), {'k': [None, True]}, 2 + 3j]\n")
  tests = ("v = kinds()\n"
           "assert [type(x).__name__ for x in v] == ['int', 'float', 'str', "
           "'bytes', 'tuple', 'set', 'frozenset', 'dict', 'complex']\n"
           "assert v[7] == {'k': [None, True]}\n"
           "assert echo((1, [2, {3: 'x'}])) == (1, [2, {3: 'x'}])\n"
           "assert echo(10**40) == 10**40 and echo(float('inf')) == float('inf')\n")
  verdict = sandbox.run_tests(program, tests, 5)
  assert verdict.passed, verdict.detail


def test_program_objects_stay_remote():
  program = ("class Solution:\n    def twoSum(self, nums, target):\n"
             "        seen = {}\n        for i, n in enumerate(nums):\n"
             "            if target - n in seen:\n"
             "                return [seen[target - n], i]\n"
             "            seen[n] = i\n"
             "class Node:\n    def __init__(self, v):\n        self.v = v\n"
             "def make(v):\n    return Node(v)\n")
  tests = ("assert getattr(Solution(), 'twoSum')([2, 7, 11], 9) == [0, 1]\n"
           "n = make(4)\nassert n.v == 4\nassert n != 4\n"
           "try:\n    bool(n)\n    raise AssertionError('truthy')\n"
           "except TypeError:\n    pass\n")
  verdict = sandbox.run_tests(program, tests, 5)
  assert verdict.passed, verdict.detail


def test_tests_sending_unsupported_values_is_an_error():
  verdict = sandbox.run_tests(ADD, "assert add(lambda: 1, 2) == 3", 5)
  assert verdict.status == "error" and "function" in verdict.detail


def test_io_mode_runs_a_script_per_case():
  program = ("import sys\n"
             "a, b = map(int, sys.stdin.readline().split())\n"
             "print(a + b)\nsys.exit(0)\n")
  cases = [("1 2\n", "3\n"), ("10 -4", "6")]
  assert sandbox.run_io_tests(program, cases, 5).passed
  wrong = sandbox.run_io_tests(program, [("1 2", "4")], 5)
  assert wrong.status == "failed" and "wrong output" in wrong.detail
  crash = sandbox.run_io_tests("raise SystemExit(3)", [("", "")], 5)
  assert crash.status == "failed" and "exited with code 3" in crash.detail
  reads_fd0 = "print(open(0).read().upper(), end='')"
  assert sandbox.run_io_tests(reads_fd0, [("abc\n", "ABC")], 5).passed


def test_outputs_match_judge_rules():
  match = tests_side.outputs_match
  assert match("1 2\n3  \n\n", "1 2\n3")
  assert match("0.3333333", "0.33333333")
  assert not match("0.34", "0.33")
  assert not match("1 2", "1 2 3")
  assert not match("yes", "no")
  assert match("nan", "nan")  # identical text
  assert not match("1_000", "1000")  # not a number token


def test_wire_rebuilds_only_builtin_types():
  class Rigged(int):
    def __eq__(self, other):
      return True
    __hash__ = int.__hash__
  refs = []
  data = wire.encode([Rigged(3), object()], lambda obj: refs.append(obj) or 7)
  value = wire.decode(data, lambda ref: ("ref", ref))
  assert value == [3, ("ref", 7)] and type(value[0]) is int
  assert value[0] != 4
  with pytest.raises(wire.ProtocolError):
    wire.decode({"$t": [1], "$s": [2]}, lambda ref: ref)
  with pytest.raises(wire.ProtocolError):
    wire.decode({"$d": [[[1], 2]]}, lambda ref: ref)


def test_wall_clock_timeout_is_bounded():
  start = time.monotonic()
  verdict = sandbox.run_tests("import time\ntime.sleep(60)", "assert True", 1.0)
  assert verdict.status == "timeout"
  assert time.monotonic() - start < 5.0


def test_cpu_limit_reports_timeout():
  # A busy loop inside a call, with a generous wall clock: RLIMIT_CPU fires.
  program = "def spin():\n    while True:\n        pass\n"
  verdict = sandbox.run_tests(program, "spin()", 1.2)
  assert verdict.status == "timeout"


def test_job_validation_names_the_field():
  with pytest.raises(ValueError, match="exactly one of"):
    sandbox.Job("x = 1")
  with pytest.raises(ValueError, match="exactly one of"):
    sandbox.Job("x = 1", tests="assert x", io_cases=[("", "")])
  with pytest.raises(TypeError, match="io_cases"):
    sandbox.Job("x = 1", io_cases=[(1, 2)])
  with pytest.raises(ValueError, match="timeout_s"):
    sandbox.Job("x = 1", tests="assert x", timeout_s=0)
  with pytest.raises(ValueError, match="memory_mb"):
    sandbox.Limits(memory_mb=0)


def test_batch_keeps_order_and_mixes_outcomes():
  jobs = [sandbox.Job(f"def f():\n    return {i}\n", tests=f"assert f() == {i % 3}",
                      timeout_s=5) for i in range(24)]
  verdicts = sandbox.run_tests_batch(jobs, workers=4)
  assert [v.passed for v in verdicts] == [i < 3 for i in range(24)]


def test_batch_total_time_is_bounded():
  jobs = [sandbox.Job("import time\ntime.sleep(30)", tests="assert True",
                      timeout_s=30) for _ in range(6)]
  start = time.monotonic()
  verdicts = sandbox.run_tests_batch(jobs, workers=2, total_timeout_s=2.0)
  assert all(v.status == "timeout" for v in verdicts)
  assert time.monotonic() - start < 8.0


def test_isolation_reports_mechanisms():
  mechanisms = sandbox.isolation()
  assert "rlimits" in mechanisms
  assert ("netns" in mechanisms) != ("socket-stub" in mechanisms)
