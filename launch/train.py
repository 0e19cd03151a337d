r"""Trains a workflow with multi-agent GRPO.

  python launch/train.py --config=configs/default.py:workflow=voting,task=math \
      --workdir=runs/voting_math_sp
  # any field: --config.rl.lr=5e-5 --config.train.steps=100
Re-running the same command with the same --workdir resumes the run.
The console shows a progress line, warnings and errors; every log record
(orbax, jax, absl) goes to <workdir>/log.txt, and --verbosity=0 prints it too.
"""

from marl_jax.trainer import hostmem  # pylint: disable=g-bad-import-order
hostmem.reexec()  # before anything else: glibc reads malloc settings at start

from absl import app, flags
from ml_collections import config_flags

from marl_jax.trainer import console
from marl_jax.trainer import loop as train

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (config, metrics, checkpoints).")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  console.setup()  # library INFO off the console (--verbosity=0 brings it back)
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
