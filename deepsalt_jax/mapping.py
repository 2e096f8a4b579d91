"""Salinity maps from a whole hyperspectral scene with the trained student.

  python launch.py --mode=map --workdir=runs/x \\
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
from typing import Any, Callable

from absl import logging
import affine
from etils import epath
import jax
import ml_collections
import numpy as np
import rasterio

from data_prep import datasets
from data_prep import ec_methods
from data_prep import scenes
from data_prep.scenes import geotiff
from deepsalt_jax import checkpoint
from deepsalt_jax import losses
from deepsalt_jax import map_files
from deepsalt_jax import metrics
from deepsalt_jax import predict
from deepsalt_jax import reporting
from deepsalt_jax import run_config
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_spectral import bands
from deepsalt_spectral import errors
from deepsalt_spectral import indices
from deepsalt_spectral import sensors

_GDAL_CACHE_BYTES = 64 * 2**20


def mapping_options(config: ml_collections.ConfigDict
                    ) -> ml_collections.ConfigDict:
  """The config's `mapping` entry (configs/common.mapping_config), checked."""
  if "mapping" not in config:
    raise errors.UserError("The config has no `mapping` entry: map with a "
                           "student run (configs/distill.py).")
  options = config.mapping
  checks = (
      ("tile_rows", options.tile_rows >= 1, "at least 1 row"),
      ("batch_size", options.batch_size >= 1, "at least 1 pixel"),
      ("mc_samples", options.mc_samples == 0 or options.mc_samples >= 2,
       "0 (no uncertainty) or at least 2 passes"),
      ("min_coverage", 0 < options.min_coverage <= 1, "in (0, 1]"),
      ("band_tolerance_nm", options.band_tolerance_nm >= 0, ">= 0"),
  )
  for name, ok, wanted in checks:
    if not ok:
      raise errors.UserError(
          f"--config.mapping.{name}={options[name]!r}: use {wanted}.")
  return options


def thresholds(options: ml_collections.ConfigDict) -> indices.MaskThresholds:
  return indices.MaskThresholds(ndvi_max=options.ndvi_max,
                                ndrbi_min=options.ndrbi_min,
                                ncai_max=options.ncai_max)


def restore_student(config: ml_collections.ConfigDict, workdir: epath.Path,
                    mesh: jax.sharding.Mesh
                    ) -> tuple[stages.Stage, Any, int]:
  """(stage, params, checkpoint step) of the run's student."""
  plan = stages.plan(config)
  if not plan.students or config.data.name not in ("salinity",
                                                   datasets.PROJECT):
    raise errors.UserError(
        "Mapping needs a salinity student run (configs/distill.py, "
        "dataset=salinity, or configs/own_data.py); "
        f"{workdir} holds stage={config.stage!r}, "
        f"dataset={config.data.name!r}.")
  student = plan.students[0]
  ckpt = checkpoint.Checkpointer(student.params_directory(workdir))
  params, step = ckpt.restore_params(
      student.abstract_params(config.data.sensor, mesh))
  ckpt.close()
  logging.info("[map] restored the %s checkpoint of step %d", student.name,
               step)
  return student, params, step


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
    self.masks = dict.fromkeys(indices.MASK_NAMES, 0)
    self.classes = np.zeros(len(metrics.SALINITY_CLASS_NAMES), np.int64)
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
                    for name, c in zip(metrics.SALINITY_CLASS_NAMES,
                                       self.classes)},
        "ec_dS_per_m": {"mean": self.ec[0] / n, "min": self.ec[1],
                        "max": self.ec[2]} if n else None,
        "mean_uncertainty_dS_per_m": (self.std[0] / self.std[1]
                                      if self.std[1] else None)}


def _stream(rows, match: bands.BandMatch,
            predict_fn: Callable[[np.ndarray, np.ndarray],
                                 tuple[np.ndarray, np.ndarray]],
            writer: map_files.MapWriter | None,
            options: ml_collections.ConfigDict) -> _Tally:
  """Reads, masks, predicts and writes the scene block by block."""
  n_rows, n_cols = rows.shape
  tally, start_time, mapped = _Tally(), time.perf_counter(), 0
  for start in range(0, n_rows, options.tile_rows):
    stop = min(start + options.tile_rows, n_rows)
    tile = rows.read(start, stop)
    if tile is None:
      masks = {name: np.zeros((stop - start, n_cols), bool)
               for name in indices.MASK_NAMES}
      masks["nodata"][:] = True
    else:
      masks = indices.soil_masks(tile, thresholds(options))
    ec = np.full((stop - start, n_cols), np.nan, np.float32)
    std = ec.copy()
    r, c = np.nonzero(masks["soil"])
    if r.size:
      x = match(tile.reflectance[:, r, c][tile.good].T)
      ec[r, c], std[r, c] = predict_fn(
          x, ((start + r) * n_cols + c).astype(np.int32))
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


