"""Imaging-spectrometer band definitions: centres, FWHM and bad bands.

A `Sensor` holds one row per band, sorted by wavelength (nm). Built-in
sensors (`builtin`) are parametric, so nothing is read from disk; band tables
of other instruments come from a CSV file (`from_csv`) or from a scene's band
metadata (`from_metadata`).
"""
import dataclasses
import functools
import pathlib
from typing import Optional, Sequence, Union

import numpy as np
from scipy.interpolate import CubicSpline

from deepsalt_spectral import errors

SENSORS = ("enmap", "prisma", "emit")

# Open intervals (nm) whose band centres are bad everywhere: detector edges
# with low signal, and the 1.4 and 1.9 um water-vapour absorptions where the
# atmosphere leaves almost no surface signal. The 1.4 um window starts at
# 1325 nm because EnMAP L2A products flag every band from 1331 nm on in their
# bad-band list (checked against real tiles in tests/test_sensors.py).
BAD_WINDOWS = ((0.0, 400.0), (1325.0, 1460.0), (1790.0, 1960.0),
               (2450.0, np.inf))

# Tables whose largest wavelength is below this are in micrometres.
_MICROMETRE_LIMIT = 100.0
_NM_UNITS = ("nm", "nanometer", "nanometers", "nanometre", "nanometres")
_UM_UNITS = ("um", "µm", "micrometer", "micrometers", "micrometre",
             "micrometres", "micron", "microns")


def in_bad_window(wavelength) -> np.ndarray:
  """True where a band centre (nm) lies inside one of BAD_WINDOWS."""
  wavelength = np.asarray(wavelength, dtype=np.float64)
  bad = np.zeros(wavelength.shape, dtype=bool)
  for lo, hi in BAD_WINDOWS:
    bad |= (wavelength > lo) & (wavelength < hi)
  return bad


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Sensor:
  """Bands of an imaging spectrometer (all wavelengths in nm).

  Attributes:
    name: short sensor name.
    wavelength: (n,) float64 band centres, strictly increasing.
    fwhm: (n,) float64 full widths at half maximum, positive.
    bad: (n,) bool, True for bands to drop (water vapour, detector edges,
      bands the data provider flags).

  Arrays are stored read-only. Sensors compare by identity (eq=False) since
  element-wise array equality has no single truth value.
  """
  name: str
  wavelength: np.ndarray
  fwhm: np.ndarray
  bad: np.ndarray

  def __post_init__(self):
    wavelength = np.array(self.wavelength, dtype=np.float64)
    fwhm = np.array(self.fwhm, dtype=np.float64)
    bad = np.array(self.bad, dtype=bool)
    if wavelength.ndim != 1 or wavelength.size == 0:
      raise errors.UserError(
          f"Sensor {self.name!r}: wavelength must be a non-empty "
          f"1-D array, got shape {wavelength.shape}.")
    if fwhm.shape != wavelength.shape or bad.shape != wavelength.shape:
      raise errors.UserError(
          f"Sensor {self.name!r}: wavelength {wavelength.shape}, fwhm "
          f"{fwhm.shape} and bad {bad.shape} must have the same shape.")
    _check_wavelength(wavelength, self.name)
    if not np.all(np.isfinite(fwhm) & (fwhm > 0)):
      raise errors.UserError(
          f"Sensor {self.name!r}: every FWHM must be a positive "
          f"number of nm; band {int(np.argmin(fwhm > 0))} "
          "is not.")
    for field, value in (("wavelength", wavelength), ("fwhm", fwhm),
                         ("bad", bad)):
      value.setflags(write=False)
      object.__setattr__(self, field, value)

  def __repr__(self) -> str:
    return (f"Sensor({self.name!r}, {self.n_bands} bands "
            f"{self.wavelength[0]:.1f}-{self.wavelength[-1]:.1f} nm, "
            f"{self.good.size} good)")

  @property
  def n_bands(self) -> int:
    return int(self.wavelength.size)

  @property
  def good(self) -> np.ndarray:
    """Integer indices of the good bands."""
    return np.flatnonzero(~self.bad)

  @property
  def good_wavelength(self) -> np.ndarray:
    return self.wavelength[self.good]

  @property
  def good_fwhm(self) -> np.ndarray:
    return self.fwhm[self.good]


