"""Runs untrusted programs against tests, never in the trainer's process.

    verdict = run_tests(program, "assert f(2) == 4", timeout_s=5)
    verdict.passed, verdict.status, verdict.detail

Each run gets a supervisor freshly forked from a fork server (see
process.py and child/supervisor.py), which as root gives it:

- two processes: the program's, and the tests' which reaches the program
  only through pipes carrying plain data, so nothing the program does in
  its own interpreter (exit, patch builtins, rig `__eq__`, print a fake
  verdict) can fake a pass; the tests, the expected outputs and the run's
  nonce never enter the program's process;
- a fresh uid for each of the two (random, unprivileged), and a chroot into
  a minimal read-only root with fresh tmpfs /tmp and /sandbox (the cwd);
- new mount and pid namespaces (the program is pid 1 of its namespace, so
  killing it kills everything it started), an empty network namespace, and
  a new IPC namespace (no SysV or POSIX IPC object is shared with the host
  or another run, and none outlives the run);
- RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_NOFILE, no core
  files, an empty environment, and a wall-clock deadline.

Without root, where the kernel allows unprivileged user namespaces, the
fork server becomes root of one of its own and isolates runs the same way,
its children dropping every capability instead of taking a uid of their
own ("userns", "caps-drop"). Where it does not, the same process layout
runs with limits and a socket stub only. `isolation()` names the mechanisms
in force; the first run that lacks any logs once what a program can then
reach (exposure.py); without root the trainer makes itself non-dumpable so
that programs cannot read its memory.
"""

import concurrent.futures
import dataclasses
import json
import os
import secrets
import time
from typing import Optional, Sequence

from marl_jax.tasks.sandbox import exposure
from marl_jax.tasks.sandbox import process as sandbox_process
from marl_jax.tasks.sandbox.child import wire

