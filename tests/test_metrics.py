"""Known answers of the regression metrics, overall and per region."""
import math

import numpy as np
import pytest

from deepsalt_jax import metrics


def test_perfect_prediction():
  y = np.array([0.5, 2.0, 4.0, 16.0])
  m = metrics.regression_metrics(y, y)
  assert m['r2'] == 1.0 and m['rmse'] == 0.0 and m['bias'] == 0.0
  assert m['rpd'] == math.inf and m['rpiq'] == math.inf and m['n'] == 4


def test_constant_offset():
  y = np.array([1.0, 3.0, 7.0, 9.0, 20.0])
  m = metrics.regression_metrics(y, y - 1.5)
  assert m['bias'] == pytest.approx(-1.5)
  assert m['rmse'] == pytest.approx(1.5)


def test_hand_computed_example():
  m = metrics.regression_metrics([1, 2, 3, 4], [1, 2, 3, 5])
  # Errors (0, 0, 0, 1): RMSE sqrt(1/4); SS_tot 5 -> R² 1 - 1/5;
  # sd (ddof 1) sqrt(5/3); IQR 3.25 - 1.75 = 1.5.
  log = np.log1p([1, 2, 3, 4])
  r2_log = 1 - (np.log1p(5) - log[3])**2 / np.sum((log - log.mean())**2)
  assert m == pytest.approx({'r2': 0.8, 'r2_log': r2_log, 'rmse': 0.5,
                             'rpd': math.sqrt(5.0 / 3.0) / 0.5, 'rpiq': 3.0,
                             'bias': 0.25, 'n': 4})


def test_constant_target_has_undefined_r2():
  m = metrics.regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
  assert math.isnan(m['r2']) and m['rpd'] == 0.0


def test_bad_inputs():
  with pytest.raises(ValueError, match='same length'):
    metrics.regression_metrics([1.0, 2.0], [1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match='at least 2'):
    metrics.regression_metrics([1.0], [1.0])
  with pytest.raises(ValueError, match='finite'):
    metrics.regression_metrics([1.0, 2.0], [1.0, np.nan])


def test_per_region_matches_subsets_and_skips_small_regions():
  y = np.array([1.0, 2.0, 3.0, 10.0, 12.0, 5.0])
  p = np.array([1.5, 2.0, 2.0, 11.0, 12.5, 4.0])
  region = np.array([0, 0, 0, 2, 2, 3])  # 1: absent, 3: one sample.
  names = ('A', 'B', 'C', 'D')
  out = metrics.per_region(y, p, region, names)
  assert list(out) == ['A', 'C']
  assert out['A'] == metrics.regression_metrics(y[:3], p[:3])
  assert out['C'] == metrics.regression_metrics(y[3:5], p[3:5])
  with pytest.raises(ValueError, match='index region_names'):
    metrics.per_region(y, p, region, names[:3])


def test_r2_of_log_known_answer():
  y = np.array([0.0, np.e - 1.0, np.e**2 - 1.0])  # log1p: 0, 1, 2.
  pred = np.array([0.0, np.e - 1.0, np.e**3 - 1.0])  # log1p: 0, 1, 3.
  m = metrics.regression_metrics(y, pred)
  # SS_res = 1, SS_tot = 2 in log1p space.
  assert m['r2_log'] == pytest.approx(0.5)


def test_salinity_classes_and_kappa_known_answers():
  np.testing.assert_array_equal(
      metrics.salinity_class([0.0, 1.99, 2.0, 3.9, 4.0, 8.0, 15.9, 16.0,
                              100.0]), [0, 0, 1, 1, 2, 3, 3, 4, 4])
  y = np.array([1.0, 1.0, 3.0, 3.0])
  perfect = metrics.class_agreement(y, y + 0.5)
  assert perfect == {'class_accuracy': 1.0, 'kappa': 1.0}
  # Confusion [[1, 1], [1, 1]] / 4: observed 0.5, chance 0.5 -> kappa 0.
  half = metrics.class_agreement(y, np.array([1.0, 3.0, 1.0, 3.0]))
  assert half == {'class_accuracy': 0.5, 'kappa': 0.0}
  # Observed 0.75; marginals true (0.5, 0.5), pred (0.25, 0.75): chance
  # 0.5; kappa (0.75 - 0.5) / 0.5 = 0.5.
  m = metrics.regression_metrics(y, np.array([1.0, 3.0, 3.0, 3.0]),
                                 classes=True)
  assert m['class_accuracy'] == 0.75 and m['kappa'] == pytest.approx(0.5)
