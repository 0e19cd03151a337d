"""The malloc settings that let XLA:CPU reuse its buffers (marl_jax/trainer/hostmem.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from marl_jax.trainer import hostmem
from tests.helpers import REPO

pytestmark = pytest.mark.skipif(not hostmem.applies({}), reason="needs Linux with glibc")

# Re-executes itself with the settings, then runs a program whose temporary
# buffer (a [4096, 8192] f32 product: 134 MB) is larger than a glibc arena,
# and reports the median page faults of its executions after warm-up (the
# heap takes a few executions to hold every buffer in flight at once).
_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from marl_jax.trainer import hostmem
    hostmem.reexec()
    import json, os, resource, statistics
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x, w1, w2: jnp.tanh(x @ w1) @ w2)
    args = (jnp.ones((4096, 64)), jnp.ones((64, 8192)) / 64, jnp.ones((8192, 16)))
    temp = f.lower(*args).compile().memory_analysis().temp_size_in_bytes
    faults = []
    for _ in range(16):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      f(*args).block_until_ready()
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    faults = statistics.median(faults[6:])
    print(json.dumps(dict(faults=faults, temp_pages=temp / 4096, active=hostmem.active(),
                          env={{k: os.environ.get(k) for k in hostmem.SETTINGS}})))
""")


def _run_child(env: dict[str, str]) -> dict:
  root = REPO
  out = subprocess.run([sys.executable, "-c", _CHILD.format(root=root)], env=env,
                       capture_output=True, text=True, timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _clean_env(**extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k not in hostmem.SETTINGS and k != hostmem.OPT_OUT}
  return {**env, **extra}


def test_environment_adds_settings_and_keeps_the_users_values():
  env = hostmem.environment({"MALLOC_ARENA_MAX": "4", "PATH": "/bin"})
  assert env["MALLOC_ARENA_MAX"] == "4" and env["PATH"] == "/bin"
  assert env["MALLOC_MMAP_MAX_"] == hostmem.SETTINGS["MALLOC_MMAP_MAX_"]
  assert not hostmem.active(env)
  assert hostmem.active(hostmem.environment({}))
  assert hostmem.environment({hostmem.OPT_OUT: "1"}) == {hostmem.OPT_OUT: "1"}


def test_reexec_removes_the_page_faults_of_xlas_temporary_buffer():
  tuned = _run_child(_clean_env())
  assert tuned["active"], tuned
  assert tuned["env"] == hostmem.SETTINGS
  assert tuned["temp_pages"] > 30_000, tuned  # the buffer is larger than an arena
  # Without the settings, glibc maps (and the kernel zero-fills) the buffer at
  # every execution; with them, it is reused: next to no faults.
  system = _run_child(_clean_env(**{hostmem.OPT_OUT: "1"}))
  assert not system["active"] and system["env"] == {k: None for k in hostmem.SETTINGS}
  assert system["faults"] > 0.5 * system["temp_pages"], (tuned, system)
  assert tuned["faults"] < 0.05 * tuned["temp_pages"], (tuned, system)


def test_advise_names_the_settings_only_when_they_are_missing(monkeypatch, caplog):
  for key, value in hostmem.SETTINGS.items():
    monkeypatch.setenv(key, value)
  monkeypatch.delenv(hostmem.OPT_OUT, raising=False)
  hostmem.advise()
  assert "MALLOC_ARENA_MAX" not in caplog.text
  monkeypatch.delenv("MALLOC_MMAP_MAX_")
  hostmem.advise()
  assert "MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0" in caplog.text
  caplog.clear()
  monkeypatch.setenv(hostmem.OPT_OUT, "1")
  hostmem.advise()
  assert not caplog.text
