"""What a sandboxed program can still reach where isolation is missing.

As root, every run gets rlimits, its own uid, and network, IPC, mount and
pid namespaces with a chroot; without root, where the kernel allows
unprivileged user namespaces, the same inside one of the sandbox's own
(capabilities dropped instead of a uid of its own). Otherwise (user
namespaces disabled, a container without CAP_SYS_ADMIN) some are missing, and the user is told once, at the first
verification, which ones and what that lets a program do. Without root the
trainer also makes its own memory unreadable to its children first.
"""

import ctypes
import logging
import os
import threading

FULL = ("rlimits", "netns", "ipcns", "mountns", "chroot", "uid-drop", "pidns")
ALLOWS = {
    "uid-drop": "run as the trainer's user: read and write its files, and "
                "signal or kill its other processes",
    "chroot": "see the host's filesystem (what the trainer's user can read), "
              "and leave files in /tmp for a later run to read",
    "mountns": "see the host's mounts",
    "pidns": "see every process on the host and start background processes "
             "that may outlive the run",
    "netns": "reach the network through raw system calls (only Python's "
             "socket module is stubbed out)",
    "ipcns": "create SysV/POSIX IPC objects that outlive the run and reach "
             "those of the host and of other runs",
}
_PR_SET_DUMPABLE = 4
_LOG = logging.getLogger("marl_jax.sandbox")
_WARNED = threading.Event()
_PROTECTED = threading.Event()


def missing(isolation) -> tuple:
  """The mechanisms of FULL that `isolation` lacks, in FULL's order.

  In a user namespace (no root) the program keeps the trainer's uid with
  every capability dropped ("caps-drop"); inside a chroot and a pid
  namespace that reaches none of the user's files or processes, so it
  stands for "uid-drop".
  """
  held = set(isolation)
  if {"caps-drop", "chroot", "pidns"} <= held:
    held.add("uid-drop")
  return tuple(m for m in FULL if m not in held and m != "rlimits")


def describe(isolation) -> str:
  """One message: what is missing and what a sandboxed program can do."""
  gaps = missing(isolation)
  if not gaps:
    return f"code sandbox isolation: {', '.join(isolation)}"
  can = "; ".join(f"without {m}, {ALLOWS[m]}" for m in gaps)
  root = os.geteuid() == 0
  where = "as root" if root else f"as uid {os.geteuid()}, not root"
  memory = ("" if root else " The trainer's own memory is unreadable to it "
            "(the trainer is non-dumpable, PR_SET_DUMPABLE=0).")
  return (f"code sandbox runs {where} with {', '.join(isolation) or 'nothing'}"
          f"; missing {', '.join(gaps)}. A sandboxed program can: {can}."
          f"{memory} For full isolation run the trainer as root (for example "
          "in a container that grants CAP_SYS_ADMIN).")


def note(isolation) -> None:
  """Warns once per process if a run's isolation lacks anything of FULL."""
  if isolation and missing(isolation) and not _WARNED.is_set():
    _WARNED.set()
    _LOG.warning(describe(isolation))


def protect_trainer_memory() -> bool:
  """Makes this process non-dumpable when it is not root (once).

  A non-dumpable process cannot be ptraced, and its /proc/<pid>/mem, maps,
  environ and fds cannot be opened, by processes of the same user that lack
  CAP_SYS_PTRACE: a sandboxed program running as the trainer's user can no
  longer read expected answers out of the trainer. As root the program runs
  under a uid of its own, which already denies all that, and the trainer
  stays dumpable (debuggers and core files keep working). Returns whether
  the process is protected this way.
  """
  if os.geteuid() == 0:
    return False
  if not _PROTECTED.is_set():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
      err = ctypes.get_errno()
      _LOG.warning("could not make the trainer non-dumpable (prctl: %s); "
                   "sandboxed programs may read its memory", os.strerror(err))
      return False
    _PROTECTED.set()
  return True
