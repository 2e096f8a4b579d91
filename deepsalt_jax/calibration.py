"""Uncertainty that means something: the MC spread, calibrated.

The raw spread of a student's predictions (MC dropout) is not an interval:
its scale is arbitrary. Split-conformal calibration fixes it on samples the
network never trained on, the validation samples (`Data.validation`, whole
spatial blocks): with the normalised error e = |y - mean| / std of each
validation sample, the NOMINAL quantile q of e makes mean ± q·std a
NOMINAL-coverage interval (for samples like the validation ones). The
calibration is saved with the run (<student>/calibration.json); evaluation
reports the coverage it reaches on the held-out samples and mapping writes
the calibrated interval's half-width (when it maps with the same MC passes:
the multiplier belongs to the spread it was fitted on).
"""
from __future__ import annotations

import json
import math
from typing import Any

from etils import epath
import numpy as np

CALIBRATION_FILE = "calibration.json"
NOMINAL = 0.9  # Coverage of the interval.
# Below this many validation samples the quantile means little: said.
MIN_SAMPLES = 20


def fit(mean: np.ndarray, std: np.ndarray, target: np.ndarray,
        mc_samples: int, mc_mode: str,
        nominal: float = NOMINAL) -> dict[str, Any]:
  """The conformal multiplier of `std` for a `nominal` interval.

  `std` is the spread over `mc_samples` passes of kind `mc_mode`
  (predict.predict), recorded with the multiplier: it holds for that spread
  alone.

  The k-th smallest of the n normalised errors, k = ceil((n + 1) nominal)
  (the split-conformal quantile), so the interval covers at least `nominal`
  of new exchangeable samples; with too few samples for that (k > n), the
  largest.
  """
  std = np.maximum(np.asarray(std, np.float64), 1e-9)
  errors = np.abs(np.asarray(target, np.float64) - mean) / std
  n = errors.size
  if n == 0:
    raise ValueError("No validation samples to calibrate on.")
  k = min(math.ceil((n + 1) * nominal), n)
  multiplier = float(np.sort(errors)[k - 1])
  return {"nominal": nominal, "multiplier": multiplier,
          # Relative to a Gaussian interval (1.645 std for 90 %).
          "scale_vs_gaussian": multiplier / _gaussian_quantile(nominal),
          "validation_samples": int(n),
          "reliable": bool(n >= MIN_SAMPLES),
          "mc_samples": mc_samples, "mc_mode": mc_mode}


def _gaussian_quantile(nominal: float) -> float:
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.norm.ppf(0.5 + nominal / 2))


def coverage(mean: np.ndarray, std: np.ndarray, target: np.ndarray,
             multiplier: float) -> float:
  """Share of `target` inside mean ± multiplier·std."""
  return float(np.mean(np.abs(np.asarray(target) - mean) <=
                       multiplier * np.asarray(std)))


def gaussian_coverage(mean: np.ndarray, std: np.ndarray, target: np.ndarray,
                      nominal: float = NOMINAL) -> float:
  """Share of `target` inside the raw spread's Gaussian `nominal` interval
  (what the spread would claim uncalibrated)."""
  return coverage(mean, std, target, _gaussian_quantile(nominal))


def save(calibration: dict[str, Any], directory: epath.PathLike) -> None:
  (epath.Path(directory) / CALIBRATION_FILE).write_text(
      json.dumps(calibration, indent=2))


def load(directory: epath.PathLike) -> dict[str, Any] | None:
  path = epath.Path(directory) / CALIBRATION_FILE
  return json.loads(path.read_text()) if path.exists() else None


def for_spread(calibration: dict[str, Any] | None, mc_samples: int,
               mc_mode: str) -> tuple[dict[str, Any] | None, str]:
  """(`calibration` if it was fitted on this spread else None, why not)."""
  if calibration is None:
    return None, "the run has no calibration (no validation samples)"
  fitted_on = (calibration.get("mc_samples"), calibration.get("mc_mode"))
  if fitted_on != (mc_samples, mc_mode):
    return None, (f"the run was calibrated for mc_samples={fitted_on[0]}, "
                  f"mc_mode={fitted_on[1]!r}, not mc_samples={mc_samples}, "
                  f"mc_mode={mc_mode!r}")
  return calibration, ""
