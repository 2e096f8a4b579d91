"""Regression metrics of soil spectroscopy (numpy), overall and per region.

All metrics are in target units (dS/m for EC): apply the inverse target
transform to predictions first.
  r2      1 - SS_res / SS_tot (nan if y_true is constant)
  r2_log  R² of log1p(target): EC is skewed, so R² and RPD in dS/m mostly
          measure the saline tail; this one weighs the body too
  rmse    root mean squared error
  rpd     ratio of performance to deviation: sd(y_true, ddof=1) / rmse
  rpiq    ratio of performance to interquartile distance: IQR(y_true) / rmse
  bias    mean(pred - true)
  n       number of samples
rpd and rpiq are inf for a perfect prediction (rmse = 0).
With `classes=True` (EC in dS/m), also the agreement of FAO salinity classes:
  class_accuracy  share of samples in the measured class
  kappa           Cohen's kappa of the classes (chance-corrected agreement)
"""
from typing import Sequence

import numpy as np

from data_prep import ec_methods

# At least this many samples for a metric set (sd with ddof=1 needs 2).
MIN_SAMPLES = 2
# Salinity classes of the saturated-paste EC (dS/m), the FAO/USDA scale
# (FAO Soils Bulletin 39; Richards 1954, USDA Handbook 60).
SALINITY_CLASS_EDGES = (2.0, 4.0, 8.0, 16.0)
SALINITY_CLASS_NAMES = ("non-saline (<2 dS/m)", "slightly saline (2-4)",
                        "moderately saline (4-8)", "strongly saline (8-16)",
                        "extremely saline (>16)")
# The EC the salinity models predict, named on every map: the simulated
# benchmark's EC is that of the saturated-paste extract, the one the FAO
# classes are defined on. A config of a user's own data names its own
# (config.data.ec_method, e.g. 'EC1:5'), which maps then show instead.
EC_METHOD = ec_methods.CLASS_METHOD


def salinity_class(ec) -> np.ndarray:
  """Class index 0..4 (SALINITY_CLASS_NAMES) of EC in dS/m."""
  return np.digitize(np.asarray(ec, np.float64), SALINITY_CLASS_EDGES)


def class_agreement(y_true, y_pred) -> dict[str, float]:
  """Accuracy and Cohen's kappa of the salinity classes of EC (dS/m)."""
  true, pred = salinity_class(y_true), salinity_class(y_pred)
  k = len(SALINITY_CLASS_NAMES)
  confusion = np.zeros((k, k))
  np.add.at(confusion, (true, pred), 1.0)
  confusion /= confusion.sum()
  observed = float(np.trace(confusion))
  expected = float(confusion.sum(axis=1) @ confusion.sum(axis=0))
  kappa = (observed - expected) / (1.0 - expected) if expected < 1 else 1.0
  return {'class_accuracy': observed, 'kappa': float(kappa)}


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
  ss_tot = float(np.sum((y_true - y_true.mean())**2))
  if ss_tot == 0:
    return float('nan')
  return 1.0 - float(np.sum((y_pred - y_true)**2)) / ss_tot


def regression_metrics(y_true, y_pred, classes: bool = False
                       ) -> dict[str, float]:
  """The metrics of the module docstring (1-D arrays, same length)."""
  y_true = np.asarray(y_true, dtype=np.float64)
  y_pred = np.asarray(y_pred, dtype=np.float64)
  if y_true.ndim != 1 or y_true.shape != y_pred.shape:
    raise ValueError(f'y_true and y_pred must be 1-D and the same length, '
                     f'got shapes {y_true.shape} and {y_pred.shape}.')
  if y_true.size < MIN_SAMPLES:
    raise ValueError(f'Need at least {MIN_SAMPLES} samples for metrics, got '
                     f'{y_true.size}.')
  if not (np.all(np.isfinite(y_true)) and np.all(np.isfinite(y_pred))):
    raise ValueError('y_true and y_pred must be finite; a NaN/Inf prediction '
                     'usually means a diverged model.')
  error = y_pred - y_true
  rmse = float(np.sqrt(np.mean(error**2)))
  q1, q3 = np.percentile(y_true, [25, 75])
  with np.errstate(divide='ignore', invalid='ignore'):
    rpd = float(np.std(y_true, ddof=1) / np.float64(rmse))
    rpiq = float((q3 - q1) / np.float64(rmse))
    # Predictions below -1 (possible for an unbounded model) have no log1p.
    r2_log = _r2(np.log1p(y_true), np.log1p(np.maximum(y_pred, -1 + 1e-9)))
  out = {'r2': _r2(y_true, y_pred), 'r2_log': r2_log, 'rmse': rmse,
         'rpd': rpd, 'rpiq': rpiq, 'bias': float(error.mean()),
         'n': int(y_true.size)}
  if classes:
    out.update(class_agreement(y_true, y_pred))
  return out


def finite_metrics(y_true, y_pred, classes: bool = False
                   ) -> dict[str, float] | None:
  """regression_metrics of the finite predictions (a model not fitted for
  some samples predicts NaN there), or None with fewer than MIN_SAMPLES."""
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  ok = np.isfinite(y_pred)
  if ok.sum() < MIN_SAMPLES:
    return None
  return regression_metrics(y_true[ok], y_pred[ok], classes)


def per_region(y_true, y_pred, region_ids, region_names: Sequence[str],
               classes: bool = False) -> dict[str, dict[str, float]]:
  """regression_metrics per region, keyed by name, in `region_names` order.

  Regions with fewer than MIN_SAMPLES samples (absent ones included) are
  left out: their metrics are undefined.
  """
  y_true = np.asarray(y_true)
  y_pred = np.asarray(y_pred)
  region_ids = np.asarray(region_ids)
  if region_ids.shape != y_true.shape:
    raise ValueError(f'region_ids {region_ids.shape} must match y_true '
                     f'{y_true.shape}.')
  if region_ids.size and (region_ids.min() < 0 or
                          region_ids.max() >= len(region_names)):
    raise ValueError(f'region_ids must index region_names (0..'
                     f'{len(region_names) - 1}), got values '
                     f'{region_ids.min()}..{region_ids.max()}.')
  out = {}
  for index, name in enumerate(region_names):
    mask = region_ids == index
    if mask.sum() >= MIN_SAMPLES:
      out[name] = regression_metrics(y_true[mask], y_pred[mask], classes)
  return out
