"""Group-relative advantages: groupings, std normalization, RLOO, episode weighting."""

import numpy as np
import pytest

from marl_jax.rl import advantages as adv


def test_grpo_normalizes_within_group_only():
  rewards = np.array([1, 0, 0, 1, 1, 1, 0, 1], float)
  groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  a = adv.group_advantages(rewards, groups)
  np.testing.assert_allclose(a[:4], [1, -1, -1, 1], atol=1e-5)
  m, s = 0.75, np.sqrt(0.1875)
  np.testing.assert_allclose(a[4:], (rewards[4:] - m) / (s + 1e-6), atol=1e-5)


def test_dr_grpo_skips_std_and_degenerate_groups_get_zero():
  rewards = np.array([1, 0, 0, 1, 1, 0.5], float)
  groups = np.array([0, 0, 0, 1, 1, 2])
  a = adv.group_advantages(rewards, groups, normalize_std=False)
  np.testing.assert_allclose(a, [2 / 3, -1 / 3, -1 / 3, 0, 0, 0], atol=1e-6)
  a = adv.group_advantages(rewards, groups)
  assert a[3] == 0 and a[4] == 0 and a[5] == 0  # zero spread and singleton groups


def test_rloo_uses_leave_one_out_baseline():
  a = adv.group_advantages(np.array([1.0, 0.0, 0.0]), np.zeros(3, int), estimator="rloo",
                           normalize_std=False)
  np.testing.assert_allclose(a, [1.0, -0.5, -0.5], atol=1e-6)


def test_episode_grouping_counts_each_episode_once():
  # Episode 0 made three calls (reward 1), episode 1 made one (reward 0):
  # GRPO over episodes has mean 0.5, not the call-average 0.75.
  episode = [0, 0, 0, 1]
  w = adv.call_weights("episode", episode)
  a = adv.group_advantages(np.array([1.0, 1, 1, 0]), np.zeros(4, int), w, normalize_std=False)
  np.testing.assert_allclose(a, [0.5, 0.5, 0.5, -0.5], atol=1e-6)
  np.testing.assert_array_equal(adv.call_weights("role", episode), np.ones(4))


def test_group_keys_per_grouping():
  problem = [0, 0, 0, 0, 1, 1]
  episode = [0, 0, 1, 1, 2, 2]
  role = ["gen", "agg", "gen", "gen", "gen", "agg"]
  turn = [0, 1, 0, 1, 0, 1]
  agent = [0, 0, 0, 1, 0, 0]
  n_groups = {g: len(set(adv.group_keys(g, problem, episode, role, turn, agent)))
              for g in adv.GROUPINGS}
  assert n_groups == {"episode": 2, "role": 4, "role_turn": 5, "agent": 5}
  with pytest.raises(ValueError, match="valid groupings"):
    adv.group_keys("per_token", problem, episode, role, turn, agent)
  with pytest.raises(ValueError, match="rloo"):
    adv.group_advantages(np.ones(2), np.zeros(2), estimator="ppo")
