"""Where isolation is missing: the one-time warning, and the trainer's memory
made unreadable to processes of its own user."""

import logging
import os
import subprocess
import sys
import threading

import pytest

from marl_jax.tasks.sandbox import exposure

NOBODY = 65534

# Runs as root, becomes `nobody`, then forks a child of the same uid that
# looks for a secret in its parent's memory through /proc/<ppid>/mem.
_READ_PARENT = """
import ctypes, os, re, sys
from marl_jax.tasks.sandbox import exposure
secret = ("tok-" + os.urandom(8).hex()).encode()
os.setgroups([])
os.setresgid({nobody}, {nobody}, {nobody})
os.setresuid({nobody}, {nobody}, {nobody})
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # dumpable again, as a user's trainer is
if sys.argv[1] == "protect":
    assert exposure.protect_trainer_memory()
r, w = os.pipe()
if os.fork() == 0:
    outcome = b"none"
    try:
        parent = os.getppid()
        with open(f"/proc/{{parent}}/maps") as maps, \\
             open(f"/proc/{{parent}}/mem", "rb") as mem:
            for line in maps:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                try:
                    mem.seek(lo)
                    if re.search(re.escape(secret), mem.read(hi - lo)):
                        outcome = b"read"
                        break
                except (OSError, OverflowError, ValueError):
                    continue
    except OSError:
        outcome = b"denied"
    os.write(w, outcome)
    os._exit(0)
os.wait()
print(os.read(r, 16).decode())
"""


def _read_parent(mode: str) -> str:
  result = subprocess.run(
      [sys.executable, "-c", _READ_PARENT.format(nobody=NOBODY), mode],
      capture_output=True, text=True, timeout=60, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
          os.path.abspath(__file__))))))
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another "
                    "user (nobody) whose processes can read each other")
def test_a_non_root_trainer_is_unreadable_to_its_users_processes():
  assert _read_parent("protect") == "denied"
  control = _read_parent("leave")
  if control != "read":
    pytest.skip(f"this kernel already denies same-user memory reads ({control})")


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the root case")
def test_a_root_trainer_stays_dumpable():
  # Its programs run under uids of their own, which cannot read it anyway.
  assert exposure.protect_trainer_memory() is False


def test_missing_isolation_is_warned_once(monkeypatch, caplog):
  monkeypatch.setattr(exposure, "_WARNED", threading.Event())
  with caplog.at_level(logging.WARNING, logger="marl_jax.sandbox"):
    exposure.note(exposure.FULL)
    assert not caplog.records
    exposure.note(("rlimits", "socket-stub"))
    exposure.note(("rlimits", "socket-stub"))
  assert len(caplog.records) == 1
  message = caplog.records[0].getMessage()
  for mechanism in ("uid-drop", "chroot", "pidns", "netns", "ipcns"):
    assert mechanism in message
  assert "signal or kill its other processes" in message
  assert "run the trainer as root" in message


def test_describe_names_only_what_is_missing():
  text = exposure.describe(("rlimits", "netns", "mountns", "chroot", "uid-drop",
                            "pidns"))
  assert "missing ipcns" in text and "IPC objects" in text
  assert "without chroot" not in text
  assert exposure.describe(exposure.FULL).startswith("code sandbox isolation")
