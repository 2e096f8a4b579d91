"""What a scene gives the student: its bands, and which pixels are soil.

`match_bands` brings a scene's good bands to the student's sensor (the same
bands within a tolerance, else SRF resampling); `soil_masks` keeps the
soil-dominated pixels the way soil scientists' EnMAP tools do (EnMAP Soil
Mapper): water by NDRBI, green vegetation by NDVI, dry vegetation by the
normalised cellulose absorption index (nCAI).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data_prep import scenes
from deepsalt_jax import sensors
from deepsalt_jax import spectra

# Shoulders and centre of the cellulose/lignin absorption (Nagler et al.
# 2000); normalised as in Bartholomeus et al. (2007).
CAI_NM = (2031.0, 2101.0, 2211.0)
# The masks of `soil_masks`: 'soil' is what gets mapped.
MASK_NAMES = ("nodata", "water", "green_vegetation", "dry_vegetation", "dark",
              "soil")


@dataclasses.dataclass(frozen=True)
class BandMatch:
  """How the scene's good bands become the student's input bands.

  Attributes:
    matrix: float32 [n_student, n_scene_good]; rows sum to 1.
    direct: bool [n_student], the band is a scene band within tolerance;
      the others are SRF-resampled from the scene's good bands.
    coverage: [n_student] share of each band's SRF the scene supports.
  """
  matrix: np.ndarray
  direct: np.ndarray
  coverage: np.ndarray

  @property
  def method(self) -> str:
    return "direct" if self.direct.all() else "resampled"

  def __call__(self, x: np.ndarray) -> np.ndarray:
    """Spectra [n, n_scene_good] -> [n, n_student]."""
    return x @ self.matrix.T


def match_bands(scene_wavelength: np.ndarray, student: sensors.Sensor,
                tolerance_nm: float, min_coverage: float) -> BandMatch:
  """Matches a scene's good-band centres (nm) to the student's good bands.

  Each student band takes the nearest scene band within `tolerance_nm`;
  the rest are resampled with `spectra.resampling_matrix` (Gaussian SRFs).

  Raises:
    ValueError: when some band has no scene data within its SRF, or the mean
      coverage is below `min_coverage`.
  """
  src = np.asarray(scene_wavelength, np.float64)
  dst, dst_fwhm = student.good_wavelength, student.good_fwhm
  nearest = np.abs(dst[:, None] - src[None, :]).argmin(axis=1)
  direct = np.abs(src[nearest] - dst) <= tolerance_nm
  matrix = np.zeros((dst.size, src.size))
  matrix[direct, nearest[direct]] = 1.0
  coverage = np.ones(dst.size)
  rest = ~direct
  if rest.any():
    coverage[rest] = spectra.band_coverage(src, dst[rest], dst_fwhm[rest])
    if coverage.min() == 0 or coverage.mean() < min_coverage:
      missing = dst[coverage == 0]
      raise ValueError(
          f"The scene's good bands ({src.size}, {src[0]:.0f}-{src[-1]:.0f} "
          f"nm) cannot stand in for the student's {student.name} bands "
          f"({dst[0]:.0f}-{dst[-1]:.0f} nm): mean SRF coverage "
          f"{coverage.mean():.2f} (mapping.min_coverage={min_coverage}), "
          f"{missing.size} bands without any data"
          + (f" ({missing[0]:.0f}-{missing[-1]:.0f} nm)" if missing.size
             else "") + ". Use a scene of the student's sensor, or train a "
          "student for the scene's sensor (config.data.sensor).")
    matrix[rest] = spectra.resampling_matrix(src, dst[rest], dst_fwhm[rest])
  return BandMatch(matrix.astype(np.float32), direct, coverage)


def ncai(scene: scenes.Scene) -> np.ndarray:
  """Normalised cellulose absorption index [rows, cols]; high on dry plants.

  (mean(R2031, R2211) - R2101) / (mean(R2031, R2211) + R2101); NaN at nodata.
  """
  low, mid, high = (scene.reflectance[scenes.band_index(scene, nm)]
                    .astype(np.float64) for nm in CAI_NM)
  shoulders = 0.5 * (low + high)
  total = shoulders + mid
  with np.errstate(invalid="ignore", divide="ignore"):
    out = np.where(total > 0, (shoulders - mid) / total, np.nan)
  out[scene.nodata] = np.nan
  return out


def soil_masks(tile: scenes.Scene | None, shape: tuple[int, int],
               ndvi_max: float, ndrbi_min: float | None = None,
               ncai_max: float | None = None) -> dict[str, np.ndarray]:
  """The masks of `MASK_NAMES` for a block of rows (tile None: all nodata).

  'soil' (the pixels to map) follows `scenes.soil_pixels` and, if
  `ncai_max` is set, drops dry vegetation (nCAI above it); the other masks
  say why a valid pixel is left out (a pixel may have several reasons).
  'dark' pixels have an undefined index (red + NIR, or red + blue,
  reflectance <= 0: water or deep shadow in L2A products). None switches a
  threshold off.
  """
  masks = {name: np.zeros(shape, bool) for name in MASK_NAMES}
  if tile is None:
    masks["nodata"][:] = True
    return masks
  valid = ~tile.nodata
  masks["nodata"] = tile.nodata
  with np.errstate(invalid="ignore"):
    masks["green_vegetation"] = valid & (scenes.ndvi(tile) > ndvi_max)
    soil = scenes.soil_pixels(tile, ndvi_max=ndvi_max,
                              ndrbi_min=ndrbi_min)
    if ndrbi_min is not None:
      masks["water"] = valid & (scenes.ndrbi(tile) < ndrbi_min)
    if ncai_max is not None:
      masks["dry_vegetation"] = valid & (ncai(tile) > ncai_max)
  masks["dark"] = valid & ~soil & ~masks["green_vegetation"] & ~masks["water"]
  masks["soil"] = soil & ~masks["dry_vegetation"]
  return masks
