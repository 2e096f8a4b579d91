"""Intervals and exceedance probabilities a user can act on, calibrated.

EC errors grow with EC, so the interval lives in the target transform's
space (log1p for EC): asymmetric in dS/m and never below zero. Split
conformal calibration on samples the network never trained on (the
validation samples, whole spatial blocks; or other folds' out-of-fold
predictions): with m = forward(prediction), d a difficulty score and the
signed normalised error r = (forward(y) - m) / d of each calibration
sample, the interval is inverse(m + [r_lo, r_hi]·d), r_lo and r_hi the
equal-tailed finite-sample conformal quantiles (the k-th smallest of n,
k = floor((n + 1) α/2) and ceil((n + 1)(1 - α/2))), and the probability
that y exceeds a threshold t is the share of the r with m + r·d >
forward(t): the conformal predictive distribution. On samples of regions
no network saw, m is first moved by a robust line in m fitted to their
errors (`location`): a new region's bias changes with the prediction, and the
interval and probability follow it while the prediction stays.

Difficulty scores (`DIFFICULTIES`): 'constant' (d = 1: the same
multiplicative interval everywhere), 'head_mc' (the spread of the head's
MC-dropout outputs in the transformed space), 'quantile_heads' (the
width of quantile heads on the student's features, quantile_heads.py),
'feature_distance' (the Mahalanobis distance of the student's features to
its labelled and paired training pixels', feature_distance.py), 'full_mc'
(the spread of MC dropout through the whole network: about 10 network
passes per pixel on a map, hence last) and, for what a run with
candidates ships, 'members' (the standard deviation of the candidates'
predictions in the transformed space, selection.spread;
intervals.calibrate_shipped) and, on samples of regions no network saw
(region_calibration.py), 'prediction' (the prediction itself in the
transformed space: a new region's errors grow with it); each score plus
its median over the
calibration samples, so a score near zero cannot shrink an interval to
nothing, and at most the largest of the samples', so a pixel far out
cannot stretch it past what calibration checked. They are compared by the cross-fitted
interval score (Winkler, each calibration block's samples judged by the
calibration of the other blocks), and the first in their order within one
standard error (over the blocks) of the lowest is kept (selection.pick).
A student's order starts with 'constant': a difficulty the training
regions' blocks favour by a little narrowed the interval where a new
region's bias needed it wide. What ships and the ensemble start with
'members': the candidates disagree more in a region none of them trained
on, which blocks of the training regions cannot show
(docs/uncertainty.md). Every candidate's score and the rank correlation of
its difficulty with |error| are saved beside it, with the cross-fitted
coverage: what a block the calibration did not see gets.

The calibration is saved with the run (<student>/, selected/ or
ensemble/calibration.json, `kind` `KIND`); mapping writes the bounds and
the exceedance probability.
"""
from __future__ import annotations

import json
import math
from typing import Any

from etils import epath
import numpy as np
from scipy import stats

from deepsalt_jax import paths
from deepsalt_jax import selection
from deepsalt_jax import targets
from deepsalt_spectral import errors

CALIBRATION_FILE = "calibration.json"
KIND = "conformal, transformed space"
NOMINAL = 0.9  # Coverage of the interval.
# Below this many calibration samples the quantiles mean little: said.
MIN_SAMPLES = 20
# The centring line compares every pair of samples (n² time and memory):
# past this many, a seeded subset of them fits it.
LINE_SAMPLES = 1000
DIFFICULTIES = ("constant", "head_mc", "quantile_heads", "feature_distance",
                "full_mc", "members", "prediction")
# The MC-dropout difficulties and the passes they take (predict.MC_MODES).
MC_MODES = {"head_mc": "head", "full_mc": "full"}
# The difficulties read from the student's features by what is fitted on
# its training pixels (quantile_heads.py, feature_distance.py), saved with
# the calibration under the difficulty's name when it is kept.
FEATURE_READERS = ("quantile_heads", "feature_distance")
_PASSES = {"head": "head", "full": "whole network"}  # MC_MODES in words.
# FAO: a soil is saline from ECe 4 dS/m.
EXCEEDANCE_THRESHOLD = 4.0
# Reliability bins of the exceedance probability.
RELIABILITY_BINS = 10


