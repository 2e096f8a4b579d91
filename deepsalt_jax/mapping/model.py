"""The model a map comes from: validation's choice, or the student.

A distill run with candidate students maps with what validation chose
(`selection.choose`): their ensemble or one of them hedged with it, every
candidate run per pixel for the spread that scales its interval. An
own-data cross-validation saves the final model validation chose
(`deepsalt_jax.final_model`: PLSR, the random forest, the pooled MLP, a
network (a student or the teacher on the pixels), or a stack of them).
`--mapping.model=selected` (the default) maps with the choice; `ensemble`
with the mean of a distill run's candidate students; `student`, a run
without candidates or a saved choice (an own-data run from before it was
saved) or an own-data choice of the student alone map with the default
student, with its own calibration. A chosen model of own data has no MC
spread: its interval is the constant one in the target transform's space
calibrated on its out-of-fold predictions.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from deepsalt_jax import calibration
from deepsalt_jax import final_model
from deepsalt_jax import intervals
from deepsalt_jax import predict
from deepsalt_jax import run_config
from deepsalt_jax import selection
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import targets
from deepsalt_jax.models import members as members_lib
from deepsalt_spectral import errors

# Spectra a CPU device computes at a time (predict.py): in cache. Other
# backends take their whole share of a batch at once.
_CPU_CHUNK = 64


@dataclasses.dataclass
class MapModel:
  """What predicts a map's pixels.

  Attributes:
    name: the model in words (band descriptions, reports, quicklook).
    predict: (x, index, covariates) -> (EC, the difficulty its calibration
      reads or None), for the spectra x at the sensor's good bands.
    steps: {network: checkpoint step} of the networks it restores.
    covariate_names: the covariates its networks read.
    calibration: its interval, or None (`why`).
    mc_samples: the MC passes each pixel gets (0 without a spread).
    made_by: who made the map, in words (quicklook, reports).
  """
  name: str
  predict: Callable[..., tuple[np.ndarray, np.ndarray]]
  steps: dict[str, int]
  covariate_names: tuple[str, ...]
  calibration: dict[str, Any] | None
  why: str
  mc_samples: int
  made_by: str


def _restore(stage: stages.Stage, config: ml_collections.ConfigDict,
             workdir: epath.Path, mesh: jax.sharding.Mesh) -> tuple[Any, int]:
  params, step = stage.restore(workdir, config.data.sensor, mesh)
  logging.info("[map] restored the %s checkpoint of step %d", stage.name,
               step)
  return params, step


def _predictor(model: Any, params: Any, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh, options: ml_collections.ConfigDict
               ) -> Callable[..., tuple[Any, Any]]:
  """(x, index, covariates, ...) -> predict.predict of restored parameters
  with the mapping options."""
  chunk = options.chunk_size or (
      _CPU_CHUNK if jax.default_backend() == "cpu" else 0)
  _, inverse = targets.TRANSFORMS[config.data.target_transform]
  return functools.partial(
      predict.predict, model, params, mesh=mesh,
      batch_size=options.batch_size, inverse=inverse, seed=options.seed,
      chunk=chunk)


def _student(student, config, workdir, mesh, options, sensor) -> MapModel:
  """The default student with its calibration."""
  params, step = _restore(student, config, workdir, mesh)
  dropout = student.config.model.encoder.dropout
  if options.mc_samples:
    fitted, why = calibration.for_spread(
        calibration.load(workdir / student.name),
        options.mc_samples if dropout > 0 else 0)
  else:
    fitted, why = None, "--mapping.mc_samples=0"
  # MC passes only for an interval scaled by their spread.
  mc_samples = (fitted["mc_samples"] if fitted and
                fitted["difficulty"] in calibration.MC_MODES else 0)
  if mc_samples and fitted["mc_mode"] == "full":
    logging.warning("The interval is scaled by the spread of %d MC passes "
                    "of the whole network: each pixel costs that many "
                    "network passes (--mapping.mc_samples=0 maps EC "
                    "alone).", mc_samples)
  run = intervals.with_difficulty(
      _predictor(student.model(sensor), params, config, mesh, options),
      fitted)
  return MapModel(final_model.STUDENT, run, {student.name: step},
                  student.covariate_names, fitted, why, mc_samples,
                  "the DeepSalt student")


def _combined(name: str, made_by: str, members, combine, fitted,
              missing: str, config, workdir, mesh, options,
              sensor) -> MapModel:
  """A map model of several networks' EC, `combine(x, {key: EC})` ->
  (EC, its difficulty or None), with the interval `fitted` (`missing`: why
  there is none). `members`: key -> (stage, whether it is the teacher
  reading pixels); one program predicts them all (models.members)."""
  networks, params, matrices, steps, names = [], [], [], {}, []
  for stage, teacher in members.values():
    restored, steps[stage.name] = _restore(stage, config, workdir, mesh)
    networks.append(stage.model(sensor))
    params.append(restored)
    # The teacher reads the pixels through the SAU's fixed start, as in CV.
    matrices.append(jax.device_put(stage.pixel_matrix(sensor),
                                   sharding.replicated(mesh))
                    if teacher else None)
    names += [n for n in stage.covariate_names if n not in names]
  predictor = _predictor(*members_lib.members(networks, params, matrices),
                         config, mesh, options)

  def run(x, index, covariates=None):
    if not members:  # A fit (PLSR, the forest) alone: no network runs.
      return combine(x, {})
    ec = np.asarray(predictor(x, index=index, covariates=covariates)[0],
                    np.float64)
    return combine(x, {key: ec[:, i] for i, key in enumerate(members)})

  if not options.mc_samples:
    fitted, why = None, "--mapping.mc_samples=0"
  else:
    why = "" if fitted else missing
  return MapModel(name, run, steps, tuple(names), fitted, why, 0, made_by)


def _chosen(chosen: final_model.FinalModel, plan, config, workdir, mesh,
            options, sensor) -> MapModel:
  """Validation's final model: its members' predictions combined."""
  # A network member is the teacher on the pixels or a student by name.
  stage = {s.name: s for s in plan.students}
  members = {m: (plan.teacher, True) if m == final_model.TEACHER else
             (stage[m], False) for m in chosen.networks}
  return _combined(
      chosen.name, f"{chosen.name}, validation's choice of model", members,
      lambda x, ec: (chosen.predict(x, ec), None), chosen.calibration,
      f"{chosen.name} has no calibration in {final_model.FOLDER}/", config,
      workdir, mesh, options, sensor)


def _candidates(plan, config, workdir, mesh, options, sensor,
                winner: str | None = None) -> MapModel:
  """The candidate students' ensemble (`winner` None), or what validation
  chose among it and them (`winner`), with its interval (scaled by the
  candidates' spread, or constant)."""
  if not plan.candidates:
    raise errors.UserError(
        f"--mapping.model=ensemble: {workdir} trained no candidate "
        "students (config.candidates); use selected or student.")
  members = {s.name: (s, False) for s in plan.students
             if s.name in plan.candidates}
  chosen = winner or selection.ENSEMBLE
  name = selection.shipped_name(chosen, plan.candidates)
  made_by = f"{name}, validation's choice of model" if winner else name
  folder = selection.SHIPPED if winner else selection.ENSEMBLE
  transform = config.data.target_transform
  return _combined(
      name, made_by, members,
      lambda x, ec: (selection.shipped(ec, chosen, transform),
                     selection.spread(list(ec.values()), transform)),
      calibration.load(workdir / folder),
      f"no {folder}/ calibration in {workdir} (re-run its training "
      "command, which restores the trained students and calibrates them)",
      config, workdir, mesh, options, sensor)


def load(config: ml_collections.ConfigDict, workdir: epath.Path,
         mesh: jax.sharding.Mesh, options: ml_collections.ConfigDict,
         sensor: str) -> MapModel:
  """The model `options.model` names for the run in `workdir`."""
  plan = stages.plan(config, run_config.lab_grid(workdir))
  if not plan.students or config.data.name == "soc":  # SOC is not EC.
    raise errors.UserError(
        "Mapping needs a salinity student run (configs/distill.py, "
        "dataset=salinity, or configs/own_data.py); "
        f"{workdir} holds job={config.job!r}, "
        f"dataset={config.data.name!r}.")
  student = plan.students[0]
  if options.model == "ensemble":
    return _candidates(plan, config, workdir, mesh, options, sensor)
  if options.model == "student":
    return _student(student, config, workdir, mesh, options, sensor)
  if plan.candidates and config.job == "distill":
    # The ensemble or one candidate hedged with it (own data's choice is
    # the final model).
    choice = selection.load_choice(workdir)
    if choice is None:
      raise errors.UserError(
          f"{workdir} trained candidate students but holds no "
          f"{selection.CHOICE_FILE}: re-run its training command (it "
          "restores the trained students and chooses), or map with "
          "--mapping.model=student.")
    logging.info("[map] mapping with validation's choice: %s",
                 choice["winner"])
    return _candidates(plan, config, workdir, mesh, options, sensor,
                       choice["winner"])
  chosen = final_model.load(workdir)
  if chosen is None:
    logging.warning("[map] %s has no validation choice saved (a run "
                    "without candidates, or an own-data run from before "
                    "%s/ was saved): mapping with the student.", workdir,
                    final_model.FOLDER)
  if chosen is None or chosen.members == [final_model.STUDENT]:
    return _student(student, config, workdir, mesh, options, sensor)
  logging.info("[map] mapping with validation's choice: %s", chosen.name)
  return _chosen(chosen, plan, config, workdir, mesh, options, sensor)
