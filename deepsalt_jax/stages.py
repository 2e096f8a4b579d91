"""The networks a run trains: the teacher, the student and its variants.

A `Stage` knows its model, how to initialise it, which data streams feed it
and its loss; the trainer, evaluation and mapping work with stages, never
with strings. `plan(config)` gives the stages of a config: the teacher alone
(configs/teacher.py), or the teacher, the student and each comparison
variant of `config.compare` (configs/distill.py).

Losses are pure functions of (params, batch, key, teacher_params); each
returns (total, {'loss': total, <term>: value, ...}) so every term is logged.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from deepsalt_jax import input_pipeline
from deepsalt_jax import losses
from deepsalt_jax import sharding
from deepsalt_jax.models import build
from deepsalt_jax.models import deepsalt
from deepsalt_spectral import errors
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def teacher_loss(params, batch, key, teacher_params, *, model, config):
  del teacher_params  # The teacher has no teacher.
  forward, _ = losses.TARGET_TRANSFORMS[config.data.target_transform]
  out = model.apply({"params": params}, batch["lab"]["lab"], train=True,
                    rngs={"dropout": key})
  loss = losses.regression_loss(out["pred"], forward(batch["lab"]["target"]),
                                kind=config.loss.regression)
  return loss, {"loss": loss, "regression": loss}


def student_terms(loss_config: ml_collections.ConfigDict) -> set[str]:
  """The loss terms with a non-zero weight."""
  terms = {"regression"}
  if loss_config.w_distill_feature or loss_config.w_distill_pred:
    terms.add("distillation")
  if loss_config.w_reconstruction:
    terms.add("reconstruction")
  if loss_config.w_alignment:
    terms.add("alignment")
  return terms


def streams_for(terms: set[str]) -> set[str]:
  """The input streams the loss terms draw on."""
  need = {"labelled"}
  if terms & {"distillation", "reconstruction"}:
    need.add("paired")
  if "alignment" in terms:
    need |= {"unlabelled", "library"}
  return need


def student_loss(params, batch, key, teacher_params, *, model, teacher,
                 config):
  """The combined loss; each active term is also returned on its own."""
  cfg = config.loss
  terms = student_terms(cfg)
  forward, _ = losses.TARGET_TRANSFORMS[config.data.target_transform]
  gather = functools.partial(jax.lax.all_gather, axis_name=sharding.AXIS,
                             tiled=True)
  apply = lambda x, k: model.apply({"params": params}, x, train=True,
                                   rngs={"dropout": k})
  keys = jax.random.split(key, 3)
  teach = lambda x: teacher.apply({"params": teacher_params}, x, train=False)

  out = {}
  labelled = apply(batch["labelled"]["satellite"], keys[0])
  out["regression"] = losses.regression_loss(
      labelled["pred"], forward(batch["labelled"]["target"]),
      kind=cfg.regression)
  if "paired" in batch:
    paired = apply(batch["paired"]["satellite"], keys[1])
    lab = batch["paired"]["lab"]
    if "distillation" in terms:
      t = teach(lab)
      out["distillation"] = losses.distillation_loss(
          paired["features"], t["features"], paired["pred"], t["pred"],
          feature_weight=cfg.w_distill_feature, pred_weight=cfg.w_distill_pred)
    if "reconstruction" in terms:
      out["reconstruction"] = losses.reconstruction_loss(paired["lab"], lab)
  if "alignment" in terms:
    unlabelled = apply(batch["unlabelled"]["satellite"], keys[2])
    discriminate = lambda f: model.apply({"params": params}, f,
                                         method=model.discriminate)
    out["alignment"] = losses.alignment_loss(
        cfg.alignment, gather(unlabelled["features"]),
        gather(teach(batch["library"]["lab"])["features"]),
        discriminator=discriminate)
  weights = {"regression": cfg.w_regression, "distillation": 1.0,
             "reconstruction": cfg.w_reconstruction,
             "alignment": cfg.w_alignment}
  total = sum(weights[k] * v for k, v in out.items())
  return total, {"loss": total, **out}


@dataclasses.dataclass(frozen=True)
class Stage:
  """One network of a run, trained into <workdir>/<name>.

  Attributes:
    name: its folder and its name in the results ('teacher', 'student',
      'plain', ...).
    config: the config it trains with (the teacher's own for the teacher).
  """
  name: str
  config: ml_collections.ConfigDict
  input = ""  # What the network reads: 'lab' spectra or 'satellite' pixels.

  def model(self, sensor: str) -> nn.Module:
    raise NotImplementedError

  def input_size(self, sensor: str) -> int:
    raise NotImplementedError

  def init_params(self, sensor: str, teacher_params: Any = None) -> Any:
    """Fresh parameters of the model."""
    x = np.zeros((2, self.input_size(sensor)), np.float32)
    return self.model(sensor).init(self._init_key(), x, train=False)["params"]

  def _init_key(self) -> jax.Array:
    return jax.random.key(self.config.seed)

  def abstract_params(self, sensor: str, mesh: jax.sharding.Mesh) -> Any:
    """Shapes and shardings of the parameters, for a restore."""
    x = jax.ShapeDtypeStruct((2, self.input_size(sensor)), np.float32)
    shapes = jax.eval_shape(lambda x: self.model(sensor).init(
        jax.random.key(0), x, train=False)["params"], x)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(
        s.shape, s.dtype, sharding=sharding.replicated(mesh)), shapes)

  def streams(self, data: input_pipeline.Data
              ) -> dict[str, input_pipeline.Stream]:
    raise NotImplementedError

  def loss_fn(self, sensor: str, teacher: Stage | None) -> LossFn:
    raise NotImplementedError


class TeacherStage(Stage):
  """Encoder + head on lab spectra."""
  input = "lab"

  def model(self, sensor: str) -> nn.Module:
    del sensor  # The lab grid does not depend on the sensor.
    return build.build_teacher(self.config.model)

  def input_size(self, sensor: str) -> int:
    return resampling.lab_wavelengths().size

  def streams(self, data):
    return input_pipeline.teacher_streams(data, self.config.train.batch_size,
                                          self.config.seed)

  def loss_fn(self, sensor, teacher):
    del teacher
    return functools.partial(teacher_loss, model=self.model(sensor),
                             config=self.config)


class StudentStage(Stage):
  """SAU + encoder + head on satellite pixels, taught by the teacher."""
  input = "satellite"

  def model(self, sensor: str) -> nn.Module:
    return build.build_student(self.config.model, sensor)

  def input_size(self, sensor: str) -> int:
    return sensors.builtin(sensor).good.size

  def _init_key(self) -> jax.Array:
    return jax.random.key(self.config.seed + 1)  # Not the teacher's draws.

  def init_params(self, sensor, teacher_params=None):
    """Fresh parameters; the encoder and head are the teacher's if the
    config says `init_from_teacher`."""
    params = super().init_params(sensor)
    if self.config.model.init_from_teacher:
      params = deepsalt.init_student_from_teacher(params, teacher_params)
    return params

  def streams(self, data):
    return input_pipeline.student_streams(
        data, self.config.train.batch_size, self.config.seed,
        self.config.data.transductive,
        streams_for(student_terms(self.config.loss)))

  def loss_fn(self, sensor, teacher):
    return functools.partial(student_loss, model=self.model(sensor),
                             teacher=teacher.model(sensor),
                             config=self.config)


@dataclasses.dataclass(frozen=True)
class Plan:
  """The stages of a run: the teacher, then the students (maybe none)."""
  teacher: Stage
  students: tuple[Stage, ...]

  @property
  def stages(self) -> tuple[Stage, ...]:
    return (self.teacher,) + self.students


def plan(config: ml_collections.ConfigDict) -> Plan:
  """The stages `config` trains (see the module docstring)."""
  if config.stage == "teacher":
    return Plan(TeacherStage("teacher", config), ())
  if config.stage != "student":
    raise errors.UserError(f"config.stage={config.stage!r}: use 'teacher' "
                           "(configs/teacher.py) or 'student' "
                           "(configs/distill.py).")
  if (config.data.name, config.data.sensor) != (
      config.teacher.data.name, config.teacher.data.sensor):
    raise errors.UserError("config.teacher.data must name the same dataset "
                           "and sensor as config.data.")
  students = [StudentStage("student", config)]
  for name, overrides in config.compare.items():
    variant = ml_collections.ConfigDict(config.to_dict())
    variant.update(overrides.to_dict())
    variant.compare = ml_collections.ConfigDict()
    students.append(StudentStage(name, variant))
  return Plan(TeacherStage("teacher", config.teacher), tuple(students))
