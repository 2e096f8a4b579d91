"""A scene as blocks of rows, for readers that stream it (the mapper).

A GeoTIFF is read window by window (`geotiff.GeoTiffRows`), so memory stays
bounded for a full EnMAP scene; the other formats are read whole
(`read.read_scene`) and handed out in blocks.
"""
import dataclasses
import pathlib
from typing import Optional, Union

import affine

from data_prep.scenes import geotiff
from data_prep.scenes import read
from data_prep.scenes import scene as scene_lib


class _SceneRows:
  """An in-memory Scene with `geotiff.GeoTiffRows`'s interface."""

  def __init__(self, scene: scene_lib.Scene):
    self._scene = scene
    for name in ("name", "shape", "wavelength", "fwhm", "bad", "crs",
                 "transform"):
      setattr(self, name, getattr(scene, name))

  def read(self, start: int, stop: int) -> Optional[scene_lib.Scene]:
    nodata = self._scene.nodata[start:stop]
    non_finite = self._scene.non_finite[start:stop]
    if nodata.all() and not non_finite.any():
      return None
    return dataclasses.replace(
        self._scene, reflectance=self._scene.reflectance[:, start:stop],
        nodata=nodata, non_finite=non_finite,
        transform=None if self.transform is None else
        self.transform @ affine.Affine.translation(0, start))

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    pass


def open_rows(path: pathlib.Path
              ) -> Union[geotiff.GeoTiffRows, _SceneRows]:
  """The scene as blocks of rows: GeoTIFFs lazily, other formats in memory.

  Use as a context manager; `read(start, stop)` gives rows [start, stop) as
  a Scene, or None where they are all nodata.
  """
  if read.is_geotiff(path):
    return geotiff.GeoTiffRows(path)
  return _SceneRows(read.read_scene(path))
