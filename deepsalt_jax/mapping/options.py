"""The options of a map: how to map, not what was trained.

`launch.py --mode=map` takes them as a flag of their own
(`--mapping.mc_samples=0`); `map_scene` and `map_scenes` as `options`. They
are not part of a run's config: the same run may be mapped many ways.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from deepsalt_jax import calibration
from deepsalt_jax import predict
from deepsalt_spectral import errors
from deepsalt_spectral import indices

MODELS = ("selected", "ensemble", "student")


def defaults() -> ml_collections.ConfigDict:
  """The options and their defaults.

  The mask defaults and their sources: deepsalt_spectral/indices.py.
  """
  builtin = indices.MaskThresholds()
  return ml_collections.ConfigDict(dict(
      # 'selected': the model validation chose (a distill run's candidates'
      # ensemble or one of them hedged with it, selection.py; the final
      # model of an own-data CV, final_model.py; the student where none was
      # saved);
      # 'ensemble': the mean of a distill run's candidate students;
      # 'student'.
      model="selected",
      tile_rows=64,  # Rows read, predicted and written at a time.
      # Pixels per global batch (rounded up to devices x chunk_size).
      batch_size=1024,
      # Spectra a device computes at a time; 0: auto, 64 on CPU (they stay
      # in cache: 3x faster than 512 at once), whole batches elsewhere.
      chunk_size=0,
      # MC-dropout passes for the uncertainty; 0 = none (no interval nor
      # exceedance). An interval scaled by the spread is calibrated for the
      # default passes, of the head or of the whole network (calibration.py
      # says which); other intervals need none.
      mc_samples=predict.MC_SAMPLES,
      seed=0,  # Of the dropout masks.
      # The EC file's band 4: P(EC > this), in the EC method's units
      # (dS/m); default the FAO saline limit of ECe.
      exceedance_threshold=calibration.EXCEEDANCE_THRESHOLD,
      # The soil-mask tests applied (comma-separated; '' = none: every pixel
      # with finite data is mapped) and their thresholds.
      masks=",".join(indices.TEST_THRESHOLDS),
      ndvi_max=builtin.ndvi_max,  # Green vegetation above.
      ndrbi_min=builtin.ndrbi_min,  # Water below.
      ncai_max=builtin.ncai_max,  # Dry vegetation above.
      # Any good band outside this reflectance range: not soil.
      reflectance_min=builtin.reflectance_min,
      reflectance_max=builtin.reflectance_max,
      cloud_blue_min=builtin.cloud_blue_min,  # Cloud/haze test above.
      band_tolerance_nm=2.0,  # A scene band this close is the student's.
      min_coverage=0.9,  # Mean SRF support needed to resample the rest.
      # A raster per covariate the student reads (data.covariates), e.g.
      # 'clay=maps/clay.tif,soc=maps/soc.tif': resampled (bilinear) to each
      # scene's grid; pixels where one has no data are not mapped.
      covariate_rasters="",
  ))


def check(options: ml_collections.ConfigDict | None
          ) -> ml_collections.ConfigDict:
  """`options` (None: the defaults), checked."""
  options = defaults() if options is None else options
  low, high = options.reflectance_min, options.reflectance_max
  checks = (
      ("model", options.model in MODELS, " or ".join(MODELS)),
      ("tile_rows", options.tile_rows >= 1, "at least 1 row"),
      ("batch_size", options.batch_size >= 1, "at least 1 pixel"),
      ("chunk_size", options.chunk_size >= 0,
       "0 (auto) or a positive number of spectra"),
      ("mc_samples", options.mc_samples == 0 or options.mc_samples >= 2,
       "0 (no uncertainty) or at least 2 passes"),
      ("min_coverage", 0 < options.min_coverage <= 1, "in (0, 1]"),
      ("exceedance_threshold", options.exceedance_threshold > 0,
       "a positive EC (dS/m)"),
      ("band_tolerance_nm", options.band_tolerance_nm >= 0, ">= 0"),
      ("reflectance_min", low < high, "a value below reflectance_max"),
  )
  for name, ok, wanted in checks:
    if not ok:
      raise errors.UserError(
          f"--mapping.{name}={options[name]!r}: use {wanted}.")
  thresholds(options)  # Checks the test names.
  return options


def thresholds(options: ml_collections.ConfigDict) -> indices.MaskThresholds:
  """The thresholds of the tests `options.masks` names; the others off."""
  on = [t.strip() for t in options.masks.split(",") if t.strip()]
  unknown = sorted(set(on) - set(indices.TEST_THRESHOLDS))
  if unknown:
    raise errors.UserError(
        f"--mapping.masks={options.masks!r}: unknown {unknown}; use a "
        f"comma-separated subset of {','.join(indices.TEST_THRESHOLDS)}.")
  values = {f.name: options[f.name]
            for f in dataclasses.fields(indices.MaskThresholds)}
  for test, names in indices.TEST_THRESHOLDS.items():
    if test not in on:
      values.update(dict.fromkeys(names))
  return indices.MaskThresholds(**values)
