"""Salinity maps of whole hyperspectral scenes with a trained model.

  python launch.py --mode=map --workdir=runs/x --scene=SCENES [--output=maps/]

SCENES is a scene file, a folder of them or a text file listing them (paths
or gs:// URIs; `scenes`). `map_scenes` loads the model once (`model`:
validation's choice saved by an own-data run, or the student); each
process maps its share of the scenes (every n-th, by process index) on a
mesh of its own devices, which split each batch. Per scene it streams the
rows in blocks (`blocks`), keeps the plausible soil pixels
(`deepsalt_spectral.indices.soil_masks`: NaN, out-of-range, cloud/haze,
water by NDRBI, green vegetation by NDVI, dry vegetation by nCAI), takes
each one's spectrum as the mean of the soil pixels in the window its
points were placed with (`data.window`), brings the scene's bands to the
model's sensor and predicts EC (a network with
one jitted function). With the model's calibration
(`deepsalt_jax.calibration`) each pixel also gets the bounds of the
calibrated 90 % interval (in the target transform's space: asymmetric in
dS/m, never below zero) and the probability that EC exceeds
`exceedance_threshold` (default the FAO saline limit, 4 dS/m). An interval
scaled by the MC-dropout spread needs `mc_samples` passes, of the head
alone (the encoder runs once) or of the whole network (~`mc_samples` x
the cost) as the calibration says; one scaled by quantile heads or the
features' distance reads the student's features (one pass); a constant
one needs none. Each pixel's dropout masks come from a key folded with its
index in the scene, so the map depends neither on the tiling, the
batching nor the process that made it. Files: `files` (COGs, written
atomically: a scene whose report is there is skipped on a re-run); when
all processes are done, process 0 writes the mosaic and the
region report (`mosaic`). A student that reads covariates gets them per
pixel from the rasters of the `covariate_rasters` option, warped to each
scene's grid (`covariate_rasters`); a raster missing is refused before any
map is written. The options: `options`.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import hashlib
import json
import pathlib
import time
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import rasterio

from data_prep import ec_methods
from data_prep import scenes as scene_readers
from deepsalt_jax import applicability
from deepsalt_jax import calibration
from deepsalt_jax import final_model
from deepsalt_jax import metrics
from deepsalt_jax import paths
from deepsalt_jax import reporting
from deepsalt_jax import sharding
from deepsalt_jax.mapping import blocks
from deepsalt_jax.mapping import covariate_rasters
from deepsalt_jax.mapping import files
from deepsalt_jax.mapping import model as model_lib
from deepsalt_jax.mapping import mosaic
from deepsalt_jax.mapping import options as options_lib
from deepsalt_jax.mapping import scenes
from deepsalt_jax.mapping import stats
from deepsalt_spectral import bands
from deepsalt_spectral import errors
from deepsalt_spectral import sensors

_GDAL_CACHE_BYTES = 64 * 2**20
# Options that change how fast a map is made, not the map (tests/
# test_mapping.py: tiling and batching do not change it).
_SPEED_OPTIONS = ("tile_rows", "batch_size", "chunk_size")


class _Mapper:
  """What every scene of a run shares: the model, options, devices."""

  def __init__(self, config: ml_collections.ConfigDict,
               workdir: epath.Path, output_dir: epath.Path,
               options: ml_collections.ConfigDict | None):
    self.options = options = options_lib.check(options)
    self.workdir, self.output_dir = workdir, output_dir
    self.mesh = sharding.make_mesh(local=True)
    self.sensor = sensors.builtin(config.data.sensor)
    self.model = model = model_lib.load(config, workdir, self.mesh, options,
                                        self.sensor.name)
    self.covariates = covariate_rasters.resolve(model.covariate_names,
                                                options.covariate_rasters)
    self.dropout = config.model.encoder.dropout
    self.calibration, self.why = model.calibration, model.why
    if options.mc_samples and not self.calibration:
      logging.warning("No calibrated interval nor exceedance probability: "
                      "%s.", self.why)
    if not options.mc_samples:
      logging.warning("--mapping.mc_samples=0: no uncertainty; bands 2-4 of "
                      "each <scene>_ec.tif are nodata.")
    self.mc_samples = model.mc_samples
    # A pixel's spectrum: the window mean its points were placed with.
    self.window = config.data.get("window", 1)
    self.domain = applicability.load(workdir)
    if self.domain is None:
      logging.info("[map] %s holds no area of applicability (%s, saved by "
                   "runs since 2026-12-07; re-run the training command to "
                   "write it): no pixel is flagged outside it.",
                   workdir, applicability.FILE)
    self.ec_method = config.data.get("ec_method") or metrics.EC_METHOD
    if self.ec_method != ec_methods.CLASS_METHOD:
      logging.warning("The class raster uses the FAO classes of %s; this "
                      "model predicts %s.", ec_methods.CLASS_METHOD,
                      self.ec_method)
    student = model.name == final_model.STUDENT
    # Who made the map, in the quicklook's title and the report.
    self.made_by = model.made_by
    self.prediction = ("deterministic student prediction" if student else
                       f"prediction of {self.made_by}")
    self.data_note = (
        f"{self.ec_method} predicted by {self.made_by}, trained on the "
        f"project {config.data.project}" if "project" in config.data else
        "EC predicted by a student trained on simulated satellite spectra of "
        "measured lab soil spectra (see README).")
    # A re-run skips a scene mapped by the same model with the same options
    # (but for those that change only the speed).
    same = {k: v for k, v in options.to_dict().items()
            if k not in _SPEED_OPTIONS}
    self.signature = hashlib.sha256(json.dumps(
        [str(workdir), model.name, model.steps, same, self.ec_method,
         self.calibration, self.window,
         self.domain and self.domain.threshold],
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    self.prefix = (f"[map {jax.process_index()}/{jax.process_count()}] "
                   if jax.process_count() > 1 else "[map] ")
    self.threads = blocks.Threads()

  def close(self) -> None:
    self.threads.close()

  def predict(self, x: np.ndarray, index: np.ndarray,
              covariates: np.ndarray | None = None
              ) -> tuple[np.ndarray, ...]:
    """The EC file's bands (`stats.BANDS`) of spectra keyed by pixel index:
    EC, the interval's bounds and P(EC > threshold) (NaN without a
    calibration)."""
    ec, spread = self.model.predict(x, index=index, covariates=covariates)
    if not self.calibration:
      nan = np.full_like(ec, np.nan)
      return ec, nan, nan, nan
    out = calibration.predictive(self.calibration, ec, spread,
                                 self.options.exceedance_threshold)
    return ec, out["lower"], out["upper"], out["p"]

  def descriptions(self) -> dict[str, str]:
    """What the EC file's bands after the first hold."""
    fitted = self.calibration
    if not fitted:
      return dict.fromkeys(stats.BANDS[1:], f"not computed: {self.why}")
    interval = calibration.describe(fitted)
    return {"lower": f"lower bound (dS/m) of the {interval}",
            "upper": f"upper bound (dS/m) of the {interval}",
            "exceedance": (
                f"probability that {self.ec_method} exceeds "
                f"{self.options.exceedance_threshold:g} dS/m (the conformal "
                "predictive distribution of the same calibration)")}

  def map_one(self, scene: epath.Path, name: str) -> dict[str, Any]:
    """Maps one scene into the output folder; returns its report."""
    start_time = time.perf_counter()
    # Each row is read and written once: GDAL's block cache (default 5 % of
    # RAM) would only hold memory (~370 MiB more on a full EnMAP scene).
    with scenes.local_copy(scene) as local, rasterio.Env(
        GDAL_CACHEMAX=_GDAL_CACHE_BYTES), scene_readers.open_rows(
            local) as rows:
      if rows.shape[0] * rows.shape[1] >= 2**31:
        raise errors.UserError(f"{scene} has more than 2^31 pixels; map a "
                               "subset.")
      match = bands.match_bands(rows.wavelength[~rows.bad], self.sensor,
                                self.options.band_tolerance_nm,
                                self.options.min_coverage)
      resampled = {f"{w:.2f} nm": round(float(c), 4) for w, c in zip(
          self.sensor.good_wavelength[~match.direct],
          match.coverage[~match.direct])}
      if resampled:
        logging.warning("%s%s: %d of the %s bands resampled from the "
                        "scene's bands (SRF coverage): %s", self.prefix, name,
                        len(resampled), self.sensor.name, resampled)
      writer = files.MapWriter(self.output_dir, name, rows.shape,
                               rows.crs, rows.transform,
                               self.descriptions(),
                               self.options.exceedance_threshold,
                               self.ec_method, self.prediction)
      try:
        tally = stats.Tally(files.CLASS_NODATA)
        with contextlib.ExitStack() as stack:
          covariates = stack.enter_context(covariate_rasters.on_grid(
              self.covariates, rows.crs, rows.transform, rows.shape)) if (
                  self.covariates) else None
          seconds = blocks.stream(
              rows, match, options_lib.thresholds(self.options),
              self.predict, writer.write,
              self.options.tile_rows, tally, self.prefix, self.threads,
              covariates, self.window, self.domain)
        stream_end = time.perf_counter()
        if tally.masks["nodata"] == rows.shape[0] * rows.shape[1]:
          raise errors.UserError(f"{scene}: every pixel is nodata; nothing "
                                 "to map.")

        def report():
          seconds["cog_and_quicklook"] = time.perf_counter() - stream_end
          total = time.perf_counter() - start_time
          return dict(
              self._report(scene, name, rows, match, resampled, tally),
              seconds=total, seconds_by_stage=seconds,
              pixels_per_second=rows.shape[0] * rows.shape[1] / total)

        writer.commit(report, f"{name}: EC from {self.made_by} "
                      f"({self.sensor.name}, {match.method} bands)\n"
                      + (calibration.describe(self.calibration)
                         if self.calibration else
                         f"interval not computed: {self.why}"))
      except BaseException:
        writer.abort()
        raise
    saved = json.loads(writer.paths["report"].read_text())
    logging.info("%sMap of %s in %.1f s (%.0f px/s); files in %s",
                 self.prefix, name, saved["seconds"],
                 saved["pixels_per_second"], self.output_dir)
    return saved

  def _report(self, scene, name, rows, match, resampled, tally):
    return {
        "scene": str(scene), "name": name, "process": jax.process_index(),
        "shape": list(rows.shape),
        "crs": None if rows.crs is None else str(rows.crs),
        "transform": (None if rows.transform is None
                      else list(rows.transform)[:6]),
        "model": {"name": self.model.name, "made_by": self.made_by,
                  "workdir": str(self.workdir),
                  "checkpoint_steps": self.model.steps,
                  "sensor": self.sensor.name,
                  "target": ec_methods.label(self.ec_method)},
        "ec_method": self.ec_method,
        "bands": {"method": match.method,
                  "window": self.window,
                  "scene_good_bands": int(match.matrix.shape[1]),
                  "student_bands": int(match.matrix.shape[0]),
                  "resampled": resampled,
                  "min_coverage": self.options.min_coverage,
                  "tolerance_nm": self.options.band_tolerance_nm},
        "uncertainty": {"method": (calibration.KIND if self.calibration
                                   else None),
                        "mode": self.calibration["mc_mode"]
                        if self.mc_samples else None,
                        "samples": self.mc_samples,
                        "dropout_rate": self.dropout,
                        "calibration": self.calibration and {
                            k: v for k, v in self.calibration.items()
                            if k not in ("scores",
                                         *calibration.FEATURE_READERS)},
                        "exceedance_threshold":
                            self.options.exceedance_threshold,
                        "band_descriptions": self.descriptions()},
        "thresholds": dataclasses.asdict(
            options_lib.thresholds(self.options)),
        "covariates": {n: str(p) for n, p in self.covariates.items()},
        "applicability": self.domain and {
            "threshold": self.domain.threshold,
            "training_pixels": len(self.domain.points)},
        **tally.summary(),
        "devices": len(self.mesh.devices.flat),
        "backend": jax.default_backend(),
        "signature": self.signature,
        "data": self.data_note,
    }