def _quantiles(scores: np.ndarray, nominal: float) -> tuple[float, float]:
  """Equal-tailed split-conformal quantiles of signed `scores` (the extreme
  ones when too few samples)."""
  n = scores.size
  tail = (1.0 - nominal) / 2
  s = np.sort(scores)
  # (The 1e-9: 20 x 0.1 is 1.9999... in floating point.)
  low = max(math.floor((n + 1) * tail + 1e-9), 1)
  high = min(math.ceil((n + 1) * (1 - tail) - 1e-9), n)
  return float(s[low - 1]), float(s[high - 1])


def _score(difficulty: str, spread: np.ndarray | None,
           mean_t: np.ndarray) -> np.ndarray | None:
  """A difficulty's score: the `spread` given, or for 'prediction' the
  prediction itself in the transformed space (at least 0)."""
  if difficulty == "prediction":
    return np.maximum(np.asarray(mean_t, np.float64), 0.0)
  return spread


def _line(mean_t: np.ndarray, target_t: np.ndarray) -> list[float]:
  """[slope, shift] of the Theil-Sen line of the error (target - prediction,
  transformed space) on the prediction: the median of the pairwise slopes,
  so a few far-off samples of one region do not tilt it (least squares
  did: docs/uncertainty.md). Zeros with fewer than MIN_SAMPLES samples,
  and the median error alone where the predictions do not vary; fitted
  on LINE_SAMPLES of them at most."""
  if mean_t.size < MIN_SAMPLES:
    return [0.0, 0.0]
  error = target_t - mean_t
  if np.ptp(mean_t) == 0:
    return [0.0, float(np.median(error))]
  if mean_t.size > LINE_SAMPLES:
    keep = np.random.default_rng(0).choice(mean_t.size, LINE_SAMPLES,
                                           replace=False)
    mean_t, error = mean_t[keep], error[keep]
  fitted = stats.theilslopes(error, mean_t, method="joint")
  return [float(fitted.slope), float(fitted.intercept)]


def _centre(calibration: dict[str, Any], mean_t: np.ndarray) -> np.ndarray:
  """The interval's centre: the prediction moved by the calibration's
  line (none in calibrations saved before it was fitted)."""
  slope, shift = calibration.get("location", (0.0, 0.0))
  return mean_t + shift + slope * mean_t


def _fit_scores(mean_t, spread, target_t, difficulty):
  """(normalised signed errors, the difficulty's added scale, the largest
  difficulty of the samples)."""
  if difficulty == "constant":
    return target_t - mean_t, 1.0, 1.0
  spread = _score(difficulty, spread, mean_t)
  scale = float(np.median(spread))
  d = spread + scale
  return (target_t - mean_t) / d, scale, float(d.max())


def _difficulty(calibration: dict[str, Any], spread: np.ndarray | None,
                mean_t: np.ndarray) -> np.ndarray:
  """Each prediction's difficulty, at most the calibration samples'
  largest: beyond it the interval would extrapolate what calibration never
  checked (a features' distance far out gave bounds of 1e17 dS/m), so a
  harder pixel gets the widest interval checked (docs/uncertainty.md)."""
  if calibration["difficulty"] == "constant":
    return np.ones(mean_t.size)
  d = (np.asarray(_score(calibration["difficulty"], spread, mean_t),
                  np.float64) + calibration["difficulty_scale"])
  return np.minimum(d, calibration.get("difficulty_max", np.inf))


