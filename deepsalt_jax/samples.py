"""The prepared dataset in memory: its samples and their split.

The prepared datasets are small (thousands of spectra), so each process reads
its data source once into memory (`load_data`). A benchmark sample's role
comes from its stored `u` and the config's fractions (`roles`); an own-data
sample's role is stored. Held out are the config's test regions or folds
(own data: none; cross-validation holds out one fold at a time) and, for
model selection, a validation share of the labelled samples in whole spatial
blocks (`held_out`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
from tensorflow_datasets.proto import tf_example_pb2

from data_prep import covariate_columns
from data_prep import datasets
from data_prep import project
from data_prep import roles
from data_prep import satellite_view
from deepsalt_jax import choices
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid as lab_grid_lib

assert set(datasets.BUILDERS) == set(choices.DATASETS)  # What configs offer.


@dataclasses.dataclass(frozen=True)
class Data:
  """A prepared dataset in memory, with its train/test split.

  A sample may lack a lab spectrum, a pixel or a target (own data): those
  rows are NaN, and `has_lab`, `has_pixel`, `has_target` say what is there.
  """
  lab: np.ndarray  # [n, n_lab] spectra on `lab_grid`.
  satellite: np.ndarray  # [n, n_good] reflectance at the sensor's good bands.
  # [n, n_good] what a geographic pair sees of the sample (data.pair_view):
  # its own pixel, a neighbouring one or another date's.
  pair_satellite: np.ndarray
  target: np.ndarray  # [n] EC (dS/m) or SOC (%).
  region: np.ndarray  # [n] index into region_names (own data: the scene).
  # [n] LimeSoDa fold 1..10, or own data's spatial fold 1..k; 0 if none.
  fold: np.ndarray
  # [n] roles.LABELLED, PAIRED, UNLABELLED (drawn by the config's fractions)
  # or LIBRARY (own data: stored by the builder).
  role: np.ndarray
  region_names: tuple[str, ...]
  test: np.ndarray  # [n] bool, sample is held out.
  # [n] bool, labelled samples held out of training for model selection and
  # calibration (data.validation_fraction, whole spatial `blocks`).
  validation: np.ndarray
  blocks: np.ndarray  # [n] str, the spatial block of each sample.
  sensor: str
  # [m, n_good] real scene pixels replacing the simulated unlabelled ones
  # (config.data.target_scenes), or None.
  target_pixels: np.ndarray | None = None
  # What the dataset's builder reports (own data: points used and dropped,
  # pairs, EC method).
  report: dict = dataclasses.field(default_factory=dict)
  sample_id: np.ndarray | None = None  # [n] str (own data).
  # What the lab spectra are: the dataset's grid, unit and quantity.
  lab_grid: lab_grid_lib.LabGrid = dataclasses.field(
      default_factory=lab_grid_lib.visnir)
  # [n, k] float32 ancillary values named by data.covariates (NaN where
  # missing), or None without covariates.
  covariates: np.ndarray | None = None
  covariate_names: tuple[str, ...] = ()

  @property
  def has_lab(self) -> np.ndarray:
    return ~np.isnan(self.lab).any(axis=1)

  @property
  def has_pixel(self) -> np.ndarray:
    return ~np.isnan(self.satellite).any(axis=1)

  @property
  def has_target(self) -> np.ndarray:
    return ~np.isnan(self.target)

  @property
  def train(self) -> np.ndarray:
    """[n] bool: samples training may use (not held out, not validation)."""
    return ~self.test & ~self.validation

  def subset(self, mask: np.ndarray) -> dict[str, np.ndarray]:
    return dict(lab=self.lab[mask], satellite=self.satellite[mask],
                target=self.target[mask], region=self.region[mask])


def _columns(source, info) -> Callable[[str, Any], np.ndarray]:
  """`column(key, dtype)`: a feature of every record of a data source, in
  record order (a Text feature as bytes objects with dtype=object).

  The stored records are TFDS's serialized examples, parsed here and read
  a whole column at a time: 2-4 times faster than TFDS's decoding record
  by record (tensorflow-datasets 4.9.10, pinned), which took 1-2 s of
  every run's start on the 4,616 samples of the default benchmark.
  tests/test_datasets.py checks the two agree on every feature.
  """
  raw = source.data_source.__getitems__(list(range(len(source))))
  examples = [tf_example_pb2.Example.FromString(r).features.feature
              for r in raw]

  def column(key: str, dtype: Any) -> np.ndarray:
    shape = (len(examples),) + tuple(info.features[key].shape)
    if not examples:
      return np.zeros(shape, dtype)
    kind = examples[0][key].WhichOneof("kind")
    values = [getattr(e[key], kind).value for e in examples]
    if kind == "bytes_list":  # Text: one bytes object per record.
      out = np.empty(len(values), object)
      out[:] = [v[0] for v in values]
      return out
    return np.array(values, dtype).reshape(shape)

  return column


def _lab_grid(info) -> lab_grid_lib.LabGrid:
  """The dataset's lab grid from its metadata (datasets written before it
  was stored there hold the vis-NIR grid)."""
  stored = info.metadata.get("lab_grid")
  return (lab_grid_lib.LabGrid.from_json(stored) if stored else
          lab_grid_lib.visnir())


def _covariates(config: ml_collections.ConfigDict,
                available: tuple[str, ...], read: Callable[[], np.ndarray],
                dataset: str) -> dict[str, Any]:
  """Data's covariate fields: the columns of `read()` (named `available`)
  that config.covariates names."""
  wanted = covariate_columns.names(config.covariates)
  if not wanted:
    return {}
  unknown = [n for n in wanted if n not in available]
  if unknown:
    raise errors.UserError(
        f"data.covariates names {unknown}, which {dataset} does not have; "
        f"its covariates: {', '.join(available) or 'none'}.")
  values = read()[:, [available.index(n) for n in wanted]]
  return dict(covariates=values, covariate_names=wanted)


# Validation blocks: a sample's region and, where it has coordinates, its
# cell of this many degrees (about 500 km), so validation is spatial.
VALIDATION_CELL_DEG = 5.0


def spatial_blocks(region: np.ndarray, lat: np.ndarray,
                   lon: np.ndarray) -> np.ndarray:
  """A block name per sample: '<region>' or '<region>/<lat cell>/<lon cell>'."""
  cell = lambda v: np.floor(v / VALIDATION_CELL_DEG).astype(np.int64)
  located = np.isfinite(lat) & np.isfinite(lon)
  return np.array([
      f"{r}/{cell(a)}/{cell(o)}" if ok else str(r)
      for r, a, o, ok in zip(region, lat, lon, located)])


def validation_mask(blocks: np.ndarray, candidates: np.ndarray,
                    fraction: float, seed: int) -> np.ndarray:
  """Candidates in whole blocks held out for validation (about `fraction`).

  Blocks are drawn in an order fixed by (seed, block name) and added until
  `fraction` of the candidates is reached, so validation is spatially apart
  from training and does not move when other blocks change.
  """
  if not 0.0 <= fraction < 1.0:
    raise errors.UserError(f"data.validation_fraction={fraction} must lie in "
                           "[0, 1).")
  out = np.zeros(len(blocks), bool)
  wanted = fraction * candidates.sum()
  names = sorted(set(blocks[candidates]),
                 key=lambda b: roles.uniform([b], seed)[0])
  for name in names:
    if out.sum() >= wanted:
      break
    out |= candidates & (blocks == name)
  return out


def load_data(config: ml_collections.ConfigDict) -> Data:
  """Reads the prepared dataset `config` (config.data) names, building it
  once: a built-in one, or the user's project folder (data.project)."""
  if "project" in config:
    return _load_project(config)
  if jax.process_count() > 1:  # Process 0 builds; the others wait, then read.
    if jax.process_index() == 0:
      datasets.build(config.name, config.sensor, config.data_dir or None)
    multihost_utils.sync_global_devices("deepsalt_jax: dataset prepared")
  source, info = datasets.load(config.name, config.sensor,
                               config.data_dir or None)
  stack = _columns(source, info)
  region_names = tuple(info.features["region"].names)
  region = stack("region", np.int32)
  test_names = [n.strip() for n in config.test_regions.split(",") if n.strip()]
  unknown = sorted(set(test_names) - set(region_names))
  if unknown:
    raise errors.UserError(
        f"data.test_regions names unknown regions {unknown}; regions of "
        f"{config.name}/{config.sensor}: {', '.join(region_names)}.")
  fold = stack("fold", np.int32)
  # LimeSoDa's protocol holds out fold k of every set (config.test_folds).
  test_folds = [int(f) for f in config.get("test_folds", "").split(",")
                if f.strip()]
  if test_folds and not np.isin(fold, test_folds).any():
    present = sorted(set(fold.tolist()) - {0})
    raise errors.UserError(f"data.test_folds={config.test_folds!r} matches no "
                           f"sample; folds present: {present}.")
  test = (np.isin(region, [region_names.index(n) for n in test_names])
          | np.isin(fold, test_folds))
  if test.all():
    raise errors.UserError("data.test_regions / data.test_folds hold out every "
                           "sample: nothing is left to train on.")
  role = roles.assign_roles(stack("u", np.float32), config.labelled_fraction,
                            config.paired_fraction)
  blocks = spatial_blocks(region, stack("lat", np.float64),
                          stack("lon", np.float64))
  target_pixels = None
  if config.target_scenes:
    target_pixels = datasets.load_target_pixels(
        config.target_scenes, config.sensor, config.data_dir or None)
  if config.pair_view not in satellite_view.PAIR_VIEWS:
    raise errors.UserError(
        f"data.pair_view={config.pair_view!r}: use one of "
        f"{', '.join(satellite_view.PAIR_VIEWS)}.")
  satellite = stack("satellite", np.float32)
  return held_out(Data(
      lab=stack("lab", np.float32),
      satellite=satellite,
      pair_satellite=(satellite if config.pair_view == "same" else
                      stack(f"satellite_{config.pair_view}", np.float32)),
      target=stack("target", np.float32),
      region=region,
      fold=fold,
      role=role,
      region_names=region_names,
      test=test,
      validation=np.zeros(len(role), bool),
      blocks=blocks,
      sensor=config.sensor,
      target_pixels=target_pixels,
      lab_grid=_lab_grid(info),
      **_covariates(config, tuple(info.metadata.get("covariate_names", ())),
                    lambda: stack("covariates", np.float32),
                    f"{config.name}/{config.sensor}"),
  ), test, config)


