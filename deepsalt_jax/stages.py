"""The networks a run trains: the teacher, the student and its variants.

A `Stage` knows its model, how to initialise it, which data streams feed it
and its loss; the trainer, evaluation and mapping work with stages, never
with strings. `plan(config)` gives the stages of a config: the teacher alone
(job 'teacher', configs/teacher.py), or the teacher, the student and each
candidate of `config.candidates` (students validation chooses among) and
comparison variant of `config.compare` (configs/distill.py, own_data.py).
A student's teacher trains with `teacher_config(config)`.

Every stage carries the dataset's lab grid (`deepsalt_spectral.lab_grid`):
it sizes the teacher's input and decides whether the student's SAU can start
from physics.

A stage's loss is its objective (`objectives`) bound to its networks.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

from absl import logging
from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_prep import covariate_columns
from data_prep import roles
from deepsalt_jax import baselines
from deepsalt_jax import checkpoint
from deepsalt_jax import choices
from deepsalt_jax import input_pipeline
from deepsalt_jax import objectives
from deepsalt_jax import predict
from deepsalt_jax import samples
from deepsalt_jax import sharding
from deepsalt_jax import targets
from deepsalt_jax.models import covariate_branch
from deepsalt_jax.models import deepsalt
from deepsalt_jax.models import from_config
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid as lab_grid_lib
from deepsalt_spectral import sensors

# A stage's folder of the parameters a restore takes first (what validation
# kept, or the running average of a stage without validation).
BEST_DIR = "best"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One network of a run, trained into <workdir>/<name>.

  Attributes:
    name: its folder and its name in the results ('teacher', 'student',
      'plain', ...).
    config: the config it trains with (teacher_config's for the teacher).
  """
  name: str
  config: ml_collections.ConfigDict
  lab_grid: lab_grid_lib.LabGrid = dataclasses.field(
      default_factory=lab_grid_lib.visnir)
  input = ""  # What the network reads: 'lab' spectra or 'satellite' pixels.

  def model(self, sensor: str) -> nn.Module:
    raise NotImplementedError

  def input_size(self, sensor: str) -> int:
    raise NotImplementedError

  def starts_as_plsr(self) -> bool:
    """Whether the network starts as PLSR, a start its later steps must
    beat on validation (selection.Selector)."""
    return False

  def kept_start(self, params: Any, data: samples.Data) -> Any:
    """The start `params` stands for once validation keeps it."""
    return params

  def kept_step(self, params: Any, start: Callable[[], Any]) -> Any:
    """What a later step `params` stands for once validation keeps it over
    the start (`start()`: the kept start's parameters)."""
    del start
    return params

  def finish(self, params: Any, data: samples.Data,
             mesh: jax.sharding.Mesh) -> Any:
    """What trained `params` stand for once kept (the numbers set from the
    data they trained on, `StudentStage.finish`)."""
    del data, mesh
    return params

  @property
  def covariate_names(self) -> tuple[str, ...]:
    """The covariates the network reads (config data.covariates)."""
    return covariate_columns.names(self.config.data.covariates)

  def covariates(self, data: samples.Data,
                 rows: np.ndarray) -> np.ndarray | None:
    """The covariates of `data`'s `rows` if the network reads any."""
    return data.covariates[rows] if self.covariate_names else None

  def _init(self, sensor: str, key: jax.Array) -> Any:
    x = np.zeros((2, self.input_size(sensor)), np.float32)
    covariates = (np.zeros((2, len(self.covariate_names)), np.float32)
                  if self.covariate_names else None)
    return self.model(sensor).init(key, x, train=False,
                                   covariates=covariates)["params"]

  def init_params(self, sensor: str, teacher_params: Any = None) -> Any:
    """Fresh parameters of the model."""
    return self._init(sensor, self._init_key())

  def with_input_statistics(self, params: Any,
                            data: samples.Data) -> Any:
    """`params` with the encoder's (and covariates') standardisation
    fitted on `data`'s training part (what the stage reads there)."""
    raise NotImplementedError

  def _init_key(self) -> jax.Array:
    return jax.random.key(self.config.seed)

  def abstract_params(self, sensor: str, mesh: jax.sharding.Mesh) -> Any:
    """Shapes and shardings of the parameters, for a restore."""
    shapes = jax.eval_shape(lambda: self._init(sensor, jax.random.key(0)))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(
        s.shape, s.dtype, sharding=sharding.replicated(mesh)), shapes)

  def streams(self, data: samples.Data
              ) -> dict[str, input_pipeline.Stream]:
    raise NotImplementedError

  def validation_inputs(self, data: samples.Data
                        ) -> tuple[np.ndarray, np.ndarray] | None:
    """(inputs, targets) of the validation samples, None if there are
    none."""
    if not data.validation.any():
      return None
    return (getattr(data, self.input)[data.validation],
            data.target[data.validation])

  def params_directories(self, workdir: epath.PathLike) -> list[epath.Path]:
    """Where the trained parameters are, to try in order: the selected
    step's checkpoint when validation picked one (selection.py), or the
    running average of a stage without validation (train.py), then the
    last step's (`checkpoint.restore_params`)."""
    best = epath.Path(workdir) / self.name / BEST_DIR
    last = epath.Path(workdir) / self.name / "checkpoints"
    return [best, last] if best.exists() else [last]

  def restore(self, workdir: epath.PathLike, sensor: str,
              mesh: jax.sharding.Mesh) -> tuple[Any, int]:
    """(parameters, step) of the trained stage in `workdir`
    (`params_directories`), for evaluation and mapping."""
    return checkpoint.restore_params(self.params_directories(workdir),
                                     self.abstract_params(sensor, mesh))

  def loss_fn(self, sensor: str, teacher: Stage | None,
              stream_sizes: dict[str, int] | None = None
              ) -> objectives.LossFn:
    """The stage's loss; `stream_sizes` ({stream: samples}, `streams`)
    for the terms weighed per sample."""
    raise NotImplementedError


