"""The features' distance to the training pixels: Mahalanobis, shrunk."""
import numpy as np
from scipy import stats

from deepsalt_jax import feature_distance


def test_the_distance_is_mahalanobis_of_the_training_features():
  """With many samples the shrinkage vanishes: the distance is the
  Mahalanobis distance under the features' own covariance, which an
  elongated cloud makes smaller along its long axis."""
  rng = np.random.default_rng(0)
  cov = np.array([[4.0, 1.8], [1.8, 1.0]])
  train = rng.multivariate_normal([1.0, -2.0], cov, size=20000)
  fitted = feature_distance.fit(train)
  assert fitted["samples"] == 20000 and fitted["shrinkage"] < 0.01
  x = np.array([[1.0, -2.0], [3.0, -1.0], [1.0, -1.0]])
  d = x - [1.0, -2.0]
  expected = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d))
  np.testing.assert_allclose(feature_distance.distance(fitted, x), expected,
                             rtol=0.03, atol=0.02)
  # One unit along the cloud's long axis is nearer than one across it.
  assert expected[1] < 2 * expected[2]


def test_few_pixels_in_many_features_rank_new_pixels_by_their_remoteness():
  """30 pixels in 64 features (a singular sample covariance): the shrunk
  distance is finite and ranks pixels drawn further out further away."""
  rng = np.random.default_rng(1)
  train = rng.normal(size=(30, 64))
  fitted = feature_distance.fit(train)
  assert 0 < fitted["shrinkage"] <= 1
  spread = np.repeat([0.5, 1.0, 2.0, 4.0], 50)
  new = rng.normal(size=(200, 64)) * spread[:, None]
  distance = feature_distance.distance(fitted, new)
  assert np.isfinite(distance).all()
  assert stats.spearmanr(distance, spread)[0] > 0.8
  assert feature_distance.fit(train[:19]) is None
