"""Parsing core shared by the lab library readers.

`read_spectral_table` reads spectra stored one column per wavelength (nm)
or wavenumber (cm-1), `read_targets` reads EC with region and coordinates,
`on_lab_grid` puts spectra on the grid a dataset stores and `lab_examples`
joins them with the targets on sample id.

The grid a dataset stores (`deepsalt_spectral.lab_grid.LabGrid`):
- vis-NIR in nm: reflectance resampled to `lab_grid.visnir()` (the built-in
  benchmark's grid) with `sources.to_lab_grid`; absorbance in nm (LUCAS) is
  converted to reflectance first, as the SRF physics needs reflectance;
- MIR in cm-1: the instrument's own grid and quantity (absorbance stays
  absorbance), axis increasing.
"""
import dataclasses
import pathlib
import re
from typing import Iterator, Optional, Sequence, Union

from absl import logging
import numpy as np
import pandas as pd

from data_prep import csv_files
from data_prep import sources
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid
from deepsalt_spectral import resampling

PathLike = Union[str, pathlib.Path]
Columns = Union[str, Sequence[str]]

# Lab bands: Gaussian SRFs as wide as the lab grid spacing (the width
# `sources.to_lab_grid` resamples with).
LAB_FWHM_NM = 10.0
# Source columns beyond the lab grid by more than this are not read (the
# SRFs reach 3 FWHM; 2 FWHM keeps >99.9 % of their mass).
_MARGIN_NM = 2 * LAB_FWHM_NM
# Library columns read: the lab grid plus the margin.
LAB_READ_RANGE_NM = (float(resampling.lab_wavelengths()[0]) - _MARGIN_NM,
                     float(resampling.lab_wavelengths()[-1]) + _MARGIN_NM)
# A lab band needs this share of its SRF inside the library's range.
_MIN_COVERAGE = 0.45
# Median reflectance above this is percent.
_PERCENT_MEDIAN = 1.5
# Median absorbance above this is not absorbance (percent reflectance?).
_MAX_ABSORBANCE_MEDIAN = 5.0
# Wavelengths all below this are micrometres (vis-NIR-SWIR ends near 2.5).
_MICROMETRE_MAX = 20.0
# Column numbers above this are not wavelengths (nm) of a vis-NIR-SWIR
# library; FTIR (MIR) instruments write wavenumbers in decreasing order.
_MAX_NM = 2500.0
# EC unit -> factor to dS/m (1 mS/cm = 1 dS/m = 100 mS/m = 1000 uS/cm).
EC_UNITS = {"dS/m": 1.0, "mS/cm": 1.0, "mS/m": 0.01, "uS/cm": 0.001,
            "S/m": 10.0}
# No soil reaches this EC (dS/m); a median above it means wrong units.
_MAX_EC_MEDIAN = 100.0
NUMBER_COLUMN = r"^(\d+(?:\.\d+)?)$"


@dataclasses.dataclass(frozen=True)
class SpectralTable:
  """Library spectra: ids [n] (str), spectra [n, grid.size] on `grid` (in
  its quantity)."""
  ids: np.ndarray
  grid: lab_grid.LabGrid
  spectra: np.ndarray


def _pick(columns: Sequence[str], wanted: Columns, what: str,
          path, required: bool = True) -> Optional[str]:
  """The first of `wanted` found in `columns`, or a clear error."""
  wanted = [wanted] if isinstance(wanted, str) else list(wanted)
  for name in wanted:
    if name in columns:
      return name
  if not required:
    return None
  shown = ", ".join(list(columns)[:30]) + (" ..." if len(columns) > 30 else "")
  raise errors.UserError(f"{path}: no {what} column; expected one of {wanted}, "
                         f"found: {shown}. Rename the column or configure it.")


