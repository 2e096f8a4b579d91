"""Models from config: the teacher, the student and its physics start.

`config.model.space` says where the teacher reads spectra: 'lab' (the lab
grid; the student's SAU starts from the regularised inverse of the sensor's
SRF resampling) or 'sensor' (lab spectra resampled forward to the sensor's
nominal good bands; the SAU starts from the identity and only has to absorb
what the sensor, atmosphere and field add).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from deepsalt_jax.models import covariates
from deepsalt_jax.models import deepsalt
from deepsalt_jax.models import encoder
from deepsalt_spectral import errors
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors

SPACES = ("lab", "sensor")


def _space(config: ml_collections.ConfigDict) -> str:
  if config.space not in SPACES:
    raise errors.UserError(f"model.space={config.space!r}: use one of "
                           f"{', '.join(SPACES)}.")
  return config.space


def forward_matrix(sensor: str) -> np.ndarray:
  """[n_good, n_lab] SRF resampling of the lab grid to the nominal bands."""
  band = sensors.builtin(sensor)
  return resampling.resampling_matrix(resampling.lab_wavelengths(),
                                      band.good_wavelength, band.good_fwhm)


def adaptation_matrix(sensor: str, config: ml_collections.ConfigDict
                      ) -> np.ndarray:
  """[n_in, n_good]: the SAU's start, pixels -> the teacher's input space."""
  band = sensors.builtin(sensor)
  if _space(config) == "sensor":
    return np.eye(band.good.size)
  return resampling.inverse_matrix(resampling.lab_wavelengths(),
                                   band.good_wavelength, band.good_fwhm,
                                   ridge=config.sau_ridge)


def encoder_and_head(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The encoder (`config.encoder.kind`) and regression head."""
  settings = dict(config.encoder)
  kind = settings.pop("kind")
  if kind not in encoder.ENCODERS:
    raise errors.UserError(f"model.encoder.kind={kind!r}: use one of "
                           f"{', '.join(encoder.ENCODERS)}.")
  cls = encoder.ENCODERS[kind]
  accepted = {f.name for f in dataclasses.fields(cls)}
  return dict(encoder=cls(**{k: v for k, v in settings.items()
                             if k in accepted}),
              head=encoder.RegressionHead(settings["head_hidden"],
                                          settings["dropout"]))


def _covariate_branch(with_covariates: bool):
  return covariates.CovariateBranch() if with_covariates else None


def build_teacher(config: ml_collections.ConfigDict, sensor: str,
                  with_covariates: bool = False) -> deepsalt.Teacher:
  """The teacher of `config.model` (its input space for `sensor`), with a
  covariate branch if `with_covariates`."""
  resample = forward_matrix(sensor) if _space(config) == "sensor" else None
  return deepsalt.Teacher(resample=resample,
                          covariates=_covariate_branch(with_covariates),
                          **encoder_and_head(config))


def build_student(config: ml_collections.ConfigDict, sensor: str,
                  with_covariates: bool = False) -> deepsalt.Student:
  """The student of `config.model` for a built-in sensor's good bands,
  with a covariate branch if `with_covariates`."""
  return deepsalt.Student(
      init_matrix=adaptation_matrix(sensor, config),
      learn_sau=config.use_sau, covariates=_covariate_branch(with_covariates),
      **encoder_and_head(config))
