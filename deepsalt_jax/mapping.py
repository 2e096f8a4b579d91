"""Salinity maps from a whole hyperspectral scene with the trained student.

  python launch.py --mode=map --config=configs/distill.py --workdir=runs/x \\
      --scene=ENMAP01-..._SPECTRAL_IMAGE.TIF [--output=maps/]

`map_scene` restores the student, streams the scene in blocks of rows (a
GeoTIFF is read window by window, so memory stays bounded for a full EnMAP
scene), keeps the soil pixels (masks as in the EnMAP Soil Mapper: water by
NDRBI, green vegetation by NDVI, dry vegetation by nCAI), brings the scene's
bands to the student's sensor and predicts EC with one jitted function on
batches sharded over all devices. The uncertainty is the standard deviation
of EC over `mc_samples` Monte Carlo dropout passes; each pixel's dropout
masks come from a key folded with its index in the scene, so the map does not
depend on the tiling or the batching. Files: see `map_files`.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Any

from absl import logging
import affine
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import rasterio

from data_prep import scenes
from data_prep.scenes import geotiff
from deepsalt_jax import checkpoint
from deepsalt_jax import losses
from deepsalt_jax import map_files
from deepsalt_jax import reporting
from deepsalt_jax import scene_pixels
from deepsalt_jax import sensors
from deepsalt_jax import train
from deepsalt_jax.models import build

_GDAL_CACHE_BYTES = 64 * 2**20


def mapping_options(config: ml_collections.ConfigDict
                    ) -> ml_collections.ConfigDict:
  """The config's `mapping` entry (configs/common.mapping_config), checked."""
  if "mapping" not in config:
    raise ValueError("The config has no `mapping` entry: map with the "
                     "config the run was trained with (configs/distill.py).")
  options = config.mapping
  if options.mc_samples == 1 or options.mc_samples < 0:
    raise ValueError(f"mapping.mc_samples={options.mc_samples}: use 0 (no "
                     "uncertainty) or at least 2 passes.")
  return options


def restore_student(config: ml_collections.ConfigDict,
                    workdir: pathlib.Path, mesh: jax.sharding.Mesh):
  """(model, params, checkpoint step) of <workdir>/student."""
  if config.get("stage") != "student" or config.data.name != "salinity":
    raise ValueError(
        "Mapping needs the salinity student's config (configs/distill.py, "
        f"dataset=salinity); got stage={config.get('stage')!r}, "
        f"dataset={config.data.name!r}.")
  directory = workdir / "student"
  if not (directory / "checkpoints").is_dir():
    raise FileNotFoundError(
        f"No student checkpoint in {directory}: train first (--mode=train) "
        "or point --workdir at a trained run.")
  ckpt = checkpoint.Checkpointer(directory / "checkpoints", 1, 1)
  step = ckpt.latest_step()
  ckpt.close()
  params = train.restore_params(config, config.data.sensor, directory, mesh,
                                student=True)
  return build.build_student(config.model, config.data.sensor), params, step


# Jitted once per (model, transform, passes, seed, batch shape) in a process.
@functools.partial(jax.jit, static_argnames=("model", "inverse", "mc_samples",
                                             "seed"))
def _predict(params, x, index, *, model, inverse, mc_samples, seed):
  """EC [B] (train=False) and its std over `mc_samples` dropout passes."""
  def ec(pixels, **kwargs):
    pred = model.apply({"params": params}, pixels, **kwargs)["pred"]
    return jnp.maximum(inverse(pred), 0.0)  # EC is not negative.

  mean = ec(x, train=False)
  if not mc_samples:
    return mean, jnp.full_like(mean, jnp.nan)
  key = jax.random.key(seed)

  def one_pass(k):
    def one_pixel(pixel, i):  # Masks from (pass, pixel index) alone.
      pixel_key = jax.random.fold_in(jax.random.fold_in(key, k), i)
      return ec(pixel[None], train=True, rngs={"dropout": pixel_key})[0]
    return jax.vmap(one_pixel)(x, index)

  samples = jax.lax.map(one_pass, jnp.arange(mc_samples))
  return mean, samples.std(axis=0, ddof=1)