def _axis_columns(header, pattern: str, path, unit: str
                  ) -> tuple[list[str], np.ndarray, str]:
  """(names, axis, unit) of the spectral columns, axis increasing (columns
  stored in decreasing order are reversed) and unit detected if ''."""
  regex = re.compile(pattern)
  found = [(c, float(m.group(1))) for c in header if (m := regex.match(c))]
  if not found:
    raise errors.UserError(
        f"{path}: no spectral columns match {pattern!r}; found columns "
        f"{header[:20]}. Name them by wavelength in nm (e.g. '400', "
        "'400.5') or wavenumber in cm-1, or set the column pattern.")
  names, axis = map(list, zip(*found))
  values = np.array(axis)
  duplicated = sorted({w for w in axis if np.sum(values == w) > 1})
  if duplicated:
    raise errors.UserError(
        f"{path}: duplicated spectral columns {duplicated[:10]}; keep one "
        "column per wavelength or wavenumber.")
  step = np.sign(np.diff(values))
  if step.size and np.any(step != step[0]):
    i = int(np.argmax(step != step[0]))  # Columns i-1, i, i+1 turn back.
    raise errors.UserError(
        f"{path}: spectral columns are not sorted ('{names[i - 1]}', "
        f"'{names[i]}', '{names[i + 1]}'); write them in increasing or "
        "decreasing order.")
  descending = bool(step.size) and step[0] < 0
  if descending:
    names, values = names[::-1], values[::-1]
  return names, values, unit or _detect_unit(values, descending, path)


def _detect_unit(axis: np.ndarray, descending: bool, path) -> str:
  """'nm' up to 2500, 'cm-1' beyond when stored decreasing (as FTIR
  instruments write them); otherwise the user must say."""
  if axis[-1] <= _MAX_NM:
    return "nm"
  if descending:
    logging.info("%s: spectral columns %g-%g in decreasing order read as "
                 "wavenumbers (cm-1).", path, axis[-1], axis[0])
    return "cm-1"
  raise errors.UserError(
      f"{path}: spectral columns {axis[0]:g}-{axis[-1]:g} reach beyond "
      f"{_MAX_NM:g} in increasing order, so their unit is not clear; set it "
      "(data.library_unit) to 'cm-1' for wavenumbers (MIR) or 'nm'.")


def in_range(nm: np.ndarray, where) -> np.ndarray:
  """Which wavelengths lie in LAB_READ_RANGE_NM; none is an error."""
  lo, hi = LAB_READ_RANGE_NM
  keep = (nm >= lo) & (nm <= hi)
  if not keep.any() and nm.max() < _MICROMETRE_MAX:
    raise errors.UserError(
        f"{where}: its wavelengths ({nm.min():g}-{nm.max():g} nm) look like "
        "micrometres; name the columns in nm (0.4 um -> '400').")
  if not keep.any():
    raise errors.UserError(
        f"{where}: its wavelengths ({nm.min():g}-{nm.max():g} nm) lie outside "
        f"{lo:g}-{hi:g} nm, the vis-NIR-SWIR grid a library in nm is "
        "resampled to. If they are wavenumbers (MIR), set the unit "
        "(data.library_unit) to 'cm-1'.")
  return keep


def read_spectral_table(paths: Union[PathLike, Sequence[PathLike]], *,
                        id_column: Columns,
                        axis_pattern: str = NUMBER_COLUMN,
                        unit: str = "", quantity: str = "") -> SpectralTable:
  """Reads spectra from CSV files with one column per wavelength/wavenumber.

  Args:
    paths: one CSV (optionally .gz) or several with the same columns.
    id_column: the sample id column, or candidate names (first found).
    axis_pattern: regex whose group 1 is the column's wavelength (nm) or
      wavenumber (cm-1).
    unit: 'nm', 'cm-1' or '' (detected: `_detect_unit`). In nm only the
      columns within LAB_READ_RANGE_NM are read.
    quantity: 'reflectance' (fraction or percent: a median above 1.5 is
      percent, converted with a warning), 'absorbance' (log10(1/R)) or ''
      (what the unit's instruments write: reflectance in nm, absorbance in
      cm-1).

  Returns:
    SpectralTable as `to_spectral_table` describes.
  """
  if unit not in ("", *lab_grid.UNITS):
    raise errors.UserError(f"Library unit {unit!r}: use one of "
                           f"{', '.join(lab_grid.UNITS)} or '' (detect).")
  paths = [pathlib.Path(paths)] if isinstance(paths, (str, pathlib.Path)) else [
      pathlib.Path(p) for p in paths]
  if not paths:
    raise errors.UserError("No spectra files given.")
  frames, axis = [], None
  for path in paths:
    header = csv_files.header(path)
    id_name = _pick(header, id_column, "sample id", path)
    names, values, unit = _axis_columns(header, axis_pattern, path, unit)
    if unit == "nm":
      keep = in_range(values, path)
      names, values = [n for n, k in zip(names, keep) if k], values[keep]
    if axis is not None and not np.array_equal(values, axis):
      raise errors.UserError(
          f"{path}: spectral columns differ from {paths[0]}.")
    axis = values
    frame = csv_files.read(path, usecols=[id_name, *names],
                           dtype={id_name: str})
    values = frame[names].apply(pd.to_numeric, errors="coerce")
    frames.append(pd.DataFrame(values.to_numpy(np.float32),
                               index=frame[id_name].str.strip()))
  quantity = quantity or ("reflectance" if unit == "nm" else "absorbance")
  return to_spectral_table(pd.concat(frames), axis, unit, quantity,
                           ", ".join(p.name for p in paths))


