r"""The embedded main job: the tiny world end to end on a CPU, in minutes.

  make demo                      # Voting, math, shared policy
  python launch/demo.py --workdir=runs/demo --config=configs/default.py:workflow=eval_opt

Builds (or reuses) the warm-started tiny base, trains the workflow with
multi-agent GRPO, evaluates base and trained policies on held-out problems,
prints a table and writes <workdir>/report.md with the accuracy curve. The
libraries' log goes to <workdir>/log.txt (--verbosity=0: to the console too).
"""

from marl_jax.trainer import hostmem  # pylint: disable=g-bad-import-order
hostmem.reexec()  # before anything else: glibc reads malloc settings at start

from absl import app, flags
from ml_collections import config_flags

from marl_jax.study import demo
from marl_jax.trainer import console

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Run directory.")


def main(argv):
  del argv
  console.setup()  # library INFO off the console (--verbosity=0 brings it back)
  demo.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
