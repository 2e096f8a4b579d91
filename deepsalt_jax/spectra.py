"""Wavelength grids, spectral-response resampling and reflectance preprocessing.

Wavelengths are in nanometres throughout. Spectra put bands on the last axis;
leading axes are batch axes. Functions marked "numpy and jax" take either
array kind and return the same kind, so they can run inside `jax.jit`.
"""
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

Array = Union[np.ndarray, jax.Array]

# Gaussian FWHM = 2 sqrt(2 ln 2) sigma.
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
# SRFs are evaluated out to this many FWHM from the centre (7 sigma: the
# neglected tails hold < 1e-11 of the mass).
_SRF_HALF_WIDTH_FWHM = 3.0
# Source spacings wider than this multiple of the median spacing are gaps:
# nothing is interpolated across them.
_GAP_FACTOR = 2.0


def lab_wavelengths() -> np.ndarray:
  """The lab grid: 400..2450 nm every 10 nm without the water-vapour bands.

  1360..1450 nm and 1800..1950 nm (inclusive) are left out, which gives
  earthlib's 180-band grid. The teacher's input dimension is 180.
  """
  grid = np.arange(400.0, 2451.0, 10.0)
  water = (((grid >= 1360) & (grid <= 1450)) |
           ((grid >= 1800) & (grid <= 1950)))
  return grid[~water]


def _check_grid(wavelength, what: str) -> np.ndarray:
  """Returns `wavelength` as float64 1-D, strictly increasing and finite."""
  wavelength = np.asarray(wavelength, dtype=np.float64)
  if wavelength.ndim != 1 or wavelength.size < 1:
    raise ValueError(f"{what} must be a non-empty 1-D array of wavelengths "
                     f"in nm, got shape {wavelength.shape}.")
  if not np.all(np.isfinite(wavelength)):
    raise ValueError(f"{what} contains NaN or Inf.")
  if np.any(np.diff(wavelength) <= 0):
    bad = int(np.argmax(np.diff(wavelength) <= 0))
    raise ValueError(
        f"{what} must be strictly increasing; element {bad + 1} "
        f"({wavelength[bad + 1]}) follows {wavelength[bad]}. Sort the bands "
        "(and the data along the band axis) and drop duplicates first.")
  return wavelength


def _srf_and_support(src_wavelength, dst_center, dst_fwhm):
  """Gaussian SRFs on a 1 nm grid and the source's support on that grid.

  Returns (srf (n_dst, n_grid), interp (n_grid, n_src), supported (n_grid,)):
  `interp` linearly interpolates a source spectrum onto the grid and has zero
  rows where the grid is outside the source range or inside a source gap.
  """
  src = _check_grid(src_wavelength, "src_wavelength")
  center = np.asarray(dst_center, dtype=np.float64).reshape(-1)
  fwhm = np.asarray(dst_fwhm, dtype=np.float64).reshape(-1)
  if src.size < 2:
    raise ValueError("src_wavelength needs at least 2 wavelengths.")
  if center.shape != fwhm.shape:
    raise ValueError(f"dst_center {center.shape} and dst_fwhm {fwhm.shape} "
                     "must have the same length.")
  if np.any(~np.isfinite(fwhm) | (fwhm <= 0)) or np.any(~np.isfinite(center)):
    raise ValueError("dst_fwhm must be positive and finite, and dst_center "
                     "finite (both in nm).")

  reach = _SRF_HALF_WIDTH_FWHM * fwhm
  grid = np.arange(np.floor(np.min(center - reach)),
                   np.ceil(np.max(center + reach)) + 1.0)
  sigma = fwhm / _FWHM_PER_SIGMA
  srf = np.exp(-0.5 * ((grid[None, :] - center[:, None]) / sigma[:, None])**2)
  srf[np.abs(grid[None, :] - center[:, None]) > reach[:, None]] = 0.0

  # Linear interpolation weights between the bracketing source samples.
  left = np.clip(np.searchsorted(src, grid, side="right") - 1, 0, src.size - 2)
  step = np.diff(src)
  frac = (grid - src[left]) / step[left]
  gap = step > _GAP_FACTOR * np.median(step)
  supported = (grid >= src[0]) & (grid <= src[-1])
  # Inside a gap only the gap's end points themselves are supported.
  supported &= ~(gap[left] & (frac > 0) & (frac < 1))
  rows = np.nonzero(supported)[0]
  interp = np.zeros((grid.size, src.size))
  interp[rows, left[rows]] = 1.0 - frac[rows]
  interp[rows, left[rows] + 1] += frac[rows]
  return srf, interp, supported


def resampling_matrix(src_wavelength, dst_center, dst_fwhm) -> np.ndarray:
  """Matrix M (n_dst, n_src) so that `M @ x` resamples x onto sensor bands.

  Each band is a Gaussian spectral response (centre, FWHM in nm) evaluated on
  a 1 nm grid; the source spectrum reaches that grid by linear interpolation,
  never across a source gap wider than twice the median source spacing. SRF
  mass that falls in a gap or outside the source range is dropped and the row
  renormalised, so rows sum to 1. A band with no support at all (see
  `band_coverage`) gets a zero row; mask such bands.
  """
  srf, interp, _ = _srf_and_support(src_wavelength, dst_center, dst_fwhm)
  matrix = srf @ interp
  total = matrix.sum(axis=1, keepdims=True)
  return np.divide(matrix, total, out=np.zeros_like(matrix), where=total > 0)


