"""A scene streamed through the mapper block by block, reading ahead.

`stream` takes a scene as blocks of rows (`data_prep.scenes.open_rows`)
and reads, masks and band-matches the next block in a thread while the
devices predict the current one, and writes the last one in another thread,
so reading and writing overlap with compute. The two threads (`Threads`)
serve every scene of a run.

A pixel's spectrum is the mean of the soil pixels in the window around it
that the run's points were placed with (`data.window`,
`data_prep.project.placement`): the models learnt EC from window means, and
one pixel's noise, which the mean smooths, is not what they were fitted or
calibrated on (docs/mapping.md, "Window means").
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from typing import Callable

from absl import logging
import numpy as np

from deepsalt_jax import applicability
from deepsalt_jax.mapping import covariate_rasters
from deepsalt_jax.mapping import stats
from deepsalt_spectral import bands
from deepsalt_spectral import indices


@dataclasses.dataclass
class Block:
  """Rows [start, stop) of a scene, ready to predict.

  Attributes:
    masks: `stats.MASKS` -> bool [rows, cols].
    rows, cols: positions of the soil pixels in the block.
    x: [n_soil, n_sensor] their spectra at the model's bands.
    covariates: [n_soil, k] their covariates, or None (the model reads none).
  """
  start: int
  stop: int
  masks: dict[str, np.ndarray]
  rows: np.ndarray
  cols: np.ndarray
  x: np.ndarray
  covariates: np.ndarray | None = None


class Threads:
  """The reader and the writer thread, one pair for all of a run's scenes.

  A pair per scene grew the mapper's memory scene by scene: glibc gave each
  new thread a malloc arena of its own, which kept what the thread freed
  (malloc_stats: two arenas more per 300 x 300 scene, 43 and 1 MiB held,
  none in use), up to its limit of 8 arenas per core (docs/scale.md).
  """

  def __init__(self):
    self.reader = concurrent.futures.ThreadPoolExecutor(1, "deepsalt-read")
    self.writer = concurrent.futures.ThreadPoolExecutor(1, "deepsalt-write")

  def close(self) -> None:
    self.reader.shutdown()
    self.writer.shutdown()


def prepare(rows, start: int, stop: int, match: bands.BandMatch,
            thresholds: indices.MaskThresholds,
            covariates: Callable[[int, int], np.ndarray] | None = None,
            window: int = 1,
            domain: applicability.Applicability | None = None) -> Block:
  """Reads and masks rows [start, stop); the soil spectra band-matched.

  Each soil pixel's spectrum is the mean of the soil pixels in the
  `window` x `window` square around it (rows beyond the block are read for
  it), as `data_prep.scenes.extract_pixels` with the soil mask gives it.
  A direct band match is a column selection, not a matrix product.
  `covariates(start, stop)` ([rows, cols, k], NaN: no data) gives the soil
  pixels' covariates; a soil pixel without them is not mapped (mask
  `covariate_rasters.MASK`). A soil pixel outside the area of applicability
  `domain` is mapped and flagged (mask `applicability.MASK`).
  """
  half = window // 2
  low, high = max(start - half, 0), min(stop + half, rows.shape[0])
  tile = rows.read(low, high)
  shape = (stop - start, rows.shape[1])
  masks = {name: np.zeros(shape, bool) for name in stats.MASKS}
  if tile is None:
    masks["nodata"][:] = True
  else:
    around = indices.soil_masks(tile, thresholds)
    masks.update({k: v[start - low:stop - low] for k, v in around.items()})
  values = None
  if covariates is not None:
    values = covariates(start, stop)
    masks[covariate_rasters.MASK] = masks["soil"] & np.isnan(values).any(-1)
    masks["soil"] = masks["soil"] & ~masks[covariate_rasters.MASK]
  r, c = np.nonzero(masks["soil"])
  x = np.zeros((0, match.matrix.shape[0]), np.float32)
  if r.size:
    good = _window_means(tile, around["soil"], r + start - low, c, window)
    x = (good[:, match.matrix.argmax(axis=1)] if match.method == "direct"
         else match(good))
    if domain is not None:
      masks[applicability.MASK][r, c] = domain.outside(x)
  return Block(start, stop, masks, r, c, np.ascontiguousarray(x, np.float32),
               None if values is None else values[r, c])


def _window_means(tile, soil: np.ndarray, r: np.ndarray, c: np.ndarray,
                  window: int) -> np.ndarray:
  """[n, good bands]: the mean of the `tile`'s reflectance over the `soil`
  pixels of the window around each (r, c), itself soil. Bands are
  selected last: a selection first would copy the whole block."""
  cube = tile.reflectance
  if window == 1:
    return cube[:, r, c][tile.good].T
  half = window // 2
  padded = np.zeros((cube.shape[0], soil.shape[0] + 2 * half,
                     soil.shape[1] + 2 * half), cube.dtype)
  np.copyto(padded[:, half:-half, half:-half], cube, where=soil)
  # Sums of the soil pixels and their count: their ratio is the mean over
  # the window's soil pixels (the window clipped at the edges).
  counts = _box_sums(np.pad(soil.astype(cube.dtype), half), window)
  return (_box_sums(padded, window)[:, r, c][tile.good] / counts[r, c]).T


def _box_sums(padded: np.ndarray, window: int) -> np.ndarray:
  """Sums over the window x window squares of the last two axes of
  `padded` (each shorter by window - 1): shifted slices added in place,
  twice as fast as scipy's uniform_filter on a block."""
  rows = padded.shape[-2] - window + 1
  along = padded[..., :rows, :].copy()
  for k in range(1, window):
    along += padded[..., k:k + rows, :]
  cols = padded.shape[-1] - window + 1
  out = along[..., :cols].copy()
  for k in range(1, window):
    out += along[..., k:k + cols]
  return out


