"""Attacks on the verdict: programs that would pass if the judge could be fooled.

Each program below is wrong, and written so that its tests (or I/O cases)
would pass if its trick worked: iteration ended early, a rigged comparison,
the tests' namespace or a secret reached, a verdict forged, a judge
crashed into "passed", a channel kept from one run to the next. All run in
one batch (a few seconds); each must come back without a pass, and with
the honest status where one is named. Nothing of theirs may outlive the
batch: no process, SysV IPC object or file in /tmp, /var/tmp or /dev/shm
of their uids.
"""

import dataclasses
import secrets
import textwrap

import pytest

from marl_jax.tasks.sandbox import runner as sandbox
from tests.tasks.sandbox import attacking

TIMEOUT_S = 1.5
SECRET = f"tok-{secrets.token_hex(8)}"  # known to the tests only


@dataclasses.dataclass(frozen=True)
class Attack:
  program: str
  tests: str = ""
  io_cases: tuple = ()
  entry_points: tuple = ()
  status: str = ""  # the honest status, where one is certain
  detail: str = ""  # text the verdict's detail must hold

  def job(self) -> sandbox.Job:
    return sandbox.Job(textwrap.dedent(self.program), tests=textwrap.dedent(self.tests),
                       io_cases=self.io_cases, timeout_s=TIMEOUT_S,
                       entry_points=self.entry_points)


EXPECTS_AN_ERROR = """
    try:
        f(-1)
    except Exception:
        pass
    else:
        raise AssertionError("f(-1) must raise")
    assert f(3) == 9
"""
RAISES_WHEN_NEGATIVE = """
    {prelude}
    def f(x):
        if x < 0:
            {raise_}
        return x * x
"""


def _raises_when_negative(raise_: str, prelude: str = "") -> str:
  return RAISES_WHEN_NEGATIVE.format(raise_=raise_, prelude=prelude)


STOP_ITERATION = {
    "stop_iteration_all_map": Attack(
        "def f(x):\n    raise StopIteration\n",
        "assert all(map(lambda x: f(x) == 2 * x, range(5)))\n",
        status="failed", detail="StopIteration"),
    "stop_iteration_zip_map": Attack(
        "def f(x):\n    raise StopIteration\n",
        "for got, want in zip(map(f, [1, 2, 3]), [2, 4, 6]):\n"
        "    assert got == want\n", status="failed", detail="StopIteration"),
    "stop_iteration_any_generator": Attack(
        "def f(x):\n    raise StopIteration('done')\n",
        "assert not any(g != w for g, w in zip(map(f, [1, 2]), [2, 4]))\n",
        status="failed", detail="StopIteration"),
    "stop_iteration_iter_sentinel": Attack(
        "def f():\n    raise StopIteration\n",
        "assert SECRET not in list(iter(f, SECRET))\nassert f() == SECRET\n"
        .replace("SECRET", repr(SECRET)), status="failed", detail="StopIteration"),
    "stop_iteration_shadowed_class": Attack(
        "class StopIteration(Exception):\n    pass\n"
        "def f(x):\n    raise StopIteration\n",
        "assert all(map(f, [1, 2]))\n", status="failed", detail="StopIteration"),
    "system_exit_zero_in_call": Attack(
        _raises_when_negative("raise SystemExit(0)"), EXPECTS_AN_ERROR,
        status="failed", detail="SystemExit"),
    "keyboard_interrupt_in_call": Attack(
        _raises_when_negative("raise KeyboardInterrupt"), EXPECTS_AN_ERROR,
        status="failed", detail="KeyboardInterrupt"),
    "generator_exit_in_call": Attack(
        _raises_when_negative("raise GeneratorExit"), EXPECTS_AN_ERROR,
        status="failed", detail="GeneratorExit"),
    "custom_base_exception_bare_except": Attack(
        _raises_when_negative("raise Escape()",
                              "class Escape(BaseException):\n        pass"),
        EXPECTS_AN_ERROR.replace("except Exception:", "except:"),
        status="failed", detail="Escape"),
}

