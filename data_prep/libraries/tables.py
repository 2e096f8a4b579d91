"""Parsing core shared by the lab library builders.

`read_spectral_table` reads spectra stored one column per wavelength,
`read_targets` reads EC with region and coordinates, and `lab_examples` joins
them on sample id and resamples the spectra to the lab grid
(`deepsalt_spectral.resampling.lab_wavelengths()`) with
`sources.to_lab_grid`, as the
shipped benchmark does.
"""
import csv
import dataclasses
import gzip
import pathlib
import re
from typing import Iterator, Optional, Sequence, Union

from absl import logging
import numpy as np
import pandas as pd

from data_prep import sources
from deepsalt_spectral import errors
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
# EC unit -> factor to dS/m (1 mS/cm = 1 dS/m = 100 mS/m = 1000 uS/cm).
EC_UNITS = {"dS/m": 1.0, "mS/cm": 1.0, "mS/m": 0.01, "uS/cm": 0.001,
            "S/m": 10.0}
# No soil reaches this EC (dS/m); a median above it means wrong units.
_MAX_EC_MEDIAN = 100.0
NUMBER_COLUMN = r"^(\d+(?:\.\d+)?)$"


@dataclasses.dataclass(frozen=True)
class SpectralTable:
  """Library spectra: ids [n] (str), wavelength [w] nm, spectra [n, w]."""
  ids: np.ndarray
  wavelength: np.ndarray
  spectra: np.ndarray


def _raw_header(path: pathlib.Path) -> list[str]:
  """The CSV header as written (pandas renames duplicates, so read it raw)."""
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rt", newline="") as f:
    return [c.strip() for c in next(csv.reader(f), [])]


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


def _wavelength_columns(header, pattern: str, path, wavelength_range):
  """(names, nm) of the wavelength columns, checked sorted and unique."""
  regex = re.compile(pattern)
  found = [(c, float(m.group(1))) for c in header if (m := regex.match(c))]
  if not found:
    raise errors.UserError(
        f"{path}: no wavelength columns match {pattern!r}; found columns "
        f"{header[:20]}. Name them by wavelength in nm (e.g. '400', "
        "'400.5') or set the wavelength pattern.")
  names, nm = zip(*found)
  nm = np.array(nm)
  duplicated = sorted({w for w in nm.tolist() if np.sum(nm == w) > 1})
  if duplicated:
    raise errors.UserError(
        f"{path}: duplicated wavelength columns {duplicated[:10]}"
        " nm; keep one column per wavelength.")
  if np.any(np.diff(nm) <= 0):
    i = int(np.argmax(np.diff(nm) <= 0))
    raise errors.UserError(
        f"{path}: wavelength columns are not sorted ('{names[i]}'"
        f" comes before '{names[i + 1]}'); write them in "
        "increasing wavelength order.")
  keep = in_range(nm, wavelength_range, path)
  return [n for n, k in zip(names, keep) if k], nm[keep]


def in_range(nm: np.ndarray, wavelength_range: Optional[tuple[float, float]],
             where) -> np.ndarray:
  """Which wavelengths lie in `wavelength_range`; none is an error."""
  if wavelength_range is None:
    return np.ones(nm.size, bool)
  keep = (nm >= wavelength_range[0]) & (nm <= wavelength_range[1])
  if not keep.any():
    raise errors.UserError(
        f"{where}: its wavelengths ({nm.min():g}-{nm.max():g} nm) lie outside "
        f"{wavelength_range[0]:g}-{wavelength_range[1]:g} nm, the vis-NIR-SWIR "
        "range the models read. Mid-infrared (MIR) libraries are not "
        "supported yet; use a vis-NIR library (350-2500 nm).")
  return keep


