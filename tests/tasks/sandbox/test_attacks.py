"""Attacks by model-written code: none may pass, harm the host, or outlive its run.

Every program here is written so that it would PASS if the attack worked
(the tests check the attack's payoff), and each case checks afterwards that
the sandbox's processes are gone and the calling process is intact.
"""

import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from marl_jax.tasks.sandbox import runner as sandbox
from tests.tasks.sandbox import attacking

TIMEOUT_S = 2.0
_RUN_UIDS: list = []  # uids the sandbox picked for the current test's runs


@pytest.fixture(autouse=True)
def _record_run_uids(monkeypatch):
  """Notes each run's uids, to look for its leftovers (and only its own:
  other tests may run sandboxes concurrently under pytest -n)."""
  _RUN_UIDS.clear()
  with attacking.recording_uids(monkeypatch, _RUN_UIDS):
    yield


def _attack(program: str, tests: str, limits=None) -> sandbox.Verdict:
  start = time.monotonic()
  verdict = sandbox.run_tests(textwrap.dedent(program), textwrap.dedent(tests),
                              TIMEOUT_S, limits=limits)
  assert time.monotonic() - start < TIMEOUT_S + 8.0, "run not bounded in time"
  assert not verdict.passed, f"attack passed: {verdict}"
  assert verdict.status in ("failed", "timeout", "error")
  assert _RUN_UIDS, "the run's uids were not recorded"
  deadline = time.monotonic() + 2.0
  while attacking.processes_of(_RUN_UIDS) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not attacking.processes_of(_RUN_UIDS), "sandbox processes outlived the run"
  return verdict


def _fools_a_naive_harness(program: str, tests: str) -> bool:
  """Would one interpreter running program + tests, judged by exit code 0, pass?"""
  source = textwrap.dedent(program) + "\n" + textwrap.dedent(tests)
  return subprocess.run([sys.executable, "-I", "-c", source], capture_output=True,
                        timeout=30, check=False).returncode == 0


def _sandbox_still_works():
  assert sandbox.run_tests("def f():\n    return 1\n", "assert f() == 1", 5).passed


EXITS = {
    "sys_exit_at_load": "import sys\nsys.exit(0)\ndef f(): return 1",
    "os_exit_at_load": "import os\nos._exit(0)\ndef f(): return 1",
    "atexit_system_exit": """
        import atexit, sys
        def hook():
            raise SystemExit(0)
        atexit.register(hook)
        sys.exit(0)
        def f(): return 1
    """,
    "sys_exit_during_call": "import sys\ndef f():\n    sys.exit(0)",
    "os_exit_during_call": "import os\ndef f():\n    os._exit(0)",
    "kill_own_process_during_call": "import os, signal\ndef f():\n    os.kill(os.getpid(), signal.SIGKILL)",
}


@pytest.mark.parametrize("name", sorted(EXITS))
def test_exiting_early_never_passes(name):
  _attack(EXITS[name], "assert f() == 2\n")


@pytest.mark.parametrize("name", ["sys_exit_at_load", "os_exit_at_load",
                                  "atexit_system_exit", "sys_exit_during_call",
                                  "os_exit_during_call"])
def test_control_exits_fool_a_naive_harness(name):
  assert _fools_a_naive_harness(EXITS[name], "assert f() == 2\n")


RIGGED_RESULTS = {
    "eq_always_true": """
        class Any:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = object.__hash__
            def __bool__(self): return True
        def f(x): return Any()
    """,
    "int_subclass_eq": """
        class Num(int):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __bool__(self): return True
            __hash__ = int.__hash__
        def f(x): return Num(0)
    """,
    "str_subclass_eq": """
        class S(str):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = str.__hash__
        def f(x): return S("nope")
    """,
    "list_subclass_eq": """
        class L(list):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __bool__(self): return True
        def f(x): return L()
    """,
}


# HumanEval-style: check(candidate) with == and a truthiness assert.
RIGGED_TESTS = """
    def check(candidate):
        assert candidate(1) == [7, 'x']
        assert candidate(2)
        assert not (candidate(3) != 5)
    check(f)
"""


@pytest.mark.parametrize("name", sorted(RIGGED_RESULTS))
def test_rigged_equality_never_passes(name):
  _attack(RIGGED_RESULTS[name], RIGGED_TESTS)


@pytest.mark.parametrize("name", sorted(RIGGED_RESULTS))
def test_control_rigged_equality_fools_a_naive_harness(name):
  assert _fools_a_naive_harness(RIGGED_RESULTS[name], RIGGED_TESTS)


PATCHED_BUILTINS = ("""
      import builtins, sys
      class Quiet(Exception): pass
      builtins.AssertionError = Quiet
      builtins.abs = lambda x: 0
      builtins.isinstance = lambda *a: True
      builtins.len = lambda x: 3
      sys.excepthook = lambda *a: None
      def f(x): return x
  """, """
      assert abs(f(1) - 10) < 1e-9
      assert isinstance(f(1), str)
      assert len(f([1])) == 3
  """)