def to_spectral_table(table: pd.DataFrame, axis: np.ndarray, unit: str,
                      quantity: str, where: str) -> SpectralTable:
  """Checks spectra [ids x axis] (increasing, in `unit`) in `quantity`.

  Rows with missing values are dropped (warning with the count); replicate
  rows of one id are averaged as stored (absorbance before conversion, as
  OSSL does for LUCAS). Reflectance in percent becomes a fraction; absorbance
  in nm becomes reflectance (the vis-NIR grid and the physics hold
  reflectance), absorbance in cm-1 stays absorbance.
  """
  if quantity not in lab_grid.QUANTITIES:
    raise errors.UserError(f"{where}: quantity {quantity!r}; use one of "
                           f"{', '.join(lab_grid.QUANTITIES)}.")
  missing = table.isna().any(axis=1)
  if missing.any():
    logging.warning("%s: dropped %d of %d spectra with missing or non-numeric "
                    "values.", where, int(missing.sum()), len(table))
    table = table[~missing]
  if table.empty:
    raise errors.UserError(f"{where}: no complete spectrum left.")
  if table.index.duplicated().any():
    logging.info("%s: averaged %d replicate spectra of the same id.", where,
                 int(table.index.duplicated().sum()))
    table = table.groupby(level=0, sort=False).mean()
  values = table.to_numpy(np.float64)
  median = float(np.median(values))
  if quantity == "absorbance":
    if median > _MAX_ABSORBANCE_MEDIAN:
      raise errors.UserError(
          f"{where}: median {median:.4g} is not absorbance log10(1/R) (percent "
          "reflectance?); set the quantity (data.library_quantity) to "
          "'reflectance'.")
    if unit == "nm":
      values, quantity = 10.0 ** -values, "reflectance"
  else:
    if median > _PERCENT_MEDIAN:
      logging.warning("%s: median reflectance %.4g looks like percent; "
                      "dividing by 100.", where, median)
      values = values / 100.0
    if np.median(values) <= 0 or np.median(values) > _PERCENT_MEDIAN:
      raise errors.UserError(
          f"{where}: median reflectance {np.median(values):.4g} is not a "
          "fraction; check the quantity (data.library_quantity) and units.")
  return SpectralTable(ids=table.index.to_numpy(str),
                       grid=lab_grid.LabGrid(axis, unit, quantity),
                       spectra=values.astype(np.float32))


