"""Conformal intervals and exceedance probabilities in the transformed space."""
import json

import numpy as np
import pytest

from deepsalt_jax import calibration
from deepsalt_jax import selection
from deepsalt_spectral import errors


def _draw(rng, n, informative=True):
  """EC whose log1p error has sd `sd`; the spread is sd/3 (informative) or
  noise."""
  mean_t = rng.uniform(0.2, 3.0, n)
  sd = rng.uniform(0.05, 0.8, n)
  target = np.maximum(np.expm1(mean_t + rng.normal(0.0, sd)), 0.0)
  spread = sd / 3 if informative else rng.uniform(0.05, 0.8, n) / 3
  return np.expm1(mean_t), target, spread


def test_the_quantiles_are_the_equal_tailed_finite_sample_ones():
  mean = np.zeros(19)
  target = np.expm1(np.arange(1.0, 20.0) / 10)  # log1p errors 0.1..1.9.
  fitted = calibration.fit(mean, target, np.zeros(19), "log1p",
                           nominal=0.8)
  # floor(20 * 0.1) = 2nd and ceil(20 * 0.9) = 18th smallest.
  assert fitted["lower"] == pytest.approx(0.2, abs=1e-5)
  assert fitted["upper"] == pytest.approx(1.8, abs=1e-5)
  assert fitted["difficulty"] == "constant" and fitted["kind"] == (
      calibration.KIND)
  assert fitted["validation_samples"] == 19 and not fitted["reliable"]
  assert fitted["mc_samples"] == 0


def test_the_interval_is_asymmetric_in_target_units_and_never_below_zero():
  fitted = {"kind": calibration.KIND, "transform": "log1p",
            "difficulty": "constant", "difficulty_scale": 1.0,
            "lower": -1.0, "upper": 1.0, "scores": [-1.0, 0.0, 1.0]}
  pred = np.array([0.0, 1.0, 10.0])
  lower, upper = calibration.interval(fitted, pred)
  assert (lower >= 0).all()
  np.testing.assert_allclose(upper, np.expm1(np.log1p(pred) + 1), rtol=1e-5)
  np.testing.assert_allclose(lower, np.maximum(np.expm1(np.log1p(pred) - 1),
                                               0), rtol=1e-5, atol=1e-6)
  assert (upper - pred > pred - lower).all()  # Wider above: multiplicative.


def test_calibrated_intervals_cover_new_samples_at_the_nominal_rate():
  rng = np.random.default_rng(0)
  mean, target, spread = _draw(rng, 2000)
  fitted = calibration.fit(mean, target, np.arange(2000) % 8, "log1p",
                           {"head_mc": spread}, 10, "head")
  mean, target, spread = _draw(rng, 20000)
  judged = calibration.judge(mean, target, calibration.predictive(
      fitted, mean, spread, 4.0), 4.0)
  assert abs(judged["coverage"] - 0.9) < 0.02
  assert judged["lower_below_zero"] == 0
  # The exceedance probabilities are calibrated in every well-filled bin.
  assert judged["reliability_gap"] < 0.05
  assert sum(b["n"] for b in judged["reliability"]) == 20000


def test_the_spread_is_kept_where_it_ranks_the_errors_only():
  rng = np.random.default_rng(1)
  groups = np.arange(300) % 6
  mean, target, spread = _draw(rng, 300)
  kept = calibration.fit(mean, target, groups, "log1p", {"head_mc": spread},
                         10)
  assert kept["difficulty"] == "head_mc"
  assert kept["candidates"]["head_mc"]["spearman"] > 0.3
  assert (kept["candidates"]["head_mc"]["interval_score"]
          < kept["candidates"]["constant"]["interval_score"])
  assert (kept["mc_samples"], kept["mc_mode"]) == (10, "head")
  mean, target, _ = _draw(rng, 300)
  noise = calibration.fit(mean, target, groups, "log1p",
                          {"head_mc": rng.uniform(0.0, 1.0, 300)}, 10)
  assert noise["difficulty"] == "constant"


