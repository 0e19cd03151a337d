"""Sandbox supervisor: isolates, starts and judges runs (child entry point).

Started once per pool slot by marl_jax.tasks.sandbox.process as
`python -I -S -B supervisor.py`, usually as root, and kept as a fork server:
for each request (a b"R" byte, then a header frame and a body frame on
stdin) it forks a fresh supervisor, writes `{"pid": ...}`, and after that
child ends `{"done": wait_status}`, each as one JSON line on stdout. The
forked supervisor, for its one run:

1. reads the header only (uids, limits, timeout, mode); becomes
   non-dumpable; enters a fresh IPC namespace (SysV and POSIX IPC objects
   die with the run) and a fresh mount namespace, and chroots into the fork
   server's read-only root skeleton with fresh, empty /tmp and /sandbox
   filesystems. (The fork server built that skeleton once, and sits in an
   empty network namespace that its runs share one after another: the pid
   namespace below guarantees no process outlives its run.)
2. forks the tests process (which drops to its own uid);
3. enters a fresh pid namespace and forks the program process, whose death
   kills everything it started (it drops to another uid and gets limits);
4. only now reads the body (program, tests or cases, nonce), so the program
   process never held the tests, the expected outputs or the nonce in its
   memory; hands the program to one child and the tests to the other;
5. waits for the tests' verdict until the deadline, kills both children,
   and writes one JSON line `{"nonce", "status", "detail", "isolation"}`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jail  # pylint: disable=g-import-not-at-top,wrong-import-position
import program_side  # pylint: disable=g-import-not-at-top,wrong-import-position
import tests_side  # pylint: disable=g-import-not-at-top,wrong-import-position
import wire  # pylint: disable=g-import-not-at-top,wrong-import-position
del sys.path[0]

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import select  # pylint: disable=g-import-not-at-top,wrong-import-position
import shutil  # pylint: disable=g-import-not-at-top,wrong-import-position
import signal  # pylint: disable=g-import-not-at-top,wrong-import-position
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
import traceback  # pylint: disable=g-import-not-at-top,wrong-import-position

_CHILD_FAILED = 70
_USERNS_HELPERS = 3  # fork server, run supervisor, tests process
_MAX_CRASH_CHARS = 1500  # Lines stay below PIPE_BUF: writers never interleave.
_SANDBOX_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}


def _fork(body, keep, devnull: int) -> int:
  """Forks a child that keeps only `keep` fds and runs `body()`."""
  pid = os.fork()
  if pid:
    return pid
  status = _CHILD_FAILED
  try:
    jail.close_all_but(keep, devnull)
    body()
    status = 0
  finally:
    os._exit(status)  # pylint: disable=protected-access


def _confine(uid, limits: dict, workdir: str, memory_mb: int, processes: int,
             isolation) -> None:
  """Applies limits, leaves root for `uid` (if any), dies with its parent.

  In a user namespace (see serve) only the user's own uid is mapped, so the
  child keeps uid 0 there and gives up every capability instead. Its
  RLIMIT_NPROC then counts the processes of that namespace, which also
  holds the fork server, this run's supervisor and the tests process.
  """
  os.chdir(workdir)
  os.environ.clear()
  os.environ.update(_SANDBOX_ENV, HOME=workdir)
  if uid is not None and "userns" in isolation:
    processes += _USERNS_HELPERS
  jail.apply_limits(cpu_s=limits["cpu_s"], memory_bytes=memory_mb << 20,
                    processes=processes if uid is not None else 0,
                    file_bytes=limits["file_size_mb"] << 20)
  if uid is not None and "userns" in isolation:
    jail.drop_capabilities()
  elif uid is not None:
    jail.drop_privileges(uid)
  jail.set_parent_death_signal(signal.SIGKILL)
  if "netns" not in isolation:
    jail.block_sockets()


def _isolate(header: dict, isolation: list, root):
  """Per-run mount namespace and fresh root; returns (uids or None, workdir)."""
  if os.geteuid() != 0:
    return None, tempfile.mkdtemp(prefix="marl-sandbox-")
  uids = [0, 0] if "userns" in isolation else jail.usable_ids(header["uids"])
  workdir = None
  if jail.enter_ipc_namespace():
    isolation.append("ipcns")
  if root and jail.enter_mount_namespace():
    isolation.append("mountns")
    try:
      workdir = jail.enter_fresh_root(root, header["limits"]["tmpfs_mb"], uids[0])
      isolation.append("chroot")
    except OSError:
      pass
  if workdir is None:
    workdir = tempfile.mkdtemp(prefix="marl-sandbox-")
    os.chown(workdir, uids[0], uids[0])
  isolation.append("caps-drop" if "userns" in isolation else "uid-drop")
  return uids, workdir


def _wait_result(fd: int, deadline: float):
  """The tests' verdict, or None at the deadline or if they died silently."""
  while True:
    left = deadline - time.monotonic()
    if left <= 0:
      return None
    ready, _, _ = select.select([fd], [], [], left)
    if ready:
      try:
        return wire.recv_json(fd)
      except (EOFError, OSError, wire.ProtocolError):
        return {"status": "error", "detail": "tests process died"}


