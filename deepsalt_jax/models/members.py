"""Several trained networks as one: a map's ensemble or stack in one pass."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class Members(nn.Module):
  """The predictions [B, k] of k networks of the same pixels.

  One program runs every network on each chunk of pixels (predict.py), so
  a map's ensemble reads and moves its pixels once, not once a network.
  Parameters: {'networks_<i>': network i's} and, for a network that reads
  the pixels through a fixed matrix (the teacher through the SAU's fixed
  start, method 'from_prepared'), 'inputs_<i>': that matrix [its inputs,
  pixel bands].

  Attributes:
    networks: the networks, each returning {'pred': [B], ...}.
    prepared: per network, the size of the input space its fixed matrix
      takes the pixels to (read through `from_prepared`); 0: it reads the
      pixels as they come.
  """
  networks: tuple[nn.Module, ...]
  prepared: tuple[int, ...]

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               covariates: jax.Array | None = None) -> dict[str, jax.Array]:
    preds = []
    for i, (network, size) in enumerate(zip(self.networks, self.prepared)):
      if size:
        matrix = self.param(f"inputs_{i}", nn.initializers.zeros,
                            (size, x.shape[-1]))
        out = network.from_prepared(x @ matrix.T, train=train,
                                    covariates=covariates)
      else:
        out = network(x, train=train, covariates=covariates)
      preds.append(out["pred"])
    return {"pred": jnp.stack(preds, axis=-1)}


def members(networks: Sequence[nn.Module], params: Sequence[Any],
            matrices: Sequence[Any | None]) -> tuple[Members, dict[str, Any]]:
  """`Members` of the networks and its parameters, from each network's
  parameters and fixed matrix (None: it reads the pixels as they come)."""
  variables = {f"networks_{i}": p for i, p in enumerate(params)}
  variables.update({f"inputs_{i}": m for i, m in enumerate(matrices)
                    if m is not None})
  sizes = tuple(0 if m is None else len(m) for m in matrices)
  return Members(tuple(networks), sizes), variables
