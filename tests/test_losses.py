"""Known answers and invariants of every loss term."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepsalt_jax import losses
from deepsalt_jax import targets


def test_target_transforms_round_trip():
  ec = jnp.array([0.0, 1.0, 16.0, 120.0])
  forward, inverse = targets.TRANSFORMS['log1p']
  np.testing.assert_allclose(forward(ec)[1], math.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(inverse(forward(ec)), ec, rtol=1e-5)
  forward, inverse = targets.TRANSFORMS['identity']
  np.testing.assert_array_equal(inverse(forward(ec)), ec)


def test_regression_loss_known_answers():
  pred = jnp.array([0.0, 2.0, -3.0])
  target = jnp.zeros(3)
  # Huber (delta 1): 0, 1 * (2 - 0.5), 1 * (3 - 0.5) -> mean 4/3.
  np.testing.assert_allclose(losses.regression_loss(pred, target), 4.0 / 3.0,
                             rtol=1e-6)
  # delta 3: all three inside the quadratic zone: 0.5 * (0 + 4 + 9) / 3.
  np.testing.assert_allclose(
      losses.regression_loss(pred, target, delta=3.0), 13.0 / 6.0, rtol=1e-6)
  np.testing.assert_allclose(losses.regression_loss(pred, target, kind='mse'),
                             13.0 / 3.0, rtol=1e-6)
  with pytest.raises(ValueError, match="'huber' or 'mse'"):
    losses.regression_loss(pred, target, kind='l1')


def _gaussian(n, d, shift=0.0, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, d)) + shift


def test_mmd_zero_for_identical_and_grows_with_shift():
  x = _gaussian(64, 8)
  assert abs(float(losses.mmd(x, x))) < 1e-6
  values = [float(losses.mmd(x, _gaussian(64, 8, shift, seed=1)))
            for shift in (0.0, 0.5, 1.0, 2.0)]
  assert values[0] < 0.05  # Same distribution, other draws: small.
  assert all(a < b for a, b in zip(values, values[1:])), values


def test_mmd_is_translation_invariant():
  # Features with a large common component (similar spectra) must not lose
  # the distances to cancellation.
  x, y = _gaussian(32, 8), _gaussian(32, 8, 0.5, seed=1)
  np.testing.assert_allclose(losses.mmd(x + 100.0, y + 100.0),
                             losses.mmd(x, y), rtol=2e-5)


def test_mmd_fixed_bandwidth_known_answer():
  # One point per domain, distance 1, h = 1: 1 + 1 - 2 exp(-1).
  value = losses.mmd(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]]),
                     bandwidths=(1.0,))
  np.testing.assert_allclose(value, 2.0 - 2.0 * math.exp(-1.0), rtol=1e-6)


def test_coral_known_answers():
  x = _gaussian(32, 4)
  # A shift leaves the covariance, hence CORAL, unchanged: 0.
  assert abs(float(losses.coral(x, x + 3.0))) < 1e-5
  # d = 1: var([-1, 1]) = 2, var([-2, 2]) = 8 -> (2 - 8)^2 / 4 = 9.
  value = losses.coral(jnp.array([[-1.0], [1.0]]), jnp.array([[-2.0], [2.0]]))
  np.testing.assert_allclose(value, 9.0, rtol=1e-6)


def test_gradient_reversal_flips_and_scales_gradient():
  x = jnp.array([1.0, -2.0, 3.0])
  w = jnp.array([0.5, 1.0, -1.0])
  np.testing.assert_array_equal(losses.gradient_reversal(x, 2.0), x)
  grad = jax.grad(lambda x: jnp.sum(losses.gradient_reversal(x, 2.0) * w))(x)
  np.testing.assert_allclose(grad, -2.0 * w)
  # A traced scale (e.g. a schedule inside jit) works too.
  grad = jax.jit(jax.grad(lambda x, s: jnp.sum(
      losses.gradient_reversal(x, s) * w)))(x, 0.5)
  np.testing.assert_allclose(grad, -0.5 * w)


def test_adversarial_loss_and_gradient_signs():
  source, target = _gaussian(8, 3), _gaussian(8, 3, shift=1.0, seed=1)
  zero = lambda f: jnp.zeros(f.shape[0])
  np.testing.assert_allclose(losses.adversarial(source, target, zero),
                             math.log(2.0), rtol=1e-6)

  def bce(w, source, target, reverse):
    disc = lambda f: f @ w
    if reverse:
      return losses.adversarial(source, target, disc)
    return 0.5 * (jnp.mean(jax.nn.softplus(-disc(source))) +
                  jnp.mean(jax.nn.softplus(disc(target))))

  w = jnp.array([0.3, -0.2, 0.1])
  grads = {r: jax.grad(bce, argnums=(0, 1))(w, source, target, r)
           for r in (False, True)}
  # Same loss value; the discriminator descends the BCE, the features ascend.
  np.testing.assert_allclose(grads[True][0], grads[False][0], rtol=1e-6)
  np.testing.assert_allclose(grads[True][1], -grads[False][1], rtol=1e-6)


def test_alignment_loss_dispatch_and_errors():
  source, target = _gaussian(16, 4), _gaussian(16, 4, shift=1.0, seed=1)
  disc = lambda f: jnp.sum(f, axis=-1)
  for name, fn in (('mmd', losses.mmd), ('coral', losses.coral)):
    # The discriminator is ignored by the non-adversarial losses.
    np.testing.assert_allclose(
        losses.alignment_loss(name, source, target, discriminator=disc),
        fn(source, target), rtol=1e-6)
  np.testing.assert_allclose(
      losses.alignment_loss('mmd', source, target, bandwidths=(2.0,)),
      losses.mmd(source, target, bandwidths=(2.0,)), rtol=1e-6)
  np.testing.assert_allclose(
      losses.alignment_loss('adversarial', source, target, disc),
      losses.adversarial(source, target, disc), rtol=1e-6)
  with pytest.raises(ValueError, match='mmd, coral, adversarial'):
    losses.alignment_loss('wasserstein', source, target)
  with pytest.raises(ValueError, match='needs a discriminator'):
    losses.alignment_loss('adversarial', source, target)
  with pytest.raises(ValueError, match='same d'):
    losses.alignment_loss('coral', source, target[:, :3])


def test_distillation_loss_known_answers_and_frozen_teacher():
  feats, pred = _gaussian(4, 8), jnp.arange(4.0)
  assert float(losses.distillation_loss(feats, feats, pred, pred)) == 0.0
  # Feature gap 1 everywhere, prediction gap 2: 0.5 * 1 + 3 * 4.
  value = losses.distillation_loss(feats + 1.0, feats, pred + 2.0, pred,
                                   feature_weight=0.5, pred_weight=3.0)
  np.testing.assert_allclose(value, 12.5, rtol=1e-6)
  grad_teacher = jax.grad(lambda t: losses.distillation_loss(
      feats + 1.0, t, pred + 2.0, pred))(feats)
  np.testing.assert_array_equal(grad_teacher, 0.0)


def test_reconstruction_loss_known_answer():
  lab = jnp.full((2, 3), 0.3)
  assert float(losses.reconstruction_loss(lab, lab)) == 0.0
  np.testing.assert_allclose(losses.reconstruction_loss(lab + 0.1, lab), 0.01,
                             rtol=1e-5)


def test_layer_distillation_loss_known_answers_and_frozen_teacher():
  layers = (_gaussian(4, 8), _gaussian(4, 8, seed=1))
  pred = jnp.arange(4.0)
  weights = (1.35, 0.65)
  assert float(losses.layer_distillation_loss(layers, layers, pred, pred,
                                              weights)) == 0.0
  # SmoothL1 (delta 1) of a 0.5 gap: 0.125; of a 3 gap: 2.5. Weighted mean
  # (1 * 0.125 + 3 * 2.5) / 4; prediction gap 2 -> 4, times 0.5.
  student = (layers[0] + 0.5, layers[1] - 3.0)
  value = losses.layer_distillation_loss(student, layers, pred + 2.0, pred,
                                         (1.0, 3.0), pred_weight=0.5)
  np.testing.assert_allclose(value, (0.125 + 7.5) / 4 + 2.0, rtol=1e-6)
  # The feature weight scales the layer term alone; a layer of weight 0
  # counts for nothing.
  value = losses.layer_distillation_loss(student, layers, pred, pred,
                                         (1.0, 0.0), feature_weight=2.0)
  np.testing.assert_allclose(value, 0.25, rtol=1e-6)
  grad_teacher = jax.grad(lambda t: losses.layer_distillation_loss(
      student, t, pred + 2.0, pred, weights))(layers)
  assert all(not np.any(g) for g in grad_teacher)
  with pytest.raises(ValueError, match='one weight per layer'):
    losses.layer_distillation_loss(layers, layers, pred, pred, (1.0,))
