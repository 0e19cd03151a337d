r"""Runs a sweep of training runs locally, or prints one command per run for a scheduler.

  python launch/sweep.py --sweep=configs/sweeps.py:tiny --dir=sweeps/tiny --parallel=2
  python launch/sweep.py --sweep=configs/sweeps.py:tiny --dir=sweeps/tiny --status
  python launch/sweep.py --sweep=configs/sweeps.py:study --dir=/ckpt/study --print_commands
  python launch/sweep.py --sweep=configs/sweeps.py:tiny --dir=sweeps/tiny --publish=docs/study
  # a subset, any sweep field:  --only='voting-*-s0' --sweep.axes.seed="(0,1,2)"
Re-running the same command skips finished runs and resumes interrupted ones.
"""

from marl_jax.trainer import hostmem  # pylint: disable=g-bad-import-order
hostmem.reexec()  # before anything else: glibc reads malloc settings at start

import os

from absl import app, flags
from ml_collections import config_flags

from marl_jax.study import sweep
from marl_jax.trainer import console

_SWEEP = config_flags.DEFINE_config_file("sweep", "configs/sweeps.py:tiny", lock_config=True)
_DIR = flags.DEFINE_string("dir", None, "Sweep directory: one workdir per run inside it.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at a time (subprocesses).")
_PIN = flags.DEFINE_bool("pin_cpus", True, "With --parallel > 1, run each run on its own "
                         "share of this process's CPUs (Linux), so runs do not contend.")
_CACHE = flags.DEFINE_string(
    "compilation_cache", "xla_cache", "JAX's persistent compilation cache, shared by the "
    "runs (relative paths are inside --dir; '' for none). An inherited "
    "$JAX_COMPILATION_CACHE_DIR wins.")
_ONLY = flags.DEFINE_string("only", "", "Comma-separated globs of run names to keep.")
_PRINT = flags.DEFINE_bool("print_commands", False, "Print one command per run and exit.")
_STATUS = flags.DEFINE_bool("status", False, "Print the status table and exit.")
_PUBLISH = flags.DEFINE_string(
    "publish", None, "Copy the finished runs' results (config, metrics, first and last "
    "rollouts; no checkpoints) into this directory and exit.")
flags.mark_flag_as_required("dir")


def main(argv):
  del argv
  console.setup()  # library INFO off the console (--verbosity=0 brings it back)
  specs = sweep.select(sweep.expand(_SWEEP.value, _DIR.value), _ONLY.value)
  if not specs:
    raise app.UsageError(f"--only={_ONLY.value!r} matches no run of the sweep.")
  if _PRINT.value:
    print("\n".join(s.shell_command() for s in specs))
    return
  steps = sweep.total_steps(specs)  # also validates every run's config and overrides
  if _PUBLISH.value:
    names = sweep.publish(specs, steps, _PUBLISH.value)
    print(f"published {len(names)} finished runs of {len(specs)} to {_PUBLISH.value}")
    return
  if not _STATUS.value:
    sweep.write_manifest(_DIR.value, _SWEEP.value, specs)
    cache = _CACHE.value and os.path.join(_DIR.value, _CACHE.value)
    sweep.run_local(specs, _PARALLEL.value, steps=steps, pin_cpus=_PIN.value,
                    compilation_cache=cache,
                    launcher=os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py"))
  print(sweep.status_table([sweep.status(s, steps[s.name]) for s in specs]))


if __name__ == "__main__":
  app.run(main)
