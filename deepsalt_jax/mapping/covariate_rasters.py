"""A map's covariates: one raster per covariate, on each scene's grid.

A student that reads covariates (data.covariates) maps a scene with the same
covariates per pixel, from the rasters the option `covariate_rasters` names
('clay=clay.tif,soc=soc.tif'; any CRS, resolution and extent rasterio
reads). Each is warped to the scene's grid (its CRS, transform and shape;
bilinear) as the rows are streamed, so a raster is never held whole. Where
one has no data (its nodata, or outside its extent), the pixel is not mapped
(mask 'no_covariates' in the report's pixel counts).
"""
from __future__ import annotations

import contextlib
import pathlib
from typing import Iterator

import numpy as np
import rasterio
from rasterio import vrt
from rasterio import warp
from rasterio import windows

from deepsalt_spectral import errors

# The report's pixel count of soil pixels left unmapped for want of a
# covariate value.
MASK = "no_covariates"


def resolve(names: tuple[str, ...], text: str) -> dict[str, pathlib.Path]:
  """The raster of each covariate in `names`, from `text`
  ('name=path,...'); refuses a missing name, an unused one or a missing
  file, before anything is mapped."""
  given = {}
  for item in filter(None, (i.strip() for i in text.split(","))):
    name, sep, path = (s.strip() for s in item.partition("="))
    if not sep or not name or not path:
      raise errors.UserError(
          f"--mapping.covariate_rasters: {item!r} is not name=path "
          "(e.g. 'clay=rasters/clay.tif,soc=rasters/soc.tif').")
    given[name] = pathlib.Path(path).expanduser()
  missing = [n for n in names if n not in given]
  if missing:
    raise errors.UserError(
        f"The student reads the covariates {', '.join(names)}; no raster "
        f"for {', '.join(missing)}: add "
        f"--mapping.covariate_rasters='{missing[0]}=<GeoTIFF>,...'.")
  unused = sorted(set(given) - set(names))
  if unused:
    raise errors.UserError(
        f"--mapping.covariate_rasters names {unused}, which the student "
        f"does not read (its covariates: {', '.join(names) or 'none'}"
        "); remove them.")
  for name in names:
    if not given[name].is_file():
      raise errors.UserError(
          f"Covariate raster {given[name]} ({name}) does not exist; fix "
          "--mapping.covariate_rasters.")
  return {n: given[n] for n in names}


@contextlib.contextmanager
def on_grid(rasters: dict[str, pathlib.Path], crs, transform,
            shape: tuple[int, int]) -> Iterator:
  """A reader of rows [start, stop) of every raster warped to the grid
  (`crs`, `transform`, `shape`): [rows, cols, k] float32, NaN where a
  raster has no data."""
  if crs is None or transform is None:
    raise errors.UserError("Covariate rasters need a georeferenced scene "
                           "(CRS and transform) to be placed on.")
  with contextlib.ExitStack() as stack:
    warped = []
    for name, path in rasters.items():
      try:
        source = stack.enter_context(rasterio.open(path))
      except rasterio.errors.RasterioIOError as e:
        raise errors.UserError(f"Covariate raster {path} ({name}) cannot be "
                               f"read: {e}") from e
      # Outside the raster is no data even when it declares none (GDAL
      # would fill it with 0).
      warped.append(stack.enter_context(vrt.WarpedVRT(
          source, crs=crs, transform=transform, height=shape[0],
          width=shape[1], resampling=warp.Resampling.bilinear,
          dtype="float32", nodata=(np.nan if source.nodata is None
                                   else source.nodata))))

    def read(start: int, stop: int) -> np.ndarray:
      window = windows.Window(0, start, shape[1], stop - start)
      bands = [np.ma.filled(w.read(1, window=window, masked=True)
                            .astype(np.float32), np.nan) for w in warped]
      return np.stack(bands, axis=-1)

    yield read
