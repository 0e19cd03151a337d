"""A task and a reward of your own, trained from the command line: 'countdown'.

The task: subtract two numbers below 100 (`73-18=`), a registered variant of
the tiny world's arithmetic. The reward, `partial_credit`, shapes what the
verifier says: 1 for the right number, up to 0.5 for a near miss (less the
further off), and 0.1 less when the reply is more than a bare number (a
format penalty, so rewards fall below 0). Accuracy stays the verifier's:
only an exact answer counts as correct.

    python launch/train.py --workdir=runs/countdown \\
      --config=configs/default.py:workflow=voting,model=tiny_s,import=marl_jax.workflows.examples.partial_credit \\
      --config.task.name=countdown \\
      --config.task.reward_fn=marl_jax.workflows.examples.partial_credit:partial_credit

The first run warm-starts a tiny base for the new task (minutes, then
cached). From Python:

    import marl_jax.workflows.examples.partial_credit  # registers "countdown"
    task = tasks.rewards.with_reward(tasks.get("countdown"), partial_credit)
"""

from __future__ import annotations

import re

from marl_jax import tasks
from marl_jax.tasks.math.arithmetic import ArithmeticTask

_NUMBER = re.compile(r"-?\d+")


def countdown(digits: int = 2, data_seed: int = 0, strictness: str = "lenient"
              ) -> ArithmeticTask:
  """Two-operand subtraction, `digits` digits per operand."""
  task = ArithmeticTask(digits=digits, operators="-", terms=2, data_seed=data_seed,
                        strictness=strictness)
  task.name = "countdown"
  task.prompt_family = "tiny_math"  # the tiny world's prompts, which its bases read
  return task


def partial_credit(problem: tasks.Problem, completion: str) -> float:
  """1 exact; 0.5 / (1 + |error|) for another number; -0.1 for more than a bare number."""
  numbers = _NUMBER.findall(completion)
  if not numbers:
    return -0.1
  value, reference = int(numbers[-1]), int(problem.reference)
  reward = 1.0 if value == reference else 0.5 / (1 + abs(value - reference))
  bare = completion.strip() == numbers[-1]
  return reward if bare else reward - 0.1


tasks.register("countdown", countdown)
