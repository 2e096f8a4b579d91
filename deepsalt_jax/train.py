"""DeepSalt training: teacher on lab spectra, student by distillation.

`train_and_evaluate(config, workdir)` is the whole job, read top-down:
setup -> data -> teacher (restored, or trained when missing) -> student and
its comparison variants -> evaluation on the held-out regions. One jitted,
data-parallel step per stage: `jax.shard_map` over a 1-D ('data',) mesh of
all devices of all processes, batch sharded, state replicated, gradients and
loss terms averaged with `pmean`. Batch-statistic losses (MMD, CORAL, the
discriminator) see the all-gathered global batch, so a step on 8 devices
equals the same step on 1.
"""
from __future__ import annotations

import functools
import json
import pathlib
import signal
from typing import Any, Callable

from absl import logging
from flax.training import train_state
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax

from deepsalt_jax import checkpoint
from deepsalt_jax import evaluate
from deepsalt_jax import input_pipeline
from deepsalt_jax import losses
from deepsalt_jax.models import build
from deepsalt_jax.models import deepsalt
from deepsalt_jax import reporting
from deepsalt_jax import spectra

AXIS = "data"
LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def is_time(step: int, every: int, total: int) -> bool:
  """Whether to log/checkpoint after `step`: every `every` and at the end."""
  return step == total or (every > 0 and step % every == 0)


def make_mesh() -> jax.sharding.Mesh:
  return jax.make_mesh((jax.device_count(),), (AXIS,))


# --- Losses -----------------------------------------------------------------


def teacher_loss(params, batch, key, teacher_params, *, model, config):
  del teacher_params  # The teacher has no teacher.
  forward, _ = losses.TARGET_TRANSFORMS[config.data.target_transform]
  out = model.apply({"params": params}, batch["lab"]["lab"], train=True,
                    rngs={"dropout": key})
  loss = losses.regression_loss(out["pred"], forward(batch["lab"]["target"]),
                                kind=config.loss.regression)
  return loss, {"loss": loss, "regression": loss}


def student_terms(loss_config: ml_collections.ConfigDict) -> set[str]:
  """The loss terms with a non-zero weight, hence the streams to load."""
  terms = {"regression"}
  if loss_config.w_distill_feature or loss_config.w_distill_pred:
    terms.add("distillation")
  if loss_config.w_reconstruction:
    terms.add("reconstruction")
  if loss_config.w_alignment:
    terms.add("alignment")
  return terms


def streams_for(terms: set[str]) -> set[str]:
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
  gather = functools.partial(jax.lax.all_gather, axis_name=AXIS, tiled=True)
  apply = lambda x, k: model.apply({"params": params}, x, train=True,
                                   rngs={"dropout": k})
  keys = jax.random.split(key, 3)
  teach = lambda x: teacher.apply({"params": teacher_params}, x, train=False)

  out = {}
  labelled = apply(batch["labelled"]["satellite"], keys[0])
  out["regression"] = losses.regression_loss(
      labelled["pred"], forward(batch["labelled"]["target"]), kind=cfg.regression)
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


# --- Step and loop ----------------------------------------------------------


def make_train_step(loss_fn: LossFn, mesh: jax.sharding.Mesh):
  """One jitted, data-parallel step: per-device grads, pmean, update."""

  def per_device(state, batch, teacher_params, key):
    key = jax.random.fold_in(jax.random.fold_in(key, state.step),
                             jax.lax.axis_index(AXIS))
    grads, terms = jax.grad(loss_fn, has_aux=True)(
        state.params, batch, key, teacher_params)
    grads = jax.lax.pmean(grads, AXIS)
    terms = jax.lax.pmean(terms, AXIS)
    return state.apply_gradients(grads=grads), terms

  # check_vma=False: classic pmap semantics, per-device gradients that pmean
  # averages (see the equivalence test in tests/test_train.py).
  step = jax.shard_map(per_device, mesh=mesh,
                       in_specs=(P(), P(AXIS), P(), P()),
                       out_specs=(P(), P()), check_vma=False)
  return jax.jit(step, donate_argnums=0)


def make_optimizer(config: ml_collections.ConfigDict):
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, max(config.warmup_steps, 1), config.steps)
  return optax.chain(optax.clip_by_global_norm(config.grad_clip),
                     optax.adamw(schedule, weight_decay=config.weight_decay))


