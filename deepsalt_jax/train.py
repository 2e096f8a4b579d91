"""DeepSalt training: teacher on lab spectra, student by distillation.

`train_and_evaluate(config, workdir)` is the whole job, read top-down:
setup -> data -> teacher (restored, or trained when missing) -> student and
its comparison variants -> evaluation on the held-out regions. One jitted,
data-parallel step per stage: `jax.shard_map` over a 1-D ('data',) mesh of
all devices of all processes, batch sharded, state replicated, gradients and
loss terms averaged with `pmean`. Batch-statistic losses (MMD, CORAL, the
discriminator) see the all-gathered global batch, so a step on 8 devices
equals the same step on 1. The loop hands the devices blocks of steps (a
`lax.scan` over the batches' row indices, the data already on the devices)
and acts between blocks: logs, NaN checks, validation, checkpoints and the
preemption check.
"""
from __future__ import annotations

import functools
import signal
from typing import Any, Callable, NamedTuple

from absl import logging
from etils import epath
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax

from data_prep import roles
from deepsalt_jax import applicability
from deepsalt_jax import checkpoint
from deepsalt_jax import compilation
from deepsalt_jax import config_numbers
from deepsalt_jax import evaluate
from deepsalt_jax import input_pipeline
from deepsalt_jax import intervals
from deepsalt_jax import objectives
from deepsalt_jax import paths
from deepsalt_jax import region_calibration
from deepsalt_jax import reporting
from deepsalt_jax import run_config
from deepsalt_jax import samples
from deepsalt_jax import schedule
from deepsalt_jax import selection
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_spectral import errors

# The host takes over at least every this many steps (and at log,
# validation and checkpoint steps): the steps between run in one dispatch.
# There the processes agree on a SIGTERM (preemption; a collective with
# several), and on CPU the loop waits for the block: several (fake) CPU
# devices hang when many collective programs are queued without waiting.
STEPS_PER_DISPATCH = 10


# --- Step -------------------------------------------------------------------


def _per_device_step(loss_fn: objectives.LossFn):
  """One step on a device's share of the batch: grads, pmean, update."""

  def step(state, batch, teacher_params, key):
    key = jax.random.fold_in(jax.random.fold_in(key, state.step),
                             jax.lax.axis_index(sharding.AXIS))
    grads, terms = jax.grad(loss_fn, has_aux=True)(
        state.params, batch, key, teacher_params, state.step)
    grads = jax.lax.pmean(grads, sharding.AXIS)
    terms = jax.lax.pmean(terms, sharding.AXIS)
    return state.apply_gradients(grads=grads), terms

  return step


def _data_parallel(per_device, mesh: jax.sharding.Mesh, in_specs: tuple):
  # check_vma=False: classic pmap semantics, per-device gradients that pmean
  # averages (see the equivalence test in tests/test_train.py).
  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=in_specs,
                               out_specs=(P(), P()), check_vma=False),
                 donate_argnums=0)


def make_train_step(loss_fn: objectives.LossFn, mesh: jax.sharding.Mesh):
  """One jitted, data-parallel step on a sharded batch:
  (state, batch, teacher_params, key) -> (state, terms)."""
  return _data_parallel(_per_device_step(loss_fn), mesh,
                        (P(), P(sharding.AXIS), P(), P()))


def make_train_block(loss_fn: objectives.LossFn, mesh: jax.sharding.Mesh):
  """Jitted, data-parallel steps in one dispatch: a `lax.scan` over a block
  of steps whose batches are gathered on the devices.

  (state, data, indices, teacher_params, key) -> (state, terms): `data` is
  the streams' arrays replicated on the mesh (input_pipeline.device_streams),
  `indices` each stream's [batch, steps] rows sharded over the batch
  (input_pipeline.block_indices); `terms` holds each loss term of every
  step of the block ([steps]).
  """
  step = _per_device_step(loss_fn)

  def per_device(state, data, indices, teacher_params, key):
    def one(state, rows):
      batch = {name: {k: v[rows[name]] for k, v in arrays.items()}
               for name, arrays in data.items()}
      return step(state, batch, teacher_params, key)

    return jax.lax.scan(one, state, jax.tree.map(lambda i: i.T, indices))

  return _data_parallel(per_device, mesh,
                        (P(), P(), P(sharding.AXIS), P(), P()))


