"""TFDS builder 'deepsalt_target_pixels': real unlabelled soil pixels.

The real satellite domain for alignment: the bare-soil pixels (NDVI mask) of
every scene in a folder (any format `data_prep.scenes.read_scene` reads),
brought to the good bands of a built-in sensor (nearest band within 2 nm,
else SRF resampling). The folder is the builder's `manual_dir`; the default
variant reads the real EnMAP L2A tiles over Potsdam that
`$DEEPSALT_REFERENCE_DATA/enmap_potsdam` holds.
"""
import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from data_prep import array_record_builder
from data_prep import scenes
from deepsalt_spectral import bands
from deepsalt_spectral import errors
from deepsalt_spectral import indices
from deepsalt_spectral import sensors

# Vegetated above NDVI 0.3; the other soil masks (indices) were not part of
# this dataset's version.
SOIL = indices.NDVI_ONLY
MAX_PIXELS_PER_SCENE = 400  # Seeded subset: scenes weigh alike.


@dataclasses.dataclass(eq=False)
class TargetPixelsConfig(tfds.core.BuilderConfig):
  sensor: str = "enmap"


class DeepsaltTargetPixels(array_record_builder.ArrayRecordBuilder):
  """Bare-soil pixels of real scenes at a built-in sensor's good bands."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Bare-soil pixels, NDVI <= 0.3."}
  BUILDER_CONFIGS = [TargetPixelsConfig(name=s, sensor=s)
                     for s in sensors.SENSORS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the scene files (EnMAP L2A GeoTIFF, ENVI, PRISMA .he5, EMIT .nc) "
      "of the sensor in one folder and pass it as manual_dir.")

  def _info(self) -> tfds.core.DatasetInfo:
    n_good = sensors.builtin(self.builder_config.sensor).good.size
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "satellite": tfds.features.Tensor(shape=(n_good,),
                                              dtype=np.float32),
            "scene": tfds.features.Text(),
            "row": tfds.features.Scalar(dtype=np.int64),
            "col": tfds.features.Scalar(dtype=np.int64),
        }))

  def _split_generators(self, dl_manager):
    paths = sorted(p for p in pathlib.Path(dl_manager.manual_dir).iterdir()
                   if p.suffix.lower() in scenes.SCENE_SUFFIXES)
    if not paths:
      raise errors.UserError(
          f"No scene files ({', '.join(scenes.SCENE_SUFFIXES)}) in "
          f"{dl_manager.manual_dir}.")
    return {"train": self._generate_examples(paths)}

  def _generate_examples(self, paths):
    sensor = sensors.builtin(self.builder_config.sensor)
    for seed, path in enumerate(paths):
      scene = scenes.read_scene(path)
      match = bands.match_bands(scene.wavelength[scene.good], sensor,
                                      tolerance_nm=2.0, min_coverage=0.9)
      rows, cols = scenes.seeded_subset(scenes.soil_pixels(scene, SOIL),
                                        MAX_PIXELS_PER_SCENE, seed)
      pixels = scene.reflectance[scene.good][:, rows, cols].T
      for r, c, x in zip(rows, cols, match(pixels)):
        yield f"{path.name}/{r}/{c}", {
            "satellite": x.astype(np.float32), "scene": path.name,
            "row": int(r), "col": int(c)}
