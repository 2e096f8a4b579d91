"""Loss terms of DeepSalt training: pure jnp functions returning scalars.

regression (labelled satellite pixels / lab spectra), domain alignment of
student features on satellite spectra with teacher features on lab spectra
(picked by name from ALIGNMENTS), distillation on paired samples, SAU
reconstruction on paired samples (physics SAU), and the latent SAU's
contrastive alignment on pairs (InfoNCE) and autoencoder term. Distillation
matches the final features ('final', distillation_loss) or every encoder
layer ('layers', layer_distillation_loss), by name (choices.DISTILLATIONS).
"""
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from deepsalt_jax import choices

Array = jax.Array


def regression_loss(pred: Array, target: Array, kind: str = 'huber',
                    delta: float = 1.0) -> Array:
  """Mean Huber ('huber', threshold `delta`) or squared ('mse') error."""
  error = pred - target
  if kind == 'mse':
    return jnp.mean(error**2)
  if kind == 'huber':
    abs_error = jnp.abs(error)
    quadratic = jnp.minimum(abs_error, delta)
    # 0.5 e^2 inside [-delta, delta], delta (|e| - delta/2) outside.
    return jnp.mean(0.5 * quadratic**2 + delta * (abs_error - quadratic))
  raise ValueError(f"Unknown regression loss kind {kind!r}; use 'huber' or "
                   "'mse'.")


def _check_features(source: Array, target: Array) -> None:
  if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
    raise ValueError(f'Alignment needs [n, d] source and [m, d] target '
                     f'features with the same d, got {source.shape} and '
                     f'{target.shape}.')


def _squared_distances(x: Array) -> Array:
  # Centring first: |a|^2 + |b|^2 - 2ab cancels catastrophically when the
  # points share a large common component (features of similar spectra),
  # which made MMD differ by 4e-4 relative between 1 and 8 devices.
  x = x - jnp.mean(x, axis=0)
  sq = jnp.sum(x**2, axis=-1)
  return jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


# Kernel bandwidths of the default MMD, as multiples of the median squared
# distance of the pooled sample (the median heuristic, spread over 16x).
MMD_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def mmd(source: Array, target: Array,
        bandwidths: Optional[tuple[float, ...]] = None) -> Array:
  """Multi-kernel Gaussian MMD^2 (biased V-statistic, >= 0; 0 if equal).

  Kernel k_h(a, b) = exp(-|a - b|^2 / h), averaged over the bandwidths h.

  Args:
    source: [n, d] features.
    target: [m, d] features.
    bandwidths: fixed h values; None: MMD_SCALES times the median squared
      pairwise distance of source and target pooled (no gradient through it).
  """
  _check_features(source, target)
  n = source.shape[0]
  pooled = jnp.concatenate([source, target])
  d2 = _squared_distances(pooled)
  if bandwidths is None:
    rows, cols = jnp.triu_indices(pooled.shape[0], 1)
    median = jax.lax.stop_gradient(jnp.median(d2[rows, cols]))
    # Guard: all points identical gives a zero median (and MMD 0 anyway).
    h = jnp.asarray(MMD_SCALES) * jnp.maximum(median, 1e-12)
  else:
    h = jnp.asarray(bandwidths, d2.dtype)
  kernel = jnp.mean(jnp.exp(-d2[None] / h[:, None, None]), axis=0)
  return (jnp.mean(kernel[:n, :n]) + jnp.mean(kernel[n:, n:]) -
          2.0 * jnp.mean(kernel[:n, n:]))


def _covariance(x: Array) -> Array:
  centred = x - jnp.mean(x, axis=0)
  return centred.T @ centred / (x.shape[0] - 1)


def coral(source: Array, target: Array) -> Array:
  """CORAL: ||C_s - C_t||_F^2 / (4 d^2), sample covariances (ddof=1)."""
  _check_features(source, target)
  if min(source.shape[0], target.shape[0]) < 2:
    raise ValueError('CORAL needs at least 2 samples per domain.')
  d = source.shape[1]
  return jnp.sum((_covariance(source) - _covariance(target))**2) / (4.0 * d * d)


@jax.custom_vjp
def _reverse(x: Array, scale: Array) -> Array:
  return x


def _reverse_fwd(x, scale):
  return x, scale


def _reverse_bwd(scale, g):
  return -scale * g, jnp.zeros_like(scale)


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def gradient_reversal(x: Array, scale: float | Array = 1.0) -> Array:
  """Identity forward; multiplies the gradient by -scale backward (DANN)."""
  return _reverse(x, jnp.asarray(scale, x.dtype))


def adversarial(source: Array, target: Array,
                discriminator: Callable[[Array], Array],
                grl_scale: float | Array = 1.0) -> Array:
  """Domain-adversarial loss through a gradient reversal layer.

  The discriminator maps features [n, d] to logits [n]; it learns source=1,
  target=0 by minimising the balanced binary cross-entropy returned here,
  while the reversed gradient (scaled by `grl_scale`) pushes the feature
  extractor to make the domains indistinguishable. A discriminator that
  outputs 0 everywhere gives log(2).
  """
  _check_features(source, target)
  logits_source = discriminator(gradient_reversal(source, grl_scale))
  logits_target = discriminator(gradient_reversal(target, grl_scale))
  # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z).
  return 0.5 * (jnp.mean(jax.nn.softplus(-logits_source)) +
                jnp.mean(jax.nn.softplus(logits_target)))


