"""Run and output folders, local or in the cloud, through `etils.epath`.

Every workdir and output path is an `epath.Path`, so `gs://bucket/run` works
wherever a local folder does (install `gcsfs` for gs://). Writers that need
real files (rasterio, TensorBoard) write into `Staging.local` and `publish`
copies the files to the target; for a local target the two are the same
folder and publishing does nothing.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

from etils import epath

from deepsalt_spectral import errors


def is_local(path: epath.PathLike) -> bool:
  return "://" not in str(path)


def check_writable(path: epath.PathLike, flag: str) -> None:
  """Refuses a local folder that cannot be made or written, before any work
  (a cloud path is left to its first write). `flag` names the setting."""
  if not is_local(path):
    return
  folder = pathlib.Path(path).absolute()
  if folder.exists() and not folder.is_dir():
    raise errors.UserError(f"{flag}={path} is a file, not a folder; name a "
                           "folder (it is made if missing).")
  existing = next(p for p in (folder, *folder.parents) if p.exists())
  if not existing.is_dir():
    raise errors.UserError(f"{flag}={path}: {existing} is a file, so no "
                           "folder can be made under it; name another "
                           "folder.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise errors.UserError(f"{flag}={path}: {existing} is not writable; "
                           "name a folder you can write to.")


def write_atomically(path: epath.PathLike, text: str) -> None:
  """Writes `text` to `path` under a temporary name, then renames it over
  `path`: a reader (another process of the job, or a resume after a kill)
  sees the old file or the new one, never a part of it. For the files a
  run reads back; write_text's truncation once showed a resuming process
  an empty config.json (a JSONDecodeError, and its peer waiting forever)."""
  path = epath.Path(path)
  temp = path.parent / f".{path.name}.{os.getpid()}.tmp"
  temp.write_text(text)
  temp.replace(path)


class Staging:
  """A local folder whose files end up in `target`."""

  def __init__(self, target: epath.PathLike):
    self.target = epath.Path(target)
    if is_local(target):
      self.local = pathlib.Path(target)
      self._temp = None
    else:
      self._temp = tempfile.mkdtemp(prefix="deepsalt_staging_")
      self.local = pathlib.Path(self._temp)
    self.local.mkdir(parents=True, exist_ok=True)

  def publish(self, *names: str) -> None:
    """Copies local files (paths relative to `local`) to the target."""
    if self._temp is None:
      return
    for name in names:
      destination = self.target / name
      destination.parent.mkdir(parents=True, exist_ok=True)
      destination.write_bytes((self.local / name).read_bytes())

  def publish_all(self) -> None:
    """Publishes every file under `local`.

    A local target is not walked at all: it is a run's folder, where Orbax
    renames checkpoint folders while a walk may be inside them.
    """
    if self._temp is None:
      return
    self.publish(*(str(p.relative_to(self.local))
                   for p in self.local.rglob("*") if p.is_file()))

  def close(self) -> None:
    if self._temp is not None:
      shutil.rmtree(self._temp, ignore_errors=True)