def test_a_pixel_harder_than_every_sample_gets_the_widest_interval_checked():
  """Beyond the calibration samples' largest difficulty the interval and
  the probability stop growing (a features' distance far out would give
  any bound); within it they follow the difficulty."""
  rng = np.random.default_rng(1)
  mean, target, spread = _draw(rng, 300)
  kept = calibration.fit(mean, target, np.arange(300) % 6, "log1p",
                         {"feature_distance": spread}, readers={
                             "feature_distance": {"precision": [[1.0]]}})
  assert kept["difficulty"] == "feature_distance"
  largest = spread.max()
  assert kept["difficulty_max"] == pytest.approx(
      largest + kept["difficulty_scale"])
  pred = np.full(4, 3.0)
  far = np.array([largest / 2, largest, 10 * largest, 1e12])
  lower, upper = calibration.interval(kept, pred, far)
  np.testing.assert_array_equal(upper[1:], upper[1])
  np.testing.assert_array_equal(lower[1:], lower[1])
  assert upper[0] < upper[1] and lower[0] > lower[1]
  p = calibration.exceedance(kept, pred, 4.0, far)
  np.testing.assert_array_equal(p[1:], p[1])
  # A calibration saved before the cap extrapolates, as it did.
  old = {k: v for k, v in kept.items() if k != "difficulty_max"}
  assert calibration.interval(old, pred, far)[1][3] > 1e6 * upper[1]


@pytest.mark.parametrize("informative,words", [
    ("quantile_heads", "quantile heads"),
    ("feature_distance", "distance of the pixel's features"),
    ("full_mc", "passes of the whole network")])
def test_the_difficulty_that_ranks_the_errors_is_kept_with_what_it_reads(
    informative, words):
  """Among uninformative scores and one that follows the errors' scale, the
  latter is kept: a score read from the features with what reads it and
  no MC passes, the whole network's MC spread with its passes."""
  rng = np.random.default_rng(4)
  mean, target, scale = _draw(rng, 300)
  readers = {"quantile_heads": {"kernel": [[0.0, 1.0]]},
             "feature_distance": {"precision": [[1.0]]}}
  scores = {d: rng.uniform(0.0, 1.0, 300) for d in (
      "head_mc", "quantile_heads", "feature_distance", "full_mc")}
  kept = calibration.fit(mean, target, np.arange(300) % 6, "log1p",
                         dict(scores, **{informative: scale}), 10, readers)
  assert kept["difficulty"] == informative
  assert set(kept["candidates"]) == {"constant", *scores}
  for reader in calibration.FEATURE_READERS:
    assert (kept.get(reader) == readers[reader]) == (reader == informative)
  mc = informative == "full_mc"
  assert (kept["mc_samples"], kept["mc_mode"]) == ((10, "full") if mc
                                                   else (0, ""))
  assert calibration.for_spread(kept, 10) == (kept, "")
  assert (calibration.for_spread(kept, 5)[0] is None) == mc
  assert words in calibration.describe(kept)
  with pytest.raises(ValueError, match="Difficulties"):
    calibration.fit(mean, target, np.arange(300) % 6, "log1p",
                    {"distance": scale})


def test_an_ensembles_spread_goes_first_and_yields_only_beyond_the_noise():
  """Named first, 'members' is kept where it does as well as a constant
  interval (a spread that does not vary), and not where it ranks the
  errors backwards."""
  rng = np.random.default_rng(5)
  groups = np.arange(300) % 6
  mean, target, spread = _draw(rng, 300)
  flat = np.full(300, 0.3)
  for order, kept in (({"constant": None, "members": flat}, "constant"),
                      ({"members": flat, "constant": None}, "members")):
    fitted = calibration.fit(mean, target, groups, "log1p", order)
    assert fitted["difficulty"] == kept
    assert list(fitted["candidates"]) == list(order)
  assert "candidate students' predictions" in calibration.describe(fitted)
  backwards = calibration.fit(mean, target, groups, "log1p",
                              {"members": 0.3 - spread, "constant": None})
  assert backwards["difficulty"] == "constant"
  assert backwards["candidates"]["members"]["spearman"] < -0.3


def test_a_spread_of_zero_on_most_samples_is_passed_over():
  """A spread that is zero on most samples (its median: no added scale)
  divides those samples' errors by zero: that difficulty is not scored
  and not kept, and the calibration is the constant one."""
  rng = np.random.default_rng(6)
  groups = np.arange(300) % 6
  mean, target, spread = _draw(rng, 300)
  mostly_zero = np.where(np.arange(300) % 3 == 0, spread, 0.0)
  with np.errstate(divide="ignore", invalid="ignore"):
    fitted = calibration.fit(mean, target, groups, "log1p",
                             {"members": mostly_zero, "constant": None})
  assert fitted["difficulty"] == "constant"
  assert fitted["candidates"]["members"]["interval_score"] is None
  alone = calibration.fit(mean, target, groups, "log1p", {"constant": None})
  assert fitted == alone | {"candidates": fitted["candidates"]}
  # pick passes over a candidate whose errors are not all finite.
  squared = {"first": np.array([np.inf, 0.0]), "second": np.ones(2)}
  assert selection.pick(squared, np.array(["a", "b"]))[0] == "second"