def _statistics(x: np.ndarray) -> dict[str, jax.Array]:
  """A standardisation's parameters (encoder.Standardize) for inputs `x`,
  in fresh arrays (a train step donates its state's buffers)."""
  x = np.asarray(x)
  return {"mean": jnp.asarray(x.mean(axis=0), jnp.float32),
          "scale": jnp.asarray(np.maximum(x.std(axis=0), 1e-6), jnp.float32)}


def _with_input_statistics(params: Any, x: np.ndarray) -> Any:
  """`params` with the standardisation of the encoder and of the linear
  path (where they have one) set to the statistics of the inputs `x`."""
  return {name: (dict(tree, standardize=_statistics(x))
                 if name in ("encoder", "linear") and "standardize" in tree
                 else tree)
          for name, tree in params.items()}


def _as_plsr(path: Any, pls: baselines.Linear) -> Any:
  """A linear path's parameters (encoder.LinearPath) with its output layer
  set so that w·(x - m)/s + b predicts as `pls` does: w = coef·s,
  b = intercept + (m - centre)·coef."""
  mean = np.asarray(path["standardize"]["mean"], np.float64)
  scale = np.asarray(path["standardize"]["scale"], np.float64)
  out = {"kernel": jnp.asarray((pls.coef * scale)[:, None], jnp.float32),
         "bias": jnp.asarray([pls.intercept + (mean - pls.centre) @ pls.coef],
                             jnp.float32)}
  return dict(path, out=out)


def _fit_plsr(x: np.ndarray, target: np.ndarray,
              config: ml_collections.ConfigDict) -> baselines.Linear:
  """PLSR on `x`, regressing `target` through the target transform."""
  forward, _ = targets.on_numpy(config.data.target_transform)
  return baselines.plsr(np.asarray(x, np.float64),
                        forward(np.asarray(target, np.float64)),
                        seed=config.seed)


def _labelled_training(data: samples.Data) -> np.ndarray:
  """[n] bool: the labelled pixels training may use, which a PLSR path is
  fitted on and whose correction bounds it."""
  return (data.train & (data.role == roles.LABELLED) & data.has_pixel
          & data.has_target)


