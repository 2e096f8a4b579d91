"""Field points: where a soil sample was taken and its measured EC.

    points = read_points('points.csv', crs='EPSG:4326')

CSV: one row per point with lon/lat columns (WGS84 degrees, the default
`crs`) or x/y columns in the CRS `crs` names (e.g. 'EPSG:32632'), an EC
column, optional sample id, date, depth and ec_method columns, and the
covariate columns a project names (`data_prep.covariate_columns`). GeoJSON:
a FeatureCollection of Point features with the same fields as properties, in
WGS84 (RFC 7946) unless the file's legacy `crs` member names another CRS.
Column names are matched without regard to case; `columns` overrides them.
Every refusal names the file, the column or the rows, and the fix.
"""
import dataclasses
import json
import pathlib
from typing import Optional

from absl import logging
import numpy as np
import pandas as pd
import rasterio.crs
import rasterio.errors

from data_prep import covariate_columns
from data_prep import csv_files
from data_prep import ec_methods
from data_prep.libraries import tables
from deepsalt_spectral import errors

# Candidate column names, lower case.
ALIASES = {
    "lon": ("lon", "longitude", "long", "lng", "x"),
    "lat": ("lat", "latitude", "y"),
    "x": ("x", "easting", "east"),
    "y": ("y", "northing", "north"),
    "ec": ("ec", "ece", "ec_ds_m", "ec_dsm"),
    "sample_id": ("sample_id", "id", "name", "sample"),
    "date": ("date",),
    "depth": ("depth", "depth_cm"),
    "ec_method": ("ec_method", "method"),
}
# EC above this (dS/m) is refused by default: brines, or other units.
MAX_EC = 200.0
_MAX_LISTED = 10


@dataclasses.dataclass(frozen=True)
class Points:
  """Field points with EC (dS/m); `where` names each one's line in the file.

  `x`/`y` are in `crs` (longitude/latitude for EPSG:4326).
  """
  x: np.ndarray
  y: np.ndarray
  crs: str
  ec: np.ndarray
  sample_id: np.ndarray
  date: np.ndarray
  depth: np.ndarray
  where: np.ndarray
  path: pathlib.Path
  covariates: np.ndarray  # [n, k] float64, NaN where missing.

  def __len__(self) -> int:
    return len(self.ec)


def _listed(where, mask) -> str:
  chosen = np.asarray(where)[np.asarray(mask)]
  more = f" and {len(chosen) - _MAX_LISTED} more" if len(
      chosen) > _MAX_LISTED else ""
  return ", ".join(chosen[:_MAX_LISTED]) + more


def _column(frame: pd.DataFrame, key: str, given: str, path,
            required: bool = True) -> Optional[str]:
  """The frame's column for `key`: `given` if set, else an alias."""
  if given:
    if given not in frame.columns:
      raise errors.UserError(
          f"{path}: no column {given!r} (found: {', '.join(frame.columns)}); "
          f"fix --config.data.points_columns.{key}.")
    return given
  lower = {str(c).strip().lower(): c for c in frame.columns}
  for alias in ALIASES[key]:
    if alias in lower:
      return lower[alias]
  if required:
    raise errors.UserError(
        f"{path}: no {key} column; expected one of {list(ALIASES[key])} (any "
        f"case), found: {', '.join(map(str, frame.columns))}. Rename the "
        f"column or set --config.data.points_columns.{key}.")
  return None


def _read_geojson(path: pathlib.Path, crs: str) -> tuple[pd.DataFrame, str]:
  """Feature properties plus x/y columns, and the file's CRS."""
  try:
    data = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.UserError(f"{path} is not valid GeoJSON ({e}).") from e
  features = data.get("features") if isinstance(data, dict) else None
  if not isinstance(features, list):
    raise errors.UserError(f"{path}: a GeoJSON FeatureCollection with a "
                           "'features' list is expected.")
  rows = []
  for i, feature in enumerate(features, start=1):
    geometry = (feature or {}).get("geometry") or {}
    if geometry.get("type") != "Point":
      raise errors.UserError(
          f"{path}: feature {i} is a {geometry.get('type')!r}, not a Point; "
          "field points must be Point features.")
    x, y = (list(geometry.get("coordinates") or []) + [None, None])[:2]
    rows.append({**(feature.get("properties") or {}), "x": x, "y": y})
  legacy = ((data.get("crs") or {}).get("properties") or {}).get("name")
  if legacy:  # e.g. 'urn:ogc:def:crs:EPSG::32632'.
    crs = "EPSG:" + legacy.rsplit(":", 1)[-1] if "EPSG" in legacy else legacy
  return pd.DataFrame(rows), crs


def _check_geographic(x, y, where, path) -> None:
  """Degrees must be degrees: refuses swapped or projected coordinates."""
  outside = (np.abs(y) > 90) | (np.abs(x) > 180)
  if not outside.any():
    return
  if np.all(np.abs(x) <= 90) and np.all(np.abs(y) <= 180):
    raise errors.UserError(
        f"{path}: latitudes beyond ±90° at {_listed(where, np.abs(y) > 90)}"
        ", while every longitude is within ±90°: the lon and lat columns "
        "look swapped. Swap them (or the column settings).")
  raise errors.UserError(
      f"{path}: coordinates like ({x[outside][0]:g}, {y[outside][0]:g}) at "
      f"{_listed(where, outside)} are not WGS84 degrees; they look projected "
      "(metres). Set --config.data.points_crs to their CRS (e.g. "
      "EPSG:32632 for UTM 32N) and name the x/y columns.")


