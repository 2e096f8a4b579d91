"""Predictions of a trained model: batched, sharded, MC dropout optional.

Evaluation and mapping both call `predict`. Predictions are in target units
(the inverse target transform applied) and never negative: EC and SOC are
not. With `mc_samples` > 0 the spread is the standard deviation, in the
target transform's space (where calibration.py builds intervals), over that
many Monte Carlo dropout passes, either of the whole network ('full': every
dropout layer, encoder included) or of the head alone ('head': the encoder
runs once, deterministically, and only the head's dropout is sampled; about
1/`mc_samples` of the cost, and a narrower spread that means something
else). Each sample's dropout masks come from a key folded with its `index`,
so results do not depend on batching or tiling.

Each device runs its rows in chunks of `chunk` spectra (`jax.lax.map`): on
a CPU the activations of a small chunk stay in cache, which made the default
student 3x faster than whole batches of 512 (docs/results.md, mapping
speed).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from deepsalt_jax import sharding

MC_MODES = ("full", "head")
# The MC-dropout passes a student's interval is calibrated for (intervals,
# evaluate) and a map takes unless told otherwise (mapping/options): a map
# with other passes gets none (calibration.for_spread).
MC_SAMPLES = 10


def _chunk_fn(params, x, index, covariates, *, model, inverse, mc_samples,
              mc_mode, seed, method, features):
  """Prediction [B] (train=False) and the std over `mc_samples` passes of
  the outputs in the transformed space, or with `features` the network's
  features [B, k].

  `covariates` [B, k] go to the model when k > 0.
  """
  def value(pred):
    return jnp.maximum(inverse(pred), 0.0)

  def apply(inputs, c, **kwargs):
    kwargs.setdefault("method", method)
    if c.shape[-1]:
      kwargs["covariates"] = c
    return model.apply({"params": params}, inputs, **kwargs)

  out = apply(x, covariates, train=False)
  mean = value(out["pred"])
  if features:
    return mean, out["features"]
  if not mc_samples:
    return mean, jnp.full_like(mean, jnp.nan)
  passes = jnp.arange(mc_samples)
  # keys[k, i]: pass k of sample i.
  keys = jax.vmap(lambda k: jax.vmap(
      lambda i: jax.random.fold_in(jax.random.fold_in(
          jax.random.key(seed), k), i))(index))(passes)
  if mc_mode == "head":
    # Each sample's head masks drawn from its own keys, then one batched
    # head for all passes: per-sample head calls cost a third of a pass.
    head = model.head
    keep = jax.vmap(jax.vmap(lambda key: jax.random.bernoulli(
        key, 1.0 - head.dropout, (head.hidden,))))(keys)
    features = jnp.broadcast_to(out["features"],
                                (mc_samples,) + out["features"].shape)
    samples = model.apply({"params": params}, features, keep=keep,
                          train=True,
                          method=lambda m, f, **kw: m.head(f, **kw))
  else:
    def one_pass(pass_keys):
      def one_sample(sample, c, key):
        return apply(sample[None], c[None], train=True,
                     rngs={"dropout": key})["pred"][0]
      return jax.vmap(one_sample)(x, covariates, pass_keys)
    samples = jax.lax.map(one_pass, keys)
  return mean, samples.std(axis=0, ddof=1)


@functools.partial(jax.jit, static_argnames=(
    "model", "inverse", "mc_samples", "mc_mode", "seed", "chunk", "mesh",
    "method", "features"))
def _predict(params, x, index, covariates, *, model, inverse, mc_samples,
             mc_mode, seed, chunk, mesh, method, features):
  """`_chunk_fn` over each device's rows, `chunk` rows at a time."""
  fn = functools.partial(_chunk_fn, model=model, inverse=inverse,
                         mc_samples=mc_samples, mc_mode=mc_mode, seed=seed,
                         method=method, features=features)

  def per_device(params, x, index, covariates):
    if not chunk or len(x) <= chunk:
      return fn(params, x, index, covariates)
    n = len(x) // chunk  # Not -1: covariates may have no columns.
    mean, second = jax.lax.map(
        lambda a: fn(params, *a),
        (x.reshape(n, chunk, x.shape[1]), index.reshape(n, chunk),
         covariates.reshape(n, chunk, covariates.shape[1])))
    return (mean.reshape((-1,) + mean.shape[2:]),
            second.reshape((-1,) + second.shape[2:]))

  return jax.shard_map(per_device, mesh=mesh,
                       in_specs=(P(), P(sharding.AXIS), P(sharding.AXIS),
                                 P(sharding.AXIS)),
                       out_specs=(P(sharding.AXIS), P(sharding.AXIS)))(
                           params, x, index, covariates)


def predict(model: Any, params: Any, x: np.ndarray, mesh: jax.sharding.Mesh,
            batch_size: int, inverse: Callable[[jax.Array], jax.Array],
            mc_samples: int = 0, seed: int = 0,
            index: np.ndarray | None = None, mc_mode: str = "full",
            chunk: int = 0, method: str | None = None,
            covariates: np.ndarray | None = None, features: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
  """(prediction in target units, MC-dropout std in the transformed space,
  or the features) of every row of `x`.

  Args:
    model: a Linen module returning {'pred': [B] (or [B, k] for several
      networks, models.members.Members), 'features': ...}, with a `head`
      submodule for mc_mode='head'.
    params: its parameters (replicated on `mesh`).
    x: [n, bands] inputs; every process of the mesh passes all rows.
    mesh: the device mesh.
    batch_size: rows per global batch.
    inverse: the inverse target transform (targets.TRANSFORMS).
    mc_samples: dropout passes for the spread; 0: std is NaN.
    seed: seed of the dropout masks.
    index: [n] int32 global sample index keying each row's masks; default
      0..n-1.
    mc_mode: 'full' (every dropout layer) or 'head' (the head's alone).
    chunk: rows a device computes at a time; 0: all its rows at once.
    method: name of the model's method to apply (default: the call).
    covariates: [n, k] the rows' covariates, for a model that reads them.
    features: give the network's features [n, k] (what quantile heads read,
      quantile_heads.py) in place of the spread; no MC passes.
  """
  if features and mc_samples:
    raise ValueError("features=True takes no MC passes (mc_samples=0).")
  if mc_samples == 1 or mc_samples < 0:
    raise ValueError(f"mc_samples={mc_samples}: use 0 (no spread) or at "
                     "least 2 passes.")
  if mc_mode not in MC_MODES:
    raise ValueError(f"mc_mode={mc_mode!r}: use one of {MC_MODES}.")
  index = (np.arange(len(x), dtype=np.int32) if index is None
           else np.asarray(index, np.int32))
  covariates = (np.zeros((len(x), 0), np.float32) if covariates is None
                else np.asarray(covariates, np.float32))
  fn = functools.partial(_predict, params, model=model, inverse=inverse,
                         mc_samples=mc_samples, mc_mode=mc_mode, seed=seed,
                         chunk=chunk, mesh=mesh, method=method,
                         features=features)
  return sharding.map_batches(
      fn, [np.asarray(x, np.float32), index, covariates], mesh, batch_size,
      multiple=max(chunk, 1))
