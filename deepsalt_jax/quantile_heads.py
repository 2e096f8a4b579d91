"""Quantile heads: how wide a student's errors are, read from its features.

Two linear heads on the trained student's features (frozen, standardised)
fitted to the α/2 and 1 - α/2 quantiles of the transformed target (log1p
EC) on the student's labelled training pixels: L1-penalised linear
quantile regression (Koenker and Bassett 1978), solved exactly as a linear
programme. Their width, q_hi - q_lo, is a difficulty score that
calibration.py conformalises like the others on samples the student never
trained on (in the spirit of conformalised quantile regression, Romano et
al. 2019: the heads say where, the calibration says how wide).

The heads are fitted after training, not with it: the student's point
prediction is unchanged, and a run trained before them gets them from its
checkpoints.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import linear_model

# The L1 penalty of the weights (on standardised features; scikit-learn's
# `alpha`, beside the mean pinball loss): the features outnumber the
# labelled pixels of a small project, whose quantiles would otherwise be
# interpolated.
PENALTY = 0.01
# Below this many labelled pixels the heads are not fitted.
MIN_SAMPLES = 20


def fit(features: np.ndarray, target_t: np.ndarray,
        nominal: float) -> dict[str, Any] | None:
  """The heads of the `nominal` interval's quantiles, JSON-ready, or None
  with fewer than MIN_SAMPLES pixels.

  Args:
    features: [n, k] the student's features of its labelled training pixels.
    target_t: [n] their targets in the transformed space.
    nominal: the interval's coverage (quantiles (1 ± nominal) / 2).
  """
  features = np.asarray(features, np.float64)
  target_t = np.asarray(target_t, np.float64)
  if len(target_t) < MIN_SAMPLES:
    return None
  centre = features.mean(axis=0)
  scale = np.maximum(features.std(axis=0), 1e-6)
  z = (features - centre) / scale
  tail = (1.0 - nominal) / 2
  kernel, bias = [], []
  for quantile in (tail, 1.0 - tail):
    model = linear_model.QuantileRegressor(
        quantile=quantile, alpha=PENALTY, solver="highs").fit(z, target_t)
    kernel.append(model.coef_)
    bias.append(model.intercept_)
  return {"centre": centre.tolist(), "scale": scale.tolist(),
          "kernel": np.stack(kernel, axis=1).tolist(), "bias": bias,
          "penalty": PENALTY, "samples": int(len(target_t))}


def width(heads: dict[str, Any], features: np.ndarray) -> np.ndarray:
  """q_hi - q_lo of each row of `features` ([n, k]), >= 0 (crossed
  quantiles give 0)."""
  z = ((np.asarray(features, np.float64) - np.asarray(heads["centre"]))
       / np.asarray(heads["scale"]))
  q = z @ np.asarray(heads["kernel"]) + np.asarray(heads["bias"])
  return np.maximum(q[:, 1] - q[:, 0], 0.0)
