"""Wall-clock timing of jitted calls, for the layers that choose by measurement
(the CPU kernels' selection) and for the benchmarks (marl_jax.bench.timing)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax


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
