"""What a salinity map holds: pixel counts, EC distribution, class areas.

`Tally` accumulates a map block by block (a full scene is never held in
memory); `pixel_area_m2` gives the ground area of each pixel from the
scene's CRS, so class areas are in hectares for projected and geographic
scenes alike.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import rasterio.crs

from deepsalt_jax import metrics
from deepsalt_spectral import indices

# EC histogram: geometric bins from HIST_MIN_EC to HIST_MAX_EC dS/m (below
# and above: one bin each), so percentiles are read off it to HIST_RATIO
# (< 1 %) of their value.
HIST_MIN_EC, HIST_MAX_EC, HIST_BINS = 0.01, 1000.0, 1000
HIST_EDGES = np.geomspace(HIST_MIN_EC, HIST_MAX_EC, HIST_BINS + 1)
HIST_RATIO = HIST_EDGES[1] / HIST_EDGES[0]
PERCENTILES = (5, 25, 50, 75, 95)
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
    self.masks = dict.fromkeys(indices.MASK_NAMES, 0)
    self.total = 0
    n = len(metrics.SALINITY_CLASS_NAMES)
    self.classes = np.zeros(n, np.int64)
    self.class_m2 = np.zeros(n)
    self.has_area = True
    self.soil_m2 = 0.0
    self.hist = np.zeros(HIST_BINS + 2, np.int64)
    self.ec = [0.0, np.inf, -np.inf]  # Sum, min, max.
    self.std = [0.0, 0]  # Sum, count (NaN without MC dropout).

  def add(self, masks: dict[str, np.ndarray], ec: np.ndarray,
          std: np.ndarray, area: np.ndarray | None) -> None:
    for name, mask in masks.items():  # Beyond MASK_NAMES: no_covariates.
      self.masks[name] = self.masks.get(name, 0) + int(mask.sum())
    self.total += ec.size
    soil = masks["soil"]
    values = ec[soil]
    classes = salinity_class(values, self._class_nodata)
    self.classes += np.bincount(classes, minlength=self.classes.size)
    if area is None:
      self.has_area = False
    else:
      self.class_m2 += np.bincount(classes, weights=area[soil],
                                   minlength=self.classes.size)
      self.soil_m2 += float(area[soil].sum())
    if values.size:
      self.hist += np.bincount(np.searchsorted(HIST_EDGES, values, "right"),
                               minlength=self.hist.size)
      self.ec = [self.ec[0] + float(values.sum()),
                 min(self.ec[1], float(values.min())),
                 max(self.ec[2], float(values.max()))]
      std = std[soil]
      self.std = [self.std[0] + float(np.nansum(std)),
                  self.std[1] + int(np.isfinite(std).sum())]

  def percentiles(self) -> dict[str, float]:
    """EC percentiles: the geometric centre of the bin that holds each,
    within the observed range."""
    cumulative = np.cumsum(self.hist)
    centres = np.concatenate([[self.ec[1]], np.sqrt(HIST_EDGES[1:]
                                                    * HIST_EDGES[:-1]),
                              [self.ec[2]]])
    out = {}
    for p in PERCENTILES:
      b = int(np.searchsorted(cumulative, p / 100 * cumulative[-1]))
      out[f"p{p}"] = round(float(np.clip(centres[b], *self.ec[1:])), 4)
    return out

  def summary(self) -> dict[str, Any]:
    n = self.masks["soil"]
    valid = self.total - self.masks["nodata"] - self.masks["non_finite"]
    ha = (lambda m2: round(m2 / M2_PER_HA, 4)) if self.has_area else (
        lambda m2: None)
    return {
        "pixels": self.masks,
        "soil_fraction_of_valid": n / valid if valid else None,
        "soil_area_ha": ha(self.soil_m2),
        "classes": {name: {"pixels": int(c), "fraction": int(c) / max(n, 1),
                           "area_ha": ha(m2)}
                    for name, c, m2 in zip(metrics.SALINITY_CLASS_NAMES,
                                           self.classes, self.class_m2)},
        "ec_dS_per_m": {"mean": self.ec[0] / n, "min": self.ec[1],
                        "max": self.ec[2], **self.percentiles()}
                       if n else None,
        "mean_uncertainty_dS_per_m": (self.std[0] / self.std[1]
                                      if self.std[1] else None)}