def _free_scene_memory() -> None:
  """Frees what a mapped scene left behind for the next one to peak on.

  Its quicklook's matplotlib figure is freed only by the cycle collector
  (~45 MiB a full scene, kept until the collector's counts call it), and
  glibc keeps the heap's freed pages: collected and trimmed between
  scenes, peak memory is flat in the number of scenes (docs/scale.md).
  """
  gc.collect()
  try:
    trim = ctypes.CDLL(None).malloc_trim
  except (OSError, AttributeError):  # Not glibc: macOS, musl.
    return
  trim(0)


def _mapper(config, workdir, output_dir, options) -> _Mapper:
  workdir = epath.Path(workdir)
  output_dir = epath.Path(output_dir or workdir / "maps")
  paths.check_writable(output_dir, "--output")
  return _Mapper(config, workdir, output_dir, options)


def map_scene(config: ml_collections.ConfigDict, workdir: epath.PathLike,
              scene: str | pathlib.Path,
              output_dir: epath.PathLike | None = None,
              options: ml_collections.ConfigDict | None = None
              ) -> dict[str, Any]:
  """Maps EC over one `scene` with the model of the run in `workdir`.

  `config` is the run's (run_config.load), its evaluation options changed
  at most (run_config.check_eval); `options` are the map's
  (`options.defaults()`, None: those). Writes <scene>_ec.tif (EC and its
  uncertainty, dS/m), _class.tif, _masks.tif (COGs), _quicklook.png and
  _report.json into `output_dir` (default <workdir>/maps); a failed run
  leaves nothing there. No mosaic (see `map_scenes`).

  Returns:
    The scene's report (also in _report.json).
  """
  scene = epath.Path(scene)
  with contextlib.closing(_mapper(config, workdir, output_dir,
                                  options)) as mapper:
    return mapper.map_one(scene, scene.stem)


