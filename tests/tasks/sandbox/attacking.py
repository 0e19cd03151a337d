"""Helpers for the attack suites: which uids a test's sandboxes ran as, and
what of theirs is left on the host (processes, SysV IPC objects)."""

import contextlib
import os

from marl_jax.tasks.sandbox import runner as sandbox

_SYSV_TABLES = ("/proc/sysvipc/shm", "/proc/sysvipc/msg", "/proc/sysvipc/sem")


@contextlib.contextmanager
def recording_uids(monkeypatch, uids=None):
  """Yields a list (`uids`, or a new one) that fills with the uids of every
  sandbox run started inside the block (and only those: other tests may
  run sandboxes at the same time)."""
  uids = [] if uids is None else uids
  choose = sandbox._fresh_uids  # pylint: disable=protected-access

  def recording():
    chosen = choose()
    uids.extend(chosen)
    return chosen

  monkeypatch.setattr(sandbox, "_fresh_uids", recording)
  yield uids


def processes_of(uids) -> list:
  """Pids of live processes whose real uid is one of `uids`."""
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/status") as f:
        uid = int(next(l for l in f if l.startswith("Uid:")).split()[1])
    except (OSError, StopIteration):
      continue
    if uid in uids:
      found.append(pid)
  return found


def sysv_objects_of(uids) -> list:
  """SysV shared memory, message queues and semaphores in this IPC
  namespace created or owned by one of `uids` (as `table: line`)."""
  found = []
  for table in _SYSV_TABLES:
    try:
      with open(table) as f:
        header = f.readline().split()
        rows = [dict(zip(header, line.split())) for line in f]
    except OSError:
      continue
    for row in rows:
      owners = {row.get("uid"), row.get("cuid")}
      if any(str(u) in owners for u in uids):
        found.append(f"{table}: key {row.get('key')}")
  return found


def sysv_keys() -> set:
  """Keys of every SysV IPC object in this IPC namespace."""
  keys = set()
  for table in _SYSV_TABLES:
    try:
      with open(table) as f:
        f.readline()
        keys.update(int(line.split()[0]) for line in f)
    except (OSError, ValueError, IndexError):
      continue
  return keys


def files_of(uids, folders=("/tmp", "/var/tmp", "/dev/shm")) -> list:
  """Entries directly in the host's shared folders owned by one of `uids`."""
  found = []
  for folder in folders:
    try:
      entries = list(os.scandir(folder))
    except OSError:
      continue
    for entry in entries:
      try:
        if entry.stat(follow_symlinks=False).st_uid in uids:
          found.append(entry.path)
      except OSError:
        continue
  return found