class _Preemption:
  """Turns SIGTERM into a flag the loop checks: save, then exit cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: no signal handling.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class Preempted(Exception):
  """Raised after a SIGTERM once the checkpoint of the current step is saved."""


def fit(name: str, params: Any, loss_fn: LossFn, streams: dict,
        teacher_params: Any, config: ml_collections.ConfigDict,
        directory: pathlib.Path, mesh: jax.sharding.Mesh) -> Any:
  """Trains `params` for `config.train.steps`, resuming from checkpoints."""
  tcfg = config.train
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(AXIS))
  if tcfg.batch_size % jax.device_count():
    raise ValueError(f"train.batch_size={tcfg.batch_size} must be divisible "
                     f"by the device count {jax.device_count()}.")
  state = train_state.TrainState.create(apply_fn=None, params=params,
                                        tx=make_optimizer(tcfg))
  state = jax.device_put(state, replicated)
  ckpt = checkpoint.Checkpointer(directory / "checkpoints",
                                 tcfg.checkpoint_every, tcfg.keep_checkpoints)
  start = ckpt.latest_step() or 0
  if start:
    logging.info("[%s] resuming from the checkpoint of step %d", name, start)
    state = ckpt.restore(checkpoint.abstract_like(state, replicated))
  step_fn = make_train_step(loss_fn, mesh)
  key = jax.device_put(jax.random.key_data(jax.random.key(config.seed)),
                       replicated)
  writer = reporting.MetricWriter(directory)
  progress = reporting.Progress(name, start, tcfg.steps)
  pending, window = [], []  # Device terms; fetched terms since last log.
  sync_each_step = jax.default_backend() == "cpu"  # See DESIGN: CPU traps.
  with _Preemption() as preemption:
    for step in range(start + 1, tcfg.steps + 1):
      batch = input_pipeline.global_batch(streams, step - 1, batch_sharding)
      state, terms = step_fn(state, batch, teacher_params, key)
      pending.append((step, terms))
      if sync_each_step:
        jax.block_until_ready(terms)
      log = is_time(step, tcfg.log_every, tcfg.steps)
      save = is_time(step, tcfg.checkpoint_every, tcfg.steps)
      if log or save or preemption.requested:
        # Fetch before saving, so a NaN state is never checkpointed.
        window += [(s, {k: float(v) for k, v in t.items()})
                   for s, t in jax.device_get(pending)]
        pending = []
        bad = reporting.first_non_finite(window)
        if bad:
          ckpt.close()
          raise FloatingPointError(
              f"[{name}] loss term {bad[1]!r} is not finite at step {bad[0]}; "
              "lower train.learning_rate or check the inputs for NaN/Inf. "
              f"The last good checkpoint is in {directory / 'checkpoints'}.")
      if log:
        scalars = reporting.mean_scalars(window)
        window = []
        writer.write(step, scalars)
        progress.log(step, scalars)
      if save or preemption.requested:
        ckpt.save(step, state, force=True)
      if preemption.requested:
        ckpt.close()
        writer.close()
        raise Preempted(f"[{name}] SIGTERM: saved step {step}; re-run the "
                        "same command to resume.")
  ckpt.close()
  writer.close()
  return state.params


# --- Stages -----------------------------------------------------------------


def train_teacher(config, data, directory, mesh):
  model = build.build_teacher(config.model)
  params = model.init(jax.random.key(config.seed),
                      data.lab[:2], train=False)["params"]
  streams = input_pipeline.teacher_streams(data, config.train.batch_size,
                                           config.seed)
  loss_fn = functools.partial(teacher_loss, model=model, config=config)
  return fit("teacher", params, loss_fn, streams, None, config, directory,
             mesh)


def restore_or_train_teacher(config, data, directory, mesh):
  """The teacher's params: its final checkpoint, else trained now."""
  if (config.data.name, config.data.sensor) != (
      config.teacher.data.name, config.teacher.data.sensor):
    raise ValueError("config.teacher.data must name the same dataset and "
                     "sensor as config.data.")
  ckpt_dir = directory / "checkpoints"
  done = checkpoint.Checkpointer(ckpt_dir, 1, 1).latest_step()
  if done != config.teacher.train.steps:
    logging.info("No finished teacher checkpoint in %s: training the teacher "
                 "first.", ckpt_dir)
  # fit() restores a finished run and returns at once; else it trains/resumes.
  return train_teacher(config.teacher, data, directory, mesh)


def train_student(config, data, teacher_params, directory, mesh):
  model = build.build_student(config.model, data.sensor)
  teacher = build.build_teacher(config.teacher.model)
  params = model.init(jax.random.key(config.seed + 1), data.satellite[:2],
                      train=False)["params"]
  if config.model.init_from_teacher:
    params = deepsalt.init_student_from_teacher(params, teacher_params)
  need = streams_for(student_terms(config.loss))
  streams = input_pipeline.student_streams(
      data, config.train.batch_size, config.seed, config.data.transductive,
      need)
  loss_fn = functools.partial(student_loss, model=model, teacher=teacher,
                              config=config)
  return fit(directory.name, params, loss_fn, streams, teacher_params, config,
             directory, mesh)