def map_scenes(config: ml_collections.ConfigDict, workdir: epath.PathLike,
               listing: epath.PathLike,
               output_dir: epath.PathLike | None = None,
               options: ml_collections.ConfigDict | None = None
               ) -> dict[str, Any]:
  """Maps every scene `listing` names (`scenes.list_scenes`) and the region.

  Each process maps its share; scenes already mapped into `output_dir` by
  the same model with the same options are skipped. A scene that fails is
  logged and the others are mapped; the run then raises. Process 0 writes
  the mosaic VRTs and the region report over all scenes mapped so far.

  Returns:
    {'mapped': [names], 'skipped': [names], 'failed': {name: error}} of this
    process, and on process 0 'region': the region report.
  """
  start_time = time.perf_counter()
  found = scenes.list_scenes(listing)
  with contextlib.closing(_mapper(config, workdir, output_dir,
                                  options)) as mapper:
    mine = scenes.share(found, jax.process_index(), jax.process_count())
    logging.info("%s%d scenes; this process maps %d of them.", mapper.prefix,
                 len(found), len(mine))
    out = {"mapped": [], "skipped": [], "failed": {}}
    for done, scene in enumerate(mine):
      name = scene.stem
      logging.info("%sscene %d of %d: %s%s", mapper.prefix, done + 1,
                   len(mine), name,
                   reporting.eta(start_time, done, len(mine)))
      if files.completed(mapper.output_dir, name, mapper.signature):
        logging.info("%s%s: complete in %s, skipped.", mapper.prefix, name,
                     mapper.output_dir)
        out["skipped"].append(name)
        continue
      try:
        mapper.map_one(scene, name)
        out["mapped"].append(name)
      except Exception as e:  # pylint: disable=broad-except
        # One bad scene must not lose a region's worth of maps. A user error
        # (a damaged file, wrong bands) is one line; anything else a bug,
        # with its traceback.
        log = (logging.error if isinstance(e, errors.UserError)
               else logging.exception)
        log("%s%s failed: %s", mapper.prefix, name, e)
        out["failed"][name] = e
      _free_scene_memory()
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("deepsalt mapped every scene")
  if jax.process_index() == 0:
    done = {s.stem: files.completed(mapper.output_dir, s.stem,
                                    mapper.signature) for s in found}
    reports = [r for r in done.values() if r]
    # Another process's failures are in its log only.
    not_mapped = {n: str(out["failed"].get(n, "failed on another process; "
                                           "see its log"))
                  for n, r in done.items() if not r}
    if reports:
      vrts = mosaic.write_vrts(mapper.output_dir, reports)
      out["region"] = mosaic.region_report(
          mapper.output_dir, reports, vrts, time.perf_counter() - start_time,
          not_mapped)
      logging.info("%sRegion: %d of %d scenes mapped; mosaic %s and %s.md in "
                   "%s", mapper.prefix, len(reports), len(found),
                   ", ".join(vrts["files"]), mosaic.REPORT,
                   mapper.output_dir)
  if out["failed"]:
    listed = "; ".join(f"{n}: {e}" for n, e in out["failed"].items())
    if all(isinstance(e, errors.UserError) for e in out["failed"].values()):
      raise errors.UserError(f"{len(out['failed'])} of {len(mine)} scenes "
                             f"failed (the others are mapped): {listed}")
    raise RuntimeError(f"{len(out['failed'])} scenes failed (tracebacks "
                       f"above): {listed}")
  return out