def stream(rows, match: bands.BandMatch, thresholds: indices.MaskThresholds,
           predict_fn: Callable[..., tuple[np.ndarray, ...]],
           write_fn: Callable[..., None] | None, tile_rows: int,
           tally: stats.Tally, log_prefix: str, threads: Threads,
           covariates: Callable[[int, int], np.ndarray] | None = None,
           window: int = 1,
           domain: applicability.Applicability | None = None
           ) -> dict[str, float]:
  """Maps the scene block by block on `threads`; returns seconds spent per
  stage.

  `predict_fn(x, index, covariates)` gives the EC file's bands
  (`stats.BANDS`: EC, lower, upper, exceedance) of spectra (window means,
  see `prepare`) keyed by their pixel index in the scene (covariates: None,
  or of `covariates`; `domain` flags pixels, see `prepare`);
  `write_fn(start, values, masks)` stores a block, `values` [bands, rows,
  cols] (NaN: not mapped).
  """
  n_rows, n_cols = rows.shape
  starts = list(range(0, n_rows, tile_rows))
  seconds = dict.fromkeys(("read_and_mask", "predict", "write"), 0.0)

  def timed(stage, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    seconds[stage] += time.perf_counter() - start
    return out

  def read(start):
    return timed("read_and_mask", prepare, rows, start,
                 min(start + tile_rows, n_rows), match, thresholds,
                 covariates, window, domain)

  begin, mapped = time.perf_counter(), 0
  ahead, writes = threads.reader.submit(read, starts[0]), []
  try:
    for k in range(len(starts)):
      block = ahead.result()
      if k + 1 < len(starts):
        ahead = threads.reader.submit(read, starts[k + 1])
      values = np.full((len(stats.BANDS),) + block.masks["soil"].shape,
                       np.nan, np.float32)
      if block.rows.size:
        index = ((block.start + block.rows) * n_cols + block.cols)
        values[:, block.rows, block.cols] = timed(
            "predict", predict_fn, block.x, index.astype(np.int32),
            block.covariates)
      area = stats.pixel_area_m2(rows.crs, rows.transform, block.start,
                                 block.stop, n_cols)
      tally.add(block.masks, values, area)
      if write_fn is not None:
        writes.append(threads.writer.submit(timed, "write", write_fn,
                                            block.start, values,
                                            block.masks))
      mapped += block.rows.size
      elapsed = time.perf_counter() - begin
      rate = block.stop * n_cols / elapsed
      logging.info("%s%s: rows %d/%d | %.0f px/s (%.0f soil px/s), ETA %.0f "
                   "s", log_prefix, rows.name, block.stop, n_rows, rate,
                   mapped / elapsed, (n_rows - block.stop) * n_cols / rate)
  finally:
    # Nothing of this scene may run on once it returns or raises: the
    # caller then closes the scene and the files.
    concurrent.futures.wait([ahead] + writes)
  for done in writes:
    done.result()  # Raises a write's error here.
  return seconds
