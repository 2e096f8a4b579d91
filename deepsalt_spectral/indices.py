"""Spectral indices and the soil masks built on them.

The tests soil scientists' EnMAP tools apply to keep soil-dominated pixels
(the EnMAP Soil Mapper, EnSoMAP, workflow: Chabrillat et al., GFZ): water by
the Normalised Difference Red Blue Index (NDRBI, red ~660 vs blue ~460 nm;
Carter 1991, Zakaluk and Ranjan 2008), green vegetation by NDVI, dry
vegetation by the normalised cellulose absorption index (nCAI). Before them,
pixels that cannot be surface reflectance of soil are masked: NaN/Inf values,
reflectance outside a plausible range, clouds and haze (`cloud_haze`).

Every function takes a `cube`: any object with `reflectance` (float
[bands, ...], fraction), `wavelength` ([bands], nm), `bad` ([bands] bool)
and `nodata` ([...] bool), and optionally `non_finite` ([...] bool, pixels
with data whose good bands hold NaN/Inf; they are in `nodata` too). A
`data_prep.scenes.Scene` is one; this module imports nothing of the project.
Indices are NaN at nodata pixels.
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
# SWIR band of the cloud test: water droplets and ice absorb near 2.2 um.
SWIR_NM = 2200.0
# A good band this far (nm) from a requested centre does not stand for it.
MAX_BAND_DISTANCE_NM = 30.0
# The masks of `soil_masks`: 'soil' is what gets mapped; the others say why a
# pixel is not (a pixel may have several reasons). 'nodata' is the file's fill
# value; 'non_finite' pixels have data, but NaN/Inf in some good band.
MASK_NAMES = ("nodata", "non_finite", "out_of_range", "cloud_haze", "water",
              "green_vegetation", "dry_vegetation", "dark", "soil")

# Default thresholds (`MaskThresholds`). Each was checked on the real EnMAP
# L2A tiles over Potsdam (../shared/data) and on the simulated satellite
# view of the training spectra, saline ones included (docs/mapping.md).
# Green vegetation above NDVI 0.3, a common bare-soil limit; the simulated
# training pixels mix in sparse cover below it (median NDVI 0.16).
NDVI_GREEN_VEGETATION = 0.3
# Water below NDRBI 0: clear water reflects more blue than red, soils less
# (iron oxides and organic matter absorb the blue); EnSoMAP masks water by
# this index (Carter 1991; Zakaluk and Ranjan 2008). Potsdam soil pixels
# (NDVI < 0.3): 1st percentile 0.04; simulated training pixels: >= 0.026.
NDRBI_WATER = 0.0
# Dry vegetation above nCAI 0.01: cellulose and lignin absorb at 2100 nm, so
# dry plant litter has a positive cellulose absorption index and soils, which
# lack the feature, about zero or below (Nagler et al. 2000, Remote Sens.
# Environ. 71:207-215; Daughtry 2001, Agron. J. 93:125-131); normalised as
# in `ncai`. 0.01 leaves room for noise: 96 % of the Potsdam NDVI < 0.3
# pixels and 99.4 % of the simulated training pixels lie below it.
NCAI_DRY_VEGETATION = 0.01
# Surface reflectance of soil lies in [0, 1]; atmospheric correction leaves
# small negatives over dark targets. A pixel with any good band outside this
# range is not a soil spectrum the model has seen (bright salt crusts of the
# simulated training view reach 0.86).
REFLECTANCE_RANGE = (-0.05, 1.0)
# Cloud or haze: bright in the blue (above this) and either not redder in
# the red than in the blue, or dark at 2.2 um relative to the red. Soils,
# salt crusts included, are redder than blue (haze scatters the blue most:
# the haze-optimised transform of Zhang et al. 2002, Remote Sens. Environ.
# 82:173-187, rests on it) and stay bright at 2.2 um (R2200 / R665 >= 0.54 in
# the simulated training view and >= 0.58 in the Potsdam tiles among pixels
# with blue >= 0.1), where cloud water and ice absorb (the SWIR tests of
# Fmask, Zhu and Woodcock 2012, Remote Sens. Environ. 118:83-94). Thin haze
# that leaves a pixel redder than blue passes: it is not detected.
CLOUD_BLUE_MIN = 0.15
CLOUD_SWIR_RED_MAX = 0.4


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
  """Thresholds of `soil_masks`; None switches a test off.

  Defaults: the constants above (all tests on).

  Attributes:
    ndvi_max: green vegetation above.
    ndrbi_min: water below.
    ncai_max: dry vegetation above.
    reflectance_min, reflectance_max: a pixel with any good band outside is
      'out_of_range' (both or neither set).
    cloud_blue_min: the blue reflectance above which the cloud/haze test
      applies.
  """
  ndvi_max: float | None = NDVI_GREEN_VEGETATION
  ndrbi_min: float | None = NDRBI_WATER
  ncai_max: float | None = NCAI_DRY_VEGETATION
  reflectance_min: float | None = REFLECTANCE_RANGE[0]
  reflectance_max: float | None = REFLECTANCE_RANGE[1]
  cloud_blue_min: float | None = CLOUD_BLUE_MIN


# The tests of `soil_masks` (their mask names) and the thresholds each uses.
TEST_THRESHOLDS = {"out_of_range": ("reflectance_min", "reflectance_max"),
                   "cloud_haze": ("cloud_blue_min",), "water": ("ndrbi_min",),
                   "green_vegetation": ("ndvi_max",),
                   "dry_vegetation": ("ncai_max",)}

# Green vegetation alone (the real-scene target pixels of data_prep, whose
# dataset version fixed that definition).
NDVI_ONLY = MaskThresholds(ndrbi_min=None, ncai_max=None, reflectance_min=None,
                           reflectance_max=None, cloud_blue_min=None)


def _out_of_range(cube: Any, valid: np.ndarray,
                  thresholds: MaskThresholds) -> np.ndarray:
  values = np.asarray(cube.reflectance)
  good = ~np.asarray(cube.bad)[:, None, None]  # No copy of the good bands.
  with np.errstate(invalid="ignore"):
    outside = ((np.min(values, axis=0, where=good, initial=np.inf)
                < thresholds.reflectance_min)
               | (np.max(values, axis=0, where=good, initial=-np.inf)
                  > thresholds.reflectance_max))
  return valid & outside


def cloud_haze(cube: Any, blue_min: float = CLOUD_BLUE_MIN) -> np.ndarray:
  """Cloud or haze pixels (see CLOUD_BLUE_MIN); False at nodata."""
  blue, red, swir = (_band(cube, nm) for nm in (BLUE_NM, RED_NM, SWIR_NM))
  with np.errstate(invalid="ignore"):
    return (blue >= blue_min) & ((blue >= red)
                                 | (swir < CLOUD_SWIR_RED_MAX * red))


def soil_masks(cube: Any, thresholds: MaskThresholds) -> dict[str, np.ndarray]:
  """The masks of `MASK_NAMES` for every pixel of `cube`.

  'dark' pixels have an undefined index (red + NIR, or red + blue,
  reflectance <= 0: water or deep shadow in L2A products).
  """
  nodata = np.asarray(cube.nodata, bool)
  non_finite = getattr(cube, "non_finite", None)
  non_finite = (np.zeros(nodata.shape, bool) if non_finite is None
                else np.asarray(non_finite, bool))
  valid = ~nodata
  masks = {name: np.zeros(nodata.shape, bool) for name in MASK_NAMES}
  masks["nodata"] = nodata & ~non_finite
  masks["non_finite"] = non_finite.copy()
  if thresholds.reflectance_min is not None:
    masks["out_of_range"] = _out_of_range(cube, valid, thresholds)
  if thresholds.cloud_blue_min is not None:
    masks["cloud_haze"] = valid & cloud_haze(cube, thresholds.cloud_blue_min)
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
  flagged = np.zeros(nodata.shape, bool)
  for name in ("out_of_range", "cloud_haze", "green_vegetation", "water",
               "dry_vegetation"):
    flagged |= masks[name]
  masks["dark"] = undefined & ~flagged
  masks["soil"] = valid & ~flagged & ~undefined
  return masks
