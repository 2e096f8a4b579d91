"""Readers of lab library formats, each giving (spectra, targets).

The spectra are a `tables.SpectralTable` on the instrument's grid (a
`LabGrid`: reflectance in nm, or reflectance or absorbance in cm-1) and the
targets a frame of EC (dS/m), region, lat and lon by sample id; a library
builder or a user's project puts the spectra on the stored grid
(`tables.on_lab_grid`) and joins them with `tables.lab_examples`.

- `read_lucas`: LUCAS topsoil spectra + topsoil table (folder).
- `read_ossl`: OSSL vis-NIR or MIR scans + soil lab table (+ site table)
  (folder).
- `read_csv_library`: a CSV with one column per wavelength or wavenumber, EC
  in the same file or in a second one joined on the id.
- `read_envi_library`: an ENVI spectral library (.sli + .hdr, what EnMAP-Box
  keeps libraries in) with a metadata CSV keyed by spectrum name.
- `read_opus_library`: a folder of Bruker OPUS files (absorbance, cm-1) with
  a metadata CSV keyed by file name.
"""
import pathlib
import re
from typing import Any, Optional

from absl import logging
import brukeropus
import numpy as np
import pandas as pd

from data_prep import sources
from data_prep.libraries import tables
from deepsalt_spectral import errors

Library = tuple[tables.SpectralTable, pd.DataFrame]
LUCAS_IDS = ("PointID", "Point_ID", "POINTID", "POINT_ID")
OSSL_ID = "id.layer_uuid_txt"
# OSSL scan tables by unit: (file name, column pattern, what).
OSSL_SCANS = {
    "nm": (r"ossl_visnir.*\.csv(\.gz)?$",
           r"^scan_visnir\.(\d+(?:\.\d+)?)_ref$", "OSSL vis-NIR table"),
    "cm-1": (r"ossl_mir.*\.csv(\.gz)?$", r"^scan_mir\.(\d+(?:\.\d+)?)_abs$",
             "OSSL MIR table"),
}
# OPUS x units brukeropus converts to wavenumbers (wavenumber, micrometre,
# log wavenumber).
_OPUS_X_UNITS = ("WN", "MI", "LGW")
# Wavenumbers (cm-1) closer than this are the same channel.
_SAME_CM1 = 1e-3
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
      id_column=LUCAS_IDS, unit="nm", quantity="absorbance")
  targets = tables.read_targets(
      find(folder, r"topsoil.*\.csv(\.gz)?$", "LUCAS topsoil table"),
      id_column=LUCAS_IDS, target_column="EC", target_units="mS/m",
      region_column="NUTS_0", lat_column=("GPS_LAT", "TH_LAT", "Lat"),
      lon_column=("GPS_LONG", "TH_LONG", "Long", "Lon"),
      default_region="LUCAS")
  return table, targets


def read_ossl(folder: pathlib.Path, unit: str = "") -> Library:
  """OSSL vis-NIR (unit 'nm': reflectance) or MIR ('cm-1': absorbance)
  scans; '' reads the one scan table in `folder`."""
  if not unit:
    present = [u for u, (name, _, _) in OSSL_SCANS.items()
               if any(re.search(name, p.name, re.IGNORECASE)
                      for p in folder.rglob("*"))]
    if len(present) != 1:
      raise errors.UserError(
          f"{folder}: {'both' if present else 'neither'} an OSSL vis-NIR "
          "(ossl_visnir_*.csv) and an OSSL MIR (ossl_mir_*.csv) scan table; "
          "keep one, or set data.library_unit to 'nm' (vis-NIR) or 'cm-1' "
          "(MIR).")
    unit = present[0]
  name, pattern, what = OSSL_SCANS[unit]
  table = tables.read_spectral_table(
      find(folder, name, what), id_column=OSSL_ID, axis_pattern=pattern,
      unit=unit, quantity="reflectance" if unit == "nm" else "absorbance")
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
                     unit: str = "", quantity: str = "",
                     axis_pattern: str = tables.NUMBER_COLUMN,
                     default_region: str = "csv", **columns) -> Library:
  """A CSV library; targets in `targets_path` or the spectra file itself.

  `unit`, `quantity`, `axis_pattern`: as `tables.read_spectral_table` reads
  them ('' detects the unit and takes the unit's usual quantity).
  `columns`: `tables.read_targets`' column and unit arguments (default
  TARGET_COLUMNS); the id column also keys the spectra.
  """
  targets_path = targets_path or spectra_path
  _check_files(spectra_path, targets_path)
  table = tables.read_spectral_table(
      spectra_path, id_column=columns.get("id_column", ID_COLUMNS),
      axis_pattern=axis_pattern, unit=unit, quantity=quantity)
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
  keep = tables.in_range(wavelength, path)
  frame = pd.DataFrame(spectra[:, keep], index=pd.Index(names))
  table = tables.to_spectral_table(frame, wavelength[keep], "nm",
                                   "reflectance", path.name)
  return table, _targets(metadata, columns, default_region)


