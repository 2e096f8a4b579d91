"""What a salinity map holds: pixel counts, EC distribution, class areas,
interval widths and the area likely saline.

`Tally` accumulates a map block by block (a full scene is never held in
memory); `pixel_area_m2` gives the ground area of each pixel from the
scene's CRS, so class and exceedance areas are in hectares for projected
and geographic scenes alike.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import rasterio.crs

from deepsalt_jax import applicability
from deepsalt_jax import metrics
from deepsalt_jax.mapping import covariate_rasters
from deepsalt_spectral import indices

# EC histogram: geometric bins from HIST_MIN_EC to HIST_MAX_EC dS/m (below
# and above: one bin each), so percentiles are read off it to HIST_RATIO
# (< 1 %) of their value.
HIST_MIN_EC, HIST_MAX_EC, HIST_BINS = 0.01, 1000.0, 1000
HIST_EDGES = np.geomspace(HIST_MIN_EC, HIST_MAX_EC, HIST_BINS + 1)
HIST_RATIO = HIST_EDGES[1] / HIST_EDGES[0]
PERCENTILES = (5, 25, 50, 75, 95)
# The masks file's bands and the report's pixel counts: the soil tests, the
# soil pixels without covariates (not mapped) and the mapped pixels outside
# the area of applicability (flagged).
MASKS = indices.MASK_NAMES + (covariate_rasters.MASK, applicability.MASK)
# The EC file's bands: EC, the calibrated interval's bounds, P(EC > t).
BANDS = ("ec", "lower", "upper", "exceedance")
# Areas where P(EC > t) exceeds these are reported.
PROBABILITIES = (0.5, 0.8)
_EARTH_RADIUS_M = 6_371_008.8  # Mean (authalic) radius.
M2_PER_HA = 1e4


def salinity_class(ec: np.ndarray, nodata: int) -> np.ndarray:
  """uint8 class index (metrics.SALINITY_CLASS_NAMES) of EC; `nodata` at
  NaN."""
  ec = np.asarray(ec)
  classes = metrics.salinity_class(np.nan_to_num(ec, nan=0.0))
  return np.where(np.isnan(ec), nodata, classes).astype(np.uint8)


def pixel_area_m2(crs: Any, transform: Any, start: int, stop: int,
                  width: int) -> np.ndarray | None:
  """Ground area (m^2) of the pixels of rows [start, stop), [rows, width].

  None without a transform or CRS, or for a rotated grid.
  """
  if transform is None or crs is None or transform.b or transform.d:
    return None
  crs = rasterio.crs.CRS.from_user_input(crs)
  rows = np.arange(start, stop)
  if crs.is_geographic:
    # A cell between two parallels on the sphere: R^2 dlon |sin a - sin b|.
    top = np.radians(transform.f + transform.e * rows)
    bottom = np.radians(transform.f + transform.e * (rows + 1))
    area = (_EARTH_RADIUS_M**2 * np.radians(abs(transform.a))
            * np.abs(np.sin(top) - np.sin(bottom)))
  elif crs.is_projected:
    metres = crs.linear_units_factor[1]
    area = np.full(rows.size, abs(transform.a * transform.e) * metres**2)
  else:
    return None
  return np.repeat(area[:, None], width, axis=1)


class Tally:
  """Running pixel counts, class areas and EC statistics of a map."""

  def __init__(self, class_nodata: int):
    self._class_nodata = class_nodata
    self.masks = dict.fromkeys(MASKS, 0)
    self.total = 0
    n = len(metrics.SALINITY_CLASS_NAMES)
    self.classes = np.zeros(n, np.int64)
    self.class_m2 = np.zeros(n)
    self.has_area = True
    self.soil_m2 = 0.0
    self.outside_m2 = 0.0  # Of the area of applicability.
    self.hist = np.zeros(HIST_BINS + 2, np.int64)
    self.ec = [0.0, np.inf, -np.inf]  # Sum, min, max.
    # Interval widths and width / EC (geometric bins; none without one).
    self.width_hist = np.zeros(HIST_BINS + 2, np.int64)
    self.relative_hist = np.zeros(HIST_BINS + 2, np.int64)
    self.likely = np.zeros((len(PROBABILITIES), 2))  # Pixels, m^2.

  def add(self, masks: dict[str, np.ndarray], values: np.ndarray,
          area: np.ndarray | None) -> None:
    """Adds a block: `values` [BANDS, rows, cols] (NaN: not mapped)."""
    ec = values[0]
    for name in MASKS:
      self.masks[name] += int(masks[name].sum())
    self.total += ec.size
    soil = masks["soil"]
    soil_ec = ec[soil]
    classes = salinity_class(soil_ec, self._class_nodata)
    self.classes += np.bincount(classes, minlength=self.classes.size)
    if area is None:
      self.has_area = False
    else:
      self.class_m2 += np.bincount(classes, weights=area[soil],
                                   minlength=self.classes.size)
      self.soil_m2 += float(area[soil].sum())
      self.outside_m2 += float(area[masks[applicability.MASK]].sum())
    if soil_ec.size:
      self.hist += _bins(soil_ec)
      self.ec = [self.ec[0] + float(soil_ec.sum()),
                 min(self.ec[1], float(soil_ec.min())),
                 max(self.ec[2], float(soil_ec.max()))]
      lower, upper, p = values[1:, soil]
      known = np.isfinite(upper)
      width = (upper - lower)[known]
      self.width_hist += _bins(width)
      self.relative_hist += _bins(width / np.maximum(soil_ec[known],
                                                     HIST_MIN_EC))
      for k, level in enumerate(PROBABILITIES):
        likely = p > level
        self.likely[k] += (likely.sum(), 0.0 if area is None
                           else float(area[soil][likely].sum()))

  def percentiles(self) -> dict[str, float]:
    """EC percentiles: the geometric centre of the bin that holds each,
    within the observed range."""
    return {f"p{p}": round(float(np.clip(_percentile(self.hist, p,
                                                     *self.ec[1:]),
                                         *self.ec[1:])), 4)
            for p in PERCENTILES}

  def _interval(self, ha) -> dict[str, Any] | None:
    if not self.width_hist.sum():
      return None
    edges = (HIST_MIN_EC, HIST_MAX_EC)
    return {"median_width_dS_per_m": round(
        _percentile(self.width_hist, 50, *edges), 4),
            "median_relative_width": round(
                _percentile(self.relative_hist, 50, *edges), 4),
            "likely_exceeding": {
                f"p>{level:g}": {"pixels": int(n), "area_ha": ha(m2)}
                for level, (n, m2) in zip(PROBABILITIES, self.likely)}}

  def summary(self) -> dict[str, Any]:
    n = self.masks["soil"]
    valid = self.total - self.masks["nodata"] - self.masks["non_finite"]
    ha = (lambda m2: round(m2 / M2_PER_HA, 4)) if self.has_area else (
        lambda m2: None)
    return {
        "pixels": self.masks,
        "soil_fraction_of_valid": n / valid if valid else None,
        "soil_area_ha": ha(self.soil_m2),
        "outside_applicability_ha": ha(self.outside_m2),
        "classes": {name: {"pixels": int(c), "fraction": int(c) / max(n, 1),
                           "area_ha": ha(m2)}
                    for name, c, m2 in zip(metrics.SALINITY_CLASS_NAMES,
                                           self.classes, self.class_m2)},
        "ec_dS_per_m": {"mean": self.ec[0] / n, "min": self.ec[1],
                        "max": self.ec[2], **self.percentiles()}
                       if n else None,
        "interval": self._interval(ha)}


def _bins(values: np.ndarray) -> np.ndarray:
  """Counts of `values` in the geometric bins (below and above: one each)."""
  return np.bincount(np.searchsorted(HIST_EDGES, values, "right"),
                     minlength=HIST_BINS + 2)


def _percentile(hist: np.ndarray, p: float, below: float,
                above: float) -> float:
  """The geometric centre of the bin that holds the p-th percentile;
  `below` and `above` stand for the two outer bins."""
  centres = np.concatenate([[below], np.sqrt(HIST_EDGES[1:]
                                             * HIST_EDGES[:-1]), [above]])
  cumulative = np.cumsum(hist)
  return float(centres[int(np.searchsorted(cumulative,
                                           p / 100 * cumulative[-1]))])
