"""Prepared datasets by name: built on first use, read with tfds.data_source.

    source, info = datasets.load('salinity', 'enmap')
    record = source[0]  # dict of numpy values, see data_prep.records
    region_names = info.features['region'].names

A user's project folder (configs/own_data.py) is read with `load_project`.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import time

import numpy as np
import tensorflow_datasets as tfds

from data_prep import project
from data_prep import records
from data_prep import salinity
from data_prep import soc
from data_prep import target_pixels
from deepsalt_spectral import errors
from deepsalt_spectral import sensors

BUILDERS: dict[str, type[records.SpectraBuilder]] = {
    "salinity": salinity.DeepsaltSalinity,
    "soc": soc.DeepsaltSoc,
}


def default_data_dir() -> pathlib.Path:
  """$DEEPSALT_DATA_DIR, else ~/.cache/deepsalt_jax/tfds."""
  return pathlib.Path(os.environ.get(
      "DEEPSALT_DATA_DIR",
      pathlib.Path.home() / ".cache" / "deepsalt_jax" / "tfds"))


def builder(name: str = "salinity", sensor: str = "enmap",
            data_dir: str | os.PathLike | None = None
            ) -> records.SpectraBuilder:
  """The TFDS builder of a dataset ('salinity' or 'soc') for a sensor."""
  if name not in BUILDERS:
    raise errors.UserError(f"Unknown dataset {name!r}; valid names: "
                           f"{', '.join(BUILDERS)}.")
  if sensor not in sensors.SENSORS:
    raise errors.UserError(
        f"Unknown sensor {sensor!r} for dataset {name!r}; valid "
        f"sensors: {', '.join(sensors.SENSORS)}.")
  data_dir = pathlib.Path(data_dir) if data_dir else default_data_dir()
  return BUILDERS[name](config=sensor, data_dir=str(data_dir))


def build(name: str = "salinity", sensor: str = "enmap",
          data_dir: str | os.PathLike | None = None
          ) -> records.SpectraBuilder:
  """Builds a dataset unless it is already prepared; returns its builder."""
  return _prepare(builder(name, sensor, data_dir))


@contextlib.contextmanager
def _building(dataset: tfds.core.DatasetBuilder):
  """Holds the dataset's build lock (a file beside its version folder).

  Processes sharing a data_dir (the hosts of a job, test workers) build a
  dataset once: the others wait here, then find it prepared. A build that
  fails leaves no lock or folder behind (a refused project leaves nothing).
  """
  version_dir = pathlib.Path(dataset.data_dir)
  made = [p for p in version_dir.parents if not p.exists()]  # Deepest first.
  version_dir.parent.mkdir(parents=True, exist_ok=True)
  lock = version_dir.with_name(f".{version_dir.name}.lock")
  try:
    with open(lock, "w") as f:
      fcntl.flock(f, fcntl.LOCK_EX)  # Released when the file closes.
      yield
  except BaseException:
    if not dataset.is_prepared():
      lock.unlink(missing_ok=True)
      for folder in made:
        with contextlib.suppress(OSError):  # Not empty: another's build.
          folder.rmdir()
    raise


def _prepare(dataset: tfds.core.DatasetBuilder,
             manual_dir: str | os.PathLike | None = None
             ) -> tfds.core.DatasetBuilder:
  if dataset.is_prepared():
    return dataset
  try:
    with _building(dataset):
      if dataset.is_prepared():  # Built by another process while this waited.
        dataset.info.read_from_directory(dataset.data_dir)
        return dataset
      print(f"Building {dataset.name}/{dataset.builder_config.name} "
            f"{dataset.version} in {dataset.data_dir} ...", flush=True)
      start = time.perf_counter()
      tfds.disable_progress_bar()  # One line per build says enough.
      dataset.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              manual_dir=str(manual_dir) if manual_dir else None,
              compute_stats=tfds.download.ComputeStatsMode.SKIP))
  except OSError as e:
    raise errors.UserError(
        f"Cannot write the prepared dataset into {dataset.data_dir} "
        f"({type(e).__name__}: {e.strerror or e}). Point "
        "$DEEPSALT_DATA_DIR (or --config.data.data_dir) at a writable "
        "folder.") from e
  n = dataset.info.splits["train"].num_examples
  print(f"Built {dataset.name}/{dataset.builder_config.name}: {n} records "
        f"in {time.perf_counter() - start:.1f} s.", flush=True)
  return dataset


def load(name: str = "salinity", sensor: str = "enmap",
         data_dir: str | os.PathLike | None = None):
  """(random-access data source of split 'train', DatasetInfo); builds once.

  Args:
    name: 'salinity' (simulated EC) or 'soc' (measured SOC, LimeSoDa).
    sensor: 'enmap', 'prisma' or 'emit': the simulated satellite view.
    data_dir: TFDS data directory; None or '' -> `default_data_dir()`.
  """
  data_dir = pathlib.Path(data_dir) if data_dir else default_data_dir()
  dataset = build(name, sensor, data_dir)
  source = tfds.data_source(f"{dataset.name}/{sensor}", split="train",
                            data_dir=str(data_dir), download=False)
  return source, dataset.info


def load_target_pixels(scene_dir: str | os.PathLike, sensor: str = "enmap",
                       data_dir: str | os.PathLike | None = None
                       ) -> np.ndarray:
  """[n, n_good] real bare-soil pixels of the scenes in `scene_dir`.

  Prepared once per scene folder (keyed by its absolute path) under
  `<data_dir>/target_pixels/`.
  """
  scene_dir = pathlib.Path(scene_dir).resolve()
  if not scene_dir.is_dir():
    raise errors.UserError(f"data.target_scenes={str(scene_dir)!r} is not a "
                           "folder of scene files.")
  key = hashlib.sha1(str(scene_dir).encode()).hexdigest()[:12]
  root = (pathlib.Path(data_dir) if data_dir else default_data_dir())
  dataset = _prepare(target_pixels.DeepsaltTargetPixels(
      config=sensor, data_dir=str(root / "target_pixels" / key)), scene_dir)
  source = tfds.data_source(dataset.name + "/" + sensor, split="train",
                            data_dir=str(root / "target_pixels" / key),
                            download=False)
  return np.stack([source[i]["satellite"] for i in range(len(source))])


def project_builder(settings: dict, data_dir: str | os.PathLike | None = None
                    ) -> project.DeepsaltProject:
  """The builder of a user's project (`settings`: the data config).

  Prepared under <data_dir>/project/<hash of the project path>/, one
  dataset per hash of the settings and input files.
  """
  settings = dict(settings)
  if not settings["project"]:
    raise errors.UserError("data.project is not set: pass "
                           "--config.data.project=<your project folder>.")
  folder = pathlib.Path(settings["project"]).expanduser().resolve()
  if not folder.is_dir():
    raise errors.UserError(f"data.project={settings['project']!r} is not a "
                           "folder.")
  if settings["sensor"] not in sensors.SENSORS:
    raise errors.UserError(f"data.sensor={settings['sensor']!r}: use one of "
                           f"{', '.join(sensors.SENSORS)}.")
  settings["project"] = str(folder)
  root = ((pathlib.Path(data_dir) if data_dir else default_data_dir())
          / "project" / hashlib.sha1(str(folder).encode()).hexdigest()[:12])
  config = project.ProjectConfig(name=f"p{project.settings_key(settings)}",
                                 settings=json.dumps(settings))
  return project.DeepsaltProject(config=config, data_dir=str(root))


def load_project(settings: dict, data_dir: str | os.PathLike | None = None):
  """(random-access source, DatasetInfo) of a project; builds it once.

  A refused project leaves no folder behind (TFDS makes some before the
  records are read).
  """
  dataset = project_builder(settings, data_dir)
  root = pathlib.Path(dataset.data_dir).parents[2]
  try:
    _prepare(dataset, settings["project"])
  except errors.UserError:
    for folder in sorted(root.rglob("*"), reverse=True) + [root, root.parent]:
      if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    raise
  return dataset.as_data_source(split="train"), dataset.info