ALIGNMENTS = {'mmd': mmd, 'coral': coral, 'adversarial': adversarial}
assert set(ALIGNMENTS) == set(choices.ALIGNMENTS)


def alignment_loss(name: str, source_feats: Array, target_feats: Array,
                   discriminator: Optional[Callable[[Array], Array]] = None,
                   **options) -> Array:
  """The alignment loss `name` between two feature sets.

  `discriminator` (features -> logits) is required by 'adversarial' and
  ignored by the others, so a caller can always pass it. `options` go to the
  chosen function (e.g. bandwidths for 'mmd', grl_scale for 'adversarial').
  """
  if name not in ALIGNMENTS:
    raise ValueError(f'Unknown alignment {name!r}; valid names: '
                     f'{", ".join(ALIGNMENTS)}.')
  if name == 'adversarial':
    if discriminator is None:
      raise ValueError("alignment 'adversarial' needs a discriminator "
                       '(features -> logits), e.g. the Student\'s '
                       "`discriminate` method via model.apply.")
    return adversarial(source_feats, target_feats, discriminator, **options)
  return ALIGNMENTS[name](source_feats, target_feats, **options)


def distillation_loss(student_feats: Array, teacher_feats: Array,
                      student_pred: Array, teacher_pred: Array,
                      feature_weight: float = 1.0,
                      pred_weight: float = 1.0) -> Array:
  """Feature-matching MSE + prediction MSE towards the (frozen) teacher."""
  teacher_feats = jax.lax.stop_gradient(teacher_feats)
  return (feature_weight * jnp.mean((student_feats - teacher_feats)**2) +
          pred_weight * _prediction_mse(student_pred, teacher_pred))


def _prediction_mse(student_pred: Array, teacher_pred: Array) -> Array:
  """The prediction term of both distillations, towards the frozen
  teacher."""
  return jnp.mean((student_pred - jax.lax.stop_gradient(teacher_pred))**2)


def layer_distillation_loss(student_layers: tuple[Array, ...],
                            teacher_layers: tuple[Array, ...],
                            student_pred: Array, teacher_pred: Array,
                            layer_weights: tuple[float, ...],
                            feature_weight: float = 1.0,
                            pred_weight: float = 1.0) -> Array:
  """Layer-wise feature matching + prediction MSE towards the teacher.

  The feature term is SmoothL1 (Huber, delta 1) between the student's and
  the teacher's embeddings of each layer, averaged with `layer_weights`
  (first layer first): sum_l w_l L_l / sum_l w_l, so `feature_weight`
  weighs it as it weighs distillation_loss's feature MSE. The prediction
  term is distillation_loss's.
  """
  if not len(student_layers) == len(teacher_layers) == len(layer_weights):
    raise ValueError(f'{len(layer_weights)} layer weights for '
                     f'{len(student_layers)} student and '
                     f'{len(teacher_layers)} teacher layers: give one weight '
                     'per layer, to networks of as many layers.')
  matched = sum(w * regression_loss(s, jax.lax.stop_gradient(t))
                for w, s, t in zip(layer_weights, student_layers,
                                   teacher_layers))
  return (feature_weight * matched / sum(layer_weights) +
          pred_weight * _prediction_mse(student_pred, teacher_pred))


# What distillation matches (config.loss.distill).


def reconstruction_loss(sau_lab: Array, lab: Array) -> Array:
  """MSE between the SAU's lab-grid output and the paired lab spectrum."""
  return jnp.mean((sau_lab - lab)**2)


def autoencoder_loss(decoded: Array, pixels: Array) -> Array:
  """MSE of decoded pixels [B, n] in units of each band's batch spread, so
  the term weighs alike for dark and bright bands and any reflectance
  scale."""
  scale = jax.lax.stop_gradient(jnp.std(pixels, axis=0) + 1e-3)
  return jnp.mean(((decoded - pixels) / scale)**2)


def info_nce(student: Array, teacher: Array,
             temperature: float = 0.07) -> Array:
  """Symmetric InfoNCE of paired rows [n, d]: row i of `student` should be
  closer (cosine) to row i of `teacher` than to any other row, and back.

  log(n) when the features carry no pairing; -> 0 as the pairs separate.
  The DeepSalt authors align their latents so, at temperature 0.07.
  """
  _check_features(student, teacher)
  unit = lambda x: x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-8)
  logits = unit(student) @ unit(teacher).T / temperature
  labels = jnp.arange(student.shape[0])
  rows = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=1),
                              labels[:, None], axis=1)
  cols = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=0),
                              labels[None, :], axis=0)
  return 0.5 * (jnp.mean(rows) + jnp.mean(cols))
