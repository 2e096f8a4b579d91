"""Wavelength grids, spectral-response resampling and its physics inverse.

Wavelengths are in nanometres throughout. Spectra put bands on the last axis;
leading axes are batch axes. `resample` takes numpy or jax arrays and returns
the same kind, so it can run inside `jax.jit`.

A sensor samples a lab spectrum x through its spectral response functions,
y = R x (`resampling_matrix`). `inverse_matrix` is the regularised inverse
that carries sensor bands back to a lab grid: the SAU's physics start.
"""
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

from deepsalt_spectral import errors

Array = Union[np.ndarray, jax.Array]

# Gaussian FWHM = 2 sqrt(2 ln 2) sigma.
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
# SRFs are evaluated out to this many FWHM from the centre (7 sigma: the
# neglected tails hold < 1e-11 of the mass).
_SRF_HALF_WIDTH_FWHM = 3.0
# Source spacings wider than this multiple of the median spacing are gaps:
# nothing is interpolated across them.
GAP_FACTOR = 2.0


def lab_wavelengths() -> np.ndarray:
  """The lab grid: 400..2450 nm every 10 nm without the water-vapour bands.

  1360..1450 nm and 1800..1950 nm (inclusive) are left out, which gives
  earthlib's 180-band grid. The teacher's input dimension is 180.
  """
  grid = np.arange(400.0, 2451.0, 10.0)
  water = (((grid >= 1360) & (grid <= 1450)) |
           ((grid >= 1800) & (grid <= 1950)))
  return grid[~water]


