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
from sklearn.model_selection import KFold
from sklearn.model_selection import cross_val_predict
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
  errors = []
  for k in range(1, upper + 1):
    pred = cross_val_predict(PLSRegression(k, scale=False), x, y, cv=cv)
    errors.append(np.sqrt(np.mean((pred.ravel() - y) ** 2)))
  model = PLSRegression(int(np.argmin(errors)) + 1, scale=False).fit(x, y)
  # Unscaled PLSR predicts (x - mean) @ coef_.T + intercept_.
  return Linear(np.asarray(model._x_mean, np.float64),  # pylint: disable=protected-access
                np.asarray(model.coef_, np.float64).ravel(),
                float(np.ravel(model.intercept_)[0]))


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
