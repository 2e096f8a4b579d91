"""Target transforms: the space models regress the target in.

name -> (forward, inverse). Models regress forward(target); predictions go
back to target units with inverse. log1p tames EC's saline tail.
"""
import jax.numpy as jnp


def _identity(x):
  return x


TRANSFORMS = {
    'log1p': (jnp.log1p, jnp.expm1),
    'identity': (_identity, _identity),
}
