"""Spatial cross-validation folds: k-means clusters of the field points.

Nearby points share soil, salinity and atmosphere, so a random split
overstates accuracy; clusters of coordinates hold out whole areas (as the
DeepSalt authors did with k-means). Every located sample, not only the
points, belongs to the fold of its nearest cluster centre: a fold's area is
held out of everything in that fold.
"""
import numpy as np
from sklearn.cluster import KMeans

from deepsalt_spectral import errors


def spatial_folds(x: np.ndarray, y: np.ndarray, labelled: np.ndarray, k: int,
                  seed: int = 0) -> np.ndarray:
  """Fold 1..k of every row; 0 for rows without coordinates.

  Args:
    x: [n] metres (NaN where unknown).
    y: [n] metres.
    labelled: [n] bool, the field points the clusters are fitted on.
    k: number of folds (data.folds).
    seed: k-means seed.
  """
  n = int(np.sum(labelled))
  if k < 2:
    raise errors.UserError(f"data.folds={k}: cross-validation needs at least "
                           "2 folds.")
  if n < k:
    raise errors.UserError(
        f"{n} labelled field points (after dropping those off soil or "
        f"outside the scenes) for data.folds={k}: each fold needs points. "
        "Lower --config.data.folds or add field points (5 or more per fold "
        "give usable metrics).")
  xy = np.stack([x, y], axis=1)
  model = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(xy[labelled])
  fold = np.zeros(len(x), np.int64)
  located = np.isfinite(xy).all(axis=1)
  fold[located] = model.predict(xy[located]) + 1
  return fold
