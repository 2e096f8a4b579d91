"""Models from config: the teacher, the student and its SAU's start.

`config.model.space` says where the teacher reads spectra: 'lab' (the lab
grid), 'sensor' (lab spectra resampled forward to the sensor's nominal
good bands) or 'auto' (sensor where the lab grid resamples to the sensor,
else lab). `config.model.sau` says how the student reaches the teacher:
'physics' (pixels -> the teacher's input space, starting from the SRF
inverse for a lab-space teacher or the identity for a sensor-space one) or
'latent' (a satellite encoder into the teacher's feature space, for any lab
grid, MIR included); 'auto' takes physics where the lab grid allows it.
`config.head` says how the head outputs: 'linear', or 'bounded' to
`config.head_bounds` in target units (encoder.RegressionHead), so the head
needs the target transform. The lab grid is the dataset's
(`deepsalt_spectral.lab_grid`), never assumed.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from deepsalt_jax import choices
from deepsalt_jax.models import covariate_branch
from deepsalt_jax.models import deepsalt
from deepsalt_jax.models import encoder
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid as lab_grid_lib
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors


def _physics_problem(sensor: str, grid: lab_grid_lib.LabGrid) -> str:
  band = sensors.builtin(sensor)
  return grid.physics_problem(band.good_wavelength, band.good_fwhm)


def _space(config: ml_collections.ConfigDict, sensor: str,
           grid: lab_grid_lib.LabGrid) -> str:
  if config.space not in choices.SPACES:
    raise errors.UserError(f"model.space={config.space!r}: use one of "
                           f"{', '.join(choices.SPACES)}.")
  problem = _physics_problem(sensor, grid)
  if config.space == "sensor" and problem:
    raise errors.UserError(
        f"model.space='sensor' resamples lab spectra to {sensor}'s bands, "
        f"but {problem}: use space=lab or auto.")
  if config.space == "auto":  # Sensor space measured better where it exists.
    return "lab" if problem else "sensor"
  return config.space


def sau_mode(config: ml_collections.ConfigDict, sensor: str,
             grid: lab_grid_lib.LabGrid) -> str:
  """'physics' or 'latent': `config.sau`, or by coverage when 'auto'.

  Raises:
    UserError: sau='physics' named for a lab grid that cannot have it.
  """
  if config.sau not in choices.SAU_MODES:
    raise errors.UserError(f"model.sau={config.sau!r}: use one of "
                           f"{', '.join(choices.SAU_MODES)}.")
  problem = _physics_problem(sensor, grid)
  if config.sau == "physics" and problem:
    raise errors.UserError(
        f"sau=physics carries {sensor} pixels to the lab grid through the "
        f"SRF inverse, but {problem}. Use sau=latent (or sau=auto).")
  if config.sau == "auto":
    return "latent" if problem else "physics"
  return config.sau


def _chosen(config: ml_collections.ConfigDict, field: str,
            allowed: tuple[str, ...], before: str) -> str:
  """`config.<field>`, one of `allowed`; `before` where the config predates
  the field (a saved run's, run_config.load)."""
  value = config.get(field, before)
  if value not in allowed:
    raise errors.UserError(f"model.{field}={value!r}: use one of "
                           f"{', '.join(allowed)}.")
  return value


def plsr_start(config: ml_collections.ConfigDict) -> bool:
  """Whether the teacher starts as PLSR (`config.teacher_start`).

  Raises:
    UserError: an unknown start, or 'plsr' without the linear path.
  """
  start = _chosen(config, "teacher_start", choices.TEACHER_STARTS, "network")
  if start == "plsr" and not config.get("linear_path", False):
    raise errors.UserError(
        "model.teacher_start='plsr' starts the teacher's linear path at "
        "PLSR, but model.linear_path is off: turn it on (head=linear), or "
        "use model.teacher_start=network.")
  return start == "plsr"


def student_path(config: ml_collections.ConfigDict) -> str:
  """`config.student_path`: 'trained' (the teacher's linear path, or none,
  trained on) or 'plsr' (encoder.PlsrPath).

  Raises:
    UserError: an unknown path, or 'plsr' with a bounded head.
  """
  path = _chosen(config, "student_path", choices.STUDENT_PATHS, "trained")
  if path == "plsr" and _head_bounds(config):
    raise errors.UserError(
        "model.student_path='plsr' adds PLSR's trend to the head's output, "
        "which a bounded head would no longer bound: use model.head=linear, "
        "or model.student_path=trained.")
  return path


def forward_matrix(sensor: str, grid: lab_grid_lib.LabGrid) -> np.ndarray:
  """[n_good, n_lab] SRF resampling of the lab grid to the nominal bands."""
  problem = _physics_problem(sensor, grid)
  if problem:
    raise errors.UserError(f"Lab spectra cannot be resampled to {sensor}: "
                           f"{problem}.")
  band = sensors.builtin(sensor)
  return resampling.resampling_matrix(grid.axis, band.good_wavelength,
                                      band.good_fwhm)


def adaptation_matrix(sensor: str, config: ml_collections.ConfigDict,
                      grid: lab_grid_lib.LabGrid) -> np.ndarray | None:
  """[n_in, n_good]: the physics SAU's start, pixels -> the teacher's input
  space; None when the lab grid has no physics route (sau=latent)."""
  if _physics_problem(sensor, grid):
    return None
  band = sensors.builtin(sensor)
  if _space(config, sensor, grid) == "sensor":
    return np.eye(band.good.size)
  return resampling.inverse_matrix(grid.axis, band.good_wavelength,
                                   band.good_fwhm, ridge=config.sau_ridge)


def _head_bounds(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  """() for a linear head, else `config.head_bounds` checked."""
  # Runs saved before model.head existed have a linear head.
  head = config.get("head", "linear")
  if head not in choices.HEADS:
    raise errors.UserError(f"model.head={head!r}: use one of "
                           f"{', '.join(choices.HEADS)}.")
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
                     target_transform: str,
                     zero_output: bool = False) -> dict[str, Any]:
  """The encoder (`config.encoder.kind`) and regression head (`config.head`,
  regressing the target through `target_transform`; its output layer at
  zero with `zero_output`)."""
  settings = dict(config.encoder)
  kind = settings.pop("kind")
  if kind not in encoder.ENCODERS:
    raise errors.UserError(f"model.encoder.kind={kind!r}: use one of "
                           f"{', '.join(encoder.ENCODERS)}.")
  cls = encoder.ENCODERS[kind]
  accepted = {f.name for f in dataclasses.fields(cls)}
  bounds = _head_bounds(config)
  # Configs made before model.linear_path existed have none (saved runs:
  # run_config.load).
  linear = config.get("linear_path", False)
  if linear and bounds:
    raise errors.UserError(
        "model.linear_path adds a linear trend to the head's output, which "
        "a bounded head would no longer bound: use model.head=linear, or "
        "model.linear_path=False (the config arg head=bounded sets both).")
  return dict(encoder=cls(**{k: v for k, v in settings.items()
                             if k in accepted}),
              head=encoder.RegressionHead(
                  settings["head_hidden"], settings["dropout"], bounds,
                  target_transform, zero_output),
              linear=encoder.LinearPath() if linear else None)


def _covariate_branch(with_covariates: bool):
  return covariate_branch.CovariateBranch() if with_covariates else None


def build_teacher(config: ml_collections.ConfigDict, sensor: str,
                  grid: lab_grid_lib.LabGrid, *, target_transform: str,
                  with_covariates: bool = False) -> deepsalt.Teacher:
  """The teacher of `config.model` on `grid` (its input space for
  `sensor`), with a covariate branch if `with_covariates`."""
  resample = (forward_matrix(sensor, grid)
              if _space(config, sensor, grid) == "sensor" else None)
  return deepsalt.Teacher(resample=resample,
                          covariates=_covariate_branch(with_covariates),
                          **encoder_and_head(config, target_transform,
                                             plsr_start(config)))


def build_student(config: ml_collections.ConfigDict, sensor: str,
                  grid: lab_grid_lib.LabGrid, *, target_transform: str,
                  with_covariates: bool = False) -> deepsalt.Student:
  """The student of `config.model` for a built-in sensor's good bands,
  with a covariate branch if `with_covariates`."""
  _space(config, sensor, grid)
  networks = dict(encoder_and_head(config, target_transform),
                  covariates=_covariate_branch(with_covariates))
  if student_path(config) == "plsr":
    networks.update(linear=None, plsr=encoder.PlsrPath())
  if sau_mode(config, sensor, grid) == "latent":
    return deepsalt.Student(latent=True, **networks)
  return deepsalt.Student(
      init_matrix=adaptation_matrix(sensor, config, grid),
      learn_sau=config.use_sau, **networks)
