"""Timing helpers and the machine's dense-matmul peak."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import jax
from jax._src import dispatch, monitoring
import jax.numpy as jnp

from marl_jax.models.timing import interleaved_median_seconds

# jax._src.compiler's duration event for a program read from the persistent cache
_CACHE_LOAD_EVENT = "/jax/compilation_cache/cache_retrieval_time_sec"


@contextlib.contextmanager
def counting_compiles() -> Iterator[list[int]]:
  """Counts the programs XLA builds while the block runs, in the yielded [count]:
  each one compiled, or loaded from JAX's persistent compilation cache (a
  program another process compiled: a sweep's runs, a test run's workers)."""
  count = [0]

  def listener(event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    count[0] += event in (dispatch.BACKEND_COMPILE_EVENT, _CACHE_LOAD_EVENT)

  monitoring.register_event_duration_secs_listener(listener)
  try:
    yield count
  finally:
    monitoring.unregister_event_duration_listener(listener)


def median_seconds(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
  """Median wall time of fn() (its result is blocked on), after warm-up calls."""
  return interleaved_median_seconds({"fn": fn}, repeats, warmup)["fn"]


def matmul_peak_gflops(n: int = 2048, repeats: int = 7) -> float:
  """Achieved GFLOP/s of a dense float32 n x n matmul: the machine's practical peak."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2 * n**3 / median_seconds(lambda: f(a), repeats) / 1e9


def memory_bandwidth_gbs(mib: int = 256, repeats: int = 7) -> float:
  """Achieved GB/s of reading a large float32 array (a sum): what decode does to weights.

  Not a copy: each call's fresh 256 MiB output is first-touched page by page,
  which measured 3.8 GB/s here and put decode at 2.4x its own "roofline".
  """
  x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
  f = jax.jit(jnp.sum)
  return x.nbytes / median_seconds(lambda: f(x), repeats) / 1e9
