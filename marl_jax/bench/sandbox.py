"""Measures sandbox throughput on a batch of short programs.

    python -m marl_jax.bench.sandbox --programs 512

A quarter of the programs are wrong, so passes and failures both count.
Prints programs/s and latency percentiles for the batch after a warm-up.
"""

import argparse
import collections
import dataclasses
import time
from typing import Optional

import numpy as np

from marl_jax.tasks.sandbox import runner as sandbox


@dataclasses.dataclass(frozen=True)
class BenchResult:
  programs: int
  workers: int
  seconds: float
  programs_per_s: float
  statuses: dict
  latency_p50_s: float
  latency_p95_s: float
  isolation: tuple


def short_jobs(n: int) -> list:
  """n HumanEval-sized programs with 3 asserts each; every 4th is wrong."""
  jobs = []
  for i in range(n):
    bias = 1 if i % 4 == 3 else 0
    program = (f"def solve(xs):\n    total = {bias}\n    for x in xs:\n"
               f"        total += x * {i % 7}\n    return total\n")
    tests = "".join(f"assert solve({list(range(k))}) == {(i % 7) * sum(range(k))}\n"
                    for k in (1, 3, 5))
    jobs.append(sandbox.Job(program, tests=tests, timeout_s=10.0))
  return jobs


def measure(programs: int = 512, workers: Optional[int] = None) -> BenchResult:
  """Runs `programs` short jobs (after a warm-up) and times the batch."""
  workers = workers or sandbox.default_workers()
  sandbox.run_tests_batch(short_jobs(2 * workers), workers=workers)  # warm-up
  jobs = short_jobs(programs)
  start = time.monotonic()
  verdicts = sandbox.run_tests_batch(jobs, workers=workers)
  seconds = time.monotonic() - start
  latencies = np.array([v.elapsed_s for v in verdicts])
  return BenchResult(
      programs=programs, workers=workers, seconds=seconds,
      programs_per_s=programs / seconds,
      statuses=dict(collections.Counter(v.status for v in verdicts)),
      latency_p50_s=float(np.percentile(latencies, 50)),
      latency_p95_s=float(np.percentile(latencies, 95)),
      isolation=verdicts[0].isolation)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--programs", type=int, default=512)
  parser.add_argument("--workers", type=int, default=None,
                      help="concurrent sandboxes (default: one per core)")
  args = parser.parse_args()
  result = measure(args.programs, args.workers)
  print(f"{result.programs} programs in {result.seconds:.2f}s with "
        f"{result.workers} workers: {result.programs_per_s:.1f} programs/s; "
        f"latency p50 {result.latency_p50_s * 1e3:.0f} ms, p95 "
        f"{result.latency_p95_s * 1e3:.0f} ms; statuses {result.statuses}; "
        f"isolation {', '.join(result.isolation)}")


if __name__ == "__main__":
  main()
