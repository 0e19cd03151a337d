"""Trainer-side handle on the sandbox's fork servers (child/supervisor.py).

Starting an interpreter costs ~45 ms; forking a warm one costs ~1 ms. So
each pool slot keeps one supervisor process alive and sends it one request
at a time; it forks a fresh supervisor per run. A slot that misbehaves
(dies, desynchronises, or outlives a deadline) is killed and replaced.
"""

import atexit
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

from marl_jax.tasks.sandbox import exposure

_SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "child", "supervisor.py")
_PYTHON = os.path.realpath(sys.executable)
_CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_DRAIN_S = 3.0


def _ready(fd: int, event: int, timeout_s: float) -> bool:
  """poll(2) for one fd (select(2) fails on fds above 1024 in big trainers)."""
  poller = select.poll()
  poller.register(fd, event)
  return bool(poller.poll(max(0.0, timeout_s) * 1000.0))


class Unresponsive(Exception):
  """The fork server did not finish a request before the deadline."""


class ForkServer:
  """One long-lived supervisor process, used by one thread at a time."""

  def __init__(self):
    self._proc = subprocess.Popen(
        [_PYTHON, "-I", "-S", "-B", _SUPERVISOR], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_CHILD_ENV,
        cwd="/", start_new_session=True, close_fds=True, bufsize=0)
    self._in, self._out = self._proc.stdin.fileno(), self._proc.stdout.fileno()
    os.set_blocking(self._in, False)
    self._pending = b""

  def alive(self) -> bool:
    return self._proc.poll() is None

  def _write(self, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
      left = deadline - time.monotonic()
      if left <= 0 or not _ready(self._in, select.POLLOUT, left):
        raise Unresponsive("request not accepted before the deadline")
      try:
        view = view[os.write(self._in, view):]
      except BlockingIOError:
        continue
      except OSError as e:
        raise Unresponsive(f"the fork server stopped reading ({e})") from None

  def _lines(self, deadline: float):
    """Yields the server's JSON lines until the deadline."""
    while True:
      while b"\n" in self._pending:
        line, self._pending = self._pending.split(b"\n", 1)
        try:
          yield json.loads(line)
        except ValueError:
          yield {"garbled": line[-500:].decode("utf-8", "replace")}
      left = deadline - time.monotonic()
      if left <= 0 or not _ready(self._out, select.POLLIN, left):
        raise Unresponsive("no answer before the deadline")
      chunk = os.read(self._out, 1 << 16)
      if not chunk:
        raise Unresponsive("the fork server exited")
      self._pending += chunk

  def request(self, payload: bytes, deadline: float) -> list:
    """Sends one run; returns its messages, ending with the `done` one.

    At the deadline it kills the run's supervisor (whose children die with
    it), then raises Unresponsive; a server that does not get back in step
    is closed and must not be reused.
    """
    messages = []
    try:
      self._write(b"R" + payload, deadline)
      for message in self._lines(deadline):
        messages.append(message)
        if "done" in message:
          return messages
    except Unresponsive:
      if not self._resync(messages):
        self.close()
      raise
    raise AssertionError("unreachable: _lines only ends by raising")

  def _resync(self, messages: list) -> bool:
    """Kills the run in progress; True once the server reports it done."""
    pid = next((m["pid"] for m in messages if "pid" in m), None)
    if pid is None or not self.alive():
      return False
    _kill(pid)
    try:
      return any("done" in m for m in self._lines(time.monotonic() + _DRAIN_S))
    except Unresponsive:
      return False

  def close(self) -> None:
    """Kills the server (its current run, if any, dies with its pipes)."""
    if self.alive():
      _kill(self._proc.pid)
    for stream in (self._proc.stdin, self._proc.stdout):
      if not stream.closed:
        stream.close()
    self._proc.wait()


def _kill(pid: int) -> None:
  try:
    os.kill(pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def kill_uid(uid: int) -> None:
  """Kills every process of `uid` (backstop for a run killed mid-way)."""
  for _ in range(20):
    found = False
    for pid in filter(str.isdigit, os.listdir("/proc")):
      try:
        with open(f"/proc/{pid}/status") as f:
          uid_line = next(l for l in f if l.startswith("Uid:"))
        if int(uid_line.split()[1]) == uid:
          found = True
          _kill(int(pid))
      except (OSError, StopIteration, ValueError):
        continue
    if not found:
      return


class Pool:
  """Idle fork servers, handed out one per concurrent run."""

  def __init__(self):
    self._idle = queue.LifoQueue()
    self._all, self._lock = set(), threading.Lock()

  def acquire(self) -> ForkServer:
    while True:
      try:
        server = self._idle.get_nowait()
      except queue.Empty:
        server = ForkServer()
        with self._lock:
          self._all.add(server)
        return server
      if server.alive():
        return server
      self._discard(server)

  def release(self, server: ForkServer) -> None:
    if server.alive():
      self._idle.put(server)
    else:
      self._discard(server)

  def _discard(self, server: ForkServer) -> None:
    server.close()
    with self._lock:
      self._all.discard(server)

  def close(self) -> None:
    with self._lock:
      servers, self._all = list(self._all), set()
    for server in servers:
      server.close()


_POOL: Optional[Pool] = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


def pool() -> Pool:
  """This process's pool, created on first use and closed at exit.

  A forked child of the trainer gets a pool of its own rather than sharing
  the parent's pipes. Without root, the trainer first becomes non-dumpable
  (exposure.protect_trainer_memory), before any sandbox process exists.
  """
  global _POOL, _POOL_PID
  with _POOL_LOCK:
    if _POOL is None or _POOL_PID != os.getpid():
      exposure.protect_trainer_memory()
      _POOL, _POOL_PID = Pool(), os.getpid()
      atexit.register(_POOL.close)
    return _POOL
