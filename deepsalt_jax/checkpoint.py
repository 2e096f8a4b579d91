"""Orbax checkpoints of one training stage: save, resume, restore parameters.

A checkpoint holds two items, 'params' and 'opt_state' (the optimizer state
and the step), so evaluation and mapping restore the parameters alone.
Restoring takes the newest readable step: a step whose files are damaged
(truncated, deleted) is reported with a warning naming it and the one before
is tried, for resume, eval and map alike. A step that was being written when
a run died (Orbax's `*.orbax-checkpoint-tmp*` directories) is never listed.
"""
from __future__ import annotations

from typing import Any

from absl import logging
from etils import epath
from flax.training import train_state
import jax
import orbax.checkpoint as ocp

from deepsalt_spectral import errors

_ITEMS = ("params", "opt_state")


class Unreadable(errors.UserError):
  """Every step in a checkpoint folder is damaged."""


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
  """Saves every `every` steps and on demand, keeps `keep`, restores latest."""

  def __init__(self, directory: str | epath.PathLike, every: int = 1,
               keep: int = 1):
    self.every = every
    self.directory = epath.Path(directory)
    if not self.directory.is_absolute() and "://" not in str(directory):
      self.directory = epath.Path(self.directory.resolve())
    self._warn_unfinished()
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_handlers={item: ocp.StandardCheckpointHandler()
                       for item in _ITEMS},
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

  def save(self, step: int, state: train_state.TrainState,
           force: bool = False) -> None:
    """Saves when `step` is a multiple of `every`, or always with `force`."""
    if force or step % self.every == 0:
      self._manager.save(step, args=ocp.args.Composite(
          params=ocp.args.StandardSave(state.params),
          opt_state=ocp.args.StandardSave(
              {"step": state.step, "opt_state": state.opt_state})),
                         force=force)
      if jax.process_count() > 1:
        # Orbax's save finalization syncs the hosts by a barrier that does
        # not name the manager: with this save still finalizing while
        # another manager (the selector's 'best') saves, the hosts can
        # pair the two barriers crosswise and hang. Seen with 2 processes.
        self._manager.wait_until_finished()

  def save_params(self, step: int, params: Any) -> None:
    """Saves parameters alone (read back with `restore_params`)."""
    self._manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params)), force=True)

  def _check_shapes(self, step: int, item: str, abstract: Any) -> None:
    saved = _shapes(self._manager.item_metadata(step)[item])
    wanted = _shapes(abstract)
    if saved == wanted:
      return
    differ = sorted(k for k in saved.keys() & wanted.keys()
                    if saved[k] != wanted[k])
    lines = [f"  {k}: checkpoint {saved[k]} vs config {wanted[k]}"
             for k in differ[:8]]
    lines += [f"  {k}: only in the checkpoint" for k in
              sorted(saved.keys() - wanted.keys())[:4]]
    lines += [f"  {k}: only in the config's model" for k in
              sorted(wanted.keys() - saved.keys())[:4]]
    raise errors.UserError(
        f"The checkpoint of step {step} in {self.directory} does not match "
        "the model this config builds (was it trained with other "
        "config.model settings, e.g. the encoder or use_sau, or another "
        "sensor?):\n" + "\n".join(lines))

  def _restore(self, abstract: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The items of `abstract` from the newest readable step."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      raise errors.UserError(
          f"No checkpoint in {self.directory}: train first (--mode=train) or "
          "point --workdir at a trained run.")
    damaged = []
    for step in steps:
      try:
        for item, tree in abstract.items():
          self._check_shapes(step, item, tree)
        restored = self._manager.restore(step, args=ocp.args.Composite(**{
            item: ocp.args.StandardRestore(tree)
            for item, tree in abstract.items()}))
      except errors.UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        # Orbax raises JSON, tensorstore and file errors for damaged steps.
        logging.warning("The checkpoint of step %d in %s is damaged (%s: "
                        "%s); trying the one before.", step, self.directory,
                        type(e).__name__, str(e).splitlines()[0][:200])
        damaged.append(step)
        continue
      if damaged:
        logging.warning("Restored step %d of %s; damaged steps %s were "
                        "skipped.", step, self.directory, damaged)
      return {item: restored[item] for item in abstract}, step
    raise Unreadable(
        f"No readable checkpoint in {self.directory}: steps {damaged} are "
        "damaged (see the warnings above). Restore the folder from a backup, "
        f"or delete {self.directory} and train again.")

  def restore_state(self, abstract_state: train_state.TrainState
                    ) -> train_state.TrainState:
    """The newest readable training state, into the given abstract targets.

    Damaged steps after the restored one are deleted, so training can save
    those steps again.
    """
    items, step = self._restore({
        "params": abstract_state.params,
        "opt_state": {"step": abstract_state.step,
                      "opt_state": abstract_state.opt_state}})
    for later in [s for s in self._manager.all_steps() if s > step]:
      self._manager.delete(later)
    return abstract_state.replace(params=items["params"],
                                  step=items["opt_state"]["step"],
                                  opt_state=items["opt_state"]["opt_state"])

  def restore_params(self, abstract_params: Any) -> tuple[Any, int]:
    """(parameters, step) of the newest readable step; no optimizer needed."""
    items, step = self._restore({"params": abstract_params})
    return items["params"], step

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def restore_params(directories: list[epath.Path], abstract_params: Any
                   ) -> tuple[Any, int]:
  """(parameters, step) from the first of `directories` with a
  readable step; a folder whose every step is damaged is passed over with a
  warning (a stage's damaged `best` for its regular checkpoints)."""
  for i, directory in enumerate(directories):
    ckpt = Checkpointer(directory)
    try:
      return ckpt.restore_params(abstract_params)
    except Unreadable:
      if i == len(directories) - 1:
        raise
      logging.warning("Every step in %s is damaged; restoring from %s "
                      "instead.", directory, directories[i + 1])
    finally:
      ckpt.close()