def _reap(pid: int, kill: bool):
  """Wait status of `pid` (killing it first if asked); None if unknown."""
  if kill:
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
  try:
    return os.waitpid(pid, 0)[1]
  except ChildProcessError:
    return None


def _exited(pid: int, within_s: float):
  """Wait status of `pid` if it ends within `within_s` seconds, else None."""
  end = time.monotonic() + within_s
  while True:
    try:
      done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
      return None
    if done or time.monotonic() > end:
      return status if done else None
    time.sleep(0.005)


def _started(fd: int) -> bool:
  """Whether the program process said its own code started (one byte)."""
  ready, _, _ = select.select([fd], [], [], 0)
  return bool(ready) and os.read(fd, 1) == b"1"


def _judge(result, program_status, started: bool, timeout_s: float) -> tuple:
  """(status, detail) from the tests' result and the program's exit.

  Once the program's own code has started, however its process ends is the
  program's doing (its os._exit(70) included): a failure, named by the exit
  code or signal. Only a program process that died before that is a
  sandbox error.
  """
  if result is None:
    return "timeout", f"no verdict within {timeout_s:g}s (wall clock)"
  status, detail = result["status"], result["detail"]
  if not result.get("program_gone"):
    return status, detail
  if not started:
    return "error", f"sandbox setup failed in the program process ({detail})"
  if program_status is None:
    return status, detail
  if os.WIFSIGNALED(program_status):
    sig = os.WTERMSIG(program_status)
    if sig == signal.SIGXCPU:
      return "timeout", "program exceeded its CPU time limit"
    if sig == signal.SIGXFSZ:
      return "failed", ("output too large: program exceeded the file size "
                        "limit (Limits.file_size_mb)")
    return "failed", f"program was killed by signal {sig}"
  code = os.waitstatus_to_exitcode(program_status)
  return "failed", f"program exited with code {code} before the tests finished"


