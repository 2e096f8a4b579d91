"""Spectral indices and the soil masks built on them.

The indices soil scientists' EnMAP tools use to keep soil-dominated pixels
(the EnMAP Soil Mapper workflow): NDVI for green vegetation, the Normalised
Difference Red Blue Index (NDRBI) for water, the normalised cellulose
absorption index (nCAI) for dry vegetation.

Every function takes a `cube`: any object with `reflectance` (float
[bands, ...], fraction), `wavelength` ([bands], nm), `bad` ([bands] bool)
and `nodata` ([...] bool). A `data_prep.scenes.Scene` is one; this module
imports nothing of the project. Indices are NaN at nodata pixels.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from deepsalt_spectral import errors

# Band centres (nm): red and NIR for NDVI (Sentinel-2 B4/B8A centres), blue
# for NDRBI.
RED_NM = 665.0
NIR_NM = 865.0
BLUE_NM = 460.0
# Shoulders and centre of the cellulose/lignin absorption (Nagler et al.
# 2000); normalised as in Bartholomeus et al. (2007).
CAI_NM = (2031.0, 2101.0, 2211.0)
# A good band this far (nm) from a requested centre does not stand for it.
MAX_BAND_DISTANCE_NM = 30.0
# The masks of `soil_masks`: 'soil' is what gets mapped; the others say why a
# pixel is not (a pixel may have several reasons).
MASK_NAMES = ("nodata", "water", "green_vegetation", "dry_vegetation", "dark",
              "soil")


def band_index(cube: Any, nm: float) -> int:
  """Index of the good band nearest to `nm`."""
  good = np.flatnonzero(~np.asarray(cube.bad))
  wavelength = np.asarray(cube.wavelength)
  i = good[np.argmin(np.abs(wavelength[good] - nm))]
  if abs(wavelength[i] - nm) > MAX_BAND_DISTANCE_NM:
    raise errors.UserError(
        f"No good band within {MAX_BAND_DISTANCE_NM:g} nm of {nm:g} nm "
        f"(nearest {wavelength[i]:.1f} nm): the index needs that band.")
  return int(i)


def _band(cube: Any, nm: float) -> np.ndarray:
  band = np.array(cube.reflectance[band_index(cube, nm)], np.float64)
  band[np.asarray(cube.nodata, bool)] = np.nan
  return band


def _normalised_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(a - b) / (a + b); NaN where a + b <= 0 or either is NaN."""
  total = a + b
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total > 0, (a - b) / total, np.nan)


def ndvi(cube: Any) -> np.ndarray:
  """NDVI from the good bands nearest 865 and 665 nm."""
  return _normalised_difference(_band(cube, NIR_NM), _band(cube, RED_NM))


def ndrbi(cube: Any) -> np.ndarray:
  """Normalised Difference Red Blue Index (~665, ~460 nm); low over water."""
  return _normalised_difference(_band(cube, RED_NM), _band(cube, BLUE_NM))


def ncai(cube: Any) -> np.ndarray:
  """Normalised cellulose absorption index; high on dry plant matter.

  (mean(R2031, R2211) - R2101) / (mean(R2031, R2211) + R2101).
  """
  low, mid, high = (_band(cube, nm) for nm in CAI_NM)
  return _normalised_difference(0.5 * (low + high), mid)


@dataclasses.dataclass(frozen=True)
class MaskThresholds:
  """Index thresholds of `soil_masks`; None switches a test off.

  Attributes:
    ndvi_max: green vegetation above.
    ndrbi_min: water below.
    ncai_max: dry vegetation above.
  """
  ndvi_max: float | None = 0.3
  ndrbi_min: float | None = None
  ncai_max: float | None = None


def soil_masks(cube: Any, thresholds: MaskThresholds) -> dict[str, np.ndarray]:
  """The masks of `MASK_NAMES` for every pixel of `cube`.

  'dark' pixels have an undefined index (red + NIR, or red + blue,
  reflectance <= 0: water or deep shadow in L2A products).
  """
  nodata = np.asarray(cube.nodata, bool)
  valid = ~nodata
  masks = {name: np.zeros(nodata.shape, bool) for name in MASK_NAMES}
  masks["nodata"] = nodata.copy()
  tests = {"green_vegetation": (ndvi, thresholds.ndvi_max, np.greater),
           "water": (ndrbi, thresholds.ndrbi_min, np.less),
           "dry_vegetation": (ncai, thresholds.ncai_max, np.greater)}
  undefined = np.zeros(nodata.shape, bool)
  for name, (index, threshold, beyond) in tests.items():
    if threshold is None:
      continue
    values = index(cube)
    defined = ~np.isnan(values)
    with np.errstate(invalid="ignore"):
      masks[name] = valid & defined & beyond(values, threshold)
    undefined |= valid & ~defined
  flagged = masks["green_vegetation"] | masks["water"] | masks[
      "dry_vegetation"]
  masks["dark"] = undefined & ~flagged
  masks["soil"] = valid & ~flagged & ~undefined
  return masks
