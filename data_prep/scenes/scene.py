"""The `Scene`: one hyperspectral image as surface reflectance fractions.

Readers hand raw band values to `from_raw`, which applies the one set of rules
every format shares: fill values become NaN, all-fill bands are bad, pixels
without data in the good bands are nodata, pixels with NaN/Inf in a good band
are nodata too and flagged `non_finite` (a few bad pixels never stop a
scene), percent or x10000 scaling is detected (and said), and implausible
values stop with a clear error.
"""
import dataclasses
from typing import Any, Optional

from absl import logging
import affine
import numpy as np

from deepsalt_spectral import errors
from deepsalt_spectral import sensors

# Median valid value above which raw values are taken as scaled reflectance:
# above 150 they are x10000 (integer products), above 1.5 percent.
_X10000_MEDIAN = 150.0
_PERCENT_MEDIAN = 1.5
# Atmospheric correction leaves small negatives over dark targets; many
# values below this (or any below _NEGATIVE_HARD) mean a wrong scale/offset.
_NEGATIVE_SOFT = -0.01
_NEGATIVE_SOFT_SHARE = 0.01
_NEGATIVE_HARD = -0.5
# Good-band reflectance above this (median) is not surface reflectance.
_MAX_MEDIAN_FRACTION = 1.5
# Band centres below this are in micrometres (hyperspectral data reach
# at most ~2.6 um, at least ~350 nm).
_MICROMETRE_MAX = 20.0
# How a user states a file's scale (fraction = raw * scale).
_SCALE_FIX = ("set the file's scale: GeoTIFF 'gdal_edit.py -scale 0.0001' "
              "for reflectance x 10000, ENVI 'reflectance scale factor = "
              "10000' in the header")
_ALL_NODATA = ("{}: every pixel is nodata (all values equal the fill value). "
               "Check the nodata value (nodata=...) or the subset you read.")


@dataclasses.dataclass(frozen=True, eq=False)
class Scene:
  """A hyperspectral scene as surface reflectance fractions.

  Attributes:
    reflectance: float32 [bands, rows, cols], fraction (0..1). NaN where the
      file had no data (fill values) and at every band of nodata pixels.
    wavelength: float64 [bands] band centres in nm, strictly increasing.
    fwhm: float64 [bands] band widths in nm.
    bad: bool [bands], True for bands not to be used: flagged by the product,
      without any data, or centred in `sensors.BAD_WINDOWS` (so it equals
      `sensor.bad`).
    nodata: bool [rows, cols], True where the pixel has no data.
    crs: rasterio CRS or WKT string of `transform`'s map coordinates, or None.
    transform: affine.Affine from (col, row) pixel corners to map
      coordinates, or None for an image without georeferencing.
    name: a label (the file stem) used for logs and the sensor name.
    non_finite: bool [rows, cols], True where the file has data but a good
      band holds NaN/Inf; such pixels are nodata too. None: none.

  Scenes compare by identity (eq=False), as arrays have no single truth.
  """
  reflectance: np.ndarray
  wavelength: np.ndarray
  fwhm: np.ndarray
  bad: np.ndarray
  nodata: np.ndarray
  crs: Any = None
  transform: Optional[affine.Affine] = None
  name: str = "scene"
  non_finite: Optional[np.ndarray] = None

  def __post_init__(self):
    refl = self.reflectance
    if refl.ndim != 3 or refl.dtype != np.float32:
      raise errors.UserError(
          "Scene.reflectance must be float32 [bands, rows, cols], "
          f"got {refl.dtype} {refl.shape}.")
    n_bands, rows, cols = refl.shape
    if self.non_finite is None:
      object.__setattr__(self, "non_finite", np.zeros((rows, cols), bool))
    for field, shape in (("wavelength", (n_bands,)), ("fwhm", (n_bands,)),
                         ("bad", (n_bands,)), ("nodata", (rows, cols)),
                         ("non_finite", (rows, cols))):
      if np.shape(getattr(self, field)) != shape:
        raise errors.UserError(
            f"Scene.{field} must have shape {shape} to match "
            f"reflectance {refl.shape}, got "
            f"{np.shape(getattr(self, field))}.")
    check_wavelengths(self.wavelength, self.name)
    if np.all(self.bad):
      raise errors.UserError(
          f"{self.name}: every band is bad (flagged or without "
          "data); there is nothing to use in this scene.")
    if np.all(self.nodata & ~self.non_finite):
      raise errors.UserError(
          f"{self.name}: every pixel is nodata. Check the nodata "
          "value (pass nodata=...) or pick another scene/subset.")
    count = int(np.sum(~_finite_pixels(refl, self.bad) & ~self.nodata))
    if count:
      raise errors.UserError(
          f"{self.name}: {count} valid pixels with NaN/Inf reflectance in "
          "good bands. If they mark missing data, declare them nodata "
          "(nodata=float('nan')); otherwise fix the file.")
    if np.any(self.non_finite & ~self.nodata):
      raise errors.UserError(f"{self.name}: non_finite pixels must be nodata "
                             "too.")

  @property
  def good(self) -> np.ndarray:
    """Indices of the good bands."""
    return np.flatnonzero(~self.bad)

  @property
  def shape(self) -> tuple[int, int]:
    """(rows, cols)."""
    return self.nodata.shape

  @property
  def sensor(self) -> sensors.Sensor:
    """The scene's own band table as a `deepsalt_spectral.sensors.Sensor`."""
    return sensors.from_metadata(self.wavelength, self.fwhm,
                                 bbl=(~self.bad).astype(int), units="nm",
                                 name=self.name)