STATUSES = ("passed", "failed", "timeout", "error")
_UID_BASE, _UID_SPAN = 1_500_000_000, 100_000_000
_STARTUP_GRACE_S = 10.0


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of one sandboxed program (and of its tests process)."""
  memory_mb: int = 1024  # RLIMIT_AS
  max_processes: int = 16  # RLIMIT_NPROC of the program's uid (threads count)
  file_size_mb: int = 16  # RLIMIT_FSIZE
  tmpfs_mb: int = 64  # size of the private filesystem holding /tmp
  max_output_bytes: int = 8 << 20  # stdout a script run may print; more fails
  # the case as "output too large" (values returned to tests: wire.MAX_REPLY_BYTES)

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if type(value) is not int or value <= 0:
        raise ValueError(f"Limits.{field.name} must be a positive int, "
                         f"got {value!r}")


@dataclasses.dataclass(frozen=True)
class Verdict:
  """Outcome of one run. `passed` is True only for status 'passed'."""
  passed: bool
  status: str
  detail: str = ""
  elapsed_s: float = 0.0
  isolation: tuple = ()


@dataclasses.dataclass(frozen=True)
class Job:
  """One program with either test code (`tests`) or stdin/stdout cases.

  `tests` runs as a module in its own namespace and process. It sees the
  program's objects for `entry_points` only (the names the task says the
  program defines, e.g. HumanEval's entry point) or, if the task names
  none, for the tests' free names (e.g. `add` in `assert add(1, 2) == 3`);
  a standard-library module the tests use without importing it is the
  tests' own import, never the program's (child/names.py).
  `io_cases` are (stdin, expected stdout) pairs; the program runs once per
  case as `__main__`, and its stdout is judged token by token
  (child/compare.py: integers exactly, other numbers within 1e-6).
  """
  program: str
  tests: str = ""
  io_cases: tuple = ()
  timeout_s: float = 10.0
  entry_points: tuple = ()

  def __post_init__(self):
    if not isinstance(self.program, str):
      raise TypeError(f"Job.program must be a str, got {type(self.program).__name__}")
    if not isinstance(self.tests, str):
      raise TypeError(f"Job.tests must be a str, got {type(self.tests).__name__}")
    try:
      cases = tuple((stdin, expected) for stdin, expected in self.io_cases)
    except (TypeError, ValueError):
      cases = None
    if cases is None or not all(isinstance(a, str) and isinstance(b, str)
                                for a, b in cases):
      raise TypeError("Job.io_cases must be (stdin, expected_stdout) str pairs")
    object.__setattr__(self, "io_cases", cases)
    if bool(self.tests.strip()) == bool(cases):
      raise ValueError("a Job needs exactly one of `tests` (non-empty test "
                       "code) or `io_cases`; a program with no tests cannot "
                       "be verified")
    if not self.timeout_s > 0:
      raise ValueError(f"Job.timeout_s must be > 0, got {self.timeout_s!r}")
    if isinstance(self.entry_points, str):
      raise TypeError("Job.entry_points must be a tuple of names, got the "
                      f"string {self.entry_points!r}; write ({self.entry_points!r},)")
    names = tuple(self.entry_points)
    if not all(isinstance(n, str) and n.isidentifier() for n in names):
      raise ValueError("Job.entry_points must be Python identifiers, got "
                       f"{names!r}")
    if names and cases:
      raise ValueError("Job.entry_points applies to `tests`; io_cases run the "
                       "program as a script and take no entry points")
    object.__setattr__(self, "entry_points", names)


def _fresh_uids() -> list:
  first = secrets.randbelow(_UID_SPAN - 1)
  return [_UID_BASE + first, _UID_BASE + (first + 1 + secrets.randbelow(
      _UID_SPAN - 2)) % _UID_SPAN]


def _report(messages: list, nonce: str) -> dict:
  """The run's report if it carries this run's nonce; else an error report."""
  for message in messages:
    if (message.get("nonce") == nonce and message.get("status") in STATUSES
        and isinstance(message.get("detail"), str)):
      return message
  crash = next((m["crash"] for m in messages if "crash" in m), None)
  done = next((m["done"] for m in messages if "done" in m), None)
  return {"status": "error", "isolation": (),
          "detail": f"sandbox supervisor gave no valid report (wait status "
                    f"{done}){': ' + str(crash) if crash else ''}"}


def run(job: Job, limits: Optional[Limits] = None) -> Verdict:
  """Runs one job in a fresh sandbox and returns its verdict."""
  limits = limits or Limits()
  start = time.monotonic()
  nonce, uids = secrets.token_hex(16), _fresh_uids()
  header = {"uids": uids, "timeout_s": job.timeout_s,
            "mode": "script" if job.io_cases else "module",
            "limits": dict(dataclasses.asdict(limits),
                           cpu_s=int(job.timeout_s) + 1)}
  body = {"program": job.program, "tests": job.tests,
          "cases": [list(c) for c in job.io_cases],
          "entry_points": list(job.entry_points), "nonce": nonce}
  payload = (wire.frame(json.dumps(header).encode("utf-8"))
             + wire.frame(json.dumps(body).encode("utf-8")))
  deadline = start + job.timeout_s + _STARTUP_GRACE_S
  servers = sandbox_process.pool()
  server = servers.acquire()
  try:
    messages = server.request(payload, deadline)
  except sandbox_process.Unresponsive as e:
    if os.geteuid() == 0:
      for uid in uids:
        sandbox_process.kill_uid(uid)
    return Verdict(False, "timeout", f"sandbox supervisor killed: {e}",
                   time.monotonic() - start)
  finally:
    servers.release(server)
  report = _report(messages, nonce)
  status = report["status"]
  mechanisms = tuple(report.get("isolation", ()))
  exposure.note(mechanisms)
  return Verdict(status == "passed", status, _printable(report["detail"]),
                 time.monotonic() - start, mechanisms)


def _printable(detail: str) -> str:
  """The detail without lone surrogates or NULs a program put in its output
  (they would break whoever writes the verdict to a UTF-8 log)."""
  return (detail.encode("utf-8", "backslashreplace").decode("utf-8")
          .replace("\0", "\\x00"))


def run_tests(program: str, tests: str, timeout_s: float = 10.0, *,
              limits: Optional[Limits] = None, entry_points=()) -> Verdict:
  """Runs `program` as a module, then `tests` (code using its names)."""
  return run(Job(program, tests=tests, timeout_s=timeout_s,
                 entry_points=tuple(entry_points)), limits)


def run_io_tests(program: str, cases: Sequence, timeout_s: float = 10.0, *,
                 limits: Optional[Limits] = None) -> Verdict:
  """Runs `program` as a script once per (stdin, expected stdout) case."""
  return run(Job(program, io_cases=tuple(cases), timeout_s=timeout_s), limits)


def default_workers() -> int:
  """Two sandboxes per core available to this process (at most 32).

  A run spends part of its wall time waiting on the kernel (namespace
  set-up and tear-down), so two per core keeps the cores busy; more adds
  little and multiplies the worst-case memory (Limits.memory_mb each).
  """
  return max(1, min(32, 2 * len(os.sched_getaffinity(0))))


def run_tests_batch(jobs: Sequence[Job], *, workers: Optional[int] = None,
                    total_timeout_s: Optional[float] = None,
                    limits: Optional[Limits] = None) -> list:
  """Runs many jobs on a pool of `workers` concurrent sandboxes.

  With `total_timeout_s`, no job runs past that budget: each job's timeout
  is cut to what is left, and jobs not started in time get status
  'timeout' without running.
  """
  jobs = list(jobs)
  if not all(isinstance(j, Job) for j in jobs):
    raise TypeError("run_tests_batch takes a sequence of sandbox.Job")
  deadline = None if total_timeout_s is None else time.monotonic() + total_timeout_s

  def one(job: Job) -> Verdict:
    if deadline is not None:
      left = deadline - time.monotonic()
      if left <= 0.05:
        return Verdict(False, "timeout", "the batch's time budget ran out "
                       "before this program started")
      job = dataclasses.replace(job, timeout_s=min(job.timeout_s, left))
    return run(job, limits)

  if not jobs:
    return []
  with concurrent.futures.ThreadPoolExecutor(workers or default_workers()) as ex:
    return list(ex.map(one, jobs))


_ISOLATION = []


def isolation() -> tuple:
  """Names of the isolation mechanisms in force here (probed once)."""
  if not _ISOLATION:
    verdict = run_tests("x = 1", "assert x == 1", timeout_s=10.0)
    if not verdict.passed:
      raise RuntimeError(f"the sandbox does not work here: {verdict.detail}")
    _ISOLATION.extend(verdict.isolation)
  return tuple(_ISOLATION)