def read_spectral_table(paths: Union[PathLike, Sequence[PathLike]], *,
                        id_column: Columns,
                        wavelength_pattern: str = NUMBER_COLUMN,
                        quantity: str = "reflectance",
                        wavelength_range: Optional[tuple[float, float]] = None
                        ) -> SpectralTable:
  """Reads spectra from CSV files with one column per wavelength.

  Args:
    paths: one CSV (optionally .gz) or several with the same columns.
    id_column: the sample id column, or candidate names (first found).
    wavelength_pattern: regex whose group 1 is the wavelength in nm.
    quantity: 'reflectance' (fraction or percent: a median above 1.5 is
      percent, converted with a warning) or 'absorbance' (log10(1/R)).
    wavelength_range: (lo, hi) nm; columns outside are not read.

  Returns:
    SpectralTable of reflectance fractions. Rows with missing values are
    dropped (warning with the count); replicate rows of one id are averaged
    as stored (absorbance before conversion, as OSSL does for LUCAS).
  """
  if quantity not in ("reflectance", "absorbance"):
    raise errors.UserError(
        f"quantity must be 'reflectance' or 'absorbance', got "
        f"{quantity!r}.")
  paths = [pathlib.Path(paths)] if isinstance(paths, (str, pathlib.Path)) else [
      pathlib.Path(p) for p in paths]
  if not paths:
    raise errors.UserError("No spectra files given.")
  frames, wavelength = [], None
  for path in paths:
    header = _raw_header(path)
    id_name = _pick(header, id_column, "sample id", path)
    names, nm = _wavelength_columns(header, wavelength_pattern, path,
                                    wavelength_range)
    if wavelength is not None and not np.array_equal(nm, wavelength):
      raise errors.UserError(
          f"{path}: wavelength columns differ from {paths[0]}.")
    wavelength = nm
    frame = pd.read_csv(path, usecols=[id_name, *names],
                        dtype={id_name: str})
    values = frame[list(names)].apply(pd.to_numeric, errors="coerce")
    frames.append(pd.DataFrame(values.to_numpy(np.float32),
                               index=frame[id_name].str.strip()))
  return to_spectral_table(pd.concat(frames), wavelength, quantity,
                           ", ".join(p.name for p in paths))


def to_spectral_table(table: pd.DataFrame, wavelength: np.ndarray,
                      quantity: str, where: str) -> SpectralTable:
  """Checks and converts spectra [ids x wavelengths] as read_spectral_table
  describes (drops incomplete rows, averages replicates, to fractions)."""
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
      raise errors.UserError(f"{where}: median {median:.4g} is not absorbance "
                             "log10(1/R); use quantity='reflectance'.")
    values = 10.0 ** -values
  elif median > _PERCENT_MEDIAN:
    logging.warning("%s: median reflectance %.4g looks like percent; "
                    "dividing by 100.", where, median)
    values = values / 100.0
  if np.median(values) <= 0 or np.median(values) > _PERCENT_MEDIAN:
    raise errors.UserError(
        f"{where}: median reflectance {np.median(values):.4g} is "
        "not a fraction; check the quantity and units.")
  return SpectralTable(ids=table.index.to_numpy(str), wavelength=wavelength,
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
  header = _raw_header(path)
  id_name = _pick(header, id_column, "sample id", path)
  target_name = _pick(header, target_column, "EC target", path)
  optional = {key: _pick(header, names, key, path, required=False)
              for key, names in (("region", region_column),
                                 ("lat", lat_column), ("lon", lon_column))}
  used = [id_name, target_name, *[c for c in optional.values() if c]]
  frame = pd.read_csv(path, usecols=used, dtype={id_name: str})
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


def lab_examples(table: SpectralTable,
                 targets: pd.DataFrame) -> Iterator[tuple[str, dict]]:
  """Joins spectra and targets on id; yields (key, record) on the lab grid."""
  lab = resampling.lab_wavelengths()
  fwhm = np.full(lab.size, LAB_FWHM_NM)
  coverage = resampling.band_coverage(table.wavelength, lab, fwhm)
  if np.any(coverage < _MIN_COVERAGE):
    raise errors.UserError(
        f"The library covers {table.wavelength[0]}-{table.wavelength[-1]} nm "
        f"but the lab grid needs {lab[0]}-{lab[-1]} nm; lab bands "
        f"{lab[coverage < _MIN_COVERAGE][:10]} nm are not covered.")
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
  rows = ids.get_indexer(common)
  lab_spectra = sources.to_lab_grid(table.spectra[rows],
                                    table.wavelength).astype(np.float32)
  joined = targets.loc[common]
  for i, sample_id in enumerate(common):
    yield sample_id, {
        "lab": lab_spectra[i],
        "target": np.float32(joined["target"].iat[i]),
        "sample_id": sample_id,
        "region": str(joined["region"].iat[i]),
        "lat": np.float32(joined["lat"].iat[i]),
        "lon": np.float32(joined["lon"].iat[i]),
    }