def check_wavelengths(wavelength: np.ndarray, name: str) -> None:
  """Raises ValueError unless wavelengths are finite and strictly increasing."""
  wavelength = np.asarray(wavelength)
  if not np.all(np.isfinite(wavelength)):
    raise errors.UserError(
        f"{name}: band wavelengths contain NaN/Inf; give every "
        "band a centre wavelength in nm.")
  steps = np.diff(wavelength)
  if np.any(steps <= 0):
    i = int(np.argmax(steps <= 0))
    raise errors.UserError(
        f"{name}: band wavelengths must be strictly increasing, but band "
        f"{i + 1} ({wavelength[i + 1]} nm) follows {wavelength[i]} nm. Reorder "
        "the bands by wavelength and drop duplicates.")


def nm_per_unit(wavelength, units: Optional[str], name: str) -> float:
  """1 for nanometres, 1000 for micrometres (guessed when units are unknown).

  Hyperspectral centres are 350..2600 nm or 0.35..2.6 um; declared units
  that contradict the values are an error, not a silent misreading.
  """
  unit = (units or "").strip().lower()
  top = float(np.nanmax(wavelength))
  looks_like = "micrometres" if top < _MICROMETRE_MAX else "nanometres"
  if unit in ("nanometers", "nanometer", "nanometres", "nm"):
    factor = 1.0
  elif unit in ("micrometers", "micrometer", "micrometres", "microns",
                "micron", "um", "µm"):
    factor = 1000.0
  else:
    factor = 1000.0 if looks_like == "micrometres" else 1.0
    logging.info("%s: wavelength units %r unknown; values up to %.4g read as "
                 "%s.", name, units, top, looks_like)
    return factor
  if (factor == 1000.0) != (looks_like == "micrometres"):
    raise errors.UserError(
        f"{name}: the wavelength units say {units!r} but the wavelengths end "
        f"at {top:.4g}, which looks like {looks_like}. Fix the units in the "
        "file's metadata (e.g. the ENVI header's 'wavelength units').")
  return factor