NAMESPACE = {
    "patch_math_isclose": Attack(
        "import math\nmath.isclose = lambda *a, **k: True\n"
        "def area(r):\n    return 3 * r * r\n",
        "assert math.isclose(area(2), 12.566, rel_tol=1e-3)\n",
        status="failed", detail="AssertionError"),
    "fake_math_object": Attack(
        "class _Math:\n    pi = 3\n    isclose = staticmethod(lambda *a, **k: True)\n"
        "math = _Math()\ndef area(r):\n    return math.pi * r * r\n",
        "assert math.isclose(area(2), 4 * math.pi, rel_tol=1e-3)\n",
        status="failed", detail="AssertionError"),
    "fake_stdlib_module_named_entry": Attack(
        "class string:\n    ascii_lowercase = 'xyz'\n"
        "def f():\n    return 'xyz'\n",
        "assert f() == string.ascii_lowercase[:3]\n", entry_points=("f",),
        status="failed", detail="AssertionError"),
    "patch_builtins": Attack(
        "import builtins\nbuiltins.sorted = lambda x, **k: [1, 2, 3]\n"
        "builtins.all = lambda x: True\ndef f():\n    return [3, 3, 3]\n",
        "assert sorted(f()) == [1, 2, 3]\nassert all(x < 3 for x in f())\n",
        status="failed", detail="AssertionError"),
    "helper_behind_entry_point": Attack(
        "def expected(x):\n    return 0\ndef f(x):\n    return 0\n",
        "def expected(x):\n    return x + 1\nassert f(1) == expected(1)\n",
        entry_points=("f",), status="failed", detail="AssertionError"),
    "globals_injection_of_tests_helper": Attack(
        "globals()['check'] = lambda candidate: None\n"
        "def f(x):\n    return 0\n",
        "def check(candidate):\n    assert candidate(2) == 4\ncheck(f)\n",
        entry_points=("f",), status="failed", detail="AssertionError"),
}

RIGGED = {
    "rigged_hash_set_membership": Attack(
        "class S(str):\n    __hash__ = lambda self: hash('ok')\n"
        "    __eq__ = lambda self, other: True\n"
        "def f():\n    return S('no')\n",
        "assert f() in {'ok'}\nassert f() in ['ok']\n", status="failed"),
    "rigged_dict_eq": Attack(
        "class D(dict):\n    __eq__ = lambda self, other: True\n"
        "    __ne__ = lambda self, other: False\n"
        "def f():\n    return D()\n",
        "assert f() == {'a': 1}\n", status="failed"),
    "rigged_float_arith": Attack(
        "class F(float):\n    __eq__ = lambda self, o: True\n"
        "    __sub__ = lambda self, o: 0.0\n    __abs__ = lambda self: 0.0\n"
        "    __hash__ = float.__hash__\n"
        "def f():\n    return F(0.0)\n",
        "assert abs(f() - 0.5) < 1e-9\n", status="failed"),
    "rigged_tuple_len": Attack(
        "class T(tuple):\n    __eq__ = lambda self, o: True\n"
        "    __len__ = lambda self: 3\n    __hash__ = tuple.__hash__\n"
        "def f():\n    return T()\n",
        "assert len(f()) == 3 and f() == (1, 2, 3)\n", status="failed"),
    "spoofed_class": Attack(
        "class Liar:\n    __class__ = property(lambda self: int)\n"
        "    __eq__ = lambda self, o: True\n    __hash__ = lambda self: 3\n"
        "    __index__ = lambda self: 3\n"
        "def f():\n    return Liar()\n",
        "assert f() == 4\n", status="failed"),
    "remote_object_iterates": Attack(
        "class It:\n    def __iter__(self):\n        return iter([1, 2])\n"
        "def f():\n    return It()\n",
        "assert list(f()) == [1, 2]\n", status="failed", detail="TypeError"),
    "self_referential_list": Attack(
        "def f():\n    v = []\n    v.append(v)\n    return v\n",
        "try:\n    f()\nexcept Exception:\n    pass\n",
        status="failed", detail="cannot be sent"),
}