class TeacherStage(Stage):
  """Encoder + head on lab spectra (in the teacher's input space)."""
  input = "lab"

  def model(self, sensor: str) -> nn.Module:
    return from_config.build_teacher(
        self.config.model, sensor, self.lab_grid,
        target_transform=self.config.data.target_transform,
        with_covariates=bool(self.covariate_names))

  def input_size(self, sensor: str) -> int:
    return self.lab_grid.size

  def pixel_matrix(self, sensor: str) -> np.ndarray | None:
    """[teacher inputs, pixel bands]: the SAU's fixed start (the physics
    inverse to the lab grid, or nothing for a sensor-space teacher) that
    takes pixels to the teacher's input space, the classic transfer,
    applied with method='from_prepared'. None when the lab grid has no
    physics route (MIR)."""
    matrix = from_config.adaptation_matrix(sensor, self.config.model,
                                           self.lab_grid)
    return None if matrix is None else matrix.astype(np.float32)

  def pixel_inputs(self, sensor: str,
                   satellite: np.ndarray) -> np.ndarray | None:
    """Pixels in the teacher's input space (`pixel_matrix`); None without
    a physics route."""
    matrix = self.pixel_matrix(sensor)
    return None if matrix is None else satellite @ matrix.T

  def starts_as_plsr(self) -> bool:
    return from_config.plsr_start(self.config.model)

  def with_input_statistics(self, params, data):
    """The training lab spectra, in the teacher's input space; a teacher
    that starts as PLSR gets it in its linear path."""
    model = self.model(data.sensor)
    rows = data.train & data.has_lab
    prepared = model.apply({"params": params}, data.lab[rows],
                           method=model.prepare)
    params = _with_input_statistics(params, prepared)
    if self.starts_as_plsr():
      params = self._with_plsr(params, prepared, data.target[rows])
    return covariate_branch.with_statistics(
        params, self.covariates(data, rows), self.covariate_names, self.name)

  def kept_start(self, params, data):
    """The PLSR start refitted on the training and validation spectra."""
    model = self.model(data.sensor)
    rows = (data.train | data.validation) & data.has_lab
    prepared = model.apply({"params": params}, data.lab[rows],
                           method=model.prepare)
    return self._with_plsr(params, prepared, data.target[rows])

  def kept_step(self, params, start):
    """After a PLSR start: the mean of the step's prediction and the kept
    start's. Validation on a few samples lets steps through that beat the
    start by chance; the mean hedges them. One set of parameters holds it:
    the prediction is the head's output plus the linear path's, each linear
    in its output layer, so the head's is halved and the paths averaged."""
    if not self.starts_as_plsr():
      return params
    half = lambda tree: jax.tree.map(lambda a: 0.5 * a, tree)
    path = jax.tree.map(lambda a, b: 0.5 * (a + b), params["linear"]["out"],
                        start()["linear"]["out"])
    return dict(params,
                head=dict(params["head"], out=half(params["head"]["out"])),
                linear=dict(params["linear"], out=path))

  def _with_plsr(self, params, prepared, target):
    """`params` with the linear path at PLSR's fit to the `prepared`
    spectra's `target`."""
    return dict(params, linear=_as_plsr(
        params["linear"], _fit_plsr(prepared, target, self.config)))

  def streams(self, data):
    return input_pipeline.teacher_streams(data, self.config.train.batch_size,
                                          self.config.seed)

  def loss_fn(self, sensor, teacher, stream_sizes=None):
    del teacher, stream_sizes
    return functools.partial(objectives.teacher_loss,
                             model=self.model(sensor), config=self.config)


class StudentStage(Stage):
  """SAU + encoder + head on satellite pixels, taught by the teacher."""
  input = "satellite"

  def model(self, sensor: str) -> nn.Module:
    return from_config.build_student(
        self.config.model, sensor, self.lab_grid,
        target_transform=self.config.data.target_transform,
        with_covariates=bool(self.covariate_names))

  def input_size(self, sensor: str) -> int:
    return sensors.builtin(sensor).good.size

  def _init_key(self) -> jax.Array:
    return jax.random.key(self.config.seed + 1)  # Not the teacher's draws.

  def init_params(self, sensor, teacher_params=None):
    """Fresh parameters; the encoder and head are the teacher's if the
    config says `init_from_teacher`."""
    params = super().init_params(sensor)
    if self.config.model.init_from_teacher:
      params = deepsalt.init_student_from_teacher(
          params, teacher_params, self.model(sensor).shared)
    return params

  def with_input_statistics(self, params, data):
    """The teacher's when its encoder starts from the teacher's (its
    covariates' too, when it reads the same), else the training regions'
    pixels (no labels involved); a PLSR path at PLSR's fit to the labelled
    training pixels."""
    rows = ~data.test & data.has_pixel
    from_teacher = self.config.model.init_from_teacher
    if not (from_teacher and "encoder" in self.model(data.sensor).shared):
      params = _with_input_statistics(params, data.satellite[rows])
    if "plsr" in params:
      params = self._with_plsr(params, data, rows)
    teachers = self.covariate_names if self.config.teacher.covariates else ()
    if from_teacher and teachers == self.covariate_names:
      return params
    return covariate_branch.with_statistics(
        params, self.covariates(data, rows), self.covariate_names, self.name)

  def _with_plsr(self, params, data, rows):
    """`params` with the PLSR path's standardisation on the pixels `rows`
    and its output at PLSR's fit to the labelled training pixels (at zero,
    the network alone, with too few to fit)."""
    path = dict(params["plsr"]["path"],
                standardize=_statistics(data.satellite[rows]))
    labelled = _labelled_training(data)
    if labelled.sum() < baselines.MIN_SAMPLES:
      logging.warning("[%s] %d labelled training pixels: too few to fit its "
                      "PLSR path, which stays at zero.", self.name,
                      labelled.sum())
    else:
      path = _as_plsr(path, _fit_plsr(data.satellite[labelled],
                                      data.target[labelled], self.config))
    return dict(params, plsr=dict(params["plsr"], path=path))

  def finish(self, params, data, mesh):
    """A PLSR path's bounds on the head's correction: the range the head's
    output takes on the labelled training pixels, where measured EC
    checked it (on the pairs it follows the teacher alone). Other students
    as they are."""
    rows = _labelled_training(data)
    if "plsr" not in params or not rows.any():
      return params
    model = self.model(data.sensor)
    _, inverse = targets.TRANSFORMS[self.config.data.target_transform]
    _, features = predict.predict(
        model, params, data.satellite[rows], mesh,
        self.config.train.eval_batch_size, inverse,
        covariates=self.covariates(data, rows), features=True)
    head = np.asarray(model.apply(
        {"params": params}, jnp.asarray(features), train=False,
        method=lambda m, f, train: m.head(f, train=train)))
    return dict(params, plsr=dict(
        params["plsr"], low=jnp.asarray(head.min(), jnp.float32),
        high=jnp.asarray(head.max(), jnp.float32)))

  def streams(self, data):
    terms = objectives.student_terms(self.config.loss,
                                     self.model(data.sensor).latent)
    return input_pipeline.student_streams(
        data, self.config.train.batch_size, self.config.seed,
        self.config.data.transductive, objectives.streams_for(terms))

  def loss_fn(self, sensor, teacher, stream_sizes=None):
    cfg = self.config.loss
    model = self.model(sensor)
    # The source spectra exist only where the lab grid resamples to the
    # sensor; forward_matrix says why not otherwise.
    needs_source = ("source" in objectives.student_terms(cfg, model.latent)
                    or (cfg.w_alignment and cfg.align_to == "self"))
    return functools.partial(
        objectives.student_loss, model=model, teacher=teacher.model(sensor),
        source_matrix=(from_config.forward_matrix(sensor, self.lab_grid)
                       if needs_source else None),
        config=self.config, stream_sizes=stream_sizes)