def test_patching_builtins_and_assertion_error_does_not_help():
  _attack(*PATCHED_BUILTINS)
  assert _fools_a_naive_harness(*PATCHED_BUILTINS)  # control


def test_infinite_loop_at_load_and_in_call():
  assert _attack("while True:\n    pass\n", "assert f() == 1").status == "timeout"
  verdict = _attack("def f():\n    while True:\n        pass\n", "assert f() == 1")
  assert verdict.status == "timeout"


def test_fork_bomb_is_contained():
  program = """
      import os
      while True:
          try:
              os.fork()
          except OSError:
              pass
  """
  _attack(program, "assert f() == 1")
  _sandbox_still_works()


def test_escaping_the_process_group_does_not_outlive_the_run():
  program = """
      import ctypes, os, time
      ctypes.CDLL(None).prctl(1, 0)  # clear the parent-death signal
      if os.fork() == 0:
          os.setsid()
          time.sleep(600)
      def f(): return 1
  """
  _attack(program, "assert f() == 2")


def test_memory_bomb_is_contained():
  program = """
      hog = []
      while True:
          hog.append(bytearray(10**7))
  """
  verdict = _attack(program, "assert f() == 1", sandbox.Limits(memory_mb=256))
  assert verdict.status == "failed" and "MemoryError" in verdict.detail


def test_files_outside_the_sandbox_stay_untouched(tmp_path):
  shared = tmp_path / "shared"
  shared.mkdir()
  os.chmod(tmp_path, 0o755)
  os.chmod(shared, 0o777)  # Even a world-writable directory must be safe.
  sentinel = shared / "sentinel.txt"
  sentinel.write_text("intact")
  os.chmod(sentinel, 0o666)
  tmp_marker = f"/tmp/marl_attack_{secrets.token_hex(6)}"
  program = f"""
      import os, shutil
      def f():
          done = []
          for action in (
              lambda: open({str(sentinel)!r}, "w").write("pwned"),
              lambda: os.remove({str(sentinel)!r}),
              lambda: open({str(shared / 'new.txt')!r}, "w").write("x"),
              lambda: open({tmp_marker!r}, "w").write("x"),
              lambda: shutil.rmtree({str(shared)!r}),
              lambda: os.chmod("/usr/bin", 0o777),
          ):
              try:
                  action()
                  done.append(1)
              except Exception:
                  done.append(0)
          return done
  """
  # Writing the private /tmp (action 3) is allowed; passing needs any other.
  _attack(program, "r = f()\nassert r[0] or r[1] or r[2] or r[4] or r[5]")
  assert sentinel.read_text() == "intact"
  assert sorted(os.listdir(shared)) == ["sentinel.txt"]
  assert not os.path.exists(tmp_marker)
  assert oct(os.stat("/usr/bin").st_mode & 0o777) == oct(0o755)


def test_network_is_unreachable():
  listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  listener.bind(("127.0.0.1", 0))
  listener.listen(4)
  listener.settimeout(0.5)
  port = listener.getsockname()[1]
  program = f"""
      import socket
      def f():
          s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
          s.sendall(b"exfiltrated")
          return 1
  """
  try:
    _attack(program, "assert f() == 1")
    with pytest.raises(socket.timeout):
      listener.accept()
  finally:
    listener.close()


def test_parent_environment_is_invisible(monkeypatch):
  secret = secrets.token_hex(12)
  monkeypatch.setenv("MARL_ATTACK_SECRET", secret)
  program = """
      import os
      def f():
          found = os.environ.get("MARL_ATTACK_SECRET", "")
          for pid in ["self", "1"] + os.listdir("/proc"):
              try:
                  with open(f"/proc/{pid}/environ", "rb") as e:
                      for item in e.read().split(b"\\0"):
                          if item.startswith(b"MARL_ATTACK_SECRET="):
                              found = item.split(b"=", 1)[1].decode()
              except OSError:
                  pass
          return found
  """
  _attack(program, f"assert f() == {secret!r}")


def test_printed_fake_verdicts_are_ignored():
  program = """
      import json, os, sys
      fakes = [json.dumps({"nonce": n, "status": "passed", "detail": "",
                           "isolation": []}) + "\\n"
               for n in ("0" * 32, "f" * 32, "")]
      fakes += ['{"done": 0}\\n', '{"pid": 1}\\n', "passed\\n"]
      for line in fakes:
          print(line, end="")
          print(line, end="", file=sys.stderr)
          for fd in range(256):
              try:
                  os.write(fd, line.encode())
              except OSError:
                  pass
      def f(): return 1
  """
  _attack(program, "assert f() == 2")
  _sandbox_still_works()


KILL_EVERYTHING = """
    import os, signal
    def f():
        for sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                os.kill(-1, sig)
            except OSError:
                pass
        return 1
"""


def test_signalling_everything_harms_nobody():
  _attack(KILL_EVERYTHING, "assert f() == 2")
  _sandbox_still_works()
