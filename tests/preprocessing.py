"""Preprocessing of soil spectra: SNV, Savitzky-Golay, continuum removal.

Not used by the product (the networks and baselines read spectra as they
are): kept here beside its known-answer tests (test_spectra.py).

Spectra put bands on the last axis. SNV and Savitzky-Golay fit any lab grid
(`lab_grid.LabGrid`: reflectance or absorbance, nm or cm-1; `delta` is the
grid step in its unit); continuum removal is for reflectance only. Functions
marked "numpy and jax" take either array kind and return the same kind, so
they can run inside `jax.jit`.
"""
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

from deepsalt_spectral import errors
from deepsalt_spectral import resampling

Array = Union[np.ndarray, jax.Array]


def snv(x: Array) -> Array:
  """Standard normal variate: centre and scale each spectrum (last axis).

  numpy and jax. Uses the sample standard deviation (ddof=1), as Barnes et
  al. (1989) define SNV.
  """
  xp = resampling.array_module(x)
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
    raise errors.UserError(
        f"Savitzky-Golay needs an odd window > order >= deriv >= 0, got "
        f"window={window}, order={order}, deriv={deriv}.")
  if not isinstance(x, jax.Array):
    x = np.asarray(x)
  n = x.shape[-1]
  if n < window:
    raise errors.UserError(f"Spectra have {n} bands, fewer than the window "
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
  band depth of a feature is 1 - min(CR). Reflectance must be positive; in
  absorbance (MIR) the features are peaks, not dips, so this does not apply.
  """
  x = np.asarray(x, dtype=np.float64)
  wavelength = resampling.check_grid(wavelength, "wavelength")
  if x.shape[-1] != wavelength.size:
    raise errors.UserError(
        f"Spectra have {x.shape[-1]} bands but wavelength has "
        f"{wavelength.size}.")
  if np.any(~np.isfinite(x)) or np.any(x <= 0):
    raise errors.UserError(
        "continuum_removal needs positive, finite reflectance; "
        "mask bad bands and clip or offset the spectra first.")
  flat = x.reshape(-1, wavelength.size)
  out = np.empty_like(flat)
  for row, spectrum in enumerate(flat):
    hull = _upper_hull(wavelength, spectrum)
    continuum = np.interp(wavelength, wavelength[hull], spectrum[hull])
    out[row] = spectrum / continuum
  return out.reshape(x.shape)
