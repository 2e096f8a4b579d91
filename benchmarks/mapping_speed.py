"""Mapping speed: pixels/s and peak memory on a full-size EnMAP scene.

  python -m benchmarks.mapping_speed [--rows=1000 --cols=1000 \
      --soil_fraction=0.25]

Writes a synthetic EnMAP L2A GeoTIFF (int16 reflectance x 10000, the real
band table, wavelength/fwhm/bbl tags and -32768 nodata, as DLR delivers it)
into a temporary folder, saves an untrained student of the default model size
(configs/distill.py; speed does not depend on training) and maps the scene
with `mapping.map_scene` and its default options (MC dropout included).
Spectra are real pixels of the EnMAP Potsdam tiles
(../shared/data/enmap_potsdam) with 1 % multiplicative noise: bare soil for
`soil_fraction` of the pixels, vegetation for the rest; a 20-pixel nodata
frame stands for the tilted swath's empty corners. Only soil pixels are
predicted, so the scene's pixels/s scales with the soil fraction; the
predicted pixels/s does not.
Prints figures; it is not a test. Run time: about 6 min on 2 CPU cores.
"""
import pathlib
import resource
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
import rasterio
import rasterio.windows

from configs import common
from configs import distill
from data_prep import scenes
from deepsalt_jax import checkpoint
from deepsalt_jax import mapping
from deepsalt_jax import run_config
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import train

_ROWS = flags.DEFINE_integer("rows", 1000, "Scene rows.")
_COLS = flags.DEFINE_integer("cols", 1000, "Scene columns.")
_SOIL = flags.DEFINE_float("soil_fraction", 0.25,
                           "Share of bare-soil pixels; the rest vegetation.")
_TILES = common.reference_data_dir() / "enmap_potsdam"
_FRAME = 20  # Nodata pixels around the scene.
_WRITE_ROWS = 16


def write_scene(path: pathlib.Path, rows: int, cols: int,
                soil_fraction: float) -> None:
  """The synthetic scene, written in blocks of rows to keep memory low."""
  tiles = sorted(_TILES.glob("*.tif"))
  if not tiles:
    raise SystemExit(f"No EnMAP tiles in {_TILES}: the benchmark needs the "
                     "shared reference data.")
  spectra = {True: [], False: []}  # Soil or not.
  for tile in tiles:
    scene = scenes.read_scene(tile)
    soil = scenes.soil_pixels(scene)
    for kind in spectra:
      spectra[kind].append(scene.reflectance[:, soil == kind].T)
  with rasterio.open(tiles[0]) as src:
    profile = dict(driver="GTiff", count=src.count, crs=src.crs,
                   transform=src.transform, interleave="band")
    tags = [src.tags(b) for b in range(1, src.count + 1)]
    descriptions = src.descriptions
    bad_in_file = np.array([float(t["bbl"]) == 0 for t in tags])
  # Back to the file's band order (VNIR, then SWIR).
  file_order = np.argsort(np.argsort([float(t["wavelength"]) for t in tags],
                                     kind="stable"))
  soil, other = (np.concatenate(spectra[k])[:, file_order]
                 for k in (True, False))
  profile.update(height=rows, width=cols, dtype="int16", nodata=-32768)
  rng = np.random.default_rng(0)
  with rasterio.open(path, "w", **profile) as dst:
    for b, (band_tags, text) in enumerate(zip(tags, descriptions), start=1):
      dst.update_tags(b, **band_tags)
      dst.set_band_description(b, text)
    dst.scales = [1e-4] * profile["count"]
    dst.offsets = [0.0] * profile["count"]
    for start in range(0, rows, _WRITE_ROWS):
      n = min(_WRITE_ROWS, rows - start)
      block = np.where(rng.random((n, cols, 1)) < soil_fraction,
                       soil[rng.integers(0, len(soil), (n, cols))],
                       other[rng.integers(0, len(other), (n, cols))])
      block *= 1.0 + 0.01 * rng.standard_normal((n, cols, 1), np.float32)
      block = np.round(np.nan_to_num(block) * 1e4).astype(np.int16)
      block = block.transpose(2, 0, 1)
      block[bad_in_file] = -32768
      row = np.arange(start, start + n)[:, None]
      col = np.arange(cols)[None, :]
      frame = ((row < _FRAME) | (row >= rows - _FRAME) | (col < _FRAME)
               | (col >= cols - _FRAME))
      block[:, frame] = -32768
      dst.write(block, window=rasterio.windows.Window(0, start, cols, n))


def save_student(config, workdir: pathlib.Path) -> None:
  """An untrained student run, saved the way train.fit saves one."""
  plan = stages.plan(config)
  student = plan.students[0]
  params = student.init_params(
      config.data.sensor, plan.teacher.init_params(config.data.sensor))
  state = train.create_train_state(params, config, sharding.make_mesh())
  ckpt = checkpoint.Checkpointer(workdir / student.name / "checkpoints")
  ckpt.save(config.train.steps, state, force=True)
  ckpt.close()
  run_config.save(config, workdir)


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB.


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  config = distill.get_config("compare=none")
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    scene = tmp / "ENMAP_SYNTHETIC_SPECTRAL_IMAGE.TIF"
    start = time.perf_counter()
    write_scene(scene, _ROWS.value, _COLS.value, _SOIL.value)
    written = time.perf_counter() - start
    save_student(config, tmp / "run")
    before = _peak_rss_mib()
    report = mapping.map_scene(config, tmp / "run", scene, tmp / "maps")
    size_mib = scene.stat().st_size / 2**20
  pixels = _ROWS.value * _COLS.value
  options = config.mapping
  print(f"scene: {_ROWS.value} x {_COLS.value} px x 224 bands, int16 "
        f"GeoTIFF {size_mib:.0f} MiB (written in {written:.0f} s)")
  print(f"model: default student (features="
        f"{config.model.encoder.features}, blocks="
        f"{config.model.encoder.num_blocks}); devices: {jax.device_count()} "
        f"{jax.default_backend()}; MC dropout x{options.mc_samples}, "
        f"tile_rows={options.tile_rows}, batch_size={options.batch_size}")
  print(f"mapped {report['pixels']['soil']} of {pixels} px in "
        f"{report['seconds']:.1f} s: {report['pixels_per_second']:.0f} px/s "
        f"over the scene, {report['pixels']['soil'] / report['seconds']:.0f} "
        "predicted px/s")
  print(f"peak RSS: {_peak_rss_mib():.0f} MiB (before mapping: "
        f"{before:.0f} MiB)")


if __name__ == "__main__":
  app.run(main)
