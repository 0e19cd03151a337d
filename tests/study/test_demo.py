"""`make demo`'s path on a shrunken budget: the shipped base, training, the table, the report."""

import os

import pytest

from marl_jax.trainer.config import demo_config
from marl_jax import tiny
from marl_jax.study import demo
from marl_jax.tiny import cache


def test_demo_path_from_the_shipped_base_to_the_report(tmp_path, capsys):
  config = demo_config()
  key = tiny.cache_key(config)
  if not os.path.isdir(os.path.join(cache.SHIPPED_DIR, key)):
    pytest.fail(f"the demo's base {key} is not shipped in {cache.SHIPPED_DIR}: rebuild it with "
                "launch/pretrain_tiny.py --preset=tiny_m --ship after changing what it is "
                "built from.")
  config.tiny.cache_dir = str(tmp_path / "empty_cache")  # the shipped entry must be found
  config.rollout.batch_size, config.rollout.group_size = 2, 2
  config.train.steps, config.train.eval_every, config.train.checkpoint_every = 2, 2, 1
  # The update compiles the lengths it meets, not every bucket ahead (45 s here;
  # tests/rl/test_update.py checks compile_ahead).
  config.rl.compile_ahead = False
  config.eval.num_problems = 32
  workdir = str(tmp_path / "demo")
  result = demo.run(config, workdir)
  assert not os.path.exists(config.tiny.cache_dir)  # nothing was warm-started
  assert result["steps"] == 2
  # The shipped base is a trained model, not a random one: it solves held-out problems.
  assert result["base/sampled"] >= 0.1, result
  printed = capsys.readouterr().out
  assert "held-out accuracy" in printed and f"{result['base/sampled']:.3f}" in printed
  # A short console that ends with the table (the libraries' log is in log.txt).
  lines = printed.strip().splitlines()
  assert len(lines) <= 30 and lines[-1].startswith("sampled"), printed
  assert os.path.getsize(os.path.join(workdir, "log.txt")) > 0
  text = open(os.path.join(workdir, "report.md")).read()
  assert "| base | peak (step) | final (step) |" in text
  assert os.path.getsize(os.path.join(workdir, "report_accuracy.png")) > 5000
