"""Ancillary covariates (clay, SOC, climate, elevation...) beside a spectrum.

A per-sample vector of `k` values (config `data.covariates`, parsed by
`data_prep.covariate_columns.names`) enters a network after its encoder:
standardised with the training statistics, a missing value (NaN) imputed
with the training mean (0 once standardised), then a Dense layer to the
encoder's width added to its features, before the head. The Dense layer
starts at zero, so a network with covariates predicts exactly what it does
without them until training moves it (a student that starts from a teacher
starts from the teacher's predictions).

Parameters (the 'covariates' subtree of a Teacher or Student):
  {'standardize': {'mean', 'scale'} [k], 'project': {'kernel' [k, D],
  'bias' [D]}}
The statistics are parameters so that every checkpoint carries them;
training never changes them (train.FROZEN_SCOPES), `with_statistics` sets
them from the training samples before training.
"""
from __future__ import annotations

from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deepsalt_spectral import errors

SCOPE = 'covariates'


class CovariateBranch(nn.Module):
  """Covariates [B, k] (NaN = missing) -> a feature offset [B, width]."""

  @nn.compact
  def __call__(self, covariates: jax.Array, width: int) -> jax.Array:
    standardised = _Standardize(name='standardize')(covariates)
    return nn.Dense(width, kernel_init=nn.initializers.zeros,
                    name='project')(standardised)


class _Standardize(nn.Module):
  """(x - mean) / scale, NaN -> 0 (the training mean)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = x.shape[-1]
    mean = jax.lax.stop_gradient(self.param('mean', nn.initializers.zeros,
                                            (k,)))
    scale = jax.lax.stop_gradient(self.param('scale', nn.initializers.ones,
                                             (k,)))
    missing = jnp.isnan(x)
    return jnp.where(missing, 0.0, (jnp.where(missing, mean, x) - mean)
                     / scale)


def add(branch: nn.Module | None, features: jax.Array,
        covariates: jax.Array | None) -> jax.Array:
  """`features` plus the branch's offset (unchanged without a branch)."""
  if branch is None:
    return features
  if covariates is None:
    raise ValueError('This network reads covariates: pass covariates=[B, k].')
  return features + branch(covariates, features.shape[-1])


def with_statistics(params: Any, values: np.ndarray,
                    covariate_names: tuple[str, ...], what: str) -> Any:
  """`params` with the covariate standardisation fitted on `values` [n, k]
  (the training samples of `what`); params without covariates unchanged.

  Raises UserError when a covariate is missing in every training sample:
  there is nothing to learn from it, and no mean to impute.
  """
  if SCOPE not in params:
    return params
  values = np.asarray(values, np.float64)
  present = np.isfinite(values)
  empty = [n for n, ok in zip(covariate_names, present.any(axis=0)) if not ok]
  if empty:
    raise errors.UserError(
        f'Covariate(s) {empty} have no value in any training sample of the '
        f'{what}: give them values (points table / library metadata) or '
        'remove them from --config.data.covariates.')
  missing = (~present).sum(axis=0)
  if missing.any():
    logging.info('%s: training mean imputed for missing covariates: %s', what,
                 ', '.join(f'{n} {m} of {len(values)}' for n, m in
                           zip(covariate_names, missing) if m))
  mean = np.nanmean(values, axis=0)
  scale = np.maximum(np.nanstd(values, axis=0), 1e-6)
  branch = dict(params[SCOPE])
  branch['standardize'] = {'mean': jnp.asarray(mean, jnp.float32),
                           'scale': jnp.asarray(scale, jnp.float32)}
  return dict(params, **{SCOPE: branch})
