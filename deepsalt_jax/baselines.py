"""Chemometric baselines users already know (scikit-learn).

Each takes training arrays and returns a `predict(x) -> y` function; targets
go through the same transform as the networks (log1p for EC) so the
comparison is like for like.
"""
from __future__ import annotations

from typing import Callable

import dataclasses

import numpy as np
from sklearn.cross_decomposition import PLSRegression
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GroupKFold
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

Predictor = Callable[[np.ndarray], np.ndarray]
MIN_SAMPLES = 4  # PLSR's inner CV needs them.
# The most samples a forest tree grows on (its bootstrap sample). Trees
# grown to leaves of 2 on all n samples made the forest cost n^1.2-1.3; on
# a bounded sample a tree costs the same at any n and only predicting grows,
# linearly. Below it, scikit-learn's default (n of n): the same trees as
# before. Held-out R2 against the uncapped forest: -0.002 at 5,000 pixels,
# -0.013 at 20,000 for 10.6x less CPU (1,000: -0.007, -0.020; docs/scale.md).
FOREST_SAMPLES = 2000


@dataclasses.dataclass(frozen=True)
class Linear:
  """y = (x - centre) @ coef + intercept: a fitted PLSR as its numbers
  (saved for mapping as arrays, final_model.py)."""
  centre: np.ndarray
  coef: np.ndarray
  intercept: float

  def __call__(self, x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, np.float64) - self.centre) @ self.coef + (
        self.intercept)


def _fit_pls(x: np.ndarray, y: np.ndarray, components: int) -> Linear:
  model = PLSRegression(components, scale=False).fit(x, y)
  # Unscaled PLSR predicts (x - mean) @ coef_.T + intercept_.
  return Linear(np.asarray(model._x_mean, np.float64),  # pylint: disable=protected-access
                np.asarray(model.coef_, np.float64).ravel(),
                float(np.ravel(model.intercept_)[0]))


def _pls_path(x: np.ndarray, y: np.ndarray, components: int
              ) -> tuple[np.ndarray, np.ndarray, float]:
  """Centre, [bands, components] coefficients and intercept of PLSR with
  1..components components (unscaled, as `PLSRegression(scale=False)`).

  The kernel algorithm for one target (Dayal and MacGregor 1997) works on
  XᵀX and Xᵀy, and a k-component PLSR is the first k rotations and
  loadings of a larger one: one pass gives every model.
  """
  centre, intercept = x.mean(axis=0), y.mean()
  x = x - centre
  xtx, xty = x.T @ x, x.T @ (y - intercept)
  rotations = np.zeros((x.shape[1], components))
  loadings = np.zeros((x.shape[1], components))
  weights = np.zeros(components)
  start = np.linalg.norm(xty)
  for a in range(components):
    norm = np.linalg.norm(xty)
    if norm <= 1e-10 * start:  # y is explained already (or constant).
      break
    r = xty / norm
    r -= rotations[:, :a] @ (loadings[:, :a].T @ r)
    t_t = r @ xtx @ r
    loadings[:, a] = xtx @ r / t_t
    weights[a] = r @ xty / t_t
    rotations[:, a] = r
    xty = xty - loadings[:, a] * weights[a] * t_t
  return centre, np.cumsum(rotations * weights, axis=1), intercept


def _path_errors(x: np.ndarray, y: np.ndarray, splits, components: int,
                 scored: np.ndarray | None = None) -> np.ndarray:
  """[components] summed squared errors on the held-out rows of `splits`
  of PLSR with 1..components components; with `scored`, only those rows are
  scored and only the others fitted."""
  errors = np.zeros(components)
  for fit, held in splits:
    if scored is not None:
      fit, held = fit[~scored[fit]], held[scored[held]]
    centre, coefs, intercept = _pls_path(x[fit], y[fit], components)
    pred = (x[held] - centre) @ coefs + intercept
    errors += np.sum((pred - y[held, None]) ** 2, axis=0)
  return errors


