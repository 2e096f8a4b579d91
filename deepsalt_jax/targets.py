"""Target transforms: the space models regress the target in.

name -> (forward, inverse). Models regress forward(target); predictions go
back to target units with inverse. log1p tames EC's saline tail.
"""
import jax.numpy as jnp
import numpy as np


def _identity(x):
  return x


TRANSFORMS = {
    'log1p': (jnp.log1p, jnp.expm1),
    'identity': (_identity, _identity),
}


def on_numpy(name: str, dtype=np.float64):
  """(forward, inverse) of a transform from NumPy to float64 NumPy, computed
  in `dtype`."""
  forward, inverse = TRANSFORMS[name]
  as_numpy = lambda f: lambda x: np.asarray(f(np.asarray(x, dtype)),
                                            np.float64)
  return as_numpy(forward), as_numpy(inverse)
