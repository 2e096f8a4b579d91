"""Field points, library samples and bare-soil pixels placed in scenes.

Points are reprojected from their CRS into each scene's; distances go
through one local metric CRS (an azimuthal equidistant projection centred
on the points), so they are metres whatever the scenes' CRS (UTM, or
degrees for EMIT). A point or sample is placed in the first scene where it
lands on a soil pixel (`indices.soil_masks`); its spectrum is the mean of
the soil pixels in a window around that pixel, brought to the built-in
sensor's good bands (`bands.match_bands`).
"""
import dataclasses
import math

import numpy as np
import rasterio.warp

from data_prep import scenes
from deepsalt_spectral import bands
from deepsalt_spectral import indices
from deepsalt_spectral import sensors

OUTSIDE = "outside every scene"
NODATA = "nodata"
# Masks that make a pixel not soil, in the order a drop is attributed.
NOT_SOIL = ("water", "green_vegetation", "dry_vegetation", "dark")


def local_crs(lon: np.ndarray, lat: np.ndarray) -> str:
  """An azimuthal equidistant CRS (metres) centred on the points."""
  return (f"+proj=aeqd +lat_0={np.mean(lat):.6f} +lon_0={np.mean(lon):.6f} "
          "+datum=WGS84 +units=m +no_defs")


def transform(src, dst, x, y) -> tuple[np.ndarray, np.ndarray]:
  if len(x) == 0:
    return np.zeros(0), np.zeros(0)
  out = rasterio.warp.transform(src, dst, list(x), list(y))
  return np.asarray(out[0], np.float64), np.asarray(out[1], np.float64)


@dataclasses.dataclass
class Placement:
  """Where each of n positions found a pixel; `reason` says why not."""
  satellite: np.ndarray  # [n, n_good] float32, NaN where not placed.
  scene: np.ndarray  # [n] str.
  row: np.ndarray  # [n] int64, -1 where not placed.
  col: np.ndarray
  x: np.ndarray  # [n] local metres of the pixel centre.
  y: np.ndarray
  distance: np.ndarray  # [n] metres from the position to the pixel centre.
  reason: np.ndarray  # [n] str, '' where placed.

  @classmethod
  def empty(cls, n: int, n_good: int) -> "Placement":
    nan = np.full(n, np.nan)
    return cls(np.full((n, n_good), np.nan, np.float32),
               np.full(n, "", dtype=object), np.full(n, -1), np.full(n, -1),
               nan.copy(), nan.copy(), nan.copy(),
               np.full(n, OUTSIDE, dtype=object))

  @property
  def placed(self) -> np.ndarray:
    return self.reason == ""