def read_targets(path: PathLike, *, id_column: Columns, target_column: Columns,
                 target_units: str, region_column: Columns = (),
                 lat_column: Columns = (), lon_column: Columns = (),
                 default_region: str = "") -> pd.DataFrame:
  """EC targets (dS/m) with region, lat, lon per sample id.

  Returns a frame indexed by sample id with columns target, region, lat, lon
  (NaN where unknown). Rows without EC are dropped with a warning.
  """
  if target_units not in EC_UNITS:
    raise errors.UserError(f"Unknown EC units {target_units!r}; use one of "
                           f"{sorted(EC_UNITS)}.")
  path = pathlib.Path(path)
  header = csv_files.header(path)
  id_name = _pick(header, id_column, "sample id", path)
  target_name = _pick(header, target_column, "EC target", path)
  optional = {key: _pick(header, names, key, path, required=False)
              for key, names in (("region", region_column),
                                 ("lat", lat_column), ("lon", lon_column))}
  used = [id_name, target_name, *[c for c in optional.values() if c]]
  frame = csv_files.read(path, usecols=used, dtype={id_name: str})
  out = pd.DataFrame(index=frame[id_name].str.strip())
  ec = pd.to_numeric(frame[target_name], errors="coerce").to_numpy()
  out["target"] = ec * EC_UNITS[target_units]
  out["region"] = (frame[optional["region"]].astype(str).to_numpy()
                   if optional["region"] else default_region)
  for key in ("lat", "lon"):
    out[key] = (pd.to_numeric(frame[optional[key]], errors="coerce").to_numpy()
                if optional[key] else np.nan)
  missing = out["target"].isna()
  if missing.any():
    logging.warning("%s: dropped %d of %d rows without a numeric %s.",
                    path.name, int(missing.sum()), len(out), target_name)
    out = out[~missing]
  if out.index.duplicated().any():
    logging.warning("%s: %d duplicated sample ids; keeping the first row.",
                    path.name, int(out.index.duplicated().sum()))
    out = out[~out.index.duplicated()]
  if out.empty:
    raise errors.UserError(f"{path}: no row with a numeric {target_name}.")
  if (out["target"] < 0).any():
    raise errors.UserError(
        f"{path}: {int((out['target'] < 0).sum())} negative EC "
        f"values in {target_name}; EC cannot be negative.")
  if out["target"].median() > _MAX_EC_MEDIAN:
    raise errors.UserError(
        f"{path}: median EC {out['target'].median():.4g} dS/m after reading "
        f"{target_name} as {target_units} is not a soil EC; set the right "
        f"units ({sorted(EC_UNITS)}).")
  return out


def on_lab_grid(table: SpectralTable) -> SpectralTable:
  """The spectra on the grid a dataset stores: vis-NIR (nm) resampled to
  `lab_grid.visnir()`, MIR (cm-1) on the instrument's own grid."""
  if table.grid.unit == "cm-1":
    return table
  lab = resampling.lab_wavelengths()
  fwhm = np.full(lab.size, LAB_FWHM_NM)
  nm = table.grid.axis
  coverage = resampling.band_coverage(nm, lab, fwhm)
  if np.any(coverage < _MIN_COVERAGE):
    raise errors.UserError(
        f"The library covers {nm[0]}-{nm[-1]} nm but the lab grid needs "
        f"{lab[0]}-{lab[-1]} nm; lab bands {lab[coverage < _MIN_COVERAGE][:10]}"
        " nm are not covered.")
  return SpectralTable(table.ids, lab_grid.visnir(), sources.to_lab_grid(
      table.spectra, nm).astype(np.float32))


def lab_examples(table: SpectralTable,
                 targets: pd.DataFrame) -> Iterator[tuple[str, dict]]:
  """Joins spectra (as stored: see `on_lab_grid`) and targets on id; yields
  (key, record)."""
  ids = pd.Index(table.ids)
  common = ids.intersection(targets.index)
  if common.empty:
    raise errors.UserError(
        f"No sample id is shared by the spectra ({table.ids[:3].tolist()}, "
        f"...) and the targets ({targets.index[:3].tolist()}, ...); check "
        "the id columns.")
  logging.info("Joined %d samples (%d spectra without target, %d targets "
               "without spectrum).", common.size, ids.size - common.size,
               targets.index.size - common.size)
  spectra = table.spectra[ids.get_indexer(common)]
  joined = targets.loc[common]
  for i, sample_id in enumerate(common):
    yield sample_id, {
        "lab": spectra[i],
        "target": np.float32(joined["target"].iat[i]),
        "sample_id": sample_id,
        "region": str(joined["region"].iat[i]),
        "lat": np.float32(joined["lat"].iat[i]),
        "lon": np.float32(joined["lon"].iat[i]),
    }
