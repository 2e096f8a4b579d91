"""Models from config: the teacher, the student and its physics start.

`config.model.space` says where the teacher reads spectra: 'lab' (the lab
grid; the student's SAU starts from the regularised inverse of the sensor's
SRF resampling) or 'sensor' (lab spectra resampled forward to the sensor's
nominal good bands; the SAU starts from the identity and only has to absorb
what the sensor, atmosphere and field add). `config.head` says how the head
outputs: 'linear', or 'bounded' to `config.head_bounds` in target units
(encoder.RegressionHead), so the head needs the target transform.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from deepsalt_jax.models import deepsalt
from deepsalt_jax.models import encoder
from deepsalt_spectral import errors
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors

SPACES = ("lab", "sensor")
HEADS = ("linear", "bounded")


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


def _head_bounds(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  """() for a linear head, else `config.head_bounds` checked."""
  # Runs saved before model.head existed have a linear head.
  head = config.get("head", "linear")
  if head not in HEADS:
    raise errors.UserError(f"model.head={head!r}: use one of "
                           f"{', '.join(HEADS)}.")
  if head == "linear":
    return ()
  bounds = tuple(float(b) for b in config.head_bounds)
  if len(bounds) != 2 or not bounds[0] < bounds[1]:
    raise errors.UserError(
        f"model.head=bounded needs model.head_bounds=(low, high) in the "
        f"target's units, got {bounds}: only EC (dataset=salinity) has a "
        "default, (0.05, 77.0) dS/m; set --config.model.head_bounds.")
  return bounds


def encoder_and_head(config: ml_collections.ConfigDict,
                     target_transform: str) -> dict[str, Any]:
  """The encoder (`config.encoder.kind`) and regression head (`config.head`,
  regressing the target through `target_transform`)."""
  settings = dict(config.encoder)
  kind = settings.pop("kind")
  if kind not in encoder.ENCODERS:
    raise errors.UserError(f"model.encoder.kind={kind!r}: use one of "
                           f"{', '.join(encoder.ENCODERS)}.")
  cls = encoder.ENCODERS[kind]
  accepted = {f.name for f in dataclasses.fields(cls)}
  return dict(encoder=cls(**{k: v for k, v in settings.items()
                             if k in accepted}),
              head=encoder.RegressionHead(
                  settings["head_hidden"], settings["dropout"],
                  _head_bounds(config), target_transform))


def build_teacher(config: ml_collections.ConfigDict, sensor: str, *,
                  target_transform: str) -> deepsalt.Teacher:
  """The teacher of `config.model` (its input space for `sensor`)."""
  resample = forward_matrix(sensor) if _space(config) == "sensor" else None
  return deepsalt.Teacher(resample=resample,
                          **encoder_and_head(config, target_transform))


def build_student(config: ml_collections.ConfigDict, sensor: str, *,
                  target_transform: str,
                  distill_width: int = 0) -> deepsalt.Student:
  """The student of `config.model` for a built-in sensor's good bands
  (`distill_width`: deepsalt.Student's)."""
  return deepsalt.Student(
      init_matrix=adaptation_matrix(sensor, config),
      learn_sau=config.use_sau, distill_width=distill_width,
      **encoder_and_head(config, target_transform))
