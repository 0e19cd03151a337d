"""PPO clipping, KL estimators and loss aggregation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.rl import losses


def test_asymmetric_clip_and_zero_gradient_when_clipped():
  old = jnp.zeros((4, 1))
  logp = jnp.log(jnp.array([[1.5], [1.1], [0.5], [0.9]]))
  adv = jnp.array([1.0, 1.0, -1.0, -1.0])
  loss, clipped = losses.ppo_clipped(logp, old, adv, clip_low=0.2, clip_high=0.28)
  np.testing.assert_allclose(loss[:, 0], [-1.28, -1.1, 0.8, 0.9], atol=1e-6)
  np.testing.assert_array_equal(clipped[:, 0], [1, 0, 1, 0])
  grad = jax.grad(lambda lp: losses.ppo_clipped(lp, old, adv)[0].sum())(logp)
  assert grad[0, 0] == 0 and grad[2, 0] == 0
  np.testing.assert_allclose(grad[1, 0], -1.1, atol=1e-6)


def test_kl_estimators_are_unbiased_for_sampled_tokens():
  rng = np.random.default_rng(0)
  p = jax.nn.softmax(jnp.array([2.0, 0.5, -1.0, 0.0]))
  q = jax.nn.softmax(jnp.array([1.0, 1.0, 0.0, -0.5]))
  true_kl = float(jnp.sum(p * (jnp.log(p) - jnp.log(q))))
  samples = rng.choice(4, size=200_000, p=np.asarray(p))
  logp, ref = jnp.log(p)[samples], jnp.log(q)[samples]
  for est in losses.KL_ESTIMATORS:
    assert abs(float(losses.kl_divergence(logp, ref, est).mean()) - true_kl) < 5e-3
  assert float(losses.kl_divergence(logp, ref, "k3").min()) >= 0
  with pytest.raises(ValueError, match="k3"):
    losses.kl_divergence(logp, ref, "k2")


def test_aggregation_modes():
  values = jnp.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
  mask = jnp.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]])  # the third row is padding
  expect = {
      "token_mean": (10.0, 4.0),
      "seq_mean_token_mean": (2.0 + 4.0, 2.0),
      "seq_mean_token_sum": (10.0, 2.0),
      "constant": (10.0, 2.0 * 3),
  }
  for mode, (total, denom) in expect.items():
    got = losses.aggregate(values, mask, mode, constant=3.0)
    np.testing.assert_allclose([float(got[0]), float(got[1])], [total, denom])
  with pytest.raises(ValueError, match="token_mean"):
    losses.aggregate(values, mask, "mean")


def test_minibatch_sums_over_global_denominator_are_exact():
  rng = np.random.default_rng(1)
  values = jnp.asarray(rng.normal(size=(8, 5)))
  mask = jnp.asarray(rng.random((8, 5)) < 0.7)
  for mode in losses.AGGREGATIONS:
    total, denom = losses.aggregate(values, mask, mode, constant=5.0)
    parts = [losses.aggregate(values[i:i + 2], mask[i:i + 2], mode, constant=5.0)
             for i in range(0, 8, 2)]
    np.testing.assert_allclose(sum(p[0] for p in parts) / sum(p[1] for p in parts),
                               total / denom, rtol=1e-6)


def _verl_policy_loss(logp, old, adv, low, high, c):
  """verl core_algos.compute_policy_loss's per-token losses (pg_losses), in numpy."""
  ratio = np.exp(logp - old)
  pg1 = -adv * ratio
  pg2 = -adv * np.clip(ratio, 1 - low, 1 + high)
  clip1 = np.maximum(pg1, pg2)
  clip2 = np.minimum(-adv * c, clip1)
  return np.where(adv < 0, clip2, clip1)


def test_dual_clip_matches_verls_formula_and_is_off_at_zero():
  rng = np.random.default_rng(0)
  logp = rng.normal(0.0, 1.5, size=(6, 5)).astype(np.float32)  # ratios from ~0.01 to ~90
  old = rng.normal(0.0, 0.5, size=(6, 5)).astype(np.float32)
  adv = np.array([1.0, -1.0, 0.5, -2.0, 0.0, -0.3], np.float32)
  loss, _ = losses.ppo_clipped(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), 0.2, 0.28,
                               dual_clip=3.0)
  expect = _verl_policy_loss(logp, old, adv[:, None], 0.2, 0.28, 3.0)
  np.testing.assert_allclose(loss, expect, rtol=1e-5, atol=1e-6)
  bounded = np.asarray(losses.dual_clipped(jnp.asarray(logp), jnp.asarray(old),
                                           jnp.asarray(adv), 3.0))
  assert bounded.sum() > 0  # the draw has negative-advantage tokens past ratio 3
  off, _ = losses.ppo_clipped(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), 0.2, 0.28)
  assert np.any(np.asarray(off) != np.asarray(loss))  # where bounded, the plain clip is larger
  np.testing.assert_allclose(np.asarray(off)[bounded == 0], np.asarray(loss)[bounded == 0])