def read_points(path, crs: str = "EPSG:4326", ec_units: str = "dS/m",
                ec_method: str = "ECe", max_ec: float = MAX_EC,
                columns: Optional[dict[str, str]] = None,
                covariates: tuple[str, ...] = ()) -> Points:
  """Reads field points (module docstring) and checks them.

  Args:
    path: CSV (.csv, .csv.gz) or GeoJSON (.geojson, .json).
    crs: CRS of the coordinates (any form rasterio reads); for GeoJSON the
      default when the file names none.
    ec_units: units of the EC column (`tables.EC_UNITS`).
    ec_method: the declared EC method; an ec_method column must agree.
    max_ec: EC (dS/m) above which values are refused as wrong units.
    columns: {key: column name} overrides of ALIASES ('' = detect).
    covariates: names of covariate columns to read (case-insensitive).

  Returns:
    The points with EC in dS/m; rows without EC are dropped (warning).
  """
  path = pathlib.Path(path)
  columns = {k: v for k, v in (columns or {}).items() if v}
  if not path.is_file():
    raise errors.UserError(f"Points file {path} does not exist; set "
                           "--config.data.points (relative to the project).")
  if ec_units not in tables.EC_UNITS:
    raise errors.UserError(f"data.points_ec_units={ec_units!r}: use one of "
                           f"{', '.join(tables.EC_UNITS)}.")
  geojson = path.suffix.lower() in (".geojson", ".json")
  if geojson:
    frame, crs = _read_geojson(path, crs)
    where = np.array([f"feature {i}" for i in range(1, len(frame) + 1)])
  else:
    frame = csv_files.read(path, dtype=str, skipinitialspace=True)
    where = np.array([f"line {i}" for i in range(2, len(frame) + 2)])
  if frame.empty:
    raise errors.UserError(f"{path} holds no points.")
  try:
    parsed_crs = rasterio.crs.CRS.from_user_input(crs)
  except rasterio.errors.CRSError as e:
    raise errors.UserError(f"data.points_crs={crs!r} is not a CRS rasterio "
                           "knows; use e.g. EPSG:4326 or EPSG:32632.") from e
  geographic = parsed_crs.is_geographic
  if geojson:
    keys = ("x", "y")
  else:
    keys = ("lon", "lat") if geographic else ("x", "y")
  coords = [_column(frame, key, columns.get(key, ""), path) for key in keys]
  x, y = (pd.to_numeric(frame[c], errors="coerce").to_numpy(np.float64)
          for c in coords)
  missing = ~(np.isfinite(x) & np.isfinite(y))
  if missing.any():
    raise errors.UserError(
        f"{path}: no numeric coordinates ({', '.join(map(str, coords))}) at "
        f"{_listed(where, missing)}. Fill them in or delete those rows.")
  if geographic:
    _check_geographic(x, y, where, path)
  ec_name = _column(frame, "ec", columns.get("ec", ""), path)
  ec = pd.to_numeric(frame[ec_name], errors="coerce").to_numpy(
      np.float64) * tables.EC_UNITS[ec_units]
  optional = {key: _column(frame, key, columns.get(key, ""), path, False)
              for key in ("sample_id", "date", "depth", "ec_method")}
  values = covariate_columns.columns(frame, covariates, path)
  if optional["ec_method"]:
    ec_methods.check_column(frame[optional["ec_method"]], ec_method,
                            str(path), where)
  text = {key: (frame[name].fillna("").astype(str).str.strip().to_numpy(str)
                if name else np.full(len(frame), ""))
          for key, name in optional.items()}
  if not optional["sample_id"]:
    text["sample_id"] = np.array([f"point{i}" for i in range(len(frame))])
  no_ec = ~np.isfinite(ec)
  if no_ec.all():
    raise errors.UserError(f"{path}: no numeric EC in column {ec_name!r}.")
  if no_ec.any():
    logging.warning("%s: dropped %d of %d points without a numeric %s (%s).",
                    path.name, int(no_ec.sum()), len(ec), ec_name,
                    _listed(where, no_ec))
  negative = ec < 0
  if negative.any():
    raise errors.UserError(
        f"{path}: negative EC in column {ec_name!r} at "
        f"{_listed(where, negative)}; EC cannot be negative.")
  high = ec > max_ec
  if high.any():
    raise errors.UserError(
        f"{path}: EC up to {np.nanmax(ec):g} dS/m in column {ec_name!r} at "
        f"{_listed(where, high)} (read as {ec_units}); no soil extract "
        f"reaches {max_ec:g} dS/m. Are the values in µS/cm or mS/m? Set "
        "--config.data.points_ec_units=uS/cm (or the units they are in); "
        "raise --config.data.max_ec only for real brines.")
  keep = ~no_ec
  ids = text["sample_id"][keep]
  duplicated = pd.Index(ids).duplicated(keep=False) & (ids != "")
  if duplicated.any():
    raise errors.UserError(
        f"{path}: sample id used twice at {_listed(where[keep], duplicated)}"
        "; give each point its own id (the id pairs a point with its lab "
        "spectrum).")
  return Points(x=x[keep], y=y[keep], crs=parsed_crs.to_string(),
                ec=ec[keep], sample_id=ids, date=text["date"][keep],
                depth=text["depth"][keep], where=where[keep], path=path,
                covariates=values[keep])
