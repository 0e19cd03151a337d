"""Host memory: the glibc malloc settings under which XLA:CPU reuses its buffers.

XLA:CPU allocates each execution's temporary buffer (837 MB for the 6.3M
model's update in launch/benchmark.py) with posix_memalign, from one of its
worker threads. glibc serves a worker thread from a secondary arena, which
cannot hold a block larger than 64 MB, so it maps fresh pages for the buffer
on every execution and unmaps them afterwards: the kernel zero-fills the
whole buffer again at every step, in page faults. Measured on a 2-core VM: 866
MB of page faults and 0.5 s of system time per 1.64 s train step; with these
settings 1.33 s, and no fault once the heap has grown to hold the buffers in
flight, which takes a few steps (the torch reference: 1.18 s without, 1.22 s
with them).

The settings keep every allocation in the main heap (one arena, no mmap'd
chunks) and never trim it, so a freed buffer stays mapped and the next
execution reuses it. They are read by glibc when a process starts, so the
launch scripts re-execute themselves with them (`reexec`); pytest's workers
keep the system's settings (tests/conftest.py says why). A value already in the
environment wins; MARL_JAX_SYSTEM_MALLOC=1 keeps the system's settings.
Elsewhere than Linux with glibc nothing changes. The cost is memory: the
process keeps its peak heap mapped until it exits, and that heap holds the
buffers of two executions in flight plus fragments (the benchmark's peak RSS:
1.75 GB -> 3.2 GB).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

from absl import logging

SETTINGS = {
    "MALLOC_ARENA_MAX": "1",               # worker threads allocate from the main heap
    "MALLOC_MMAP_MAX_": "0",               # ... in it, never in a chunk of its own
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),  # and freed memory stays mapped for reuse
}
OPT_OUT = "MARL_JAX_SYSTEM_MALLOC"


def applies(env: Mapping[str, str] | None = None) -> bool:
  """Whether the settings apply here: Linux with glibc, not opted out."""
  env = os.environ if env is None else env
  return (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
          and env.get(OPT_OUT, "") in ("", "0"))


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
  """A copy of `env` (default os.environ) with the settings added where absent."""
  env = dict(os.environ if env is None else env)
  if applies(env):
    for key, value in SETTINGS.items():
      env.setdefault(key, value)
  return env


def active(env: Mapping[str, str] | None = None) -> bool:
  """Whether this process (started with `env`) runs under the settings."""
  env = os.environ if env is None else env
  return applies(env) and all(env.get(k) == v for k, v in SETTINGS.items())


def advise() -> None:
  """Logs, on a CPU backend without the settings, how to run with them."""
  import jax  # pylint: disable=g-import-not-at-top
  if applies() and not active() and jax.default_backend() == "cpu":
    logging.warning(
        "XLA:CPU re-maps its temporary buffers at every step under this process's "
        "malloc settings (~1.3x slower updates); start Python with %s, or from a "
        "script that calls marl_jax.trainer.hostmem.reexec() first (the launch scripts do). "
        "%s=1 silences this.", " ".join(f"{k}={v}" for k, v in SETTINGS.items()), OPT_OUT)


def reexec() -> None:
  """Re-executes this Python process with the settings, unless it has them.

  Call it first in a script's main module: everything before it runs twice.
  """
  env = environment()
  if env != dict(os.environ):
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)
