"""Tiny own-data projects written in tests: a few GeoTIFF scenes of 10 x 10
pixels, a CSV library and a points CSV, each file editable by the test; and
LimeSoDa's real MIR spectra to put in a library."""
import pathlib

import numpy as np
import pandas as pd
import rasterio.transform
import rasterio.warp

from configs import own_data
from data_prep import sources
from data_prep.scenes import geotiff
from deepsalt_spectral import sensors

CRS = "EPSG:32632"
ORIGIN = (430000.0, 3757000.0)
PIXELS = 10
LAB_NM = np.arange(400, 2451, 10)


def soil(nm, brightness=1.0):
  """A soil-like spectrum (red above blue, flat NIR: NDVI ~0.05)."""
  return brightness * (0.15 + 0.15 * (np.asarray(nm) - 400.0) / 2050.0)


def limesoda_mir(name="NRW.42"):
  """LimeSoDa's real MIR spectra as LimeSoDa stores them: (wavenumbers,
  decreasing; [n, w] percent reflectance)."""
  mir = sources.limesoda_mir(name)
  return mir.grid.axis[::-1], 100 * mir.spectra[:, ::-1]


def write_scene(path: pathlib.Path, origin=ORIGIN, sensor="enmap",
                vegetation=((0, 0),), crs=CRS) -> None:
  """A scene of soil pixels (brightness varying) with vegetated pixels."""
  bands = sensors.builtin(sensor)
  nm = bands.good_wavelength
  rng = np.random.default_rng(0)
  brightness = rng.uniform(0.8, 1.2, (PIXELS, PIXELS))
  cube = soil(nm)[:, None, None] * brightness[None]
  for r, c in vegetation:
    cube[:, r, c] = np.where(nm < 700, 0.04, 0.4)
  geotiff.write_geotiff(path, cube.astype(np.float32), bands, crs,
                        rasterio.transform.from_origin(*origin, 30, 30))


def pixel_lonlat(rows, cols, origin=ORIGIN):
  x = origin[0] + (np.asarray(cols) + 0.5) * 30
  y = origin[1] - (np.asarray(rows) + 0.5) * 30
  lon, lat = rasterio.warp.transform(CRS, "EPSG:4326", list(x), list(y))
  return np.array(lon), np.array(lat)


def write_project(folder: pathlib.Path, n_points: int = 8,
                  library_nm=LAB_NM) -> pathlib.Path:
  """scenes/a.tif, library.csv (12 spectra, 4 located on pixels) and
  points.csv (n_points on soil pixels of the diagonal rows)."""
  (folder / "scenes").mkdir(parents=True)
  write_scene(folder / "scenes" / "a.tif")
  rows = np.arange(1, n_points + 1) % PIXELS
  cols = (np.arange(n_points) * 3 + 2) % PIXELS
  lon, lat = pixel_lonlat(rows, cols)
  pd.DataFrame({"sample_id": [f"p{i}" for i in range(n_points)],
                "lon": lon, "lat": lat,
                "ec": np.linspace(0.5, 12.0, n_points)}).to_csv(
                    folder / "points.csv", index=False)
  n = 12
  spectra = np.stack([soil(library_nm, b) for b in np.linspace(0.8, 1.2, n)])
  library = pd.DataFrame(spectra, columns=[f"{w:g}" for w in library_nm])
  lib_lon, lib_lat = pixel_lonlat([5, 6, 7, 8], [1, 1, 1, 1])
  library.insert(0, "sample_id", [f"p{i}" if i < 2 else f"l{i}"
                                  for i in range(n)])
  library.insert(1, "ec", np.linspace(0.4, 15.0, n))
  library.insert(2, "lat", np.r_[np.nan, np.nan, lib_lat, [np.nan] * 6])
  library.insert(3, "lon", np.r_[np.nan, np.nan, lib_lon, [np.nan] * 6])
  library.to_csv(folder / "library.csv", index=False)
  return folder


def data_config(folder: pathlib.Path, data_dir: pathlib.Path, **overrides):
  """configs/own_data.py's data settings for a project written here."""
  config = own_data.data_config("enmap")
  config.update(project=str(folder), data_dir=str(data_dir),
                library="library.csv", library_metadata="", folds=2,
                unlabelled_pixels=20)
  config.update(overrides)
  return config
