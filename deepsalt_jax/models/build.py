"""Models from config: the teacher, the student and its physics init."""
from __future__ import annotations

import ml_collections
import numpy as np

from deepsalt_jax import sensors
from deepsalt_jax import spectra
from deepsalt_jax.models import deepsalt
from deepsalt_jax.models import sau


def encoder_kwargs(config: ml_collections.ConfigDict) -> dict:
  return dict(features=config.features, num_blocks=config.num_blocks,
              kernel_size=config.kernel_size, dropout=config.dropout)


def adaptation_matrix(sensor: str, ridge: float) -> np.ndarray:
  """[n_lab, n_good] regularised inverse of the sensor's SRF resampling."""
  band = sensors.builtin(sensor)
  return sau.sau_init_matrix(spectra.lab_wavelengths(), band.good_wavelength,
                             band.good_fwhm, ridge=ridge)


def build_teacher(config: ml_collections.ConfigDict) -> deepsalt.Teacher:
  return deepsalt.Teacher(**encoder_kwargs(config))


def build_student(config: ml_collections.ConfigDict,
                  sensor: str) -> deepsalt.Student:
  return deepsalt.Student(
      init_matrix=adaptation_matrix(sensor, config.sau_ridge),
      learn_sau=config.use_sau, **encoder_kwargs(config))
