"""Predictions of a trained model: batched, sharded, MC dropout optional.

Evaluation and mapping both call `predict`. Outputs are in target units (the
inverse target transform applied) and never negative: EC and SOC are not.
With `mc_samples` > 0 the spread is the standard deviation over that many
Monte Carlo dropout passes; each sample's dropout masks come from a key
folded with its `index`, so results do not depend on batching or tiling.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from deepsalt_jax import sharding


# Jitted once per (model, transform, passes, seed, batch shape) in a process.
@functools.partial(jax.jit, static_argnames=("model", "inverse", "mc_samples",
                                             "seed", "method"))
def _predict(params, x, index, *, model, inverse, mc_samples, seed, method):
  """Prediction [B] (train=False) and its std over `mc_samples` passes."""
  def value(inputs, **kwargs):
    pred = model.apply({"params": params}, inputs, method=method,
                       **kwargs)["pred"]
    return jnp.maximum(inverse(pred), 0.0)

  mean = value(x, train=False)
  if not mc_samples:
    return mean, jnp.full_like(mean, jnp.nan)
  key = jax.random.key(seed)

  def one_pass(k):
    def one_sample(sample, i):
      sample_key = jax.random.fold_in(jax.random.fold_in(key, k), i)
      return value(sample[None], train=True, rngs={"dropout": sample_key})[0]
    return jax.vmap(one_sample)(x, index)

  samples = jax.lax.map(one_pass, jnp.arange(mc_samples))
  return mean, samples.std(axis=0, ddof=1)


def predict(model: Any, params: Any, x: np.ndarray, mesh: jax.sharding.Mesh,
            batch_size: int, inverse: Callable[[jax.Array], jax.Array],
            mc_samples: int = 0, seed: int = 0,
            index: np.ndarray | None = None, method: str | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
  """(prediction, MC-dropout std) of every row of `x`, in target units.

  Args:
    model: a Linen module returning {'pred': ...}.
    params: its parameters (replicated on `mesh`).
    x: [n, bands] inputs; every process passes all rows.
    mesh: the device mesh.
    batch_size: rows per global batch.
    inverse: the inverse target transform (losses.TARGET_TRANSFORMS).
    mc_samples: dropout passes for the spread; 0: std is NaN.
    seed: seed of the dropout masks.
    index: [n] int32 global sample index keying each row's masks; default
      0..n-1.
    method: name of the model's method to apply (default: the call).
  """
  if mc_samples == 1 or mc_samples < 0:
    raise ValueError(f"mc_samples={mc_samples}: use 0 (no spread) or at "
                     "least 2 passes.")
  index = (np.arange(len(x), dtype=np.int32) if index is None
           else np.asarray(index, np.int32))
  fn = functools.partial(_predict, params, model=model, inverse=inverse,
                         mc_samples=mc_samples, seed=seed, method=method)
  return sharding.map_batches(fn, [np.asarray(x, np.float32), index], mesh,
                              batch_size)
