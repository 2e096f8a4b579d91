"""How far a pixel lies from what the student learnt from, in its features.

A difficulty score (calibration.py): the Mahalanobis distance of a pixel's
features to those of the student's labelled and paired training pixels,
with the covariance shrunk towards a scaled identity (Ledoit and Wolf
2004): a small project has fewer such pixels than features, whose sample
covariance would be singular. Pixels unlike any the student was fitted or
distilled on are where its errors should be larger; whether they are is
the calibration's question (docs/uncertainty.md measures it).

Fitted after training, as the quantile heads are: the point predictions do
not change, and a run trained before it gets it from its checkpoints.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import covariance

# Below this many training pixels the distance is not fitted.
MIN_SAMPLES = 20


def fit(features: np.ndarray) -> dict[str, Any] | None:
  """The distance's centre, scale and shrunk precision, JSON-ready, or None
  with fewer than MIN_SAMPLES rows.

  Args:
    features: [n, k] the student's features of its labelled and paired
      training pixels.
  """
  features = np.asarray(features, np.float64)
  if len(features) < MIN_SAMPLES:
    return None
  centre = features.mean(axis=0)
  scale = np.maximum(features.std(axis=0), 1e-6)
  shrunk = covariance.LedoitWolf().fit((features - centre) / scale)
  return {"centre": centre.tolist(), "scale": scale.tolist(),
          "precision": shrunk.precision_.tolist(),
          "shrinkage": float(shrunk.shrinkage_),
          "samples": int(len(features))}


def distance(fitted: dict[str, Any], features: np.ndarray) -> np.ndarray:
  """The Mahalanobis distance of each row of `features` ([n, k])."""
  z = ((np.asarray(features, np.float64) - np.asarray(fitted["centre"]))
       / np.asarray(fitted["scale"]))
  squared = np.einsum("ni,ij,nj->n", z, np.asarray(fitted["precision"]), z)
  return np.sqrt(np.maximum(squared, 0.0))