def _fit_one(mean, spread, target, difficulty, transform, nominal,
             location):
  forward, _ = targets.on_numpy(transform, np.float32)
  mean_t, target_t = forward(mean), forward(target)
  line = _line(mean_t, target_t) if location else [0.0, 0.0]
  scores, scale, largest = _fit_scores(_centre({"location": line}, mean_t),
                                       spread, target_t, difficulty)
  low, high = _quantiles(scores, nominal)
  return {"kind": KIND, "transform": transform, "nominal": nominal,
          "difficulty": difficulty, "difficulty_scale": scale,
          "difficulty_max": largest,
          "location": line, "lower": low, "upper": high,
          # Sorted: the conformal predictive distribution (exceedance).
          "scores": np.sort(scores).round(6).tolist(),
          "validation_samples": int(scores.size),
          "reliable": bool(scores.size >= MIN_SAMPLES)}


def interval(calibration: dict[str, Any], pred: np.ndarray,
             spread: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
  """(lower, upper) bounds of the calibrated interval, target units, >= 0.

  `spread`: the calibration's difficulty score of each prediction (the MC
  spread in the transformed space, the heads' width, the features'
  distance; none for 'constant').
  """
  forward, inverse = targets.on_numpy(calibration["transform"],
                                      np.float32)
  m = _centre(calibration, forward(pred))
  d = _difficulty(calibration, spread, m)
  return (np.maximum(inverse(m + calibration["lower"] * d), 0.0),
          np.maximum(inverse(m + calibration["upper"] * d), 0.0))


def exceedance(calibration: dict[str, Any], pred: np.ndarray,
               threshold: float, spread: np.ndarray | None = None
               ) -> np.ndarray:
  """P(y > threshold) per sample: the share of calibration errors r with
  forward(pred) + r·d > forward(threshold)."""
  forward, _ = targets.on_numpy(calibration["transform"], np.float32)
  m = _centre(calibration, forward(pred))
  d = _difficulty(calibration, spread, m)
  scores = np.asarray(calibration["scores"])
  need = (forward(threshold) - m) / d
  return 1.0 - np.searchsorted(scores, need, side="right") / scores.size


def fit(mean: np.ndarray, target: np.ndarray, groups: np.ndarray,
        transform: str, difficulties: dict[str, np.ndarray] | None = None,
        mc_samples: int = 0, readers: dict[str, Any] | None = None,
        nominal: float = NOMINAL, location: bool = False
        ) -> dict[str, Any]:
  """The calibration of the best difficulty on these calibration samples.

  Args:
    mean: [n] predictions, target units.
    target: [n] measured values.
    groups: [n] the spatial block (or fold) of each sample; candidates are
      compared by the interval score cross-fitted over them (leave one
      sample out with fewer than 2 groups).
    transform: the target transform (targets.TRANSFORMS).
    difficulties: {difficulty: [n] its score, None for 'constant'} of the
      candidates, in the order of preference ('constant' first unless
      named): 'head_mc' and 'full_mc', the MC spread in the transformed
      space over `mc_samples` passes of their kind (MC_MODES), which holds
      for that spread alone; 'quantile_heads' and 'feature_distance', read
      from the features by `readers`; 'members', an ensemble's spread
      (selection.spread); 'prediction' (None: the prediction itself in the
      transformed space).
    readers: {FEATURE_READERS name: what reads the features}, saved with
      the calibration when its difficulty is kept.
    nominal: the interval's coverage.
    location: centre the interval on a line in the prediction fitted to
      the samples' errors (`_line`), not on the prediction: for samples of
      regions no network saw, whose bias changes with the prediction.
  """
  mean, target = (np.asarray(v, np.float64) for v in (mean, target))
  if mean.size == 0:
    raise ValueError("No validation samples to calibrate on.")
  groups = selection.units(groups)
  forward, _ = targets.on_numpy(transform, np.float32)
  mean_t = forward(mean)
  error = np.abs(forward(target) - mean_t)
  difficulties = dict(difficulties or {})
  if "constant" not in difficulties:
    difficulties = {"constant": None, **difficulties}
  unknown = set(difficulties) - set(DIFFICULTIES)
  if unknown:
    raise ValueError(f"Difficulties {sorted(unknown)}: use {DIFFICULTIES}.")
  candidates, scores = {}, {}
  for difficulty, spread in difficulties.items():
    score = _score(difficulty, spread, mean_t)
    lower, upper = _cross_fitted(mean, spread, target, groups, difficulty,
                                 transform, nominal, location)
    scores[difficulty] = interval_score(target, lower, upper, nominal)
    # A difficulty of zero on most samples (so no added scale) divides
    # their errors by zero: it is not scored (selection.pick passes over
    # it).
    finite = bool(np.isfinite(scores[difficulty]).all())
    candidates[difficulty] = {
        "interval_score": (float(scores[difficulty].mean()) if finite
                           else None),
        "coverage": float(np.mean((target >= lower) & (target <= upper))),
        # None where undefined: no spread, or one that does not vary.
        "spearman": (None if score is None or np.ptp(score) == 0 else
                     float(stats.spearmanr(score, error)[0]))}
  # The simplest within one standard error of the best, over the groups.
  best, _ = selection.pick(scores, groups)
  out = _fit_one(mean, difficulties[best], target, best, transform, nominal,
                 location)
  return {**out, "mc_samples": mc_samples if best in MC_MODES else 0,
          "mc_mode": MC_MODES.get(best, ""),
          **({best: readers[best]} if best in FEATURE_READERS else {}),
          "groups": int(np.unique(groups).size),
          "candidates": candidates}


def _cross_fitted(mean, spread, target, groups, difficulty, transform,
                  nominal, location):
  """(lower, upper) of each sample from the calibration of the other
  groups."""
  lower, upper = np.zeros(mean.size), np.zeros(mean.size)
  for g in np.unique(groups):
    out = groups == g
    if out.all():  # A single sample: nothing to calibrate on.
      continue
    fitted = _fit_one(mean[~out], None if spread is None else spread[~out],
                      target[~out], difficulty, transform, nominal,
                      location)
    lower[out], upper[out] = interval(
        fitted, mean[out], None if spread is None else spread[out])
  return lower, upper


def interval_score(target, lower, upper, nominal: float = NOMINAL
                   ) -> np.ndarray:
  """Winkler's interval score per sample (lower is better): the width plus
  2/α times the distance to the interval of a value outside it."""
  alpha = 1.0 - nominal
  return ((upper - lower) + 2 / alpha * np.maximum(lower - target, 0.0)
          + 2 / alpha * np.maximum(target - upper, 0.0))


def reliability(p: np.ndarray, exceeded: np.ndarray) -> list[dict[str, Any]]:
  """Per bin of the exceedance probability: samples, mean p, share that
  exceeded (calibrated: the two agree)."""
  bins = np.minimum((np.asarray(p) * RELIABILITY_BINS).astype(int),
                    RELIABILITY_BINS - 1)
  out = []
  for b in range(RELIABILITY_BINS):
    rows = bins == b
    if rows.any():
      out.append({"p": [b / RELIABILITY_BINS, (b + 1) / RELIABILITY_BINS],
                  "n": int(rows.sum()), "mean_p": float(p[rows].mean()),
                  "exceeded": float(exceeded[rows].mean())})
  return out


def predictive(calibration: dict[str, Any], pred: np.ndarray,
               spread: np.ndarray | None = None,
               threshold: float | None = EXCEEDANCE_THRESHOLD
               ) -> dict[str, np.ndarray]:
  """{'lower', 'upper'[, 'p']}: the interval and P(y > threshold)."""
  lower, upper = interval(calibration, pred, spread)
  out = {"lower": lower, "upper": upper}
  if threshold is not None:
    out["p"] = exceedance(calibration, pred, threshold, spread)
  return out


def judge(pred: np.ndarray, target: np.ndarray, bounds: dict[str, np.ndarray],
          threshold: float | None = EXCEEDANCE_THRESHOLD,
          nominal: float = NOMINAL) -> dict[str, Any]:
  """Coverage, sharpness, interval score and exceedance reliability of
  `bounds` (`predictive`) on held-out samples."""
  pred, target = (np.asarray(v, np.float64) for v in (pred, target))
  lower, upper = bounds["lower"], bounds["upper"]
  width = upper - lower
  table = (reliability(bounds["p"], target > threshold)
           if threshold is not None else [])
  return {
      "n": int(target.size),
      "coverage": float(np.mean((target >= lower) & (target <= upper))),
      "median_width": float(np.median(width)),
      "median_relative_width": float(np.median(
          width / np.maximum(pred, 1e-6))),
      "interval_score": float(interval_score(target, lower, upper,
                                             nominal).mean()),
      "lower_below_zero": int((lower < 0).sum()),
      "threshold": threshold,
      "reliability": table,
      # The largest |mean p - share exceeded| of a bin of 30 or more.
      "reliability_gap": max((abs(b["mean_p"] - b["exceeded"])
                              for b in table if b["n"] >= 30), default=None),
  }


def describe(calibration: dict[str, Any]) -> str:
  """The interval in words (band descriptions, reports)."""
  # A model other than the student (final_model.py) is named in its
  # calibration and has no MC spread.
  model = calibration.get("model")
  difficulty = calibration["difficulty"]
  if difficulty in MC_MODES:
    what = (f"scaled by the spread of {calibration['mc_samples']} "
            f"MC-dropout passes of the {_PASSES[calibration['mc_mode']]}")
  else:
    what = {"constant": "the same multiplicative interval everywhere",
            "quantile_heads": "scaled by the width of quantile heads on the "
                              "student's features",
            "feature_distance": "scaled by the distance of the pixel's "
                                "features to the student's training "
                                "pixels'",
            "prediction": "growing with the prediction in "
                          f"{calibration['transform']} space",
            "members": "scaled by the spread of the candidate students' "
                       "predictions"}[difficulty]
  if model and difficulty == "constant":
    what += (f": constant width in {calibration['transform']} space, "
             f"{model} has no MC spread")
  slope, shift = calibration.get("location", (0.0, 0.0))
  if slope or shift:
    what += (", centred on the prediction corrected by the line of the "
             f"samples' errors ({shift:+.3f} {slope:+.3f} x the prediction)")
  # What the samples were, where not the validation blocks (intervals.py).
  on = calibration.get("samples") or (
      f"samples {model or 'the student'} did not train on")
  return (f"calibrated {calibration['nominal']:.0%} interval (split conformal "
          f"in {calibration['transform']} space on "
          f"{calibration['validation_samples']} {on}; {what})")


def save(calibration: dict[str, Any], directory: epath.PathLike) -> None:
  paths.write_atomically(epath.Path(directory) / CALIBRATION_FILE,
                         json.dumps(calibration, indent=2))


def load(directory: epath.PathLike) -> dict[str, Any] | None:
  """The saved calibration, None without one; an older kind is refused."""
  path = epath.Path(directory) / CALIBRATION_FILE
  if not path.exists():
    return None
  calibration = json.loads(path.read_text())
  if calibration.get("kind") != KIND:
    raise errors.UserError(
        f"{path} is an older calibration (a symmetric interval in dS/m): "
        "re-run the run's training command, which restores the trained "
        "models and calibrates them anew.")
  return calibration


def for_spread(calibration: dict[str, Any] | None, mc_samples: int
               ) -> tuple[dict[str, Any] | None, str]:
  """(`calibration` if it holds for `mc_samples` MC passes else None, why
  not). The passes' kind (head or whole network) is the calibration's."""
  if calibration is None:
    return None, ("the run has no calibration (no validation samples, or "
                  "a student without dropout)")
  if calibration["difficulty"] not in MC_MODES:  # No MC passes needed.
    return calibration, ""
  if calibration["mc_samples"] != mc_samples:
    return None, (f"the run was calibrated for mc_samples="
                  f"{calibration['mc_samples']}, not {mc_samples}")
  return calibration, ""
