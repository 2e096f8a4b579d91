"""Regression metrics of soil spectroscopy (numpy), overall and per region.

All metrics are in target units (dS/m for EC): apply the inverse target
transform to predictions first.
  r2    1 - SS_res / SS_tot (nan if y_true is constant)
  rmse  root mean squared error
  rpd   ratio of performance to deviation: sd(y_true, ddof=1) / rmse
  rpiq  ratio of performance to interquartile distance: IQR(y_true) / rmse
  bias  mean(pred - true)
  n     number of samples
rpd and rpiq are inf for a perfect prediction (rmse = 0).
"""
from typing import Sequence

import numpy as np

# At least this many samples for a metric set (sd with ddof=1 needs 2).
MIN_SAMPLES = 2


def regression_metrics(y_true, y_pred) -> dict[str, float]:
  """R², RMSE, RPD, RPIQ, bias and n of predictions (1-D, same length)."""
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
  ss_tot = float(np.sum((y_true - y_true.mean())**2))
  q1, q3 = np.percentile(y_true, [25, 75])
  with np.errstate(divide='ignore', invalid='ignore'):
    r2 = 1.0 - float(np.sum(error**2)) / ss_tot if ss_tot > 0 else np.nan
    rpd = float(np.std(y_true, ddof=1) / np.float64(rmse))
    rpiq = float((q3 - q1) / np.float64(rmse))
  return {'r2': float(r2), 'rmse': rmse, 'rpd': rpd, 'rpiq': rpiq,
          'bias': float(error.mean()), 'n': int(y_true.size)}


def per_region(y_true, y_pred, region_ids,
               region_names: Sequence[str]) -> dict[str, dict[str, float]]:
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
      out[name] = regression_metrics(y_true[mask], y_pred[mask])
  return out
