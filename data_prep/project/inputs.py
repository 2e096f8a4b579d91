"""A project's input files, read and checked: library, points, scenes.

`settings` is the data config as a dict (configs/own_data.py documents every
field); paths in it are relative to `settings['project']`.
"""
import dataclasses
import pathlib
from typing import Any, Iterator

from absl import logging
import numpy as np
import pandas as pd

from data_prep import covariate_columns
from data_prep import csv_files
from data_prep import ec_methods
from data_prep import scenes
from data_prep.libraries import formats
from data_prep.libraries import tables
from data_prep.project import points as points_lib
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid
from deepsalt_spectral import sensors

SCENE_SUFFIXES = (".tif", ".tiff", ".hdr", ".he5", ".nc")
LIBRARY_FORMATS = ("auto", "envi", "csv", "lucas", "ossl", "opus")


@dataclasses.dataclass(frozen=True)
class Library:
  """Lab spectra on their stored grid (`tables.on_lab_grid`) with EC in the
  project's EC method."""
  grid: lab_grid.LabGrid
  lab: np.ndarray  # [n, grid.size] float32.
  ec: np.ndarray  # [n] float64.
  sample_id: np.ndarray  # [n] str.
  lon: np.ndarray  # [n] WGS84 degrees, NaN where unknown.
  lat: np.ndarray
  conversion: str  # '' or the declared conversion with its source.
  covariates: np.ndarray  # [n, k] float64 (data.covariates), NaN: missing.

  def __len__(self) -> int:
    return len(self.ec)


def path(settings: dict[str, Any], key: str) -> pathlib.Path:
  """settings[key] as a path, relative to the project folder."""
  return pathlib.Path(settings["project"]) / settings[key]


def input_files(settings: dict[str, Any]) -> list[pathlib.Path]:
  """Every file the records depend on (to key the prepared dataset)."""
  files = [path(settings, "points")]
  library = path(settings, "library")
  files += sorted(p for p in library.rglob("*") if p.is_file()) if (
      library.is_dir()) else [library]
  if settings["library_metadata"]:
    files.append(path(settings, "library_metadata"))
  folder = path(settings, "scenes")
  if folder.is_dir():
    files += sorted(p for p in folder.iterdir() if p.is_file())
  else:
    files.append(folder)
  return files


def _library_format(settings: dict[str, Any], library: pathlib.Path) -> str:
  kind = settings["library_format"]
  if kind not in LIBRARY_FORMATS:
    raise errors.UserError(f"data.library_format={kind!r}: use one of "
                           f"{', '.join(LIBRARY_FORMATS)}.")
  if kind != "auto":
    return kind
  suffixes = "".join(library.suffixes).lower()
  if library.suffix.lower() in (".sli", ".lib"):
    return "envi"
  if suffixes.endswith((".csv", ".csv.gz")):
    return "csv"
  raise errors.UserError(
      f"data.library={settings['library']!r}: cannot tell its format from "
      "the name; set data.library_format to envi (.sli + .hdr), csv, lucas "
      "or ossl (a folder of the downloaded tables) or opus (a folder of "
      "Bruker OPUS files).")


def _check_choice(settings: dict[str, Any], key: str, allowed) -> str:
  if settings[key] not in ("", *allowed):
    raise errors.UserError(f"data.{key}={settings[key]!r}: use one of "
                           f"{', '.join(allowed)} or '' (see "
                           "configs/own_data.py).")
  return settings[key]


def read_library(settings: dict[str, Any],
                 sensor: sensors.Sensor) -> Library:
  """The library on its stored grid (`tables.on_lab_grid`); refuses a
  vis-NIR one (nm) that does not cover `sensor`. A MIR one (cm-1) is kept
  whatever the sensor: the physics cannot reach it, a latent SAU can."""
  library = path(settings, "library")
  if not library.exists():
    raise errors.UserError(f"Library {library} does not exist; set "
                           "--config.data.library (relative to the project).")
  kind = _library_format(settings, library)
  unit = _check_choice(settings, "library_unit", lab_grid.UNITS)
  quantity = _check_choice(settings, "library_quantity", lab_grid.QUANTITIES)
  factor, conversion = ec_methods.library_factor(
      settings["library_ec_method"], settings["ec_method"],
      settings["ec_conversion"]["factor"], settings["ec_conversion"]["source"])
  given = settings["library_columns"]
  columns = dict(id_column=given["sample_id"] or formats.ID_COLUMNS,
                 target_column=given["ec"] or formats.EC_COLUMNS,
                 lat_column=given["lat"] or formats.LAT_COLUMNS,
                 lon_column=given["lon"] or formats.LON_COLUMNS,
                 target_units=settings["library_ec_units"])
  metadata = (path(settings, "library_metadata")
              if settings["library_metadata"] else None)
  if kind in ("envi", "opus"):
    if metadata is None:
      raise errors.UserError(
          f"An {kind.upper()} library needs data.library_metadata: a CSV with "
          "EC (and optional lat/lon) per spectrum name (ENVI) or file name "
          "without its number extension (OPUS).")
    read = {"envi": formats.read_envi_library,
            "opus": formats.read_opus_library}[kind]
    table, targets = read(library, metadata, **columns)
  elif kind == "csv":
    table, targets = formats.read_csv_library(
        library, metadata, unit=unit, quantity=quantity, **columns)
  elif kind == "ossl":
    table, targets = formats.read_ossl(library, unit)  # OSSL's own columns.
  else:
    table, targets = formats.read_lucas(library)  # LUCAS's own columns.
  good = sensor.good_wavelength
  lo, hi = table.grid.axis[0], table.grid.axis[-1]
  if table.grid.unit == "nm" and (lo > good[0] + tables.LAB_FWHM_NM or
                                  hi < good[-1] - tables.LAB_FWHM_NM):
    raise errors.UserError(
        f"{library}: the library covers {lo:g}-{hi:g} nm but the "
        f"{sensor.name} bands the model reads span {good[0]:.0f}-"
        f"{good[-1]:.0f} nm; vis-NIR lab spectra must cover the sensor (a "
        "library of 350-2500 nm does).")
  table = tables.on_lab_grid(table)
  examples = [r for _, r in tables.lab_examples(table, targets)]
  ec = np.array([r["target"] for r in examples], np.float64) * factor
  sample_id = np.array([r["sample_id"] for r in examples], str)
  return Library(
      grid=table.grid, lab=np.stack([r["lab"] for r in examples]), ec=ec,
      sample_id=sample_id,
      lon=np.array([r["lon"] for r in examples], np.float64),
      lat=np.array([r["lat"] for r in examples], np.float64),
      conversion=conversion,
      covariates=_library_covariates(
          covariate_columns.names(settings["covariates"]), kind,
          metadata or library, columns["id_column"], sample_id))


