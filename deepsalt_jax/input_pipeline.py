"""Deterministic input: prepared TFDS data -> batches on the devices.

The prepared datasets are small (thousands of spectra), so each process reads
its data source once into memory. Each stream (the rows one loss term reads)
is cut into batches of seeded per-epoch permutations (`Stream`), which are
random access: the batch of step `s` is a pure function of (seed, s), so a
resumed run sees exactly the batches an uninterrupted run would, with no
iterator state to checkpoint. The streams' arrays are placed on the devices
once (`device_streams`, replicated: thousands to a few hundred thousand
spectra); per block of steps the host hands over only the batches' row
indices (`block_indices`, sharded over the batch: each device gathers its
own rows inside the jitted step).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from data_prep import covariates as covariate_data
from data_prep import datasets
from data_prep import project
from data_prep import roles
from data_prep import satellite_view
from deepsalt_jax import sharding
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid as lab_grid_lib


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


def _read(source) -> tuple[list[dict], Callable[[str, Any], np.ndarray]]:
  """Every record of a data source, and a column stacker."""
  records = [source[i] for i in range(len(source))]
  stack = lambda key, dtype: np.stack([r[key] for r in records]).astype(dtype)
  return records, stack


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
  wanted = covariate_data.names(config.covariates)
  if not wanted:
    return {}
  unknown = [n for n in wanted if n not in available]
  if unknown:
    raise errors.UserError(
        f"data.covariates names {unknown}, which {dataset} does not have; "
        f"its covariates: {', '.join(available) or 'none'}.")
  values = read()[:, [available.index(n) for n in wanted]]
  return dict(covariates=values, covariate_names=wanted)


def load_data(config: ml_collections.ConfigDict) -> Data:
  """Reads the prepared dataset named by `config.data` (building it once)."""
  if config.name == datasets.PROJECT:
    return _load_project(config)
  if jax.process_count() > 1:  # Process 0 builds; the others wait, then read.
    if jax.process_index() == 0:
      datasets.build(config.name, config.sensor, config.data_dir or None)
    multihost_utils.sync_global_devices("deepsalt_jax: dataset prepared")
  source, info = datasets.load(config.name, config.sensor,
                               config.data_dir or None)
  _, stack = _read(source)
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
  blocks = roles.spatial_blocks(region, stack("lat", np.float64),
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
  validation = roles.validation_mask(
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
  records, stack = _read(source)
  role = stack("role", np.int64)
  scene = [r["scene"].decode() for r in records]
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
      sample_id=np.array([r["sample_id"].decode() for r in records]),
      lab_grid=_lab_grid(info),
      **_covariates(config, covariate_data.names(config.covariates),
                    lambda: stack("covariates", np.float32),
                    f"project {config.project}"))
  have = np.stack([data.has_lab, data.has_pixel, data.has_target], axis=1)
  for value, needs in _ROLE_NEEDS.items():
    assert (have[role == value] >= needs).all(), roles.ROLE_NAMES[value]
  return held_out(data, data.test, config)


class Stream:
  """Endless, seeded, shuffled batches of a few aligned arrays.

  The samples are read epoch after epoch, each epoch in its own seeded
  permutation, and cut into batches: batch `step` is a pure function of
  (seed, step), computed in numpy (random access through grain's
  MapDataset cost ~5 ms a stream per step, more than a CPU training step).
  """

  def __init__(self, arrays: dict[str, np.ndarray], batch_size: int,
               seed: int):
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) != 1 or 0 in sizes:
      raise errors.UserError(
          f"A stream needs non-empty arrays of one length, got "
          f"{ {k: len(v) for k, v in arrays.items()} }.")
    self.arrays = arrays
    self._size, self._batch, self._seed = sizes.pop(), batch_size, seed
    self._permutations = {}  # Epoch -> permutation; the last few kept.

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._permutations:
      if len(self._permutations) > 4:
        self._permutations.pop(min(self._permutations))
      self._permutations[epoch] = np.random.default_rng(
          [self._seed, epoch]).permutation(self._size)
    return self._permutations[epoch]

  def indices(self, step: int) -> np.ndarray:
    """[batch] rows of the arrays that batch `step` holds."""
    position = np.arange(step * self._batch, (step + 1) * self._batch)
    epoch, offset = np.divmod(position, self._size)
    index = np.empty(self._batch, np.int64)
    for e in np.unique(epoch):
      index[epoch == e] = self._permutation(int(e))[offset[epoch == e]]
    return index

  def __getitem__(self, step: int) -> dict[str, np.ndarray]:
    index = self.indices(step)
    return {k: v[index] for k, v in self.arrays.items()}


def teacher_streams(data: Data, batch_size: int, seed: int
                    ) -> dict[str, Stream]:
  """Lab spectra and labels (and covariates) of every training sample that
  has both."""
  train = data.train & data.has_lab & data.has_target
  arrays = dict(lab=data.lab[train], target=data.target[train])
  if data.covariates is not None:
    arrays["covariates"] = data.covariates[train]
  return {"lab": Stream(arrays, batch_size, seed)}


def student_streams(data: Data, batch_size: int, seed: int,
                    transductive: bool, need: set[str]) -> dict[str, Stream]:
  """The streams the student's loss terms draw on.

  labelled: the few labelled pixels (regression); paired: pixels with their
  lab spectrum (distillation, SAU reconstruction); unlabelled: pixels without
  labels, held-out regions' pixels included when `transductive`, or the real
  scene pixels of `data.target_pixels` when there are some (alignment);
  library: lab spectra and targets of the training regions (the teacher's
  side of the alignment; a DANN's source domain). Only the streams in
  `need` are built. Each carries the samples' covariates when the data has
  them (the real scene pixels have none: missing, imputed).
  """
  train = data.train
  unlabelled = train & (data.role == roles.UNLABELLED)
  if transductive:
    unlabelled |= data.test & data.has_pixel
  masks = {"labelled": train & (data.role == roles.LABELLED),
           "paired": train & (data.role == roles.PAIRED),
           "unlabelled": unlabelled,
           "library": train & data.has_lab & data.has_target}
  # Stream -> {batch key: Data attribute}.
  fields = {"labelled": {"satellite": "satellite", "target": "target"},
            "paired": {"satellite": "pair_satellite", "lab": "lab"},
            "unlabelled": {"satellite": "satellite"},
            "library": {"lab": "lab", "target": "target"}}
  streams = {}
  for offset, name in enumerate(masks):
    if name not in need:
      continue
    if not masks[name].any() and not (
        name == "unlabelled" and data.target_pixels is not None):
      raise errors.UserError(
          f"The {name!r} stream is empty: check "
          "data.labelled_fraction / data.paired_fraction and "
          "data.test_regions.")
    arrays = {key: getattr(data, attribute)[masks[name]]
              for key, attribute in fields[name].items()}
    if data.covariates is not None:
      arrays["covariates"] = data.covariates[masks[name]]
    if name == "unlabelled" and data.target_pixels is not None:
      arrays = {"satellite": data.target_pixels}
      if data.covariates is not None:
        arrays["covariates"] = np.full(
            (len(data.target_pixels), data.covariates.shape[1]), np.nan,
            np.float32)
    streams[name] = Stream(arrays, batch_size, seed + offset)
  return streams


def device_streams(streams: dict[str, Stream], mesh: jax.sharding.Mesh
                   ) -> dict[str, dict[str, jax.Array]]:
  """Every stream's arrays, replicated on the mesh's devices (once per
  stage).

  Each is padded with zero rows (never indexed) to the next power of two:
  the compiled steps depend on these shapes, and so every CV fold, whose
  streams differ by a few samples, reuses the first fold's programs.
  """
  def padded(x: np.ndarray) -> np.ndarray:
    rows = 1 << (len(x) - 1).bit_length()
    return np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:],
                                       x.dtype)])

  return jax.device_put({name: {k: padded(v) for k, v in s.arrays.items()}
                         for name, s in streams.items()},
                        sharding.replicated(mesh))


def block_indices(streams: dict[str, Stream], first: int, count: int,
                  mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """[batch, count] int32 rows of each stream's batches `first`, ...,
  `first + count - 1`, sharded over the batch axis."""
  return {name: sharding.to_global(np.stack(
      [s.indices(step) for step in range(first, first + count)],
      axis=1).astype(np.int32), mesh) for name, s in streams.items()}