def held_out(data: Data, test: np.ndarray,
             config: ml_collections.ConfigDict) -> Data:
  """`data` with `test` held out and the validation samples drawn anew:
  `config.validation_fraction` of the other labelled samples, in whole
  spatial blocks."""
  validation = validation_mask(
      data.blocks, ~test & (data.role == roles.LABELLED),
      config.validation_fraction, config.validation_seed)
  return dataclasses.replace(data, test=test, validation=validation)


# What each stored role must have: (lab, pixel, target).
_ROLE_NEEDS = {roles.LABELLED: (False, True, True),
               roles.PAIRED: (True, True, True),
               roles.UNLABELLED: (False, True, False),
               roles.LIBRARY: (True, False, True)}


def _load_project(config: ml_collections.ConfigDict) -> Data:
  """A user's project (data_prep.project) with spatial folds; none held out.

  Cross-validation (deepsalt_jax/cross_validation.py) holds out one fold at
  a time.
  """
  settings = config.to_dict()
  if jax.process_count() > 1:
    if jax.process_index() == 0:
      datasets.load_project(settings, config.data_dir or None)
    multihost_utils.sync_global_devices("deepsalt_jax: project prepared")
  source, info = datasets.load_project(settings, config.data_dir or None)
  stack = _columns(source, info)
  role = stack("role", np.int64)
  scene = [s.decode() for s in stack("scene", object)]
  names = tuple(sorted(set(scene) - {""})) + ("no pixel",)
  fold = project.spatial_folds(stack("x", np.float64), stack("y", np.float64),
                               role == roles.LABELLED, config.folds)
  satellite = stack("satellite", np.float32)
  data = Data(
      lab=stack("lab", np.float32), satellite=satellite,
      pair_satellite=satellite, target=stack("target", np.float32),
      region=np.array([names.index(s or "no pixel") for s in scene],
                      np.int32),
      fold=fold, role=role, region_names=names,
      test=np.zeros(len(role), bool), validation=np.zeros(len(role), bool),
      # The spatial folds are the blocks: validation is another fold's area.
      blocks=fold.astype(str), sensor=config.sensor,
      report=dict(info.metadata["report"]),
      sample_id=np.array([s.decode() for s in stack("sample_id", object)]),
      lab_grid=_lab_grid(info),
      **_covariates(config, covariate_columns.names(config.covariates),
                    lambda: stack("covariates", np.float32),
                    f"project {config.project}"))
  have = np.stack([data.has_lab, data.has_pixel, data.has_target], axis=1)
  for value, needs in _ROLE_NEEDS.items():
    assert (have[role == value] >= needs).all(), roles.ROLE_NAMES[value]
  return held_out(data, data.test, config)
