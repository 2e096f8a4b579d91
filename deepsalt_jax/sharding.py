"""The device mesh, and the one way host arrays become sharded global arrays.

Data parallel over a 1-D ('data',) mesh of all devices of all processes:
batches are split along their first axis, parameters are replicated. Every
process holds the same global batch on the host and contributes its own
rows (`to_global`); `map_batches` runs a function over any number of rows in
padded global batches and gathers the results on every process. The same
code runs on 1 CPU, 8 fake CPU devices, a GPU and many hosts.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

AXIS = "data"


def make_mesh() -> jax.sharding.Mesh:
  return jax.make_mesh((jax.device_count(),), (AXIS,))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> int:
  """`batch_size` rounded up to a multiple of the mesh's device count."""
  return -(-batch_size // mesh.size) * mesh.size


def to_global(x: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
  """The global array `x` (the same on every process), sharded over AXIS.

  Each process passes its own rows; `len(x)` must be divisible by the
  device count.
  """
  procs, proc = jax.process_count(), jax.process_index()
  rows = len(x) // procs
  local = x[proc * rows:(proc + 1) * rows]
  return jax.make_array_from_process_local_data(batch_sharding(mesh), local,
                                                x.shape)


def map_batches(fn: Callable[..., tuple[jax.Array, ...]],
                arrays: Sequence[np.ndarray], mesh: jax.sharding.Mesh,
                batch_size: int) -> tuple[np.ndarray, ...]:
  """`fn` over the rows of `arrays` in global batches; results on every host.

  Every process passes all rows. The last batch is padded with zeros (one
  compiled shape for all batches) and the padding dropped from the results.

  Args:
    fn: takes one sharded global array per entry of `arrays` and returns a
      tuple of arrays whose first axis is the batch.
    arrays: host arrays with the same first dimension.
    mesh: the device mesh.
    batch_size: rows per global batch (rounded up to the device count).

  Returns:
    One host array per output of `fn`, with all rows.
  """
  batch = global_batch_size(batch_size, mesh)
  n = len(arrays[0])
  outputs = []
  for start in range(0, max(n, 1), batch):  # One batch even when n == 0.
    rows = min(batch, n - start)
    padded = []
    for a in arrays:
      block = np.zeros((batch,) + a.shape[1:], a.dtype)
      block[:rows] = a[start:start + rows]
      padded.append(to_global(block, mesh))
    result = fn(*padded)
    outputs.append([np.asarray(multihost_utils.process_allgather(
        r, tiled=True))[:rows] for r in result])
  return tuple(np.concatenate(parts) for parts in zip(*outputs))
