"""Spectral Adaptation Unit: satellite spectrum -> the teacher's lab grid.

The SAU starts from physics. A sensor samples a lab spectrum x through its
spectral response functions, y = R x, with R the SRF resampling matrix
(`spectra.resampling_matrix`, n_sat x n_lab). R has more columns than
information where bands are wide or missing (water-vapour windows), so the
inverse map is regularised towards smooth spectra (`sau_init_matrix`). On
top, learned per-band gain and offset absorb atmospheric and illumination
residuals, the linear map itself is trainable, and a small residual MLP
(zero at init) corrects what stays nonlinear. Bad bands never enter: the
input holds the sensor's good bands only.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deepsalt_jax import spectra

# Segments of the lab grid are split where the spacing exceeds this multiple
# of the median spacing (the water-vapour gaps): no smoothness across a gap.
_GAP_FACTOR = 2.0
# Identity jitter relative to mean(diag(R^T R)): keeps the system solvable
# when a sensor leaves a whole lab segment uncovered; negligible otherwise.
_JITTER = 1e-8


def second_difference(wavelength) -> np.ndarray:
  """Second-difference operator (m, n) within contiguous grid segments.

  Rows are divided differences scaled by the median spacing squared, so on a
  uniform grid they are the familiar (1, -2, 1) stencils.
  """
  wl = np.asarray(wavelength, dtype=np.float64)
  step = np.diff(wl)
  h = np.median(step)
  rows = []
  for i in range(1, wl.size - 1):
    left, right = step[i - 1], step[i]
    if max(left, right) > _GAP_FACTOR * h:
      continue
    row = np.zeros(wl.size)
    row[i - 1:i + 2] = (2.0 * h * h / (left + right)) * np.array(
        [1.0 / left, -1.0 / left - 1.0 / right, 1.0 / right])
    rows.append(row)
  return np.asarray(rows).reshape(-1, wl.size)


def sau_init_matrix(lab_wavelength, sensor_wavelength, sensor_fwhm,
                    ridge: float = 1e-2) -> np.ndarray:
  """Regularised inverse (n_lab, n_sat) of the SRF resampling matrix.

  Returns P = (R^T R + ridge * s * D^T D)^-1 R^T, the Tikhonov solution of
  R x = y that penalises curvature (D: second differences within each
  contiguous segment of the lab grid, s = mean(diag(R^T R)) so `ridge` does
  not depend on the sensor). A curvature penalty rather than the plain
  (R^T R + ridge I) ridge: the latter pulls lab bands that no good sensor band
  covers (e.g. 1350 nm, beside the 1400 nm water window) to zero reflectance,
  while this one extrapolates them smoothly. Measured on the 3,720 ICRAF lab
  spectra with EnMAP's good bands: ridge=1e-2 reconstructs P R x with RMSE
  3e-4 reflectance (white sensor noise gain 1.75); ridge=1e-1 gives RMSE 7e-4
  at noise gain 1.0 but flattens the 2200 nm clay feature (max error 0.02).

  Args:
    lab_wavelength: (n_lab,) lab grid in nm, e.g. `spectra.lab_wavelengths()`.
    sensor_wavelength: (n_sat,) centres of the sensor's good bands (nm).
    sensor_fwhm: (n_sat,) their FWHM (nm).
    ridge: relative weight of the curvature penalty; > 0.

  Returns:
    float64 array (n_lab, n_sat): lab ~= satellite @ P.T.
  """
  if not ridge > 0:
    raise ValueError(f'ridge must be > 0 (the curvature penalty makes the '
                     f'inverse well posed), got {ridge}.')
  r = spectra.resampling_matrix(lab_wavelength, sensor_wavelength,
                                sensor_fwhm)
  gram = r.T @ r
  scale = np.trace(gram) / gram.shape[0]
  if not scale > 0:
    raise ValueError('No sensor band overlaps the lab grid: check that both '
                     'wavelength arrays are in nm.')
  d = second_difference(lab_wavelength)
  system = gram + scale * (ridge * d.T @ d + _JITTER * np.eye(gram.shape[0]))
  return np.linalg.solve(system, r.T)


class FrozenArray:
  """A read-only float32 array that hashes and compares by content.

  Linen modules are hashable dataclasses (jit static arguments, `clone`,
  transforms); a raw np.ndarray attribute would break hashing and `==`.
  """
  __slots__ = ('array', '_hash')

  def __init__(self, array):
    array = np.array(array, dtype=np.float32)
    array.setflags(write=False)
    self.array = array
    self._hash = hash((array.shape, array.tobytes()))

  def __hash__(self) -> int:
    return self._hash

  def __eq__(self, other) -> bool:
    return (isinstance(other, FrozenArray) and self._hash == other._hash and
            np.array_equal(self.array, other.array))

  def __repr__(self) -> str:
    return f'FrozenArray(shape={self.array.shape})'


def frozen(array) -> FrozenArray:
  """`array` as a FrozenArray (unchanged if it already is one)."""
  return array if isinstance(array, FrozenArray) else FrozenArray(array)


def fixed_adaptation(satellite: jax.Array, matrix: FrozenArray) -> jax.Array:
  """The physics map alone, as a constant (the 'no SAU' ablation)."""
  return satellite @ jnp.asarray(matrix.array, satellite.dtype).T


class SpectralAdaptationUnit(nn.Module):
  """Satellite spectrum [B, n_sat] (good bands) -> lab grid [B, n_lab].

  lab = (gain * y + offset) @ M^T + residual(gain * y + offset), with gain=1,
  offset=0, M = `init_matrix` and residual = 0 at initialisation, so the
  untrained SAU is exactly the physics inverse.

  Attributes:
    init_matrix: (n_lab, n_sat) array from `sau_init_matrix` (stored as a
      FrozenArray).
    hidden: width of the residual MLP.
  """
  init_matrix: Any
  hidden: int = 64

  def __post_init__(self):
    object.__setattr__(self, 'init_matrix', frozen(self.init_matrix))
    super().__post_init__()

  @nn.compact
  def __call__(self, satellite: jax.Array) -> jax.Array:
    n_lab, n_sat = self.init_matrix.array.shape
    if satellite.shape[-1] != n_sat:
      raise ValueError(
          f'SAU expects {n_sat} satellite bands (the good bands of the sensor '
          f'its init_matrix was built for), got {satellite.shape[-1]}.')
    gain = self.param('gain', nn.initializers.ones, (n_sat,))
    offset = self.param('offset', nn.initializers.zeros, (n_sat,))
    matrix = self.param('matrix', lambda _: jnp.asarray(self.init_matrix.array))
    y = satellite * gain + offset
    residual = nn.gelu(nn.Dense(self.hidden, name='residual_hidden')(y))
    residual = nn.Dense(n_lab, kernel_init=nn.initializers.zeros,
                        name='residual_out')(residual)
    return y @ matrix.T + residual