def fwhm_from_spacing(wavelength, name: str) -> np.ndarray:
  """Band widths estimated as the centre spacing, with a warning."""
  logging.warning("%s: no FWHM in the file; using the band spacing as FWHM.",
                  name)
  wavelength = np.asarray(wavelength, np.float64)
  if wavelength.size < 2:
    raise errors.UserError(
        f"{name}: a single band without FWHM; give its FWHM.")
  order = np.argsort(wavelength)
  fwhm = np.empty_like(wavelength)
  fwhm[order] = np.abs(np.gradient(wavelength[order]))
  return fwhm


def from_raw(values: np.ndarray, wavelength, fwhm, *, name: str,
             fill: Optional[np.ndarray] = None, bad=None,
             scale: Optional[float] = None, crs=None,
             transform: Optional[affine.Affine] = None,
             in_place: bool = False) -> Scene:
  """Builds a Scene from band values [bands, rows, cols], sorting out nodata.

  Args:
    values: band values [bands, rows, cols]; physical reflectance if the file
      carried its own scaling, else raw numbers.
    wavelength: band centres (nm); bands are sorted by it (multi-detector
      products list detectors one after the other).
    fwhm: band widths (nm).
    name: label for messages.
    fill: bool, broadcastable to `values`, True where the file has no data.
    bad: bool [bands], bands the product flags as bad (None: none flagged);
      bands without data or in `sensors.BAD_WINDOWS` are added.
    scale: multiply values by this to get fractions. None: detect percent and
      x10000 scaling from the median (with a warning).
    crs: the map CRS, or None.
    transform: affine pixel-to-map transform, or None.
    in_place: scale and mask `values` in place (a float32 array the caller
      does not use again): one scene's copy less at the peak.

  Returns:
    The validated Scene.
  """
  values = np.asarray(values, dtype=np.float32)
  n_bands = values.shape[0]
  fill = np.zeros(values.shape, bool) if fill is None else np.broadcast_to(
      fill, values.shape)
  bad = (np.zeros(n_bands, bool) if bad is None
         else np.asarray(bad, bool).reshape(n_bands)).copy()
  wavelength = np.asarray(wavelength, np.float64).reshape(n_bands)
  fwhm = np.asarray(fwhm, np.float64).reshape(n_bands)
  order = np.argsort(wavelength, kind="stable")
  if np.any(order != np.arange(n_bands)):
    # Multi-detector products (EnMAP, PRISMA) store bands detector by
    # detector; sorting moves the data with its band table.
    logging.info("%s: bands reordered by wavelength.", name)
    values, fill, bad = values[order], fill[order], bad[order]
    wavelength, fwhm = wavelength[order], fwhm[order]
  check_wavelengths(wavelength, name)
  # The same rule as the scene's Sensor: water-vapour and edge bands are bad.
  bad |= sensors.in_bad_window(wavelength)
  empty_bands = fill.all(axis=(1, 2))
  if np.any(empty_bands & ~bad):
    logging.info("%s: %d bands without any data marked bad.", name,
                 int(np.sum(empty_bands & ~bad)))
  bad |= empty_bands
  good = np.flatnonzero(~bad)
  if np.all(empty_bands):
    raise errors.UserError(_ALL_NODATA.format(name))
  if good.size == 0:
    raise errors.UserError(f"{name}: every band is flagged bad or lies in "
                           "sensors.BAD_WINDOWS; nothing is left to use.")
  good_fill = fill[good]
  nodata = good_fill.all(axis=0)
  partial = good_fill.any(axis=0) & ~nodata
  if np.any(partial):
    # Models need complete spectra: a pixel missing some good bands is unusable.
    logging.warning("%s: %d pixels lack data in some good bands; marked "
                    "nodata.", name, int(partial.sum()))
    nodata = nodata | partial
  non_finite = non_finite_pixels(values, bad, nodata, name)
  nodata = nodata | non_finite
  if np.all(nodata):
    raise errors.UserError(_ALL_NODATA.format(name))
  if scale is None:
    scale = _detect_scale(_valid(values, good, nodata), name)
  if not in_place:
    values = values * np.float32(scale) if scale != 1.0 else values.copy()
  elif scale != 1.0:
    values *= np.float32(scale)
  values[fill] = np.nan
  values[:, nodata] = np.nan
  _check_range(_valid(values, good, nodata), name)
  return Scene(reflectance=values, wavelength=wavelength, fwhm=fwhm, bad=bad,
               nodata=nodata, crs=crs, transform=transform, name=name,
               non_finite=non_finite)


