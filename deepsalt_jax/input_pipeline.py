"""Deterministic input: the samples on the devices, batches by index.

Each stream (the rows of `samples.Data` one loss term reads) is cut into
batches of seeded per-epoch permutations (`Stream`), which are random
access: the batch of step `s` is a pure function of (seed, s), so a resumed
run sees exactly the batches an uninterrupted run would, with no iterator
state to checkpoint. The streams' arrays are placed on the devices once
(`device_streams`, replicated: thousands to a few hundred thousand
spectra); per block of steps the host hands over only the batches' row
indices (`block_indices`, sharded over the batch: each device gathers its
own rows inside the jitted step).
"""
from __future__ import annotations

import jax
import numpy as np

from data_prep import roles
from deepsalt_jax import samples
from deepsalt_jax import sharding
from deepsalt_spectral import errors


class Stream:
  """Endless, seeded, shuffled batches of a few aligned arrays.

  The samples are read epoch after epoch, each epoch in its own seeded
  permutation, and cut into batches: batch `step` is a pure function of
  (seed, step), computed in numpy (random access through grain's
  MapDataset cost ~5 ms a stream per step, more than a CPU training step).
  `capacity`: the most samples the stream holds in any split of its data
  (what `device_streams` pads to).
  """

  def __init__(self, arrays: dict[str, np.ndarray], batch_size: int,
               seed: int, capacity: int = 0):
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) != 1 or 0 in sizes:
      raise errors.UserError(
          f"A stream needs non-empty arrays of one length, got "
          f"{ {k: len(v) for k, v in arrays.items()} }.")
    self.arrays = arrays
    self.capacity = max(capacity, *sizes)
    self._size, self._batch, self._seed = sizes.pop(), batch_size, seed
    self._permutations = {}  # Epoch -> permutation; the last few kept.

  def __len__(self) -> int:
    """The stream's samples (an epoch)."""
    return self._size

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


def teacher_streams(data: samples.Data, batch_size: int, seed: int
                    ) -> dict[str, Stream]:
  """Lab spectra and labels (and covariates) of every training sample that
  has both."""
  both = data.has_lab & data.has_target
  train = data.train & both
  arrays = dict(lab=data.lab[train], target=data.target[train])
  if data.covariates is not None:
    arrays["covariates"] = data.covariates[train]
  return {"lab": Stream(arrays, batch_size, seed, int(both.sum()))}


def student_streams(data: samples.Data, batch_size: int, seed: int,
                    transductive: bool, need: set[str]) -> dict[str, Stream]:
  """The streams the student's loss terms draw on.

  labelled: the few labelled pixels (regression); paired: pixels with their
  lab spectrum and its measured target (distillation, SAU reconstruction,
  pair regression); unlabelled: pixels without
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
  # The rows each stream may take in any split of `data` (a CV fold, the
  # final run, a benchmark unit).
  capacity = {"labelled": data.role == roles.LABELLED,
              "paired": data.role == roles.PAIRED,
              "unlabelled": (data.has_pixel if transductive
                             else data.role == roles.UNLABELLED),
              "library": data.has_lab & data.has_target}
  # Stream -> {batch key: Data attribute}.
  fields = {"labelled": {"satellite": "satellite", "target": "target"},
            "paired": {"satellite": "pair_satellite", "lab": "lab",
                       "target": "target"},
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
    streams[name] = Stream(arrays, batch_size, seed + offset,
                           int(capacity[name].sum()))
  return streams


def device_streams(streams: dict[str, Stream], mesh: jax.sharding.Mesh
                   ) -> dict[str, dict[str, jax.Array]]:
  """Every stream's arrays, replicated on the mesh's devices (once per
  stage).

  Each is padded with zero rows (never indexed) to the power of two at or
  above its capacity (`Stream`): the compiled steps depend on these
  shapes, and so every CV fold, the final run and every benchmark unit of
  the same data reuse the first one's programs (a fold's own size crossed a
  power of two between folds and compiled anew).
  """
  def padded(x: np.ndarray, capacity: int) -> np.ndarray:
    rows = 1 << (capacity - 1).bit_length()
    return np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:],
                                       x.dtype)])

  return jax.device_put({name: {k: padded(v, s.capacity)
                                for k, v in s.arrays.items()}
                         for name, s in streams.items()},
                        sharding.replicated(mesh))


def block_indices(streams: dict[str, Stream], first: int, count: int,
                  mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """[batch, count] int32 rows of each stream's batches `first`, ...,
  `first + count - 1`, sharded over the batch axis."""
  return {name: sharding.to_global(np.stack(
      [s.indices(step) for step in range(first, first + count)],
      axis=1).astype(np.int32), mesh) for name, s in streams.items()}