def _check_wavelength(wavelength: np.ndarray, name: str):
  """Raises ValueError unless centres are finite nm, strictly increasing."""
  if not np.all(np.isfinite(wavelength)):
    raise errors.UserError(f"Sensor {name!r}: wavelengths contain NaN or Inf.")
  if np.max(wavelength) < _MICROMETRE_LIMIT:
    raise errors.UserError(
        f"Sensor {name!r}: wavelengths end at {np.max(wavelength)}, which "
        "looks like micrometres; Sensor takes nm (multiply by 1000, or load "
        "with from_csv / from_metadata(units='um')).")
  step = np.diff(wavelength)
  if np.any(step <= 0):
    i = int(np.argmax(step <= 0))
    what = "duplicate" if step[i] == 0 else "unsorted"
    raise errors.UserError(
        f"Sensor {name!r}: {what} band centres: band {i + 1} "
        f"({wavelength[i + 1]} nm) follows band {i} ({wavelength[i]} nm). "
        "Centres must be strictly increasing; reorder the bands (and the "
        "image's band axis) with np.argsort and drop duplicates.")


def _to_nm(wavelength, fwhm, units: str, name: str):
  """Converts both columns to float64 nm according to `units`."""
  wavelength = np.asarray(wavelength, dtype=np.float64).reshape(-1)
  fwhm = np.asarray(fwhm, dtype=np.float64).reshape(-1)
  unit = units.strip().lower()
  if unit in _UM_UNITS:
    return wavelength * 1000.0, fwhm * 1000.0
  if unit not in _NM_UNITS:
    raise errors.UserError(
        f"Sensor {name!r}: unknown wavelength units {units!r}; "
        f"use one of {_NM_UNITS + _UM_UNITS}.")
  if wavelength.size and np.max(wavelength) < _MICROMETRE_LIMIT:
    raise errors.UserError(
        f"Sensor {name!r}: units are {units!r} but the wavelengths end at "
        f"{np.max(wavelength)}; they look like micrometres, pass units='um'.")
  return wavelength, fwhm


def from_metadata(wavelength: Sequence, fwhm: Sequence,
                  bbl: Optional[Sequence] = None, units: str = "nm",
                  name: str = "scene") -> Sensor:
  """Sensor from a scene's per-band tags (GDAL/ENVI wavelength, fwhm, bbl).

  Args:
    wavelength: band centres (numbers or numeric strings), in `units`.
    fwhm: band widths in the same units.
    bbl: optional bad-band list, 1 = good, 0 = bad (ENVI convention).
      Bands are bad if bbl says so or their centre is in BAD_WINDOWS.
    units: 'nm' or 'um' (and spelled-out variants, e.g. GDAL's
      'Nanometers'); nm values below 100 are refused as likely micrometres.
    name: sensor name.
  """
  wavelength, fwhm = _to_nm(wavelength, fwhm, units, name)
  bad = in_bad_window(wavelength)
  if bbl is not None:
    flags = np.asarray(bbl, dtype=np.float64).reshape(-1)
    if flags.shape != wavelength.shape:
      raise errors.UserError(
          f"Sensor {name!r}: bbl has {flags.size} entries for "
          f"{wavelength.size} bands.")
    if not np.all(np.isin(flags, (0.0, 1.0))):
      raise errors.UserError(
          f"Sensor {name!r}: bbl entries must be 1 (good) or "
          f"0 (bad), got {sorted(set(flags.tolist()))}.")
    bad |= flags == 0
  return Sensor(name, wavelength, fwhm, bad)


def from_csv(path: Union[str, pathlib.Path], name: Optional[str] = None,
             sort: bool = False) -> Sensor:
  """Sensor from a CSV band table with header `wavelength,fwhm`.

  Units are inferred: a table whose largest wavelength is below 100 is in
  micrometres and both columns are converted to nm. Bad bands are those in
  BAD_WINDOWS. Some published tables list detectors one after the other
  (PRISMA: VNIR then SWIR) and so are not sorted; `sort=True` merges them
  by wavelength, otherwise unsorted centres raise ValueError.
  """
  path = pathlib.Path(path)
  name = path.stem if name is None else name
  table = np.genfromtxt(path, delimiter=",", names=True, dtype=np.float64)
  columns = table.dtype.names or ()
  if "wavelength" not in columns or "fwhm" not in columns:
    raise errors.UserError(
        f"{path}: expected a CSV header 'wavelength,fwhm', got "
        f"{columns}.")
  wavelength = np.atleast_1d(table["wavelength"])
  fwhm = np.atleast_1d(table["fwhm"])
  if np.any(np.isnan(wavelength)) or np.any(np.isnan(fwhm)):
    raise errors.UserError(
        f"{path}: empty or non-numeric wavelength/fwhm values.")
  units = "um" if np.max(wavelength) < _MICROMETRE_LIMIT else "nm"
  if sort:
    order = np.argsort(wavelength, kind="stable")
    wavelength, fwhm = wavelength[order], fwhm[order]
  return from_metadata(wavelength, fwhm, units=units, name=name)