def run_one(net_isolated: bool, root, userns: bool = False) -> None:
  """One sandbox run, reading its request from fd 0 and reporting on fd 1.

  `net_isolated`: the fork server already holds an empty network namespace
  (shared by its runs one after another; no process outlives its run).
  `root`: the fork server's root skeleton (jail.build_root), if it has one.
  `userns`: the fork server is root of a user namespace of its own.
  """
  header = json.loads(wire.read_frame(0))
  jail.set_dumpable(False)
  # Python's cap on int <-> decimal text (4300 digits) guards services from
  # slow conversions; here CPU time is limited anyway, and a correct program
  # may print a 5000-digit answer. Both children inherit the lifted cap.
  sys.set_int_max_str_digits(0)
  os.umask(0o022)
  devnull = os.open("/dev/null", os.O_RDWR)
  limits = header["limits"]
  isolation = ["rlimits", "netns" if net_isolated else "socket-stub"]
  if userns:
    isolation.append("userns")
  uids, workdir = _isolate(header, isolation, root)
  prog_r, prog_w = os.pipe()
  req_r, req_w = os.pipe()
  resp_r, resp_w = os.pipe()
  task_r, task_w = os.pipe()
  result_r, result_w = os.pipe()
  started_r, started_w = os.pipe()

  def tests_body():
    _confine(uids and uids[1], limits, workdir if uids is None else "/",
             limits["memory_mb"], 4, isolation)
    # Without a uid of its own (no root), non-dumpability is what keeps the
    # program from ptracing this process or opening its fds via /proc.
    jail.set_dumpable(False)
    task = wire.recv_json(task_r)
    wire.send_json(result_w, tests_side.run(task, tests_side.Channel(req_w, resp_r)))

  def program_body():
    if "pidns" in isolation and "chroot" in isolation:
      try:
        jail.mount_proc()
      except OSError:
        pass  # Programs then find no /proc; nothing else depends on it.
    _confine(uids and uids[0], limits, workdir, limits["memory_mb"],
             limits["max_processes"], isolation)
    program_side.main(prog_r, req_r, resp_w, started_w, limits["max_output_bytes"])

  tests_pid = _fork(tests_body, {task_r, result_w, req_w, resp_r}, devnull)
  if uids is not None:
    try:
      jail.unshare(jail.CLONE_NEWPID)
      isolation.append("pidns")
    except OSError:
      pass
  program_pid = _fork(program_body, {prog_r, req_r, resp_w, started_w}, devnull)
  for fd in (prog_r, req_r, req_w, resp_r, resp_w, task_r, result_w, started_w):
    os.close(fd)

  body = json.loads(wire.read_frame(0))
  try:
    wire.send_json(prog_w, {"program": body["program"], "mode": header["mode"]})
    wire.send_json(task_w, {"mode": header["mode"], "tests": body["tests"],
                            "cases": body["cases"],
                            "entry_points": body.get("entry_points", [])})
  except BrokenPipeError:
    pass
  deadline = time.monotonic() + header["timeout_s"]
  result = _wait_result(result_r, deadline)
  program_status = None
  if result is not None and result.get("program_gone"):
    program_status = _exited(program_pid, within_s=0.5)
  if program_status is None:
    _reap(program_pid, kill=True)
  _reap(tests_pid, kill=True)
  if "chroot" not in isolation:
    shutil.rmtree(workdir, ignore_errors=True)
  status, detail = _judge(result, program_status, _started(started_r),
                          header["timeout_s"])
  report = {"nonce": body["nonce"], "status": status, "detail": detail,
            "isolation": isolation}
  _say(report)


def _say(message: dict) -> None:
  os.write(1, (json.dumps(message) + "\n").encode("utf-8"))


def serve() -> None:
  """Fork server: one forked supervisor per request, until stdin closes.

  Without root, where the kernel lets unprivileged users create user
  namespaces, it first becomes root of one of its own (mapping only the
  user's ids) and then isolates its runs as root does, with capabilities
  dropped in place of a uid of their own.
  """
  jail.set_dumpable(False)
  net_isolated, root, userns = False, None, False
  if os.geteuid() != 0 and jail.user_namespace_works():
    try:
      jail.enter_user_namespace()
      userns = True
    except OSError:
      pass
  if os.geteuid() == 0:
    net_isolated = jail.enter_network_namespace()
    if jail.enter_mount_namespace():
      try:
        root = jail.build_root(sorted({
            sys.base_prefix, sys.prefix,
            os.path.dirname(os.path.realpath(sys.executable))}))
      except OSError:
        root = None
  while os.read(0, 1) == b"R":
    pid = os.fork()
    if pid == 0:
      try:
        run_one(net_isolated, root, userns)
      except BaseException:  # pylint: disable=broad-except
        _say({"crash": traceback.format_exc()[-_MAX_CRASH_CHARS:]})
      finally:
        os._exit(0)  # pylint: disable=protected-access
    _say({"pid": pid})
    _say({"done": os.waitpid(pid, 0)[1]})


if __name__ == "__main__":
  serve()