def test_errors_that_grow_with_the_prediction_keep_the_prediction():
  """Where the log1p error grows with the prediction (a new region's,
  docs/uncertainty.md) 'prediction' is kept, needing no score from the
  caller: its interval widens with the prediction in log1p, and its
  exceedance reads the same scale; where errors do not grow it is not."""
  rng = np.random.default_rng(6)
  groups = np.arange(400) % 8
  mean_t = rng.uniform(0.0, 3.0, 400)
  target = np.expm1(mean_t + rng.normal(0.0, 0.1 + 0.2 * mean_t))
  fitted = calibration.fit(np.expm1(mean_t), target, groups, "log1p",
                           {"prediction": None})
  assert fitted["difficulty"] == "prediction"
  assert fitted["candidates"]["prediction"]["spearman"] > 0.3
  assert "growing with the prediction in log1p" in calibration.describe(
      fitted)
  pred = np.expm1(np.array([0.5, 2.5]))
  lower, upper = calibration.interval(fitted, pred)
  width = np.log1p(upper) - np.log1p(lower)
  scale = fitted["difficulty_scale"]
  # d = prediction + its median: the log1p widths in that ratio.
  np.testing.assert_allclose(width[1] / width[0],
                             (2.5 + scale) / (0.5 + scale), rtol=1e-4)
  need = (np.log1p(4.0) - 2.5) / (2.5 + scale)
  np.testing.assert_allclose(
      calibration.exceedance(fitted, pred[1:], 4.0),
      np.mean(np.asarray(fitted["scores"]) > need), atol=1e-6)
  flat = np.expm1(mean_t + rng.normal(0.0, 0.3, 400))
  assert calibration.fit(np.expm1(mean_t), flat, groups, "log1p",
                         {"prediction": None})["difficulty"] == "constant"


def test_a_bias_that_changes_with_the_prediction_moves_the_centre():
  """With `location` the interval is centred on the line of the errors on
  the prediction (a new region's regression to the mean), so it covers
  the low and the high predictions alike; without it, the pooled errors
  cover neither end at the nominal rate."""
  rng = np.random.default_rng(7)

  def draw(n):
    mean_t = rng.uniform(0.0, 3.0, n)
    return mean_t, 0.3 + 0.7 * mean_t + rng.normal(0.0, 0.15, n)

  mean_t, target_t = draw(400)
  groups = np.arange(400) % 8
  moved = calibration.fit(np.expm1(mean_t), np.expm1(target_t), groups,
                          "log1p", location=True)
  np.testing.assert_allclose(moved["location"], [-0.3, 0.3], atol=0.04)
  assert ("corrected by the line of the samples' errors (+0.2"
          in calibration.describe(moved))
  fixed = calibration.fit(np.expm1(mean_t), np.expm1(target_t), groups,
                          "log1p")
  assert fixed["location"] == [0.0, 0.0]
  new_t, new_target = draw(4000)
  ends = (new_t < 0.75, new_t > 2.25)
  for fitted, held in ((moved, True), (fixed, False)):
    lower, upper = calibration.interval(fitted, np.expm1(new_t))
    inside = (np.expm1(new_target) >= lower) & (np.expm1(new_target) <= upper)
    assert all(0.85 <= inside[end].mean() <= 0.95 for end in ends) == held
  # Predictions that do not vary get a shift only, and too few samples
  # (calibration.MIN_SAMPLES) no line at all.
  flat = calibration.fit(np.full(400, np.expm1(1.0)), np.expm1(target_t),
                         groups, "log1p", location=True)
  np.testing.assert_allclose(flat["location"],
                             [0.0, np.median(target_t) - 1.0], atol=1e-5)
  assert calibration.fit(np.expm1(mean_t[:19]), np.expm1(target_t[:19]),
                         groups[:19], "log1p",
                         location=True)["location"] == [0.0, 0.0]
  # The probability reads the same centre.
  slope, shift = moved["location"]
  need = np.log1p(4.0) - (new_t[:3] + shift + slope * new_t[:3])
  np.testing.assert_allclose(
      calibration.exceedance(moved, np.expm1(new_t[:3]), 4.0),
      [np.mean(np.asarray(moved["scores"]) > n) for n in need], atol=1e-6)