def map_scene(config: ml_collections.ConfigDict, workdir: epath.PathLike,
              scene: str | pathlib.Path,
              output_dir: epath.PathLike | None = None) -> dict[str, Any]:
  """Maps EC over `scene` with the student trained in `workdir`.

  `config` may differ from the run's saved config only in mapping options
  (run_config.EVAL_OPTIONS). Writes <scene>_ec.tif (EC and its
  uncertainty, dS/m), _class.tif, _masks.tif, _quicklook.png and
  _report.json into `output_dir` (default <workdir>/maps); a failed run
  leaves nothing there.

  Returns:
    The run report (also in _report.json).
  """
  workdir, scene = epath.Path(workdir), pathlib.Path(scene)
  config = run_config.for_eval(config, workdir, "map")
  options = mapping_options(config)
  output_dir = epath.Path(output_dir or workdir / "maps")
  start_time = time.perf_counter()
  mesh = sharding.make_mesh()
  student, params, step = restore_student(config, workdir, mesh)
  dropout = config.model.encoder.dropout
  mc_samples = options.mc_samples if dropout > 0 else 0
  if options.mc_samples and not mc_samples:
    logging.warning("The student has no dropout (model.encoder.dropout=0): "
                    "no MC-dropout uncertainty.")
  uncertainty = (f"EC standard deviation over {mc_samples} Monte Carlo "
                 "dropout passes (dS/m)" if mc_samples else
                 "uncertainty not computed (no MC dropout)")
  sensor = sensors.builtin(config.data.sensor)
  target = ec_methods.label(config.data.get("ec_method"))
  if config.data.get("ec_method", ec_methods.CLASS_METHOD) != (
      ec_methods.CLASS_METHOD):
    logging.warning("The class raster uses the FAO classes of ECe; this "
                    "model predicts %s.", target)
  _, inverse = losses.TARGET_TRANSFORMS[config.data.target_transform]
  predict_fn = functools.partial(
      predict.predict, student.model(sensor.name), params, mesh=mesh,
      batch_size=options.batch_size, inverse=inverse, mc_samples=mc_samples,
      seed=options.seed)
  # Each row is read and written once: GDAL's block cache (default 5 % of
  # RAM) would only hold memory (~370 MiB more on a full EnMAP scene).
  with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES), open_rows(
      scene) as rows:
    if rows.shape[0] * rows.shape[1] >= 2**31:
      raise errors.UserError(f"{scene} has more than 2^31 pixels; map a "
                             "subset.")
    match = bands.match_bands(rows.wavelength[~rows.bad], sensor,
                              options.band_tolerance_nm, options.min_coverage)
    logging.info("[map] scene bands %s the student's %s bands.",
                 "match" if match.method == "direct" else
                 f"resampled to {int((~match.direct).sum())} of",
                 sensor.name)
    writer = (map_files.MapWriter(output_dir, rows.name, rows.shape,
                                  rows.crs, rows.transform, uncertainty,
                                  target)
              if reporting.is_main_process() else None)
    try:
      tally = _stream(rows, match, lambda x, i: predict_fn(x, index=i),
                      writer, options)
      if tally.masks["nodata"] == rows.shape[0] * rows.shape[1]:
        raise errors.UserError(f"{scene}: every pixel is nodata; nothing to "
                               "map.")
      seconds = time.perf_counter() - start_time
      report = {
          "scene": str(scene), "name": rows.name,
          "shape": list(rows.shape),
          "crs": None if rows.crs is None else str(rows.crs),
          "transform": (None if rows.transform is None
                        else list(rows.transform)[:6]),
          "model": {"workdir": str(workdir), "checkpoint_step": step,
                    "sensor": sensor.name, "target": target},
          "bands": {"method": match.method,
                    "scene_good_bands": int(match.matrix.shape[1]),
                    "student_bands": int(match.matrix.shape[0]),
                    "resampled": {f"{w:.2f} nm": round(float(c), 4)
                                  for w, c in zip(
                                      sensor.good_wavelength[~match.direct],
                                      match.coverage[~match.direct])},
                    "tolerance_nm": options.band_tolerance_nm},
          "uncertainty": {"method": "MC dropout" if mc_samples else None,
                          "samples": mc_samples, "dropout_rate": dropout,
                          "band_description": uncertainty},
          "thresholds": dataclasses.asdict(thresholds(options)),
          **tally.summary(),
          "seconds": seconds,
          "pixels_per_second": rows.shape[0] * rows.shape[1] / seconds,
          "devices": jax.device_count(), "backend": jax.default_backend(),
          "data": (f"{target} predicted by a student trained on the "
                   f"project {config.data.project}"
                   if config.data.name == datasets.PROJECT else
                   "EC predicted by a student trained on simulated satellite "
                   "spectra of measured lab soil spectra (see README)."),
      }
      if writer is not None:
        writer.commit(report, f"{rows.name}: {target} from the DeepSalt "
                      f"student ({sensor.name}, {match.method} bands)\n"
                      f"{uncertainty}")
    except BaseException:
      if writer is not None:
        writer.abort()
      raise
  logging.info("Map of %s in %.0f s (%.0f px/s); files in %s", rows.name,
               seconds, report["pixels_per_second"], output_dir)
  return report
