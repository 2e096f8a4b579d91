"""Readers of lab library formats, each giving (spectra, targets).

The spectra are a `tables.SpectralTable` of reflectance fractions and the
targets a frame of EC (dS/m), region, lat and lon by sample id; a library
builder or a user's project joins them with `tables.lab_examples`.

- `read_lucas`: LUCAS topsoil spectra + topsoil table (folder).
- `read_ossl`: OSSL vis-NIR scans + soil lab table (+ site table) (folder).
- `read_csv_library`: a CSV with one column per wavelength, EC in the same
  file or in a second one joined on the id.
- `read_envi_library`: an ENVI spectral library (.sli + .hdr, what EnMAP-Box
  keeps libraries in) with a metadata CSV keyed by spectrum name.
"""
import pathlib
import re
from typing import Any, Optional

import pandas as pd

from data_prep import sources
from data_prep.libraries import tables
from deepsalt_spectral import errors

Library = tuple[tables.SpectralTable, pd.DataFrame]
LUCAS_IDS = ("PointID", "Point_ID", "POINTID", "POINT_ID")
OSSL_ID = "id.layer_uuid_txt"
# Columns of a user's library tables, tried in order (exact names).
ID_COLUMNS = ("sample_id", "name", "NAME", "id", "ID", "spectrum")
EC_COLUMNS = ("ec", "EC", "ECe", "ece")
LAT_COLUMNS = ("lat", "latitude", "LAT", "Latitude")
LON_COLUMNS = ("lon", "longitude", "LON", "Longitude")
TARGET_COLUMNS = dict(id_column=ID_COLUMNS, target_column=EC_COLUMNS,
                      target_units="dS/m", lat_column=LAT_COLUMNS,
                      lon_column=LON_COLUMNS)


def find(folder: pathlib.Path, pattern: str, what: str, many: bool = False):
  """Files under `folder` whose name matches regex `pattern` (any case)."""
  regex = re.compile(pattern, re.IGNORECASE)
  hits = sorted(p for p in folder.rglob("*")
                if p.is_file() and regex.search(p.name))
  if not hits:
    raise errors.UserError(f"No {what} in {folder} (file names matching "
                           f"{pattern!r}); see MANUAL_DOWNLOAD_INSTRUCTIONS.")
  if not many and len(hits) > 1:
    raise errors.UserError(f"Several {what} files in {folder}: "
                           f"{[p.name for p in hits]}; keep one.")
  return hits if many else hits[0]


def read_lucas(folder: pathlib.Path) -> Library:
  table = tables.read_spectral_table(
      find(folder, r"spectra.*\.csv(\.gz)?$", "LUCAS spectra", True),
      id_column=LUCAS_IDS, quantity="absorbance",
      wavelength_range=tables.LAB_READ_RANGE_NM)
  targets = tables.read_targets(
      find(folder, r"topsoil.*\.csv(\.gz)?$", "LUCAS topsoil table"),
      id_column=LUCAS_IDS, target_column="EC", target_units="mS/m",
      region_column="NUTS_0", lat_column=("GPS_LAT", "TH_LAT", "Lat"),
      lon_column=("GPS_LONG", "TH_LONG", "Long", "Lon"),
      default_region="LUCAS")
  return table, targets


def read_ossl(folder: pathlib.Path) -> Library:
  table = tables.read_spectral_table(
      find(folder, r"ossl_visnir.*\.csv(\.gz)?$", "OSSL vis-NIR table"),
      id_column=OSSL_ID, wavelength_pattern=r"^scan_visnir\.(\d+(?:\.\d+)?)"
      r"_ref$", wavelength_range=tables.LAB_READ_RANGE_NM)
  targets = tables.read_targets(
      find(folder, r"ossl_soillab.*\.csv(\.gz)?$", "OSSL soil lab table"),
      id_column=OSSL_ID, target_column="ec_usda.a364_ds.m",
      target_units="dS/m", default_region="OSSL")
  try:
    sites = find(folder, r"ossl_soilsite.*\.csv(\.gz)?$", "site table")
  except ValueError:
    return table, targets
  site = pd.read_csv(sites, dtype={OSSL_ID: str}).set_index(OSSL_ID)
  for key, column in (("lat", "latitude.point_wgs84_dd"),
                      ("lon", "longitude.point_wgs84_dd"),
                      ("region", "dataset.code_ascii_txt")):
    if column in site:
      values = site[column].reindex(targets.index)
      targets[key] = values.where(values.notna(), targets[key])
  return table, targets


def _check_files(*paths: pathlib.Path) -> None:
  for path in paths:
    if not path.is_file():
      raise errors.UserError(f"Library file {path} does not exist; check "
                             "the library settings (data.library*).")


def _targets(path: pathlib.Path, columns: dict[str, Any],
             default_region: str) -> pd.DataFrame:
  return tables.read_targets(path, **{**TARGET_COLUMNS,
                                      "default_region": default_region,
                                      **columns})


def read_csv_library(spectra_path: pathlib.Path,
                     targets_path: Optional[pathlib.Path] = None, *,
                     quantity: str = "reflectance",
                     wavelength_pattern: str = tables.NUMBER_COLUMN,
                     default_region: str = "csv", **columns) -> Library:
  """A CSV library; targets in `targets_path` or the spectra file itself.

  `columns`: `tables.read_targets`' column and unit arguments (default
  TARGET_COLUMNS); the id column also keys the spectra.
  """
  targets_path = targets_path or spectra_path
  _check_files(spectra_path, targets_path)
  table = tables.read_spectral_table(
      spectra_path, id_column=columns.get("id_column", ID_COLUMNS),
      quantity=quantity, wavelength_pattern=wavelength_pattern,
      wavelength_range=tables.LAB_READ_RANGE_NM)
  return table, _targets(targets_path, columns, default_region)


def read_envi_library(path: pathlib.Path, metadata: pathlib.Path, *,
                      default_region: str = "library", **columns) -> Library:
  """An ENVI spectral library whose 'spectra names' key `metadata`'s rows.

  `metadata` is a CSV with the spectrum name column, EC and optional region
  and lat/lon (WGS84) columns; `columns` as in `read_csv_library`.
  """
  _check_files(metadata)
  spectra, wavelength, names = sources.read_envi_library_with_names(path)
  if "" in names or len(set(names)) != len(names):
    raise errors.UserError(
        f"{path}: every spectrum needs its own name in the header's "
        "'spectra names' (they key the metadata table); some are missing or "
        "repeated.")
  keep = tables.in_range(wavelength, tables.LAB_READ_RANGE_NM, path)
  frame = pd.DataFrame(spectra[:, keep], index=pd.Index(names))
  table = tables.to_spectral_table(frame, wavelength[keep], "reflectance",
                                   path.name)
  return table, _targets(metadata, columns, default_region)
