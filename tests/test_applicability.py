"""The area of applicability (Meyer and Pebesma 2021) of the field points."""
import numpy as np
import pytest

from deepsalt_jax import applicability


def test_known_threshold_with_an_outlier_left_out():
  # One band: pairwise distances 1, 2, 3, 1, 2, 1 and 30, 29, 28, 27 (mean
  # 12.4); the nearest point of another fold: 2, 1, 1, 2 and 27, above the
  # upper whisker (2 + 1.5 x 1), so the threshold is 2 / 12.4.
  x = np.array([[0.0], [1.0], [2.0], [3.0], [30.0]])
  domain = applicability.fit(x, np.array([1, 1, 2, 2, 3]))
  assert domain.mean_distance * domain.scale[0] == pytest.approx(12.4)
  assert domain.threshold == pytest.approx(2 / 12.4)
  np.testing.assert_allclose(domain.dissimilarity(
      np.array([[1.0], [1.5], [5.0], [5.5]])), np.array([0, 0.5, 2, 2.5])
                             / 12.4, atol=1e-6)
  np.testing.assert_array_equal(domain.outside(
      np.array([[1.5], [4.9], [5.5]])), [False, False, True])
  # One fold: each pixel's nearest other pixel (1, 1, 1, 1 and 27).
  alone = applicability.fit(x, np.zeros(5, int))
  assert alone.threshold == pytest.approx(1 / 12.4)
  assert applicability.fit(x[:2], np.array([1, 2])) is None


def test_bands_count_in_their_own_units(tmp_path):
  """Standardised: a band's scale does not change the index; saved and
  loaded, the same index."""
  rng = np.random.default_rng(0)
  x, queries = rng.normal(size=(30, 4)), rng.normal(size=(7, 4)) * 2
  folds = np.arange(30) % 3
  scaled = np.array([1.0, 100.0, 1e-3, 5.0])
  domain = applicability.fit(x, folds)
  np.testing.assert_allclose(
      applicability.fit(x * scaled, folds).dissimilarity(queries * scaled),
      domain.dissimilarity(queries), rtol=1e-5)
  assert applicability.load(tmp_path) is None
  applicability.save(domain, tmp_path)
  loaded = applicability.load(tmp_path)
  assert loaded.threshold == domain.threshold
  np.testing.assert_array_equal(loaded.dissimilarity(queries),
                                domain.dissimilarity(queries))