def band_coverage(src_wavelength, dst_center, dst_fwhm) -> np.ndarray:
  """Fraction (n_dst,) of each band's SRF mass that the source grid supports."""
  srf, _, supported = _srf_and_support(src_wavelength, dst_center, dst_fwhm)
  return (srf @ supported.astype(np.float64)) / srf.sum(axis=1)


def _xp(x):
  return jnp if isinstance(x, jax.Array) else np


def resample(x: Array, matrix) -> Array:
  """Resamples spectra x (..., n_src) to (..., n_dst) with a resampling matrix.

  numpy and jax; the matrix is cast to x's floating dtype so float32 stays
  float32.
  """
  xp = _xp(x)
  x = xp.asarray(x)
  dtype = x.dtype if xp.issubdtype(x.dtype, xp.floating) else xp.float32
  return x.astype(dtype) @ xp.asarray(matrix, dtype=dtype).T


def snv(x: Array) -> Array:
  """Standard normal variate: centre and scale each spectrum (last axis).

  numpy and jax. Uses the sample standard deviation (ddof=1), as Barnes et
  al. (1989) define SNV.
  """
  xp = _xp(x)
  x = xp.asarray(x)
  mean = xp.mean(x, axis=-1, keepdims=True)
  std = xp.std(x, axis=-1, ddof=1, keepdims=True)
  return (x - mean) / std


def _savgol_operator(window: int, order: int, deriv: int, delta: float):
  """Savitzky-Golay operator on one window: out[j] = in @ op[:, j].

  Column window // 2 holds the convolution coefficients; the other columns
  are scipy's mode='interp' edge fits (polynomial fitted to the first/last
  window, evaluated at the edge samples).
  """
  return scipy.signal.savgol_filter(
      np.eye(window), window, order, deriv=deriv, delta=delta, axis=-1)


def savgol_derivative(x: Array, window: int = 11, order: int = 2,
                      deriv: int = 1, delta: float = 1.0) -> Array:
  """Savitzky-Golay smoothing derivative along the last axis.

  numpy input: exactly `scipy.signal.savgol_filter(x, window, order, deriv,
  delta, axis=-1)` (mode 'interp'). jax input: the same operator built from
  the same coefficients, jittable. `delta` is the band spacing, so deriv=1
  with delta=10 gives reflectance per nm on a 10 nm grid.
  """
  if window % 2 != 1 or window <= order or deriv > order or deriv < 0:
    raise ValueError(
        f"Savitzky-Golay needs an odd window > order >= deriv >= 0, got "
        f"window={window}, order={order}, deriv={deriv}.")
  if not isinstance(x, jax.Array):
    x = np.asarray(x)
  n = x.shape[-1]
  if n < window:
    raise ValueError(f"Spectra have {n} bands, fewer than the window "
                     f"({window}); use a smaller window.")
  if isinstance(x, np.ndarray):
    return scipy.signal.savgol_filter(
        x, window, order, deriv=deriv, delta=delta, axis=-1)
  op = jnp.asarray(_savgol_operator(window, order, deriv, delta), x.dtype)
  half = window // 2
  head = x[..., :window] @ op[:, :half]
  tail = x[..., n - window:] @ op[:, half + 1:]
  # Interior: correlate with the centre column, one shifted slice per tap.
  body = sum(x[..., k:n - window + 1 + k] * op[k, half] for k in range(window))
  return jnp.concatenate([head, body, tail], axis=-1)


def _upper_hull(wavelength: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Indices of the upper convex hull vertices (monotone chain)."""
  hull = []
  for i in range(wavelength.size):
    # Drop the last vertex while it lies on or below the chord to point i.
    while len(hull) >= 2:
      a, b = hull[-2], hull[-1]
      cross = ((wavelength[b] - wavelength[a]) * (y[i] - y[a]) -
               (y[b] - y[a]) * (wavelength[i] - wavelength[a]))
      if cross < 0:
        break
      hull.pop()
    hull.append(i)
  return np.asarray(hull)


def continuum_removal(x, wavelength) -> np.ndarray:
  """Divides spectra (..., n) by their upper convex hull (numpy).

  The result is 1 on the hull and below 1 inside absorption features; the
  band depth of a feature is 1 - min(CR). Reflectance must be positive.
  """
  x = np.asarray(x, dtype=np.float64)
  wavelength = _check_grid(wavelength, "wavelength")
  if x.shape[-1] != wavelength.size:
    raise ValueError(f"Spectra have {x.shape[-1]} bands but wavelength has "
                     f"{wavelength.size}.")
  if np.any(~np.isfinite(x)) or np.any(x <= 0):
    raise ValueError("continuum_removal needs positive, finite reflectance; "
                     "mask bad bands and clip or offset the spectra first.")
  flat = x.reshape(-1, wavelength.size)
  out = np.empty_like(flat)
  for row, spectrum in enumerate(flat):
    hull = _upper_hull(wavelength, spectrum)
    continuum = np.interp(wavelength, wavelength[hull], spectrum[hull])
    out[row] = spectrum / continuum
  return out.reshape(x.shape)
