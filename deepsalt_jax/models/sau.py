"""Spectral Adaptation Unit: satellite spectrum -> the teacher's lab grid.

The SAU starts from physics: the regularised inverse of the sensor's SRF
resampling (`deepsalt_spectral.resampling.inverse_matrix`, n_lab x
n_sat). On top, learned per-band gain and offset absorb atmospheric and
illumination residuals, the linear map itself is trainable, and a small
residual MLP (zero at init) corrects what stays nonlinear. Bad bands never
enter: the input holds the sensor's good bands only.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


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
    init_matrix: (n_lab, n_sat) array from
      `deepsalt_spectral.resampling.inverse_matrix` (stored as a FrozenArray).
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

  def prior(self) -> jax.Array:
    """Mean squared distance of the parameters from the physics start
    (gain 1, offset 0, `init_matrix`, no residual), summed over the four."""
    params = self.variables['params']
    start = jnp.asarray(self.init_matrix.array)
    return (jnp.mean((params['gain'] - 1.0)**2) +
            jnp.mean(params['offset']**2) +
            jnp.mean((params['matrix'] - start)**2) +
            jnp.mean(params['residual_out']['kernel']**2))
