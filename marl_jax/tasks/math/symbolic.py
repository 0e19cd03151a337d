"""Symbolic answer equality (math-verify) in a worker process with a hard time bound.

sympy can spend minutes, or all memory, on inputs such as `9**9**9`, and
math-verify's own timeout relies on SIGALRM, which only works in a main
thread and cannot interrupt long C calls. So comparisons run in long-lived
workers (`python -m marl_jax.tasks.math.symbolic`), one per concurrent
caller; a comparison that outlives its bound kills its worker.

    equal("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", timeout_s=5.0)  # True; None on timeout
"""

import json
import os
import select
import subprocess
import sys
import threading
import time
from typing import Optional

_SLACK_S = 2.0  # Worker-side limits fire first; this covers startup and pipes.
_WORKER_MEMORY_BYTES = 4 << 30
_STARTUP_S = 20.0  # Extra bound for a fresh worker's imports (~1-2 s).
_LOCK = threading.Lock()


class _Worker:
  """The worker process; `warm` once it has answered (imports done)."""

  def __init__(self):
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, env.get("PYTHONPATH")) if p)
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "marl_jax.tasks.math.symbolic"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=env, bufsize=0)
    self.warm = False
    self.owner = os.getpid()  # A forked trainer child must start its own.

  def ask(self, request: bytes, timeout_s: float) -> Optional[bytes]:
    """Sends one request line; the answer line, or None if none in time."""
    out, line = self.proc.stdout.fileno(), b""
    try:
      self.proc.stdin.write(request)
      poller = select.poll()
      poller.register(out, select.POLLIN)
      deadline = time.monotonic() + timeout_s
      while not line.endswith(b"\n"):
        if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000.0):
          return None
        chunk = os.read(out, 4096)
        if not chunk:
          return None
        line += chunk
    except OSError:
      return None
    return line

  def stop(self) -> None:
    self.proc.kill()
    self.proc.wait()
    self.proc.stdin.close()
    self.proc.stdout.close()


_IDLE: list = []  # Warm workers not in use; one per concurrent caller at most.


def _acquire() -> _Worker:
  with _LOCK:
    while _IDLE:
      worker = _IDLE.pop()
      if worker.owner == os.getpid() and worker.proc.poll() is None:
        return worker
  return _Worker()


def equal(predicted: str, reference: str, timeout_s: float = 5.0) -> Optional[bool]:
  """math-verify's verdict on two answers; None if no verdict in time.

  Thread-safe: concurrent callers each get a worker of their own.
  """
  request = json.dumps({"pred": predicted, "ref": reference,
                        "timeout_s": timeout_s}).encode() + b"\n"
  worker = _acquire()
  bound = timeout_s + _SLACK_S + (0.0 if worker.warm else _STARTUP_S)
  line = worker.ask(request, bound)
  if line is None:
    worker.stop()
    return None
  worker.warm = True
  with _LOCK:
    _IDLE.append(worker)
  return json.loads(line)


def _equal_here(predicted: str, reference: str, timeout_s: float) -> bool:
  from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify  # pylint: disable=g-import-not-at-top
  config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
  seconds = max(1, int(timeout_s))
  gold = parse(f"${reference}$", extraction_config=config, parsing_timeout=seconds)
  guess = parse(f"${predicted}$", extraction_config=config, parsing_timeout=seconds)
  if not gold or not guess:
    return False
  return bool(verify(gold, guess, timeout_seconds=seconds))


def _serve() -> None:
  """Worker loop: one JSON request per line in; `true`, `false` or `null`
  (ran out of time) per line out."""
  import logging  # pylint: disable=g-import-not-at-top
  import resource  # pylint: disable=g-import-not-at-top
  resource.setrlimit(resource.RLIMIT_AS, (_WORKER_MEMORY_BYTES, _WORKER_MEMORY_BYTES))
  logging.disable(logging.CRITICAL)
  import math_verify  # pylint: disable=g-import-not-at-top,unused-import
  for line in sys.stdin.buffer:
    request = json.loads(line)
    start = time.monotonic()
    try:
      result = _equal_here(request["pred"], request["ref"], request["timeout_s"])
    except BaseException:  # pylint: disable=broad-except
      result = False
    # math-verify answers False when its own alarm fires; report that as
    # a timeout instead.
    if not result and time.monotonic() - start >= max(1, int(request["timeout_s"])):
      result = None
    sys.stdout.buffer.write(json.dumps(result).encode() + b"\n")
    sys.stdout.buffer.flush()


if __name__ == "__main__":
  _serve()
