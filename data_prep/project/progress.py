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

_SCENE = "scene_{:05d}.pkl"
# What every scene adds to (the points, the pairs), after the last scene
# saved; it names how many scenes that is.
_SO_FAR = "so_far.pkl"


class Progress:
  """A file per scene placed (what it alone holds: its unlabelled pixels,
  bounds, ...) and one of what they add up to."""

  def __init__(self, folder: pathlib.Path):
    self.folder = folder

  def load(self, paths: list[pathlib.Path]
           ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(what the first scenes of `paths` add up to, each one's own state);
    (None, []) where none was saved, or saved for other files."""
    so_far = self._read(self.folder / _SO_FAR)
    if so_far is None or [str(p) for p in paths[:len(so_far["paths"])]] != (
        so_far["paths"]):
      return None, []
    return so_far, [self._read(self.folder / _SCENE.format(i))
                    for i in range(len(so_far["paths"]))]

  def save(self, index: int, scene: dict[str, Any],
           so_far: dict[str, Any]) -> None:
    """Saves scene `index`'s own state, then the sum over scenes 0..index
    (`so_far['paths']`: theirs). Each file is replaced atomically, the sum
    last: a kill leaves the sum of complete scenes."""
    self.folder.mkdir(parents=True, exist_ok=True)
    self._write(self.folder / _SCENE.format(index), scene)
    self._write(self.folder / _SO_FAR, so_far)

  def remove(self) -> None:
    shutil.rmtree(self.folder, ignore_errors=True)

  @staticmethod
  def _read(file: pathlib.Path) -> dict[str, Any] | None:
    return pickle.loads(file.read_bytes()) if file.exists() else None

  @staticmethod
  def _write(file: pathlib.Path, state: dict[str, Any]) -> None:
    partial = file.with_name(file.name + ".partial")
    partial.write_bytes(pickle.dumps(state, pickle.HIGHEST_PROTOCOL))
    os.replace(partial, file)
