r"""Builds (or finds in the cache) the warm-started base of a tiny preset.

  python launch/pretrain_tiny.py --preset=tiny_m
  python launch/pretrain_tiny.py --config=configs/default.py:model=tiny_l --config.tiny.lr=2e-3
  # and the base's accuracy for every workflow x task (temperature 1, held-out problems):
  python launch/pretrain_tiny.py --preset=tiny_m --evaluate --alsologtostderr
  # maintainers: copy the entry into the package (marl_jax/tiny/bases), which ships it
  python launch/pretrain_tiny.py --preset=tiny_m --ship

The cache directory is config.tiny.cache_dir, else $MARL_JAX_CACHE, else
~/.cache/marl_jax/tiny; training runs reuse the entry built here.
"""

from marl_jax.trainer import hostmem  # pylint: disable=g-bad-import-order
hostmem.reexec()  # before anything else: glibc reads malloc settings at start

from absl import app, flags
from ml_collections import config_flags

from marl_jax import tiny
from marl_jax.tiny import base_accuracy, cache

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", lock_config=True)
_PRESET = flags.DEFINE_string("preset", "", "Tiny preset (overrides config.model.preset).")
_EVALUATE = flags.DEFINE_bool("evaluate", False,
                              "Print the base's accuracy for every workflow x task.")
_PROBLEMS = flags.DEFINE_integer("eval_problems", 128, "Held-out problems per cell (--evaluate).")
_SHIP = flags.DEFINE_bool("ship", False, "Copy the cache entry into marl_jax/tiny/bases.")


def main(argv):
  del argv
  config = _CONFIG.value
  if _PRESET.value:
    config.model.preset = _PRESET.value
  model, params = tiny.base_model(config)
  if _SHIP.value:
    print("shipped:", cache.ship(cache.cache_dir(config.tiny.cache_dir), tiny.cache_key(config)))
  if _EVALUATE.value:
    table = base_accuracy.workflow_accuracy(config, model, params, _PROBLEMS.value)
    print(base_accuracy.format_table(table))


if __name__ == "__main__":
  app.run(main)
