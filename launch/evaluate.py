r"""Evaluates a base model or a run's checkpoint on held-out problems; writes JSON.

  python launch/evaluate.py --workdir=runs/voting_sp --output=eval.json        # latest checkpoint
  python launch/evaluate.py --workdir=runs/voting_sp --step=20 --output=eval.json
  python launch/evaluate.py --config=configs/default.py:workflow=voting --output=base.json
  python launch/evaluate.py --workdir=runs/voting_sp --export_dir=export/    # per-role HF dirs
"""

from marl_jax.trainer import hostmem  # pylint: disable=g-bad-import-order
hostmem.reexec()  # before anything else: glibc reads malloc settings at start

import json

from absl import app, flags
from ml_collections import config_flags

from marl_jax.trainer import build
from marl_jax.trainer import console
from marl_jax.trainer import evaluate
from marl_jax.trainer import restore as checkpoint_io

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config of a base-model evaluation.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A run directory (its config and checkpoints).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the JSON results.")
_EXPORT = flags.DEFINE_string("export_dir", None, "Also export each role's policy (HF format).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace what --export_dir holds.")
_N = flags.DEFINE_integer("num_problems", None, "Held-out problems (default: config.eval).")


def main(argv):
  del argv
  console.setup()  # library INFO off the console (--verbosity=0 brings it back)
  if bool(_CONFIG.value) == bool(_WORKDIR.value):
    raise app.UsageError("Give exactly one of --config (a base model) or --workdir (a run).")
  config = checkpoint_io.load_config(_WORKDIR.value) if _WORKDIR.value else _CONFIG.value
  run = build.build(config)
  step, trainable = 0, run.store.trainable
  if _WORKDIR.value:
    step, trainable = checkpoint_io.restore_trainable(run, _WORKDIR.value, _STEP.value)
  results = {"step": step, **evaluate.evaluate(run, trainable, num_problems=_N.value)}
  if _EXPORT.value:
    results["exported"] = checkpoint_io.export_roles(run, trainable, _EXPORT.value,
                                                     overwrite=_OVERWRITE.value)
  text = json.dumps(results, indent=1, sort_keys=True)
  print(text)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