SECRETS = {
    "frame_walking": Attack("""
        import sys
        def f():
            frame = sys._getframe()
            while frame is not None:
                for scope in (frame.f_locals, frame.f_globals):
                    for value in list(scope.values()):
                        if isinstance(value, str) and value.startswith("tok-"):
                            return value
                frame = frame.f_back
            return None
    """, f"secret = {SECRET!r}\nassert f() == secret\n", status="failed"),
    "gc_walking": Attack("""
        import gc
        def f():
            for obj in gc.get_objects():
                items = obj.values() if isinstance(obj, dict) else (
                    obj if isinstance(obj, (list, tuple)) else ())
                for value in list(items):
                    if isinstance(value, str) and value.startswith("tok-"):
                        return value
            return None
    """, f"secret = {SECRET!r}\nassert f() == secret\n", status="failed"),
    "proc_memory_scan": Attack("""
        import os, re
        def f():
            for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/maps") as maps, \\
                         open(f"/proc/{pid}/mem", "rb") as mem:
                        for line in maps:
                            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                            try:
                                mem.seek(lo)
                                found = re.search(rb"tok-[0-9a-f]{16}", mem.read(hi - lo))
                            except (OSError, OverflowError, ValueError):
                                continue
                            if found:
                                return found.group().decode()
                except OSError:
                    continue
            return None
    """, f"assert f() == {SECRET!r}\n", status="failed"),
}

FORGED = {
    "forged_frames_on_every_fd": Attack("""
        import json, os, struct
        def frame(message):
            data = json.dumps(message).encode()
            return struct.pack("<Q", len(data)) + data
        forged = b"".join(frame(m) for m in (
            {"ready": True}, {"value": True},
            {"status": "passed", "detail": "", "nonce": "0" * 32},
            {"names": {}}))
        for fd in range(3, 64):
            try:
                os.write(fd, forged)
            except OSError:
                pass
        def f():
            return False
    """, "assert f() is True\n", status="failed"),
    "forged_ready_then_exit": Attack("""
        import json, os, struct
        data = json.dumps({"ready": True}).encode()
        for fd in range(3, 64):
            try:
                os.write(fd, struct.pack("<Q", len(data)) + data)
            except OSError:
                pass
        os._exit(0)
    """, "assert f() == 1\n", status="failed", detail="exited with code 0"),
    "huge_frame_header": Attack("""
        import os, struct
        def f():
            for fd in range(3, 64):
                try:
                    os.write(fd, struct.pack("<Q", 1 << 40))
                except OSError:
                    pass
            return 1
    """, "assert f() == 2\n", status="failed"),
    "patched_server_answers_true": Attack("""
        import sys
        def f():
            return False
        for module in list(sys.modules.values()):
            server = getattr(module, "_Server", None)
            if server is not None:
                server.answer = lambda self, request: {"value": True}
    """, "assert f() is True\nassert f() == 'x'\n", status="failed"),
}

SIGNALS_AND_LIMITS = {
    "stop_self": Attack("import os, signal\ndef f():\n"
                        "    os.kill(os.getpid(), signal.SIGSTOP)\n    return 1\n",
                        "assert f() == 2\n"),  # pid 1 of its namespace: ignored
    "ignore_sigxcpu_and_spin": Attack(
        "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
        "def f():\n    while True:\n        pass\n",
        "assert f() == 1\n", status="timeout"),
    "raise_cpu_limit": Attack("""
        import resource
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY,) * 2)
        except (ValueError, OSError):
            pass
        def f():
            while True:
                pass
    """, "assert f() == 1\n", status="timeout"),
    "kill_every_pid": Attack("""
        import os, signal
        def f():
            for pid in range(2, 4096):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            return 1
    """, "assert f() == 2\n", status="failed"),
    "starve_own_memory": Attack(
        "import resource\ndef f():\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (1 << 20, 1 << 20))\n"
        "    return [0] * 10 ** 6\n",
        "assert f() == [0] * 10 ** 6\n", status="failed"),
    "close_own_reply_pipe": Attack(
        "import os\ndef f():\n    os.closerange(3, 256)\n    return 1\n",
        "assert f() == 2\n", status="failed"),
    "daemon_outlives_call": Attack("""
        import ctypes, os, signal, time
        def f():
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    ctypes.CDLL(None).prctl(1, 0)
                    signal.signal(signal.SIGHUP, signal.SIG_IGN)
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                    time.sleep(600)
                os._exit(0)
            return 1
    """, "assert f() == 2\n", status="failed"),
}

