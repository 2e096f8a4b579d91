"""A thin wrapper over Orbax's CheckpointManager for one training stage."""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Shape/dtype/sharding targets of `tree` for a restore on this mesh."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)


class Checkpointer:
  """Saves every `every` steps and on demand, keeps `keep`, restores latest."""

  def __init__(self, directory: str | pathlib.Path, every: int, keep: int):
    self.every = every
    self._manager = ocp.CheckpointManager(
        pathlib.Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, force: bool = False) -> None:
    """Saves when `step` is a multiple of `every`, or always with `force`."""
    if force or step % self.every == 0:
      self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, abstract_state: Any, step: int | None = None) -> Any:
    """Restores `step` (default: latest) into the given abstract targets."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(
          f"No checkpoint in {self._manager.directory}: train first "
          "(--mode=train) or point --workdir at a trained run.")
    return self._manager.restore(
        step, args=ocp.args.StandardRestore(abstract_state))

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