# Parameters under a scope of these names are set from data, not trained:
# the optimizer leaves them as they are (models.encoder.Standardize, a
# student's models.encoder.PlsrPath).
FROZEN_SCOPES = ("standardize", "plsr")


def _trainable(params: Any) -> Any:
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "frozen" if any(
          getattr(k, "key", None) in FROZEN_SCOPES for k in path) else "train",
      params)


class AveragedParams(NamedTuple):
  """The optimizer state's running average of the parameters."""
  count: jax.Array
  params: Any


def average_params(decay: float) -> optax.GradientTransformation:
  """Keeps an exponential moving average of the parameters after each update
  (Polyak averaging), leaving the updates as they are. Last in a chain: the
  parameters after the step are `params + updates`. The decay at update t
  is min(decay, (1 + t) / (10 + t)), so the average forgets the start
  early and a short run averages over a window in proportion."""

  def init(params):
    return AveragedParams(jnp.zeros([], jnp.int32),
                          jax.tree.map(jnp.copy, params))

  def update(updates, state, params):
    new = optax.apply_updates(params, updates)
    t = state.count.astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    return updates, AveragedParams(state.count + 1, jax.tree.map(
        lambda a, p: d * a + (1.0 - d) * p, state.params, new))

  return optax.GradientTransformation(init, update)


def make_optimizer(config: ml_collections.ConfigDict):
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, max(config.warmup_steps, 1), config.steps)
  adamw = optax.chain(optax.clip_by_global_norm(config.grad_clip),
                      optax.adamw(schedule, weight_decay=config.weight_decay))
  tx = optax.multi_transform(
      {"train": adamw, "frozen": optax.set_to_zero()}, _trainable)
  if not config.get("average_decay"):
    return tx
  return optax.chain(tx, average_params(config.average_decay))


def trained_params(state: train_state.TrainState) -> Any:
  """What the state's training has made: the running average of the
  parameters when the optimizer keeps one (`train.average_decay`), else
  the parameters themselves."""
  averaged = [s for s in jax.tree.leaves(
      state.opt_state, is_leaf=lambda x: isinstance(x, AveragedParams))
              if isinstance(s, AveragedParams)]
  return averaged[0].params if averaged else state.params


def create_train_state(params: Any, config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh,
                       tx: optax.GradientTransformation | None = None
                       ) -> train_state.TrainState:
  """Step 0 of training `params` with `config.train`'s optimizer (or `tx`),
  replicated on `mesh`."""
  tx = tx or make_optimizer(config.train)
  replicated = sharding.replicated(mesh)
  # One compiled program: the optimizer's zeros and the average's copy made
  # eagerly would compile one small program per parameter shape. Fresh
  # buffers, too, which the train step may donate.
  create = jax.jit(lambda p: train_state.TrainState.create(
      apply_fn=None, params=p, tx=tx), out_shardings=replicated)
  return create(jax.device_put(params, replicated))


# --- Loop -------------------------------------------------------------------