def check_grid(wavelength, what: str) -> np.ndarray:
  """Returns `wavelength` as float64 1-D, strictly increasing and finite."""
  wavelength = np.asarray(wavelength, dtype=np.float64)
  if wavelength.ndim != 1 or wavelength.size < 1:
    raise errors.UserError(
        f"{what} must be a non-empty 1-D array of wavelengths "
        f"in nm, got shape {wavelength.shape}.")
  if not np.all(np.isfinite(wavelength)):
    raise errors.UserError(f"{what} contains NaN or Inf.")
  if np.any(np.diff(wavelength) <= 0):
    bad = int(np.argmax(np.diff(wavelength) <= 0))
    raise errors.UserError(
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
  src = check_grid(src_wavelength, "src_wavelength")
  center = np.asarray(dst_center, dtype=np.float64).reshape(-1)
  fwhm = np.asarray(dst_fwhm, dtype=np.float64).reshape(-1)
  if src.size < 2:
    raise errors.UserError("src_wavelength needs at least 2 wavelengths.")
  if center.shape != fwhm.shape:
    raise errors.UserError(
        f"dst_center {center.shape} and dst_fwhm {fwhm.shape} "
        "must have the same length.")
  if np.any(~np.isfinite(fwhm) | (fwhm <= 0)) or np.any(~np.isfinite(center)):
    raise errors.UserError(
        "dst_fwhm must be positive and finite, and dst_center "
        "finite (both in nm).")

  reach = _SRF_HALF_WIDTH_FWHM * fwhm
  grid = np.arange(np.floor(np.min(center - reach)),
                   np.ceil(np.max(center + reach)) + 1.0)
  sigma = fwhm / _FWHM_PER_SIGMA
  # Each SRF is evaluated on a window of the grid around its reach only (a
  # dataset build makes hundreds of these matrices); zero beyond the reach.
  start = np.maximum(np.searchsorted(grid, center - reach) - 1, 0)
  stop = np.minimum(np.searchsorted(grid, center + reach, side="right") + 1,
                    grid.size)
  band, offset = np.nonzero(np.arange(np.max(stop - start))[None, :]
                            < (stop - start)[:, None])
  column = start[band] + offset
  distance = grid[column] - center[band]
  srf = np.zeros((center.size, grid.size))
  srf[band, column] = np.where(
      np.abs(distance) > reach[band], 0.0,
      np.exp(-0.5 * (distance / sigma[band])**2))

  # Linear interpolation weights between the bracketing source samples.
  left = np.clip(np.searchsorted(src, grid, side="right") - 1, 0, src.size - 2)
  step = np.diff(src)
  frac = (grid - src[left]) / step[left]
  gap = step > GAP_FACTOR * np.median(step)
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


def array_module(x):
  """jax.numpy for jax arrays, numpy otherwise."""
  return jnp if isinstance(x, jax.Array) else np


def resample(x: Array, matrix) -> Array:
  """Resamples spectra x (..., n_src) to (..., n_dst) with a resampling matrix.

  numpy and jax; the matrix is cast to x's floating dtype so float32 stays
  float32.
  """
  xp = array_module(x)
  x = xp.asarray(x)
  dtype = x.dtype if xp.issubdtype(x.dtype, xp.floating) else xp.float32
  return x.astype(dtype) @ xp.asarray(matrix, dtype=dtype).T




# Identity jitter relative to mean(diag(R^T R)): keeps the system solvable
# when a sensor leaves a whole lab segment uncovered; negligible otherwise.
_JITTER = 1e-8


def second_difference(wavelength) -> np.ndarray:
  """Second-difference operator (m, n) within contiguous grid segments.

  Rows are divided differences scaled by the median spacing squared, so on a
  uniform grid they are the familiar (1, -2, 1) stencils. Spacings wider than
  GAP_FACTOR times the median split segments: no smoothness across a gap.
  """
  wl = np.asarray(wavelength, dtype=np.float64)
  step = np.diff(wl)
  h = np.median(step)
  rows = []
  for i in range(1, wl.size - 1):
    left, right = step[i - 1], step[i]
    if max(left, right) > GAP_FACTOR * h:
      continue
    row = np.zeros(wl.size)
    row[i - 1:i + 2] = (2.0 * h * h / (left + right)) * np.array(
        [1.0 / left, -1.0 / left - 1.0 / right, 1.0 / right])
    rows.append(row)
  return np.asarray(rows).reshape(-1, wl.size)


def inverse_matrix(lab_wavelength, sensor_wavelength, sensor_fwhm,
                   ridge: float = 1e-2) -> np.ndarray:
  """Regularised inverse (n_lab, n_sat) of the SRF resampling matrix.

  Returns P = (R^T R + ridge * s * D^T D)^-1 R^T, the Tikhonov solution of
  R x = y that penalises curvature (D: `second_difference` of the lab grid,
  s = mean(diag(R^T R)) so `ridge` does not depend on the sensor). A
  curvature penalty rather than the plain (R^T R + ridge I) ridge: the latter
  pulls lab bands that no good sensor band covers (e.g. 1350 nm, beside the
  1400 nm water window) to zero reflectance, while this one extrapolates them
  smoothly. Measured on the 3,720 ICRAF lab spectra with EnMAP's good bands:
  ridge=1e-2 reconstructs P R x with RMSE 3e-4 reflectance (white sensor
  noise gain 1.75); ridge=1e-1 gives RMSE 7e-4 at noise gain 1.0 but flattens
  the 2200 nm clay feature (max error 0.02).

  Args:
    lab_wavelength: (n_lab,) lab grid in nm, e.g. `lab_wavelengths()`.
    sensor_wavelength: (n_sat,) centres of the sensor's good bands (nm).
    sensor_fwhm: (n_sat,) their FWHM (nm).
    ridge: relative weight of the curvature penalty; > 0.

  Returns:
    float64 array (n_lab, n_sat): lab ~= satellite @ P.T.
  """
  if not ridge > 0:
    raise errors.UserError(
        f"ridge must be > 0 (the curvature penalty makes the "
        f"inverse well posed), got {ridge}.")
  r = resampling_matrix(lab_wavelength, sensor_wavelength, sensor_fwhm)
  gram = r.T @ r
  scale = np.trace(gram) / gram.shape[0]
  if not scale > 0:
    raise errors.UserError(
        "No sensor band overlaps the lab grid: check that both "
        "wavelength arrays are in nm.")
  d = second_difference(lab_wavelength)
  system = gram + scale * (ridge * d.T @ d + _JITTER * np.eye(gram.shape[0]))
  return np.linalg.solve(system, r.T)