def _valid(values: np.ndarray, good: np.ndarray,
           nodata: np.ndarray) -> np.ndarray:
  """values[good][:, ~nodata] ([good bands, pixels with data]) in one copy,
  where the two-step index makes two."""
  pixels = np.flatnonzero(~nodata.ravel())
  return values.reshape(values.shape[0], -1)[np.ix_(good, pixels)]


def _finite_pixels(values: np.ndarray, bad: np.ndarray) -> np.ndarray:
  """Pixels whose good bands are all finite ([bands, rows, cols] values).

  A sum is finite exactly when its terms are (reflectance cannot overflow
  float32), and it needs no copy of the good bands.
  """
  with np.errstate(invalid="ignore", over="ignore"):
    return np.isfinite(np.sum(values, axis=0,
                              where=~np.asarray(bad)[:, None, None]))


def non_finite_pixels(values: np.ndarray, bad: np.ndarray,
                      nodata: np.ndarray, name: str) -> np.ndarray:
  """Pixels with data but NaN/Inf in some good band.

  They are masked, never fatal: one bad pixel must not stop a scene. (NaN
  that marks missing data is declared with nodata=float('nan').)
  """
  found = ~nodata & ~_finite_pixels(values, bad)
  if found.any():
    logging.warning("%s: %d pixels with NaN/Inf values in good bands; masked "
                    "as non_finite (pass nodata=float('nan') if NaN marks "
                    "missing data).", name, int(found.sum()))
  return found


def _detect_scale(valid: np.ndarray, name: str) -> float:
  """1, 0.01 or 0.0001 from the median of the finite good-band values (a
  NaN pixel is masked later; it must not make the median NaN)."""
  finite = valid[np.isfinite(valid)]
  if not finite.size:
    return 1.0  # from_raw stops on a scene without valid pixels.
  median = float(np.median(finite))
  if median > _X10000_MEDIAN:
    logging.warning("%s: median value %.4g looks like reflectance x 10000; "
                    "dividing by 10000 (%s to override).", name, median,
                    _SCALE_FIX)
    return 1e-4
  if median > _PERCENT_MEDIAN:
    logging.warning("%s: median value %.4g looks like reflectance in percent; "
                    "dividing by 100 (%s to override).", name, median,
                    _SCALE_FIX)
    return 1e-2
  return 1.0


def _check_range(valid: np.ndarray, name: str) -> None:
  """Stops on values that cannot be surface reflectance fractions.

  `valid` is reordered: callers pass a copy (one copy less at the peak).
  """
  median = float(np.median(valid, overwrite_input=True))
  if median > _MAX_MEDIAN_FRACTION:
    raise errors.UserError(
        f"{name}: median reflectance {median:.4g} after scaling is not a "
        f"fraction (0..1); {_SCALE_FIX}.")
  low = valid < _NEGATIVE_SOFT
  if valid.min() < _NEGATIVE_HARD or low.mean() > _NEGATIVE_SOFT_SHARE:
    raise errors.UserError(
        f"{name}: {int(low.sum())} reflectance values below {_NEGATIVE_SOFT} "
        f"(minimum {valid.min():.4g}). Surface reflectance is not negative "
        "beyond noise: check the scale/offset, or declare the fill value "
        "with nodata=....")
  if np.any(valid < 0):
    logging.warning("%s: %d slightly negative reflectance values (minimum "
                    "%.4g) kept as they are (dark targets, noise).", name,
                    int(np.sum(valid < 0)), float(valid.min()))
