"""Bringing one band set to another: the same bands, else SRF resampling."""
from __future__ import annotations

import dataclasses

from absl import logging
import numpy as np

from deepsalt_spectral import errors
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors


@dataclasses.dataclass(frozen=True)
class BandMatch:
  """How a scene's good bands become a sensor's good bands.

  Attributes:
    matrix: float32 [n_sensor, n_scene_good]; rows sum to 1.
    direct: bool [n_sensor], the band is a scene band within tolerance;
      the others are SRF-resampled from the scene's good bands.
    coverage: [n_sensor] share of each band's SRF the scene supports.
  """
  matrix: np.ndarray
  direct: np.ndarray
  coverage: np.ndarray

  @property
  def method(self) -> str:
    return "direct" if self.direct.all() else "resampled"

  def __call__(self, x: np.ndarray) -> np.ndarray:
    """Spectra [n, n_scene_good] -> [n, n_sensor]."""
    return x @ self.matrix.T


def match_bands(scene_wavelength: np.ndarray, sensor: sensors.Sensor,
                tolerance_nm: float, min_coverage: float) -> BandMatch:
  """Matches a scene's good-band centres (nm) to a sensor's good bands.

  Each sensor band takes the nearest scene band within `tolerance_nm`; the
  rest are resampled with `resampling.resampling_matrix` (Gaussian SRFs) and
  logged with their SRF coverage.

  Raises:
    UserError: when some resampled band's SRF coverage is below
      `min_coverage` (a band filled from neighbours that barely reach it).
  """
  src = np.asarray(scene_wavelength, np.float64)
  dst, dst_fwhm = sensor.good_wavelength, sensor.good_fwhm
  nearest = np.abs(dst[:, None] - src[None, :]).argmin(axis=1)
  direct = np.abs(src[nearest] - dst) <= tolerance_nm
  matrix = np.zeros((dst.size, src.size))
  matrix[direct, nearest[direct]] = 1.0
  coverage = np.ones(dst.size)
  rest = ~direct
  if rest.any():
    coverage[rest] = resampling.band_coverage(src, dst[rest], dst_fwhm[rest])
    short = rest & (coverage < min_coverage)
    if short.any():
      listed = ", ".join(f"{w:.1f} nm ({c:.0%})" for w, c in
                         zip(dst[short][:10], coverage[short][:10]))
      raise errors.UserError(
          f"The scene's good bands ({src.size}, {src[0]:.0f}-{src[-1]:.0f} "
          f"nm) cannot stand in for {short.sum()} of the {sensor.name} bands "
          f"the model reads: SRF coverage below min_coverage="
          f"{min_coverage:g} at {listed}. Use a scene of the model's sensor, "
          "train a model for the scene's sensor (config.data.sensor), or "
          "lower mapping.min_coverage knowingly.")
    matrix[rest] = resampling.resampling_matrix(src, dst[rest], dst_fwhm[rest])
    for w, c in zip(dst[rest], coverage[rest]):
      logging.info("Band %.1f nm of %s resampled from the scene's bands (SRF "
                   "coverage %.0f%%).", w, sensor.name, 100 * c)
  return BandMatch(matrix.astype(np.float32), direct, coverage)
