r"""The demo: the tiny world's Voting / math / shared-policy cell, sized for a few CPU minutes.

  make demo
  python launch/demo.py --workdir=runs/demo --config=configs/demo.py:workflow=eval_opt,policy=isolated

An override of configs/default.py (same arguments): marl_jax.trainer.config.demo_config.
"""

from marl_jax.trainer.config import demo_config as get_config  # pylint: disable=unused-import