class Predictor:
  """EC and its MC-dropout std for pixels: jitted, batched, data-sharded.

  Every process passes the same pixels and feeds its own rows of each
  global batch; every process gets all results.
  """

  def __init__(self, model, params, inverse, mesh: jax.sharding.Mesh,
               batch_size: int, mc_samples: int, seed: int):
    self.batch_size = -(-batch_size // mesh.size) * mesh.size
    self._params = params
    self._sharding = NamedSharding(mesh, P(train.AXIS))
    self._fn = functools.partial(_predict, model=model, inverse=inverse,
                                 mc_samples=mc_samples, seed=seed)

  def _global(self, local_full: np.ndarray) -> jax.Array:
    rows = self.batch_size // jax.process_count()
    start = jax.process_index() * rows
    return jax.make_array_from_process_local_data(
        self._sharding, local_full[start:start + rows], local_full.shape)

  def __call__(self, x: np.ndarray, index: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """x [n, n_student] reflectance, index [n] global pixel index."""
    out = []
    for start in range(0, len(x), self.batch_size):
      n = min(self.batch_size, len(x) - start)
      xb = np.zeros((self.batch_size, x.shape[1]), np.float32)
      ib = np.zeros(self.batch_size, np.int32)
      xb[:n], ib[:n] = x[start:start + n], index[start:start + n]
      result = self._fn(self._params, self._global(xb), self._global(ib))
      out.append([np.asarray(multihost_utils.process_allgather(
          r, tiled=True))[:n] for r in result])
    return tuple(np.concatenate(parts) for parts in zip(*out))


# --- The scene --------------------------------------------------------------


class _SceneRows:
  """An in-memory Scene with `geotiff.GeoTiffRows`'s interface."""

  def __init__(self, scene: scenes.Scene):
    self._scene = scene
    for name in ("name", "shape", "wavelength", "fwhm", "bad", "crs",
                 "transform"):
      setattr(self, name, getattr(scene, name))

  def read(self, start: int, stop: int) -> scenes.Scene | None:
    nodata = self._scene.nodata[start:stop]
    if nodata.all():
      return None
    return dataclasses.replace(
        self._scene, reflectance=self._scene.reflectance[:, start:stop],
        nodata=nodata, transform=None if self.transform is None else
        self.transform @ affine.Affine.translation(0, start))

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    pass


def open_rows(path: pathlib.Path):
  """The scene as blocks of rows: GeoTIFFs lazily, other formats in memory."""
  if path.suffix.lower() in (".tif", ".tiff"):
    return geotiff.GeoTiffRows(path)
  return _SceneRows(scenes.read_scene(path))


class _Tally:
  """Running pixel counts, class histogram and EC statistics of a map."""

  def __init__(self):
    self.masks = dict.fromkeys(scene_pixels.MASK_NAMES, 0)
    self.classes = np.zeros(len(map_files.CLASS_NAMES), np.int64)
    self.ec = [0.0, np.inf, -np.inf]  # Sum, min, max.
    self.std = [0.0, 0]  # Sum, count (NaN without MC dropout).

  def add(self, masks, ec, std):
    for name, mask in masks.items():
      self.masks[name] += int(mask.sum())
    values = ec[masks["soil"]]
    self.classes += np.bincount(map_files.salinity_class(values),
                                minlength=self.classes.size)
    if values.size:
      self.ec = [self.ec[0] + float(values.sum()),
                 min(self.ec[1], float(values.min())),
                 max(self.ec[2], float(values.max()))]
      std = std[masks["soil"]]
      self.std = [self.std[0] + float(np.nansum(std)),
                  self.std[1] + int(np.isfinite(std).sum())]

  def summary(self) -> dict[str, Any]:
    n = self.masks["soil"]
    return {
        "pixels": self.masks,
        "classes": {name: {"pixels": int(c), "fraction": int(c) / max(n, 1)}
                    for name, c in zip(map_files.CLASS_NAMES, self.classes)},
        "ec_dS_per_m": {"mean": self.ec[0] / n, "min": self.ec[1],
                        "max": self.ec[2]} if n else None,
        "mean_uncertainty_dS_per_m": (self.std[0] / self.std[1]
                                      if self.std[1] else None)}


def _stream(rows, match: scene_pixels.BandMatch, predictor: Predictor,
            writer: map_files.MapWriter | None,
            options: ml_collections.ConfigDict) -> _Tally:
  """Reads, masks, predicts and writes the scene block by block."""
  n_rows, n_cols = rows.shape
  tally, start_time, mapped = _Tally(), time.perf_counter(), 0
  for start in range(0, n_rows, options.tile_rows):
    stop = min(start + options.tile_rows, n_rows)
    tile = rows.read(start, stop)
    masks = scene_pixels.soil_masks(
        tile, (stop - start, n_cols), options.ndvi_max, options.ndrbi_min,
        options.ncai_max)
    ec = np.full((stop - start, n_cols), np.nan, np.float32)
    std = ec.copy()
    r, c = np.nonzero(masks["soil"])
    if r.size:
      x = match(tile.reflectance[:, r, c][tile.good].T)
      ec[r, c], std[r, c] = predictor(x, ((start + r) * n_cols + c).astype(
          np.int32))
    if writer is not None:
      writer.write(start, ec, std, masks)
    tally.add(masks, ec, std)
    mapped += r.size
    elapsed = time.perf_counter() - start_time
    rate = stop * n_cols / elapsed
    if reporting.is_main_process():
      logging.info("[map] %s: rows %d/%d | %.0f px/s (%.0f soil px/s), "
                   "ETA %.0f s", rows.name, stop, n_rows, rate,
                   mapped / elapsed, (n_rows - stop) * n_cols / rate)
  return tally


def map_scene(config: ml_collections.ConfigDict,
              workdir: str | pathlib.Path, scene: str | pathlib.Path,
              output_dir: str | pathlib.Path | None = None) -> dict[str, Any]:
  """Maps EC over `scene` with the student trained in `workdir`.

  Writes <scene>_ec.tif (EC and its uncertainty, dS/m), _class.tif,
  _masks.tif, _quicklook.png and _report.json into `output_dir` (default
  <workdir>/maps). Options: config.mapping (configs/common.mapping_config).

  Returns:
    The run report (also in _report.json).
  """
  options = mapping_options(config)
  workdir, scene = pathlib.Path(workdir), pathlib.Path(scene)
  output_dir = pathlib.Path(output_dir or workdir / "maps")
  start_time = time.perf_counter()
  mesh = train.make_mesh()
  model, params, step = restore_student(config, workdir, mesh)
  mc_samples = options.mc_samples if config.model.dropout > 0 else 0
  if options.mc_samples and not mc_samples:
    logging.warning("The student has no dropout (config.model.dropout=0): "
                    "no MC-dropout uncertainty.")
  uncertainty = (f"EC standard deviation over {mc_samples} Monte Carlo "
                 "dropout passes (dS/m)" if mc_samples else
                 "uncertainty not computed (no MC dropout)")
  student = sensors.builtin(config.data.sensor)
  # Each row is read and written once: GDAL's block cache (default 5 % of
  # RAM) would only hold memory (~370 MiB more on a full EnMAP scene).
  with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES), open_rows(
      scene) as rows:
    if rows.shape[0] * rows.shape[1] >= 2**31:
      raise ValueError(f"{scene} has more than 2^31 pixels; map a subset.")
    match = scene_pixels.match_bands(
        rows.wavelength[~rows.bad], student, options.band_tolerance_nm,
        options.min_coverage)
    if match.method == "direct":
      logging.info("Scene bands match the student's %s bands.", student.name)
    else:
      logging.info("Scene bands differ from the student's %s bands: %d of %d "
                   "resampled from the scene's good bands (SRF coverage "
                   "mean %.3f, min %.3f).", student.name,
                   int((~match.direct).sum()), match.direct.size,
                   match.coverage.mean(), match.coverage.min())
    _, inverse = losses.TARGET_TRANSFORMS[config.data.target_transform]
    predictor = Predictor(model, params, inverse, mesh, options.batch_size,
                          mc_samples, options.seed)
    writer = (map_files.MapWriter(output_dir, rows.name, rows.shape,
                                  rows.crs, rows.transform, uncertainty)
              if reporting.is_main_process() else None)
    try:
      tally = _stream(rows, match, predictor, writer, options)
      if tally.masks["nodata"] == rows.shape[0] * rows.shape[1]:
        raise ValueError(f"{scene}: every pixel is nodata; nothing to map.")
      seconds = time.perf_counter() - start_time
      report = {
          "scene": str(scene), "name": rows.name,
          "shape": list(rows.shape),
          "crs": None if rows.crs is None else str(rows.crs),
          "transform": (None if rows.transform is None
                        else list(rows.transform)[:6]),
          "model": {"workdir": str(workdir), "checkpoint_step": step,
                    "sensor": student.name, "target": "EC (dS/m)"},
          "bands": {"method": match.method,
                    "scene_good_bands": int(match.matrix.shape[1]),
                    "student_bands": int(match.matrix.shape[0]),
                    "resampled_nm": student.good_wavelength[
                        ~match.direct].round(2).tolist(),
                    "mean_coverage": float(match.coverage.mean()),
                    "tolerance_nm": options.band_tolerance_nm},
          "uncertainty": {"method": "MC dropout" if mc_samples else None,
                          "samples": mc_samples,
                          "dropout_rate": config.model.dropout,
                          "band_description": uncertainty},
          "thresholds": {k: options[k] for k in
                         ("ndvi_max", "ndrbi_min", "ncai_max")},
          **tally.summary(),
          "seconds": seconds,
          "pixels_per_second": rows.shape[0] * rows.shape[1] / seconds,
          "devices": jax.device_count(), "backend": jax.default_backend(),
          "data": "EC predicted by a student trained on simulated satellite "
                  "spectra of measured lab soil spectra (see README).",
      }
      if writer is not None:
        writer.commit(report, f"{rows.name}: EC from the DeepSalt student "
                      f"({student.name}, {match.method} bands)\n{uncertainty}")
    except BaseException:
      if writer is not None:
        writer.abort()
      raise
  logging.info("Map of %s in %.0f s (%.0f px/s): %s", rows.name, seconds,
               report["pixels_per_second"], output_dir)
  return report