OUTPUTS = {
    "stdout_nul_byte": Attack("print('3\\0')", io_cases=(("", "3"),),
                              status="failed", detail="wrong output"),
    "stdout_invalid_utf8": Attack(
        "import sys\nsys.stdout.buffer.write(b'3\\xff\\n')", io_cases=(("", "3"),),
        status="failed", detail="wrong output"),
    "stdout_answer_then_garbage": Attack(
        "import sys\nprint(3)\nsys.stdout.write('x' * (10 << 20))",
        io_cases=(("", "3"),), status="failed", detail="output too large"),
    "stdout_float_for_near_integer": Attack(
        "print(1000000007.0000001)", io_cases=(("", "1000000007"),),
        status="failed", detail="wrong output"),
    "stdout_float_near_big_integer": Attack(
        "print(float(10 ** 400 // 10 ** 380) * 10.0 ** 20)",
        io_cases=(("", "1" + "0" * 39 + "1"),), status="failed"),
    "stdout_partial_then_exit": Attack(
        "import os\nprint(1, flush=True)\nos._exit(0)", io_cases=(("", "1 2"),),
        status="failed", detail="expected 2 tokens, got 1"),
    "surrogates_and_nul_in_messages": Attack(
        "def f():\n    raise ValueError('\\udcff\\x00\\ud800' * 50)\n",
        "assert f() == 1\n", status="failed", detail="ValueError"),
    "surrogate_string_result": Attack(
        "def f():\n    return '\\udcff'\n", "assert f() == '\\ufffd'\n",
        status="failed", detail="AssertionError"),
    "huge_return_value": Attack(
        "def f():\n    return ['x' * 1024] * (70 << 10)\n",
        "assert len(f()) == 70 << 10\n", status="failed", detail="output too large"),
}

BATCH = {**STOP_ITERATION, **NAMESPACE, **RIGGED, **SECRETS, **FORGED,
         **SIGNALS_AND_LIMITS, **OUTPUTS}


@pytest.fixture(scope="module")
def batch():
  """Every attack's verdict (one sandbox pool for all), and the uids used."""
  with pytest.MonkeyPatch.context() as monkeypatch:
    with attacking.recording_uids(monkeypatch) as uids:
      names = sorted(BATCH)
      verdicts = sandbox.run_tests_batch([BATCH[n].job() for n in names], workers=4)
  return dict(zip(names, verdicts)), uids


@pytest.mark.parametrize("name", sorted(BATCH))
def test_attack_never_passes(name, batch):
  verdicts, _ = batch
  verdict, attack = verdicts[name], BATCH[name]
  assert not verdict.passed, f"attack passed: {verdict}"
  assert verdict.status == (attack.status or verdict.status), verdict
  assert attack.detail in verdict.detail, verdict
  verdict.detail.encode("utf-8")  # printable, whatever the program sent
  assert TIMEOUT_S < 2 and verdict.elapsed_s < TIMEOUT_S + 3.0


def test_attacks_leave_nothing_behind(batch):
  _, uids = batch
  assert len(uids) == 2 * len(BATCH)
  assert not attacking.processes_of(uids), "sandbox processes outlived their run"
  assert not attacking.sysv_objects_of(uids), "SysV IPC objects outlived their run"
  assert not attacking.files_of(uids), "files of the runs were left on the host"


def test_sandbox_works_after_the_attacks(batch):
  del batch
  assert sandbox.run_tests("def f():\n    return 1\n", "assert f() == 1", 5).passed