def plsr(x: np.ndarray, y: np.ndarray, max_components: int = 20,
         folds: int = 5, seed: int = 0) -> Linear:
  """PLSR with the number of components chosen by inner K-fold CV (RMSE)."""
  if len(x) < MIN_SAMPLES:
    raise ValueError(f"PLSR needs at least {MIN_SAMPLES} labelled samples, "
                     f"got {len(x)}.")
  folds = min(folds, len(x))
  cv = KFold(folds, shuffle=True, random_state=seed)
  # Leave room for the smallest inner training fold.
  upper = max(1, min(max_components, x.shape[1],
                     len(x) - len(x) // folds - 1))
  errors = _path_errors(x, y, cv.split(x), upper)
  return _fit_pls(x, y, int(np.argmin(errors)) + 1)


def epo_projection(difference: np.ndarray, dims: int) -> np.ndarray:
  """EPO's projection P = I - V Vᵀ (Roger et al. 2003).

  V: the top `dims` right singular vectors of `difference` [n, bands], the
  spectra of one set of samples in two conditions subtracted. Not centred,
  as in Minasny et al. (2011, moisture): the mean shift between the
  conditions is the first direction removed.
  """
  v = np.linalg.svd(difference, full_matrices=False)[2][:dims]
  return np.eye(difference.shape[1]) - v.T @ v


def epo(x: np.ndarray, y: np.ndarray, pixel: np.ndarray, groups: np.ndarray,
        pair_pixels: np.ndarray, pair_lab: np.ndarray, max_dims: int = 8,
        max_components: int = 20, folds: int = 5) -> Linear:
  """External parameter orthogonalisation, then PLSR (Roger et al. 2003).

  `x` stacks lab spectra resampled to the sensor's bands and labelled pixels
  (`pixel` True); the pairs (a pixel and the resampled lab spectrum of one
  sample) give the lab-to-pixel difference D = pair_pixels - pair_lab. The
  PLSR is fitted on the lab spectra projected, x @ P (P from
  `epo_projection`), and predicts pixels z @ P, so what differs between lab
  and pixel cannot carry the prediction. As in Minasny et al. (2011) the
  labelled pixels only choose: the number of removed directions
  (0..max_dims) and of PLSR components together, by grouped CV (whole
  `groups` held out, scored on their labelled pixels).
  """
  splits = list(GroupKFold(min(folds, len(np.unique(groups)))).split(
      x, groups=groups))
  if len(np.unique(groups[pixel])) < 2:
    raise ValueError("EPO's inner CV needs labelled pixels of at least two "
                     "groups.")
  upper = max(1, min(max_components, x.shape[1],
                     min(len(fit) for fit, _ in splits) - 1))
  difference = pair_pixels - pair_lab
  errors = [_path_errors(x @ epo_projection(difference, dims), y, splits,
                         upper, scored=pixel)
            for dims in range(min(max_dims, x.shape[1] - 1) + 1)]
  dims, components = np.unravel_index(np.argmin(errors), np.shape(errors))
  projection = epo_projection(difference, int(dims))
  lab = x[~pixel]
  fit = _fit_pls(lab @ projection, y[~pixel], int(components) + 1)
  # P is symmetric: (z P - mean(lab) P) @ coef = (z - mean(lab)) @ (P coef).
  return Linear(lab.mean(axis=0, dtype=np.float64), projection @ fit.coef,
                fit.intercept)


def direct_standardisation(pixels: np.ndarray, lab: np.ndarray
                           ) -> Predictor:
  """Direct standardisation (Wang et al. 1991): an affine map F of pixel
  spectra onto lab spectra of the same samples, lab ≈ pixels @ F + offset.

  Ridge-regularised, one penalty for every band by generalised CV on the
  pairs: the bands are collinear, so plain least squares would fit noise.
  """
  return RidgeCV(alphas=np.logspace(-8, 2, 21)).fit(pixels, lab).predict


def ds(x: np.ndarray, y: np.ndarray, pair_pixels: np.ndarray,
       pair_lab: np.ndarray, max_components: int = 20,
       seed: int = 0) -> Predictor:
  """`plsr` on lab spectra `x` resampled to the sensor's bands, applied to
  pixels taken to lab space by `direct_standardisation`, fitted on the pairs
  (a pixel and the resampled lab spectrum of one sample)."""
  to_lab = direct_standardisation(pair_pixels, pair_lab)
  model = plsr(x, y, max_components, seed=seed)
  return lambda z: model(to_lab(z))


def random_forest(x: np.ndarray, y: np.ndarray, seed: int = 0,
                  trees: int = 300,
                  samples: int | None = FOREST_SAMPLES) -> Predictor:
  """Trees grown to leaves of 2 samples, each on a bootstrap sample of
  min(n, `samples`) (None: n, scikit-learn's default)."""
  model = RandomForestRegressor(
      trees, min_samples_leaf=2,
      max_samples=None if samples is None else min(len(x), samples),
      n_jobs=-1, random_state=seed).fit(x, y)
  return model.predict


def pooled_mlp(x: np.ndarray, y: np.ndarray, seed: int = 0,
               hidden: tuple[int, ...] = (128, 64),
               max_iter: int = 300) -> Predictor:
  """One MLP on the library and the labelled pixels pooled ("spiking").

  Soil spectroscopists extend a library with local samples and fit one
  model: `x` stacks the lab spectra resampled forward to the sensor's bands
  and the labelled pixels; standardised, then a scikit-learn MLP (Adam, L2
  1e-3, a tenth held out for early stopping).
  """
  model = make_pipeline(StandardScaler(), MLPRegressor(
      hidden_layer_sizes=hidden, alpha=1e-3, max_iter=max_iter,
      early_stopping=True, random_state=seed)).fit(x, y)
  return model.predict


def coral_ridge(x: np.ndarray, y: np.ndarray, target: np.ndarray,
                seed: int = 0) -> Predictor:
  """Shallow domain adaptation: CORAL, then ridge regression (skada).

  CORAL (Sun et al. 2016) recolours the source samples `x` (here lab
  spectra resampled to the sensor's bands) to the covariance of the target
  samples (unlabelled pixels); ridge (penalty by generalised CV) then learns
  `y` on the adapted source. Inputs are standardised on the source first.
  """
  del seed  # Deterministic.
  from skada import CORALAdapter  # pylint: disable=g-import-not-at-top
  from skada import make_da_pipeline  # pylint: disable=g-import-not-at-top
  pipeline = make_da_pipeline(
      StandardScaler(), CORALAdapter(),
      RidgeCV(alphas=np.logspace(-4, 3, 15)))
  features = np.concatenate([x, target])
  labels = np.concatenate([y, np.full(len(target), np.nan)])
  domain = np.concatenate([np.ones(len(x), int), -np.ones(len(target), int)])
  pipeline.fit(features, labels, sample_domain=domain)
  return lambda z: pipeline.predict(
      z, sample_domain=-np.ones(len(z), int)).ravel()