def _library_covariates(wanted: tuple[str, ...], kind: str,
                        table: pathlib.Path, id_column, sample_id: np.ndarray
                        ) -> np.ndarray:
  """[n, k] covariates of the library samples, from the table with their
  EC (the metadata CSV, or the CSV library itself)."""
  if not wanted:
    return np.zeros((len(sample_id), 0))
  if kind not in ("envi", "csv"):
    raise errors.UserError(
        f"data.covariates with a {kind} library: its own tables carry no "
        "covariates. Use a CSV library (or an ENVI one with a metadata "
        "CSV) holding the covariate columns, or set "
        "--config.data.covariates=''.")
  frame = csv_files.read(table, dtype=str, skipinitialspace=True)
  ids = (id_column,) if isinstance(id_column, str) else id_column
  name = next(c for c in ids if c in frame.columns)  # read_targets found it.
  frame = frame.drop_duplicates(name)  # The first row, as read_targets.
  values = pd.DataFrame(covariate_columns.columns(frame, wanted, table),
                        index=frame[name].str.strip())
  return values.reindex(sample_id).to_numpy(np.float64)


def read_points(settings: dict[str, Any]) -> points_lib.Points:
  ec_methods.check(settings["ec_method"], "data.ec_method")
  return points_lib.read_points(
      path(settings, "points"), crs=settings["points_crs"],
      ec_units=settings["points_ec_units"], ec_method=settings["ec_method"],
      max_ec=settings["max_ec"], columns=settings["points_columns"],
      covariates=covariate_columns.names(settings["covariates"]))


def scene_paths(settings: dict[str, Any]) -> list[pathlib.Path]:
  """The scene files of data.scenes (a folder, or one file)."""
  folder = path(settings, "scenes")
  if folder.is_file():
    return [folder]
  if not folder.is_dir():
    raise errors.UserError(f"data.scenes: {folder} is neither a folder of "
                           "scenes nor a scene file.")
  # An ENVI scene is its header; its data file is not a scene of its own.
  found = sorted(p for p in folder.iterdir()
                 if p.suffix.lower() in SCENE_SUFFIXES)
  if not found:
    raise errors.UserError(f"No scene files ({', '.join(SCENE_SUFFIXES)}) in "
                           f"{folder}.")
  return found


def read_scenes(paths: list[pathlib.Path], tolerance_nm: float,
                first: tuple[pathlib.Path, np.ndarray] | None = None
                ) -> Iterator[scenes.Scene]:
  """The scenes one at a time, refusing a folder that mixes sensors.

  `first`: (path, good band centres) of a scene read before (a resumed
  build), which the others must match; default the first of `paths`.
  """
  for scene_path in paths:
    scene = scenes.read_scene(scene_path)
    good = scene.wavelength[scene.good]
    if scene.transform is None or scene.crs is None:
      raise errors.UserError(
          f"{scene_path}: no georeference (CRS and transform); field points "
          "cannot be placed in it.")
    if first is None:
      first = (scene_path, good)
    elif good.shape != first[1].shape or np.abs(
        good - first[1]).max() > tolerance_nm:
      raise errors.UserError(
          f"data.scenes ({scene_path.parent}) mixes sensors: "
          f"{first[0].name} has {first[1].size} "
          f"good bands ({first[1][0]:.0f}-{first[1][-1]:.0f} nm), "
          f"{scene_path.name} has {good.size} ({good[0]:.0f}-{good[-1]:.0f} "
          "nm). A project's scenes come from one sensor: move the others to "
          "a project of their own.")
    logging.info("Read scene %s: %d x %d px, %d good bands.", scene.name,
                 *scene.shape, good.size)
    yield scene