def test_a_few_far_off_samples_do_not_tilt_the_centring_line():
  """One region's far-off samples (a tenth of them, all at high
  predictions) tilt a least-squares line; the line the calibration fits
  stays on the others' bias."""
  rng = np.random.default_rng(3)
  mean_t = rng.uniform(0.0, 3.0, 300)
  target_t = 0.3 + 0.7 * mean_t + rng.normal(0.0, 0.1, 300)
  far = np.argsort(mean_t)[-30:]
  target_t[far] -= 1.5
  fitted = calibration.fit(np.expm1(mean_t), np.expm1(target_t),
                           np.arange(300) % 6, "log1p", location=True)
  np.testing.assert_allclose(fitted["location"], [-0.3, 0.3], atol=0.08)
  least_squares = np.polyfit(mean_t, target_t - mean_t, 1)
  np.testing.assert_array_less(0.25, np.abs(least_squares - [-0.3, 0.3]))


def test_the_centring_line_of_many_samples_is_fitted_on_a_subset(
    monkeypatch):
  """Theil-Sen compares every pair: 20,000 samples would take 200 million
  pairs, so at most calibration.LINE_SAMPLES of them fit the line, which
  still recovers it."""
  rng = np.random.default_rng(5)
  mean_t = rng.uniform(0.0, 3.0, 20_000)
  target_t = 0.3 + 0.7 * mean_t + rng.normal(0.0, 0.1, mean_t.size)
  sizes = []
  theilslopes = calibration.stats.theilslopes

  def counted(y, x, **kwargs):
    sizes.append(x.size)
    return theilslopes(y, x, **kwargs)

  monkeypatch.setattr(calibration.stats, "theilslopes", counted)
  line = calibration._line(mean_t, target_t)
  assert sizes == [calibration.LINE_SAMPLES]
  np.testing.assert_allclose(line, [-0.3, 0.3], atol=0.02)
  assert calibration._line(mean_t, target_t) == line  # Seeded.


def test_exceedance_is_the_share_of_calibration_errors_above_the_threshold():
  fitted = {"kind": calibration.KIND, "transform": "log1p",
            "difficulty": "constant", "difficulty_scale": 1.0,
            "scores": [-0.5, -0.1, 0.2, 0.6]}
  # log1p(4) - log1p(3) = 0.223: two of the four errors fall below it.
  p = calibration.exceedance(fitted, np.array([3.0, 100.0, 0.0]), 4.0)
  np.testing.assert_allclose(p, [0.25, 1.0, 0.0])


def test_round_trip_and_an_older_calibration_is_refused_in_one_line(tmp_path):
  rng = np.random.default_rng(2)
  mean, target, spread = _draw(rng, 30)
  fitted = calibration.fit(mean, target, np.arange(30) % 3, "log1p",
                           {"head_mc": spread}, 10)
  calibration.save(fitted, tmp_path)
  assert calibration.load(tmp_path) == json.loads(json.dumps(fitted))
  assert calibration.load(tmp_path / "none") is None
  (tmp_path / calibration.CALIBRATION_FILE).write_text(json.dumps(
      {"nominal": 0.9, "multiplier": 13.6, "mc_samples": 10,
       "mc_mode": "head"}))
  with pytest.raises(errors.UserError, match="re-run the run's training "
                     "command") as raised:
    calibration.load(tmp_path)
  assert "\n" not in str(raised.value)


def test_a_spread_calibration_holds_for_the_spread_it_was_fitted_on_only():
  rng = np.random.default_rng(3)
  mean, target, spread = _draw(rng, 300)
  fitted = dict(calibration.fit(mean, target, np.arange(300) % 6, "log1p",
                                {"head_mc": spread}, 10),
                difficulty="head_mc",
                mc_samples=10, mc_mode="head")
  assert calibration.for_spread(fitted, 10) == (fitted, "")
  kept, why = calibration.for_spread(fitted, 5)
  assert kept is None and "calibrated for mc_samples=10, not 5" in why
  assert calibration.for_spread(None, 10)[0] is None
  constant = dict(fitted, difficulty="constant")
  assert calibration.for_spread(constant, 0) == (constant, "")


def test_interval_score_penalises_misses_by_their_distance():
  score = calibration.interval_score(np.array([1.0, 5.0, -1.0]),
                                     np.zeros(3), np.full(3, 2.0), 0.9)
  np.testing.assert_allclose(score, [2.0, 2.0 + 20 * 3, 2.0 + 20 * 1])

