"""The scenes of a `--mode=map` run: a file, a folder or a list of scenes.

Paths go through `etils.epath`, as the workdir does, so a scene can be a
gs:// URI; `local_copy` stages a remote scene (and its sidecar files, e.g.
an ENVI header) in a temporary folder for the readers, which need files.
"""
from __future__ import annotations

import contextlib
import pathlib
import tempfile
from typing import Iterator

from etils import epath

from data_prep import scenes
from deepsalt_jax import paths
from deepsalt_spectral import errors

# A --scene with one of these suffixes is a text file listing scenes.
LIST_SUFFIXES = (".txt", ".list", ".lst")
# DLR EnMAP products keep quality layers (QL_*) beside the spectral image.
_QUALITY_LAYER = "-QL_"


def _folder(path: epath.Path) -> list[epath.Path]:
  found = sorted(p for p in path.iterdir()
                 if p.suffix.lower() in scenes.SCENE_SUFFIXES
                 and not p.name.startswith(".")
                 and _QUALITY_LAYER not in p.name.upper())
  if not found:
    raise errors.UserError(
        f"--scene={path}: the folder holds no scene file "
        f"({', '.join(scenes.SCENE_SUFFIXES)}); subfolders are not searched: "
        "list the scenes in a text file (one path or gs:// URI a line).")
  return found


def _listed(path: epath.Path) -> list[epath.Path]:
  """Scenes named in a text file, one a line; '#' starts a comment.

  Relative paths are relative to the list's folder.
  """
  found = []
  for line in path.read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if line:
      entry = epath.Path(line)
      found.append(entry if "://" in line or entry.is_absolute()
                   else path.parent / line)
  missing = [str(p) for p in found if not p.exists()]
  if missing:
    raise errors.UserError(
        f"--scene={path} lists {len(missing)} scenes that do not exist: "
        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Fix "
        "the list (relative paths are relative to its folder).")
  if not found:
    raise errors.UserError(f"--scene={path} lists no scene.")
  return found


def list_scenes(spec: epath.PathLike) -> list[epath.Path]:
  """The scenes `spec` names: itself, a folder's scene files or a list's.

  Raises:
    UserError: nothing there, an empty folder or list, or two scenes with
      the same file stem (their outputs would share names).
  """
  path = epath.Path(spec)
  if not path.exists():
    raise errors.UserError(f"--scene: the scene, folder or list {spec} does "
                           "not exist.")
  if path.is_dir():
    found = _folder(path)
  elif path.suffix.lower() in LIST_SUFFIXES:
    found = _listed(path)
  else:
    found = [path]
  seen: dict[str, epath.Path] = {}
  for scene in found:
    if scene.stem in seen:
      raise errors.UserError(
          f"Scenes {seen[scene.stem]} and {scene} share the name "
          f"{scene.stem!r}, so their maps would too; rename one.")
    seen[scene.stem] = scene
  return found


def share(found: list[epath.Path], process: int,
          processes: int) -> list[epath.Path]:
  """The scenes process `process` of `processes` maps: every n-th, so the
  assignment depends on the list alone."""
  return found[process::processes]


@contextlib.contextmanager
def local_copy(path: epath.Path) -> Iterator[pathlib.Path]:
  """A local file of the scene: itself, or a staged copy of a remote one
  with its sidecars (files named <stem> or <stem>.* beside it)."""
  if paths.is_local(path):
    yield pathlib.Path(path)
    return
  with tempfile.TemporaryDirectory(prefix="deepsalt_scene_") as tmp:
    sidecars = list(path.parent.glob(f"{path.stem}.*"))
    if (path.parent / path.stem).exists():
      sidecars.append(path.parent / path.stem)
    for source in {path, *sidecars}:
      (pathlib.Path(tmp) / source.name).write_bytes(source.read_bytes())
    yield pathlib.Path(tmp) / path.name
