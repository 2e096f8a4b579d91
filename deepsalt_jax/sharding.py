"""The device mesh, and the one way host arrays become sharded global arrays.

Process 0 (`is_main_process`) alone writes what all processes share.

Data parallel over a 1-D ('data',) mesh: batches are split along their first
axis, parameters are replicated. Training uses the global mesh of all devices
of all processes; mapping gives each process a local mesh of its own devices
(each process maps its own scenes). Every process that a mesh spans holds the
same batch on the host and contributes its own rows (`to_global`);
`map_batches` runs a function over any number of rows in padded batches and
brings the results to the host of every process that the mesh spans. The same
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


def is_main_process() -> bool:
  return jax.process_index() == 0


def make_mesh(local: bool = False) -> jax.sharding.Mesh:
  """All devices of all processes, or (`local`) this process's own."""
  devices = jax.local_devices() if local else jax.devices()
  return jax.make_mesh((len(devices),), (AXIS,), devices=devices)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch_size(batch_size: int, mesh: jax.sharding.Mesh,
                      multiple: int = 1) -> int:
  """`batch_size` rounded up to a multiple of `multiple` rows per device."""
  step = mesh.size * multiple
  return -(-batch_size // step) * step


def mesh_processes(mesh: jax.sharding.Mesh) -> list[int]:
  """The process indices whose devices the mesh holds, in mesh order."""
  return sorted({d.process_index for d in mesh.devices.flat})


def to_global(x: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
  """The global array `x` (the same on every process of the mesh), sharded
  over AXIS.

  Each process passes its own rows: the k-th of the mesh's processes the
  k-th slice. `len(x)` must be divisible by the mesh's device count.
  """
  procs = mesh_processes(mesh)
  rows = len(x) // len(procs)
  k = procs.index(jax.process_index())
  local = x[k * rows:(k + 1) * rows]
  return jax.make_array_from_process_local_data(batch_sharding(mesh), local,
                                                x.shape)


def to_host(x: jax.Array) -> np.ndarray:
  """All rows of `x` on this host (gathered from the mesh's processes)."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def map_batches(fn: Callable[..., tuple[jax.Array, ...]],
                arrays: Sequence[np.ndarray], mesh: jax.sharding.Mesh,
                batch_size: int, multiple: int = 1
                ) -> tuple[np.ndarray, ...]:
  """`fn` over the rows of `arrays` in global batches; results on every host.

  Every process of the mesh passes all rows. The last batch is padded with
  zeros (one compiled shape for all batches) and the padding dropped from
  the results. The next batch is dispatched before the last one's results
  are fetched, so the host prepares and copies while devices compute.

  Args:
    fn: takes one sharded global array per entry of `arrays` and returns a
      tuple of arrays whose first axis is the batch.
    arrays: host arrays with the same first dimension.
    mesh: the device mesh.
    batch_size: rows per global batch (rounded up to `multiple` rows per
      device).
    multiple: rows per device must be a multiple of this.

  Returns:
    One host array per output of `fn`, with all rows.
  """
  batch = global_batch_size(batch_size, mesh, multiple)
  n = len(arrays[0])
  outputs, pending = [], None
  for start in range(0, max(n, 1), batch):  # One batch even when n == 0.
    rows = min(batch, n - start)
    padded = []
    for a in arrays:
      block = np.zeros((batch,) + a.shape[1:], a.dtype)
      block[:rows] = a[start:start + rows]
      padded.append(to_global(block, mesh))
    result = fn(*padded)
    if pending is not None:
      outputs.append(_fetch(*pending))
    pending = result, rows
  outputs.append(_fetch(*pending))
  return tuple(np.concatenate(parts) for parts in zip(*outputs))


def _fetch(result: tuple[jax.Array, ...], rows: int) -> list[np.ndarray]:
  return [to_host(r)[:rows] for r in result]
