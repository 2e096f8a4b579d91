"""Pixels out of a Scene: spectra at points, and bare-soil pixels."""
from typing import Optional, Sequence

import numpy as np
import rasterio.warp

from data_prep.scenes import scene as scene_lib
from deepsalt_spectral import errors
from deepsalt_spectral import indices


def soil_pixels(scene: scene_lib.Scene,
                thresholds: indices.MaskThresholds = indices.MaskThresholds()
                ) -> np.ndarray:
  """Boolean [rows, cols] mask of bare-soil pixels (`indices.soil_masks`)."""
  return indices.soil_masks(scene, thresholds)["soil"]


def seeded_subset(mask: np.ndarray, n: Optional[int],
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Rows and columns of the True pixels of a [rows, cols] mask.

  All of them, or past n a random n of them drawn with the seed; either way
  in raster order.
  """
  rows, cols = np.nonzero(mask)
  if n is not None and rows.size > n:
    keep = np.sort(np.random.default_rng(seed).choice(rows.size, n,
                                                      replace=False))
    rows, cols = rows[keep], cols[keep]
  return rows, cols


def _to_pixels(scene, xs, ys, coords: str):
  """Fractional (col, row) pixel positions of points."""
  xs = np.asarray(xs, dtype=np.float64).reshape(-1)
  ys = np.asarray(ys, dtype=np.float64).reshape(-1)
  if xs.shape != ys.shape:
    raise errors.UserError(
        f"xs ({xs.size}) and ys ({ys.size}) differ in length.")
  if coords == "pixel":
    return xs, ys
  if coords not in ("lonlat", "map"):
    raise errors.UserError(f"coords must be 'lonlat', 'map' or 'pixel', got "
                           f"{coords!r}.")
  if scene.transform is None:
    raise errors.UserError(f"{scene.name} has no georeference (transform); use "
                           "coords='pixel' with column/row indices.")
  if coords == "lonlat":
    if scene.crs is None:
      raise errors.UserError(
          f"{scene.name} has a transform but no CRS; pass map "
          "coordinates with coords='map'.")
    xs, ys = (np.asarray(v) for v in rasterio.warp.transform(
        "EPSG:4326", scene.crs, xs, ys))
  cols, rows = ~scene.transform @ (xs, ys)
  return np.asarray(cols), np.asarray(rows)


def extract_pixels(scene: scene_lib.Scene, xs: Sequence[float],
                   ys: Sequence[float], coords: str = "lonlat",
                   window: int = 1, outside: str = "raise",
                   mask: Optional[np.ndarray] = None) -> np.ndarray:
  """Spectra [n, bands] at points: the mean of the window's valid pixels.

  Args:
    scene: the scene.
    xs: longitudes, map x (easting) or column indices, per `coords`.
    ys: latitudes, map y (northing) or row indices.
    coords: 'lonlat' (WGS84 degrees, transformed to the scene CRS), 'map'
      (the scene CRS) or 'pixel' (column, row).
    window: odd side of the square neighbourhood averaged around the pixel
      holding the point; nodata pixels are left out of the mean.
    outside: what to do with points outside the scene or whose window has no
      valid pixel: 'raise' (ValueError listing them) or 'nan' (their rows are
      NaN, so `np.isnan(out[:, scene.good[0]])` flags them).
    mask: bool [rows, cols]; only these pixels count as valid (e.g. the
      soil mask). Default: every pixel with data.

  Returns:
    float32 [n, bands] reflectance, all bands (select `scene.good`).
  """
  if window < 1 or window % 2 != 1:
    raise errors.UserError(
        f"window must be an odd positive size, got {window}.")
  if outside not in ("raise", "nan"):
    raise errors.UserError(
        f"outside must be 'raise' or 'nan', got {outside!r}.")
  cols, rows = _to_pixels(scene, xs, ys, coords)
  n_rows, n_cols = scene.shape
  col_i = np.floor(cols).astype(np.int64)
  row_i = np.floor(rows).astype(np.int64)
  out = np.full((col_i.size, scene.wavelength.size), np.nan, np.float32)
  half = window // 2
  missing = []
  for k, (r, c) in enumerate(zip(row_i, col_i)):
    if not (0 <= r < n_rows and 0 <= c < n_cols):
      missing.append((k, "outside the scene"))
      continue
    r0, r1 = max(r - half, 0), min(r + half + 1, n_rows)
    c0, c1 = max(c - half, 0), min(c + half + 1, n_cols)
    valid = ~scene.nodata[r0:r1, c0:c1]
    if mask is not None:
      valid &= mask[r0:r1, c0:c1]
    if not valid.any():
      missing.append((k, "no valid pixel in the window"))
      continue
    out[k] = scene.reflectance[:, r0:r1, c0:c1][:, valid].mean(axis=1)
  if missing and outside == "raise":
    listed = "; ".join(
        f"point {k} ({np.ravel(xs)[k]}, {np.ravel(ys)[k]}): {why}"
        for k, why in missing[:20])
    more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
    raise errors.UserError(
        f"{len(missing)} of {col_i.size} points have no data in "
        f"{scene.name} ({n_rows} x {n_cols} pixels): {listed}{more}. Drop "
        "them or pass outside='nan'.")
  return out
