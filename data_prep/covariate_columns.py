"""Covariates: ancillary per-sample values (clay, SOC, climate, elevation...)
named by the config's `data.covariates`, read from a table's columns.

A value that is missing or not a number is NaN (the network imputes the
training mean, deepsalt_jax/models/covariate_branch.py); a column that is not
there at all is refused.
"""
import pathlib

import numpy as np
import pandas as pd

from deepsalt_spectral import errors


def names(text: str) -> tuple[str, ...]:
  """The names of a config value ('clay, soc' -> ('clay', 'soc'))."""
  out = tuple(n.strip() for n in text.split(",") if n.strip())
  if len(set(out)) != len(out):
    raise errors.UserError(f"data.covariates={text!r} names a covariate "
                           "twice; name each once.")
  return out


def columns(frame: pd.DataFrame, wanted: tuple[str, ...],
            path: pathlib.Path) -> np.ndarray:
  """[len(frame), len(wanted)] float64 of the columns `wanted` of `frame`
  (matched without regard to case); NaN where empty or not a number."""
  if not wanted:
    return np.zeros((len(frame), 0))
  lower = {str(c).strip().lower(): c for c in frame.columns}
  missing = [n for n in wanted if n.lower() not in lower]
  if missing:
    raise errors.UserError(
        f"{path}: no column {missing[0]!r} for data.covariates (found: "
        f"{', '.join(map(str, frame.columns))}); add the column (empty "
        "cells are imputed) or remove the name from --config.data.covariates.")
  return np.stack([pd.to_numeric(frame[lower[n.lower()]], errors="coerce")
                   .to_numpy(np.float64) for n in wanted], axis=1)