@dataclasses.dataclass(frozen=True)
class _Detector:
  """Smooth dispersion model of one spectrometer detector.

  Band centre and FWHM are cubic splines of the detector pixel-column index
  through a few knots (least-squares fits to the published band tables).
  `dropped` lists index ranges [lo, hi) that the product does not deliver.
  """
  n: int
  knots: tuple[int, ...]
  centre: tuple[float, ...]
  fwhm: tuple[float, ...]
  dropped: tuple[tuple[int, int], ...] = ()

  def bands(self) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(self.n)
    for lo, hi in self.dropped:
      index = index[(index < lo) | (index >= hi)]
    return (CubicSpline(self.knots, self.centre)(index),
            CubicSpline(self.knots, self.fwhm)(index))


# Detector pairs overlap near 900-1000 nm; both detectors' bands are kept.
_DETECTORS = {
    # EnMAP L2A: VNIR 91 bands 418-993 nm (4.7-8.2 nm apart, FWHM 5.8-10.8),
    # SWIR 133 bands 902-2446 nm (7.5-12 nm apart, FWHM 7.2-11.4); the SWIR
    # detector's bands in the two deepest water-vapour absorptions are not
    # delivered.
    "enmap": (
        _Detector(91, (0, 8, 23, 42, 64, 90),
                  (418.94, 458.71, 530.31, 634.67, 786.02, 993.57),
                  (6.83, 5.91, 6.13, 7.31, 9.02, 10.86)),
        _Detector(155, (0, 14, 39, 72, 110, 154),
                  (902.41, 1048.16, 1343.47, 1717.86, 2087.17, 2445.74),
                  (9.1, 10.79, 11.37, 10.09, 8.55, 7.17),
                  dropped=((44, 49), (77, 94)))),
    # PRISMA L2: VNIR 63 bands 402-973 nm, SWIR 171 bands 943-2497 nm, both
    # <= 12 nm apart (FWHM 9-15).
    "prisma": (
        _Detector(63, (0, 6, 16, 29, 44, 62),
                  (403.21, 449.12, 522.91, 632.28, 780.97, 972.48),
                  (11.01, 9.08, 9.57, 11.33, 12.78, 12.96)),
        _Detector(171, (0, 15, 43, 79, 122, 170),
                  (942.03, 1088.9, 1394.31, 1765.25, 2143.32, 2497.14),
                  (11.15, 13.93, 14.41, 12.6, 10.62, 9.16))),
    # EMIT L2A: one detector, 285 bands 381-2493 nm about 7.4 nm apart
    # (FWHM 8.4-8.8).
    "emit": (
        _Detector(285, (0, 25, 72, 132, 203, 284),
                  (380.93, 566.78, 917.29, 1364.78, 1893.01, 2492.91),
                  (8.37, 8.45, 8.51, 8.6, 8.69, 8.82)),),
}


def builtin(name: str) -> Sensor:
  """A built-in sensor ('enmap', 'prisma' or 'emit'), bands sorted by centre.

  Centres match the published band tables within about 1 nm (see
  tests/test_sensors.py for the measured bounds); bad bands are BAD_WINDOWS.
  The result is cached: the same name gives the same (immutable) object.
  """
  key = name.strip().lower()
  if key not in _DETECTORS:
    raise errors.UserError(f"Unknown sensor {name!r}; built-in sensors are "
                           f"{SENSORS}. Load others with from_csv or "
                           "from_metadata.")
  return _build(key)


@functools.lru_cache(maxsize=None)
def _build(key: str) -> Sensor:
  centre, fwhm = (np.concatenate(columns) for columns in
                  zip(*(detector.bands() for detector in _DETECTORS[key])))
  order = np.argsort(centre, kind="stable")
  return from_metadata(centre[order], fwhm[order], name=key)
