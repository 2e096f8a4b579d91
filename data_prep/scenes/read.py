"""`read_scene`: one entry point that picks the reader from the file."""
import pathlib
from typing import Union

import h5py

from data_prep.scenes import envi
from data_prep.scenes import geotiff
from data_prep.scenes import hdf5
from data_prep.scenes import scene as scene_lib
from deepsalt_spectral import errors

PathLike = Union[str, pathlib.Path]

# A folder's files with these suffixes are scenes (ENVI by its header).
GEOTIFF_SUFFIXES = (".tif", ".tiff")
SCENE_SUFFIXES = (*GEOTIFF_SUFFIXES, ".hdr", ".he5", ".nc")
FORMATS = ("GeoTIFF (.tif, .tiff; EnMAP L2A)", "ENVI (.hdr + raw data)",
           "PRISMA L2 (.he5)", "EMIT L2A (.nc)")


def _hdf5_kind(path: pathlib.Path) -> str:
  """'prisma' or 'emit' from an HDF5 file's layout."""
  with h5py.File(path, "r") as f:
    if "HDFEOS/SWATHS" in f:
      return "prisma"
    if "reflectance" in f and "sensor_band_parameters" in f:
      return "emit"
  raise errors.UserError(f"{path} is HDF5 but neither a PRISMA L2 product "
                         "(HDFEOS/SWATHS) nor an EMIT L2A reflectance file "
                         "(reflectance + sensor_band_parameters).")


def is_geotiff(path: pathlib.Path) -> bool:
  return path.suffix.lower() in GEOTIFF_SUFFIXES


def read_scene(path: PathLike, **kwargs) -> scene_lib.Scene:
  """Reads a hyperspectral scene of any supported format into a Scene.

  Args:
    path: a GeoTIFF, an ENVI header or data file, a PRISMA .he5 or an EMIT
      .nc file.
    **kwargs: passed to the format's reader (read_geotiff, read_envi,
      read_prisma, read_emit).

  Returns:
    The Scene.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise errors.UserError(f"Scene file {path} does not exist.")
  if is_geotiff(path):
    return geotiff.read_geotiff(path, **kwargs)
  if path.suffix.lower() == ".hdr" or path.with_suffix(".hdr").is_file() or pathlib.Path(
      str(path) + ".hdr").is_file():
    return envi.read_envi(path, **kwargs)
  if h5py.is_hdf5(path):
    if _hdf5_kind(path) == "prisma":
      return hdf5.read_prisma(path, **kwargs)
    return hdf5.read_emit(path, **kwargs)
  raise errors.UserError(f"Unknown scene format for {path}; supported: "
                         f"{', '.join(FORMATS)}.")
