"""Split-conformal calibration of the MC-dropout spread."""
import numpy as np
import pytest

from deepsalt_jax import calibration


def test_multiplier_is_the_finite_sample_quantile_of_normalised_errors():
  mean = np.zeros(9)
  std = np.full(9, 2.0)
  target = np.arange(1.0, 10.0) * 2.0  # Normalised errors 1..9.
  fitted = calibration.fit(mean, std, target, 10, "head", nominal=0.8)
  # ceil(10 * 0.8) / 9 = 8/9 -> the 8th smallest error.
  assert fitted["multiplier"] == 8.0
  assert fitted["validation_samples"] == 9 and not fitted["reliable"]
  assert fitted["scale_vs_gaussian"] == pytest.approx(8.0 / 1.2816, rel=1e-3)
  assert calibration.coverage(mean, std, target, 8.0) == pytest.approx(8 / 9)
  # The uncalibrated Gaussian 80 % interval: +-1.28 std covers error 1 only.
  assert calibration.gaussian_coverage(mean, std, target, 0.8) == (
      pytest.approx(1 / 9))


def test_calibrated_interval_covers_new_samples_at_the_nominal_rate():
  """Spread too small by 3x: the Gaussian interval covers far too little;
  the calibrated one covers about 90 % of fresh samples."""
  rng = np.random.default_rng(0)
  def draw(n):
    std = rng.uniform(0.5, 2.0, n)
    return np.zeros(n), std / 3.0, rng.normal(0.0, std)
  fitted = calibration.fit(*draw(400), 10, "head")
  mean, std, target = draw(20000)
  assert calibration.coverage(mean, std, target, 1.645) < 0.5
  assert abs(calibration.coverage(mean, std, target,
                                  fitted["multiplier"]) - 0.9) < 0.03
  assert fitted["scale_vs_gaussian"] == pytest.approx(3.0, rel=0.1)


def test_round_trip(tmp_path):
  fitted = calibration.fit(np.zeros(30), np.ones(30), np.linspace(0, 3, 30), 10,
                           "head")
  calibration.save(fitted, tmp_path)
  assert calibration.load(tmp_path) == fitted
  assert calibration.load(tmp_path / "none") is None


def test_a_calibration_holds_for_the_spread_it_was_fitted_on_only():
  fitted = calibration.fit(np.zeros(30), np.ones(30), np.linspace(0, 3, 30), 10,
                           "head")
  assert calibration.for_spread(fitted, 10, "head") == (fitted, "")
  for other in ((10, "full"), (5, "head")):
    kept, why = calibration.for_spread(fitted, *other)
    assert kept is None and "calibrated for mc_samples=10" in why
  assert calibration.for_spread(None, 10, "head")[0] is None
