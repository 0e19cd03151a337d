"""The training loop and everything a run is made of: building a run and its
train state, evaluation, devices and hosts, checkpoints, the run directory,
metrics, the memory planner and host-memory settings.

    marl_jax.trainer.train_and_evaluate(config, workdir)
"""

from marl_jax.trainer.loop import train_and_evaluate

__all__ = ["train_and_evaluate"]
