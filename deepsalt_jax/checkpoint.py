"""A thin wrapper over Orbax's CheckpointManager for one training stage."""
from __future__ import annotations

import pathlib
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Shape/dtype/sharding targets of `tree` for a restore on this mesh."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey...
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'a/b/0/c' -> shape; saved metadata has dicts where the state has
  dataclasses and named tuples, so paths compare by their names only."""
  return {"/".join(_key_name(k) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


class Checkpointer:
  """Saves every `every` steps and on demand, keeps `keep`, restores latest.

  A step that was being written when a run died (Orbax's `*.orbax-checkpoint
  -tmp*` directories, or a step without its commit marker) is never taken as
  the latest: it is reported with a warning and the last complete step is
  used.
  """

  def __init__(self, directory: str | pathlib.Path, every: int, keep: int):
    self.every = every
    self.directory = pathlib.Path(directory).absolute()
    self._warn_unfinished()
    self._manager = ocp.CheckpointManager(
        self.directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def _warn_unfinished(self) -> None:
    if not self.directory.is_dir():
      return
    for path in sorted(self.directory.iterdir()):
      if path.is_dir() and not ocp.step.is_path_finalized(path):
        logging.warning("Ignoring the half-written checkpoint %s (the run "
                        "that wrote it did not finish saving).", path)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, force: bool = False) -> None:
    """Saves when `step` is a multiple of `every`, or always with `force`."""
    if force or step % self.every == 0:
      self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, abstract_state: Any, step: int | None = None) -> Any:
    """Restores `step` (default: latest) into the given abstract targets.

    Raises:
      FileNotFoundError: no checkpoint.
      ValueError: the checkpoint's arrays differ from the targets (a config
        whose model differs from the one that trained); names the fields.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(
          f"No checkpoint in {self.directory}: train first (--mode=train) or "
          "point --workdir at a trained run.")
    saved = _shapes(self._manager.item_metadata(step))
    wanted = _shapes(abstract_state)
    if saved != wanted:
      differ = sorted(k for k in saved.keys() & wanted.keys()
                      if saved[k] != wanted[k])
      lines = [f"  {k}: checkpoint {saved[k]} vs config {wanted[k]}"
               for k in differ[:8]]
      lines += [f"  {k}: only in the checkpoint" for k in
                sorted(saved.keys() - wanted.keys())[:4]]
      lines += [f"  {k}: only in the config's model" for k in
                sorted(wanted.keys() - saved.keys())[:4]]
      raise ValueError(
          f"The checkpoint of step {step} in {self.directory} does not match "
          "the model this config builds (was it trained with other "
          "config.model settings, e.g. features/num_blocks/use_sau, or another "
          "sensor?):\n" + "\n".join(lines))
    return self._manager.restore(
        step, args=ocp.args.StandardRestore(abstract_state))

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
