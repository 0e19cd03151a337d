"""Timing helpers and the machine's dense-matmul peak."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable, Iterator

import jax
from jax._src import dispatch, monitoring
import jax.numpy as jnp


@contextlib.contextmanager
def counting_compiles() -> Iterator[list[int]]:
  """Counts XLA backend compilations while the block runs, in the yielded [count]."""
  count = [0]

  def listener(event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    count[0] += event == dispatch.BACKEND_COMPILE_EVENT

  monitoring.register_event_duration_secs_listener(listener)
  try:
    yield count
  finally:
    monitoring.unregister_event_duration_listener(listener)


def median_seconds(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
  """Median wall time of fn() (its result is blocked on), after warm-up calls."""
  return interleaved_median_seconds({"fn": fn}, repeats, warmup)["fn"]


def interleaved_median_seconds(fns: dict[str, Callable[[], Any]], repeats: int = 5,
                               warmup: int = 1) -> dict[str, float]:
  """Median wall time of each fn(), the functions called in turn in every round.

  On a shared machine whose speed drifts over minutes, timing one side's
  repeats as a block and then the other's puts them in different conditions
  (our SmolLM2 generate over transformers': 1.78x and 1.81x in two such
  runs, 2.15-2.58x round by round in one process); alternating them gives
  both sides the same ones.
  """
  for _ in range(warmup):
    for fn in fns.values():
      jax.block_until_ready(fn())
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


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