def variants(config: ml_collections.ConfigDict
             ) -> dict[str, ml_collections.ConfigDict]:
  """The student config and each comparison variant in `config.compare`."""
  out = {"student": config}
  for name, overrides in config.compare.items():
    variant = ml_collections.ConfigDict(config.to_dict())
    variant.update(overrides.to_dict())
    variant.compare = ml_collections.ConfigDict()
    out[name] = variant
  return out


def restore_params(config: ml_collections.ConfigDict, sensor: str,
                   directory: pathlib.Path, mesh: jax.sharding.Mesh,
                   student: bool) -> Any:
  """A stage's trained params, restored onto `mesh` (any device count)."""
  if student:
    model = build.build_student(config.model, sensor)
    n_in = len(build.adaptation_matrix(sensor, config.model.sau_ridge)[0])
  else:
    model = build.build_teacher(config.model)
    n_in = len(spectra.lab_wavelengths())
  x = jax.ShapeDtypeStruct((2, n_in), np.float32)
  abstract = jax.eval_shape(lambda x: train_state.TrainState.create(
      apply_fn=None, tx=make_optimizer(config.train),
      params=model.init(jax.random.key(0), x, train=False)["params"]), x)
  ckpt = checkpoint.Checkpointer(directory / "checkpoints", 1, 1)
  state = ckpt.restore(checkpoint.abstract_like(
      abstract, NamedSharding(mesh, P())))
  ckpt.close()
  return state.params


def evaluate_checkpoints(config: ml_collections.ConfigDict,
                         workdir: str | pathlib.Path) -> dict[str, Any]:
  """Restores the latest checkpoint of every stage and evaluates them."""
  workdir = pathlib.Path(workdir)
  mesh = make_mesh()
  data = input_pipeline.load_data(config.data)
  if config.stage == "teacher":
    params = {"teacher": restore_params(config, data.sensor,
                                        workdir / "teacher", mesh, False)}
  else:
    params = {"teacher": restore_params(config.teacher, data.sensor,
                                        workdir / "teacher", mesh, False)}
    for name, variant in variants(config).items():
      params[name] = restore_params(variant, data.sensor, workdir / name,
                                    mesh, True)
  return evaluate.report(eval_entries(config, data, params), data, config,
                         workdir, mesh)


def eval_entries(config: ml_collections.ConfigDict, data,
                 params: dict[str, Any]) -> list[tuple]:
  """(name, input, model, params, test inputs) for every trained model."""
  teacher_cfg = config if config.stage == "teacher" else config.teacher
  teacher = build.build_teacher(teacher_cfg.model)
  test = data.subset(data.test)
  # The classic transfer: resample the pixel to the lab grid with the SAU's
  # fixed physics initialisation, then apply the teacher.
  matrix = build.adaptation_matrix(data.sensor, teacher_cfg.model.sau_ridge)
  entries = [
      ("teacher", "lab", teacher, params["teacher"], test["lab"]),
      ("teacher (resampled)", "satellite", teacher, params["teacher"],
       test["satellite"] @ matrix.T.astype(np.float32))]
  if config.stage == "student":
    for name, variant in variants(config).items():
      entries.append((name, "satellite",
                      build.build_student(variant.model, data.sensor),
                      params[name], test["satellite"]))
  return entries


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | pathlib.Path) -> dict[str, Any]:
  """Trains the stage(s) that `config` names and evaluates on held-out data.

  Returns the evaluation results (also written to <workdir>/results.json).
  """
  workdir = pathlib.Path(workdir)
  mesh = make_mesh()
  logging.info("Devices: %d (%s), processes: %d", jax.device_count(),
               jax.default_backend(), jax.process_count())
  data = input_pipeline.load_data(config.data)  # Validates before any write.
  if reporting.is_main_process():
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json(indent=2))
  labelled, paired, unlabelled = np.bincount(data.role[~data.test],
                                             minlength=3)
  logging.info("Data %s/%s: %d samples, held out: %s (%d samples); "
               "training part: %d labelled, %d paired, %d unlabelled",
               config.data.name, config.data.sensor, len(data.target),
               config.data.test_regions, int(data.test.sum()), labelled,
               paired, unlabelled)

  if config.stage == "teacher":
    params = {"teacher": train_teacher(config, data, workdir / "teacher",
                                       mesh)}
  elif config.stage == "student":
    params = {"teacher": restore_or_train_teacher(
        config, data, workdir / "teacher", mesh)}
    for name, variant in variants(config).items():
      params[name] = train_student(variant, data, params["teacher"],
                                   workdir / name, mesh)
  else:
    raise ValueError(f"config.stage={config.stage!r}: use 'teacher' or "
                     "'student'.")
  return evaluate.report(eval_entries(config, data, params), data, config,
                         workdir, mesh)