def _opus_absorbance(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """(wavenumbers increasing, absorbance) of an OPUS file's AB block."""
  opus = brukeropus.read_opus(path)
  if not opus:
    raise errors.UserError(f"{path}: not an OPUS file (it lacks the OPUS "
                           "signature); move it out of the library folder.")
  if "a" not in opus.data_keys:
    raise errors.UserError(
        f"{path}: no absorbance (AB) block; it holds {opus.data_keys}. Save "
        "the absorbance spectrum in OPUS (or export a CSV library).")
  if opus.a.dxu not in _OPUS_X_UNITS:
    raise errors.UserError(f"{path}: the AB block's x unit is "
                           f"{opus.a.dxu!r}, not wavenumbers or micrometres.")
  order = np.argsort(opus.a.wn)
  return opus.a.wn[order], np.asarray(opus.a.y, np.float64)[order]


def read_opus_library(folder: pathlib.Path, metadata: pathlib.Path, *,
                      default_region: str = "opus", **columns) -> Library:
  """Bruker OPUS files (`folder`/*.0, *.1, ...) with a metadata CSV.

  A file's sample id is its name without the numeric extension ('S12.0' ->
  'S12'); two files of one id are replicates (averaged). The spectra are the
  absorbance (AB) blocks on the first file's wavenumbers; a file on other
  wavenumbers is interpolated (linearly) onto them when it covers their
  range and refused when it does not. `metadata` and `columns` as in
  `read_envi_library`.
  """
  _check_files(metadata)
  paths = sorted(pathlib.Path(p) for p in brukeropus.find_opus_files(folder))
  if not paths:
    raise errors.UserError(
        f"No OPUS files (names ending in a number: S12.0, S12.1, ...) in "
        f"{folder}; set data.library to the folder of the OPUS files.")
  axis, rows, moved = None, [], 0
  for path in paths:
    wn, absorbance = _opus_absorbance(path)
    if axis is None:
      axis = wn
    elif wn.size != axis.size or np.abs(wn - axis).max() > _SAME_CM1:
      if wn[0] > axis[0] + _SAME_CM1 or wn[-1] < axis[-1] - _SAME_CM1:
        raise errors.UserError(
            f"{path}: its wavenumbers ({wn[0]:g}-{wn[-1]:g} cm-1) do not "
            f"cover those of {paths[0].name} ({axis[0]:g}-{axis[-1]:g} "
            "cm-1), which the library keeps; move it to a library of its "
            "own, or re-export it on the same range.")
      absorbance, moved = np.interp(axis, wn, absorbance), moved + 1
    rows.append(absorbance)
  if moved:
    logging.info("%s: interpolated %d of %d OPUS spectra onto the "
                 "wavenumbers of %s.", folder, moved, len(paths),
                 paths[0].name)
  frame = pd.DataFrame(np.stack(rows), index=pd.Index(
      [p.name.rsplit(".", 1)[0] for p in paths]))
  table = tables.to_spectral_table(frame, axis, "cm-1", "absorbance",
                                   folder.name)
  return table, _targets(metadata, columns, default_region)