class _Preemption:
  """Turns SIGTERM into a flag the loop checks: save, then exit cleanly.

  With several processes only some may receive the signal; `agreed` ORs
  the flags over processes, so all save the same step.
  """

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

  def agreed(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    flags = multihost_utils.process_allgather(
        np.array([self.requested], np.int32))
    return bool(np.max(flags))

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class Preempted(Exception):
  """Raised after a SIGTERM once the checkpoint of the current step is saved."""


def _block_end(step: int, tcfg: ml_collections.ConfigDict,
               selector: selection.Selector) -> int:
  """The last step of the block after `step`: the first step at which the
  host acts (log, validation, checkpoint, or STEPS_PER_DISPATCH)."""
  end = min(tcfg.steps, (step // STEPS_PER_DISPATCH + 1) * STEPS_PER_DISPATCH)
  return next(s for s in range(step + 1, end + 1) if s == end
              or schedule.is_time(s, tcfg.log_every, tcfg.steps)
              or schedule.is_time(s, tcfg.checkpoint_every, tcfg.steps)
              or selector.due(s))


def fit(stage: stages.Stage, params: Any, loss_fn: objectives.LossFn,
        streams: dict, teacher_params: Any, directory: epath.Path,
        mesh: jax.sharding.Mesh, selector: selection.Selector,
        kept_start: Callable[[], Any] = lambda: None) -> Any:
  """Trains `params` for the stage's steps, resuming from checkpoints.

  Loss terms are fetched and checked for NaN/Inf at every log and checkpoint
  step, for every step since the last check. Returns what training made
  (`trained_params`: the running average with `train.average_decay`) at
  the step `selector` picks (the last one without validation samples;
  `kept_start()` for a PLSR start it keeps, `stage.kept_step` of a step it
  keeps over that start).
  The steps run in blocks (make_train_block) that end where the host acts.
  """
  tcfg = stage.config.train
  name = stage.name
  replicated = sharding.replicated(mesh)
  if tcfg.batch_size % jax.device_count():
    raise errors.UserError(
        f"train.batch_size={tcfg.batch_size} must be divisible by the device "
        f"count {jax.device_count()}.")
  state = create_train_state(params, stage.config, mesh)
  ckpt = checkpoint.Checkpointer(directory / "checkpoints",
                                 tcfg.checkpoint_every, tcfg.keep_checkpoints)
  start = 0
  if ckpt.latest_step():
    state = ckpt.restore_state(checkpoint.abstract_like(state, replicated))
    start = int(state.step)
    logging.info("[%s] %s the checkpoint of step %d", name,
                 "restored" if start == tcfg.steps else "resuming from", start)
  else:
    logging.info("[%s] training for %d steps into %s", name, tcfg.steps,
                 directory)
  block_fn = make_train_block(loss_fn, mesh)
  data = (input_pipeline.device_streams(streams, mesh)
          if start < tcfg.steps else None)
  key = jax.device_put(jax.random.key_data(
      jax.random.key(stage.config.seed)), replicated)
  writer = reporting.MetricWriter(directory)
  if start == 0 and selector.enabled and selector.scores_start:
    writer.write(0, {"validation_rmse": selector.update(
        0, trained_params(state), kept_start())}, name="validation.jsonl")
  progress = reporting.Progress(name, start, tcfg.steps)
  pending, window = [], []  # Device terms; fetched terms since last log.
  sync_each_block = jax.default_backend() == "cpu"  # STEPS_PER_DISPATCH.
  step = start
  with _Preemption() as preemption:
    while step < tcfg.steps:
      first, step = step, _block_end(step, tcfg, selector)
      # Loop step s trains on the streams' batch s - 1.
      indices = input_pipeline.block_indices(streams, first, step - first,
                                             mesh)
      state, terms = block_fn(state, data, indices, teacher_params, key)
      pending.append((first, terms))
      if sync_each_block:
        jax.block_until_ready(terms)
      log = schedule.is_time(step, tcfg.log_every, tcfg.steps)
      save = schedule.is_time(step, tcfg.checkpoint_every, tcfg.steps)
      stop = preemption.agreed()
      if log or save or stop:
        # Fetch before saving, so a NaN state is never checkpointed.
        window += [(s + 1 + i, {k: float(v[i]) for k, v in t.items()})
                   for s, t in jax.device_get(pending)
                   for i in range(len(next(iter(t.values()))))]
        pending = []
        bad = reporting.first_non_finite(window)
        if bad:
          ckpt.close()
          writer.close()
          raise FloatingPointError(
              f"[{name}] loss term {bad[1]!r} is not finite at step {bad[0]}; "
              "lower train.learning_rate or check the inputs for NaN/Inf. "
              f"The last good checkpoint is in {directory / 'checkpoints'}.")
      if log:
        scalars = reporting.mean_scalars(window)
        window = []
        writer.write(step, scalars)
        progress.log(step, scalars)
      if selector.due(step):
        made = trained_params(state)
        writer.write(step, {"validation_rmse": selector.update(
            step, made, stage.kept_step(made, kept_start))},
                     name="validation.jsonl")
      if save or stop:
        ckpt.save(step, state, force=True)
      if stop:
        ckpt.close()
        writer.close()
        raise Preempted(f"[{name}] SIGTERM: saved step {step}; re-run the "
                        "same command to resume.")
  ckpt.close()
  writer.close()
  if not selector.enabled:
    return selector.keep_last(step, trained_params(state), state.params)
  return selector.selected(trained_params(state))


def train_stage(stage: stages.Stage, data: samples.Data,
                teacher: stages.Stage | None, teacher_params: Any,
                workdir: epath.Path, mesh: jax.sharding.Mesh) -> Any:
  """Trains (or resumes, or restores when finished) one stage's params."""
  with compilation.CompileClock() as clock:
    params = stage.with_input_statistics(
        stage.init_params(data.sensor, teacher_params), data)
    directory = workdir / stage.name
    streams = stage.streams(data)
    loss_fn = stage.loss_fn(data.sensor, teacher,
                            {n: len(s) for n, s in streams.items()})
    params = fit(stage, params, loss_fn, streams, teacher_params, directory,
                 mesh, selection.Selector(stage, data, directory, mesh),
                 # Refitted once, if at all (PLSR with inner CV).
                 functools.cache(functools.partial(stage.kept_start, params,
                                                   data)))
  logging.info("[%s] %s", stage.name, clock.summary())
  return params


def train_plan(plan: stages.Plan, data: samples.Data,
               workdir: epath.Path, mesh: jax.sharding.Mesh,
               teacher_params: Any = None) -> dict[str, Any]:
  """Parameters of every stage of `plan` by name: the teacher (given as
  `teacher_params`, or trained into `workdir`), then the students taught by
  it.

  fit() restores a finished stage and returns at once; else it trains or
  resumes.
  """
  if teacher_params is None:
    teacher_params = train_stage(plan.teacher, data, None, None, workdir,
                                 mesh)
  params = {plan.teacher.name: teacher_params}
  for student in plan.students:
    params[student.name] = train_stage(student, data, plan.teacher,
                                       params[plan.teacher.name], workdir,
                                       mesh)
  return params


# --- The job ----------------------------------------------------------------


def _log_data(config: ml_collections.ConfigDict,
              data: samples.Data) -> None:
  counts = np.bincount(data.role[~data.test], minlength=len(roles.ROLE_NAMES))
  logging.info(
      "Data %s/%s: %d samples, held out: %s (%d samples); training part: %s",
      config.data.name, config.data.sensor, len(data.target),
      config.data.test_regions or config.data.test_folds,
      int(data.test.sum()),
      ", ".join(f"{n} {c}" for n, c in zip(roles.ROLE_NAMES, counts)))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: epath.PathLike) -> dict[str, Any]:
  """Trains the stages that `config` names and evaluates on held-out data.

  Returns the evaluation results (also written to <workdir>/results.json).
  The job of configs/teacher.py and distill.py.
  """
  config_numbers.check(config)
  paths.check_writable(workdir, "--workdir")
  workdir = epath.Path(workdir)
  # Each stage and peer compiles its step; a re-run loads them all.
  compilation.use_persistent_cache()
  mesh = sharding.make_mesh()
  logging.info("Devices: %d (%s), processes: %d", jax.device_count(),
               jax.default_backend(), jax.process_count())
  data = samples.load_data(config.data)  # Validates before any write.
  plan = stages.plan(config, data.lab_grid)
  held_out = region_calibration.groups(config, plan, data)
  run_config.save(config, workdir, data.lab_grid)
  _log_data(config, data)
  # Where the labelled pixels speak for a map, each region a fold: a mapped
  # scene is a region of its own.
  labelled = (data.role == roles.LABELLED) & ~data.test & data.has_pixel
  applicability.fit_and_save(data.satellite[labelled], data.region[labelled],
                             workdir)

  with compilation.CompileClock() as clock:
    params = train_plan(plan, data, workdir, mesh)
    calibrations = {student.name: intervals.calibrate(
        student, params[student.name], data, mesh, workdir)
                    for student in plan.students}
    # Regions no network saw, where the run has them, measure transfer to
    # a new one, which the blocks inside the training regions do not: they
    # choose what ships and calibrate it.
    on = (region_calibration.calibration_samples(held_out, plan, data,
                                                 workdir, mesh, train_plan)
          or intervals.validation_samples(
              plan, selection.validation_predictions(plan, params, data,
                                                     mesh), data))
    choice = selection.choose(plan, workdir, on)
    shipped = intervals.calibrate_shipped(plan, choice, on, workdir)
    results = evaluate.report(evaluate.entries(plan, data, params,
                                               calibrations),
                              data, config, workdir, mesh,
                              extra={"choice": choice},
                              shipped=(plan.candidates, shipped))
  logging.info("Compilation, every stage and the evaluation: %s",
               clock.summary())
  return results