class SceneContext:
  """One scene with its soil masks, band match and local geometry."""

  def __init__(self, scene: scenes.Scene, sensor: sensors.Sensor,
               thresholds: indices.MaskThresholds, tolerance_nm: float,
               min_coverage: float, local: str):
    self.scene = scene
    self.local = local
    self.masks = indices.soil_masks(scene, thresholds)
    self.soil = self.masks["soil"]
    self.match = bands.match_bands(scene.wavelength[scene.good], sensor,
                                   tolerance_nm, min_coverage)
    rows, cols = scene.shape
    x, y = self.centres(np.array([rows // 2] * 2), np.array([cols // 2,
                                                             cols // 2 + 1]))
    self.pixel_m = float(np.hypot(np.diff(x), np.diff(y))[0])

  def centres(self, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    """Local metres of pixel centres."""
    x, y = self.scene.transform @ (np.asarray(cols) + 0.5,
                                   np.asarray(rows) + 0.5)
    return transform(self.scene.crs, self.local, np.ravel(x), np.ravel(y))

  def pixel_of(self, crs, x, y) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) holding positions given in `crs`; -1 outside the scene."""
    sx, sy = transform(crs, self.scene.crs, x, y)
    cols, rows = ~self.scene.transform @ (sx, sy)
    rows, cols = np.floor(rows).astype(int), np.floor(cols).astype(int)
    inside = ((rows >= 0) & (rows < self.scene.shape[0]) & (cols >= 0)
              & (cols < self.scene.shape[1]))
    return np.where(inside, rows, -1), np.where(inside, cols, -1)

  def spectra(self, rows, cols, window: int) -> np.ndarray:
    """Mean spectra of the soil pixels in windows around soil pixels, at
    the sensor's good bands."""
    if len(rows) == 0:
      return np.zeros((0, self.match.matrix.shape[0]), np.float32)
    pixels = scenes.extract_pixels(self.scene, np.asarray(cols) + 0.5,
                                   np.asarray(rows) + 0.5, coords="pixel",
                                   window=window, mask=self.soil)
    return self.match(pixels[:, self.scene.good]).astype(np.float32)

  def why_not(self, row: int, col: int) -> str:
    """'' for a soil pixel, else the drop reason."""
    if self.masks["nodata"][row, col]:
      return NODATA
    for name in NOT_SOIL:
      if self.masks[name][row, col]:
        return name
    return ""

  def _set(self, placement: Placement, index, rows, cols, window) -> None:
    placement.satellite[index] = self.spectra(rows, cols, window)
    placement.scene[index] = self.scene.name
    placement.row[index], placement.col[index] = rows, cols
    placement.x[index], placement.y[index] = self.centres(rows, cols)
    placement.reason[index] = ""

  def place_points(self, placement: Placement, crs, x, y,
                   window: int) -> None:
    """Points not yet placed take the soil pixel that holds them."""
    rows, cols = self.pixel_of(crs, x, y)
    todo = np.flatnonzero(~placement.placed & (rows >= 0))
    why = np.array([self.why_not(rows[i], cols[i]) for i in todo], object)
    for i, reason in zip(todo, why):
      # A reason found in a scene beats 'outside'; soil in a later scene
      # beats both.
      if reason:
        placement.reason[i] = reason
    found = todo[why == ""]
    self._set(placement, found, rows[found], cols[found], window)
    placement.distance[found] = 0.0

  def pair(self, placement: Placement, lon, lat, local_x, local_y,
           radius_m: float, window: int) -> None:
    """Samples not yet placed take the nearest soil pixel whose centre
    lies within `radius_m`."""
    rows, cols = self.pixel_of("EPSG:4326", lon, lat)
    reach = math.ceil(radius_m / self.pixel_m)
    offsets = np.arange(-reach, reach + 1)
    dr, dc = (v.ravel() for v in np.meshgrid(offsets, offsets, indexing="ij"))
    n_rows, n_cols = self.scene.shape
    for i in np.flatnonzero(~placement.placed & (rows >= 0)):
      r, c = rows[i] + dr, cols[i] + dc
      ok = (r >= 0) & (r < n_rows) & (c >= 0) & (c < n_cols)
      r, c = r[ok], c[ok]
      soil = self.soil[r, c]
      if not soil.any():
        placement.reason[i] = self.why_not(rows[i], cols[i]) or NODATA
        continue
      r, c = r[soil], c[soil]
      x, y = self.centres(r, c)
      distance = np.hypot(x - local_x[i], y - local_y[i])
      best = int(np.argmin(distance))
      if distance[best] > radius_m:
        placement.reason[i] = "farther than data.pair_max_distance_m"
        continue
      self._set(placement, [i], r[best:best + 1], c[best:best + 1], window)
      placement.distance[i] = distance[best]

  def sample_soil(self, n: int, seed: int, window: int) -> Placement:
    """Up to n bare-soil pixels (seeded), as the mapper sees them: each the
    mean of the soil pixels in its window, as the points."""
    rows, cols = scenes.seeded_subset(self.soil, n, seed)
    placement = Placement.empty(rows.size, self.match.matrix.shape[0])
    self._set(placement, slice(None), rows, cols, window)
    placement.distance[:] = 0.0
    return placement
