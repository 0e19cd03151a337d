r"""Benchmarks, each a same-run ratio; the last line printed is one JSON object.

  OMP_WAIT_POLICY=PASSIVE python launch/benchmark.py
  python launch/benchmark.py --only=generate_tiny
  python launch/benchmark.py --only=rollout_long --full
"""

from marl_jax.trainer import hostmem  # pylint: disable=g-bad-import-order
hostmem.reexec()  # before anything else: glibc reads malloc settings at start

import os

# The torch references must not busy-wait (it inflates our ratios on a
# loaded machine) and use one thread per core: set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import app, flags  # pylint: disable=wrong-import-position

from marl_jax.bench import suite  # pylint: disable=wrong-import-position
from marl_jax.trainer import console  # pylint: disable=wrong-import-position

_ONLY = flags.DEFINE_list("only", [], f"Subset of benchmarks to run; all: {list(suite.BENCHMARKS)}.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions per figure (median is reported).")
_FULL = flags.DEFINE_bool("full", False, "Full-size runs of the sized benchmarks (rollout_long: "
                          "SmolLM2 at the 512-token cap; tens of minutes on 2 cores).")


def main(argv):
  del argv
  console.setup()  # library INFO off the console (--verbosity=0 brings it back)
  results = suite.run(_ONLY.value, repeats=_REPEATS.value, full=_FULL.value)
  print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
