"""Models from config: the teacher, the student and its physics start."""
from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from deepsalt_jax.models import deepsalt
from deepsalt_jax.models import encoder
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors


def adaptation_matrix(sensor: str, ridge: float) -> np.ndarray:
  """[n_lab, n_good] regularised inverse of the sensor's SRF resampling."""
  band = sensors.builtin(sensor)
  return resampling.inverse_matrix(resampling.lab_wavelengths(),
                                   band.good_wavelength, band.good_fwhm,
                                   ridge=ridge)


def encoder_and_head(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The encoder and regression head of `config.model.encoder` settings."""
  settings = dict(config.encoder)
  head_hidden = settings.pop("head_hidden")
  return dict(encoder=encoder.SpectralEncoder(**settings),
              head=encoder.RegressionHead(head_hidden, settings["dropout"]))


def build_teacher(config: ml_collections.ConfigDict) -> deepsalt.Teacher:
  """The teacher of `config.model`."""
  return deepsalt.Teacher(**encoder_and_head(config))


def build_student(config: ml_collections.ConfigDict,
                  sensor: str) -> deepsalt.Student:
  """The student of `config.model` for a built-in sensor's good bands."""
  return deepsalt.Student(
      init_matrix=adaptation_matrix(sensor, config.sau_ridge),
      learn_sau=config.use_sau, **encoder_and_head(config))