@dataclasses.dataclass(frozen=True)
class Plan:
  """The stages of a run: the teacher, then the students (maybe none)."""
  teacher: Stage
  students: tuple[Stage, ...]
  # The students validation chooses among (the default student first), or
  # none: the student is the run's model.
  candidates: tuple[str, ...] = ()

  @property
  def stages(self) -> tuple[Stage, ...]:
    return (self.teacher,) + self.students


def teacher_config(config: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
  """The config the teacher of a student job trains with: the student's
  data (less its covariates unless `teacher.covariates`), model, seed,
  optimizer settings and regression loss, with the teacher's steps and
  batch size."""
  teacher = config.teacher
  return ml_collections.ConfigDict(dict(
      job="teacher", seed=config.seed,
      data=dict(config.data.to_dict(), covariates=(
          config.data.covariates if teacher.covariates else "")),
      model=config.model.to_dict(),
      train=dict(config.train.to_dict(), steps=teacher.steps,
                 batch_size=teacher.batch_size),
      loss=dict(regression=config.loss.regression)))


def _check_distill(config: ml_collections.ConfigDict) -> None:
  """Refuses distillation settings that no student loss can use."""
  # Runs saved before loss.distill existed distil the final features.
  distill = config.loss.get("distill", "final")
  if distill not in choices.DISTILLATIONS:
    raise errors.UserError(f"loss.distill={distill!r}: use one of "
                           f"{', '.join(choices.DISTILLATIONS)}.")
  if distill != "layers":
    return
  # Every encoder has one embedding per block (models/encoder.py); the
  # teacher's has the student's.
  blocks = config.model.encoder.num_blocks
  weights = tuple(config.loss.distill_layer_weights)
  if len(weights) != blocks or min(weights) < 0 or not sum(weights):
    raise errors.UserError(
        f"loss.distill_layer_weights={weights}: give {blocks} weights >= "
        f"0, not all 0, one per encoder block (model.encoder.num_blocks="
        f"{blocks}), first block first.")


def plan(config: ml_collections.ConfigDict,
         lab_grid: lab_grid_lib.LabGrid) -> Plan:
  """The stages `config` trains on a dataset with `lab_grid` (see the
  module docstring)."""
  if config.job not in choices.JOBS:
    raise errors.UserError(f"config.job={config.job!r}: use one of "
                           f"{', '.join(choices.JOBS)}.")
  if config.job == "teacher":
    return Plan(TeacherStage("teacher", config, lab_grid), ())
  candidates = config.get("candidates", {})
  students = [StudentStage("student", config, lab_grid)]
  # A variant both compared and a candidate trains once.
  for name, overrides in {**candidates, **config.compare}.items():
    variant = ml_collections.ConfigDict(config.to_dict())
    variant.update(overrides.to_dict())
    variant.compare = ml_collections.ConfigDict()
    variant.candidates = ml_collections.ConfigDict()
    students.append(StudentStage(name, variant, lab_grid))
  for student in students:
    _check_distill(student.config)
  return Plan(TeacherStage("teacher", teacher_config(config), lab_grid),
              tuple(students),
              ("student", *candidates) if candidates else ())
