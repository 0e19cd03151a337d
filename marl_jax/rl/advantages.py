"""Group-relative advantages with an explicit choice of what forms a group.

A *call* is one role's generation inside one episode. Every call gets a
reward (the final workflow outcome broadcast to it, or its role's own reward)
and a group key; its advantage compares its reward with the other calls of
its group:

  grpo:  A_i = (r_i - mean_g(r)) / (std_g(r) + eps)      (std division optional:
         Dr. GRPO turns it off and uses A_i = r_i - mean_g(r))
  rloo:  A_i = r_i - mean_{g \\ i}(r)                      (leave-one-out baseline)

Groupings (`GROUPINGS`):
  episode   -- all calls of a problem's G episodes; statistics are over the G
               episodes, each counted once however many calls it made (with the
               broadcast reward this is plain GRPO over episodes);
  role      -- problem x role;
  role_turn -- problem x role x turn (AT-GRPO style);
  agent     -- problem x role x agent index.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

GROUPINGS = ("episode", "role", "role_turn", "agent")
ESTIMATORS = ("grpo", "rloo")


def group_keys(grouping: str, problem: Sequence[int], episode: Sequence[int],
               role: Sequence[str], turn: Sequence[int], agent: Sequence[int]) -> np.ndarray:
  """Integer group id of every call, for the named grouping."""
  if grouping not in GROUPINGS:
    raise ValueError(f"Unknown grouping {grouping!r}; valid groupings: {GROUPINGS}.")
  columns = {"episode": (problem,), "role": (problem, role),
             "role_turn": (problem, role, turn), "agent": (problem, role, agent)}[grouping]
  keys = list(zip(*columns))
  index: dict = {}
  return np.array([index.setdefault(k, len(index)) for k in keys], np.int64)


def call_weights(grouping: str, episode: Sequence[int]) -> np.ndarray:
  """Weight of each call in its group's statistics (1 / calls of its episode for 'episode')."""
  episode = np.asarray(episode)
  if grouping != "episode":
    return np.ones(len(episode))
  _, inverse, counts = np.unique(episode, return_inverse=True, return_counts=True)
  return 1.0 / counts[inverse]


def group_advantages(rewards: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None,
                     *, estimator: str = "grpo", normalize_std: bool = True,
                     eps: float = 1e-6) -> np.ndarray:
  """Advantage of every call from its reward and group (module docstring).

  Args:
    rewards: [N] float rewards.
    groups: [N] integer group ids.
    weights: [N] weight of each call in its group's mean and std (default 1).
    estimator: 'grpo' or 'rloo'.
    normalize_std: divide by the group's standard deviation (GRPO); off for
      Dr. GRPO. A group with a single member, or with zero spread, gets 0.
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"Unknown advantage estimator {estimator!r}; valid: {ESTIMATORS}.")
  rewards = np.asarray(rewards, np.float64)
  groups = np.asarray(groups)
  weights = np.ones_like(rewards) if weights is None else np.asarray(weights, np.float64)
  _, inverse = np.unique(groups, return_inverse=True)
  w_sum = np.bincount(inverse, weights)
  wr_sum = np.bincount(inverse, weights * rewards)
  mean = wr_sum / w_sum
  if estimator == "grpo":
    centred = rewards - mean[inverse]
  else:
    others = w_sum[inverse] - weights
    loo_mean = np.where(others > 0, (wr_sum[inverse] - weights * rewards) / np.maximum(others, 1e-12), rewards)
    centred = rewards - loo_mean
  if normalize_std:
    var = np.bincount(inverse, weights * (rewards - mean[inverse]) ** 2) / w_sum
    centred = centred / (np.sqrt(var)[inverse] + eps)
  return centred.astype(np.float32)
