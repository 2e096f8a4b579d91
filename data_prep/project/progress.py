"""What a project build has placed so far, scene by scene, on disk.

Reading each scene and placing the points, library samples and unlabelled
pixels in it is what a build spends its time on. After each scene the
placements so far are saved in the build's folder (named by the same hash
as the dataset, `builder.settings_key`), so a killed build, run again,
reads only the scenes it had not placed; the folder is removed once the
dataset is complete (or refused).
"""
import os
import pathlib
import pickle
import shutil
from typing import Any

_FILE = "scene_{:05d}.pkl"


class Progress:
  """Per-scene files in `folder`: each holds that scene's own placements
  and everything cumulative (points, pairs) after it."""

  def __init__(self, folder: pathlib.Path):
    self.folder = folder

  def load(self, paths: list[pathlib.Path]) -> list[dict[str, Any]]:
    """The saved states of the first scenes of `paths`, in order; a state
    saved for other files (or after a gap) ends the list."""
    states = []
    for i, path in enumerate(paths):
      file = self.folder / _FILE.format(i)
      if not file.exists():
        break
      state = pickle.loads(file.read_bytes())
      if state["path"] != str(path):
        break
      states.append(state)
    return states

  def save(self, index: int, state: dict[str, Any]) -> None:
    """Saves scene `index`'s state (atomically: a kill leaves the last
    complete one)."""
    self.folder.mkdir(parents=True, exist_ok=True)
    file = self.folder / _FILE.format(index)
    partial = file.with_name(file.name + ".partial")
    partial.write_bytes(pickle.dumps(state, pickle.HIGHEST_PROTOCOL))
    os.replace(partial, file)

  def remove(self) -> None:
    shutil.rmtree(self.folder, ignore_errors=True)
