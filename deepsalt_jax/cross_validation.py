"""Spatial cross-validation on a user's own data, then the final models.

`train_and_validate(config, workdir)` is the job of configs/own_data.py
(config.job 'cross_validation'), read top-down:
data -> per fold k (k-means clusters of the field points,
`data_prep.project.folds`): everything in the fold's area is held out
(its points, library samples and pairs; its unlabelled pixels still feed
alignment when data.transductive), the teacher and the students are trained
on the rest into <workdir>/cv/fold<k>/, PLSR and a random forest are fitted
on the same labelled pixels and an MLP on them pooled with the library
resampled to the sensor's bands ("spiking"), and the fold's points are
predicted by each, and by the teacher on the pixels (source-only) -> the
same per pair of folds j, k (<workdir>/cv/fold<j>_<k>/), the inner folds of
nested validation -> validation's choice per fold (`model_choice`: the
candidate or stack the other folds prefer, the "selected (validation)"
row) and on every point -> metrics on the pooled out-of-fold predictions
and per fold -> with config.label_curve, the students and peers again per
outer fold on subsets of its training points (<workdir>/cv/curve/,
`label_curve`) -> the final teacher and students on all data
(<workdir>/teacher, <workdir>/student) -> validation's final model saved
for `--mode=map` (<workdir>/final_model/, `final_model`; its interval
calibrated on its out-of-fold predictions) -> cv.md, cv.json and cv.png
(and cv_label_efficiency.png) in the workdir (`cv_report`).
Re-running resumes: finished runs are restored, not retrained.
"""
from __future__ import annotations

import time
from typing import Any

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from data_prep import ec_methods
from data_prep import roles
from deepsalt_jax import applicability
from deepsalt_jax import baselines
from deepsalt_jax import calibration
from deepsalt_jax import compilation
from deepsalt_jax import config_numbers
from deepsalt_jax import cv_report
from deepsalt_jax import evaluate
from deepsalt_jax import final_model
from deepsalt_jax import intervals
from deepsalt_jax import label_curve
from deepsalt_jax import metrics
from deepsalt_jax import model_choice
from deepsalt_jax import objectives
from deepsalt_jax import paths
from deepsalt_jax import predict
from deepsalt_jax import reporting
from deepsalt_jax import run_config
from deepsalt_jax import samples
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import targets
from deepsalt_jax import train
from deepsalt_jax.models import from_config
from deepsalt_spectral import errors

TEACHER = final_model.TEACHER
# What each method reads (the students: the pixels).
INPUTS = {TEACHER: "pixels in the teacher's input space",
          "PLSR": "pixels (components by inner CV)",
          "random forest": "pixels",
          "pooled MLP": "library resampled to the sensor's bands + pixels",
          model_choice.SELECTED: "per fold, the candidate below that inner "
                                 "spatial folds chose"}


def _check(plan: stages.Plan, data: samples.Data) -> None:
  """Refuses a project the configured student cannot train on."""
  student = plan.students[0]
  terms = objectives.student_terms(student.config.loss,
                                   student.model(data.sensor).latent)
  if not terms & {"distillation", "reconstruction", "contrastive"}:
    return
  without = ("--config.loss.w_distill_feature=0 "
             "--config.loss.w_distill_pred=0 --config.loss.w_reconstruction=0"
             " --config.loss.w_contrastive=0")
  paired = data.role == roles.PAIRED
  if not paired.any():
    raise errors.UserError(
        "No library sample pairs with a pixel (no coordinates inside the "
        "scenes, nor a sample id shared with a field point), so the student "
        "has nothing to distil from. Give the library coordinates, raise "
        "--config.data.pair_max_distance_m, or train without pairs: "
        f"{without}.")
  folds = np.unique(data.fold[data.role == roles.LABELLED]).tolist()
  # The runs of the nested validation hold out pairs of folds too.
  alone = [held for held in model_choice.held_out_sets(folds)
           if not (paired & ~np.isin(data.fold, held)).any()]
  if alone:
    raise errors.UserError(
        "Every pair lies in the area of fold "
        f"{'+'.join(map(str, alone[0]))}, so with that held out the student "
        "has nothing to distil from. Lower "
        "--config.data.folds, give library samples across the area "
        f"coordinates, or train without pairs: {without}.")


def _predictions(plan: stages.Plan, data: samples.Data,
                 params: dict[str, Any], rows: np.ndarray,
                 config: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  """EC of the pixels `rows` by every method trained on data's train part."""
  _, inverse = targets.TRANSFORMS[config.data.target_transform]
  batch = config.train.eval_batch_size
  x = data.satellite[rows]
  run = lambda stage, inputs, method=None: predict.predict(
      stage.model(data.sensor), params[stage.name], inputs, mesh, batch,
      inverse, method=method, covariates=stage.covariates(data, rows))[0]
  out = {student.name: run(student, x) for student in plan.students}
  teacher_inputs = plan.teacher.pixel_inputs(data.sensor, x)
  if teacher_inputs is not None:  # A lab grid with a physics route.
    out[TEACHER] = run(plan.teacher, teacher_inputs, "from_prepared")
  _, inverse_np = targets.on_numpy(config.data.target_transform)
  for name, (x_fit, y_fit) in _baseline_inputs(
      data, config.data.target_transform).items():
    model = final_model.FITS[name](x_fit, y_fit, seed=config.seed)
    out[name] = inverse_np(model(x))
  return out


def _baseline_inputs(data: samples.Data, transform: str
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{scikit-learn method: (x, transformed y)} it is fitted on from data's
  training part: the labelled pixels (with the library resampled to the
  sensor's bands for the pooled MLP); none with too few pixels."""
  forward, _ = targets.on_numpy(transform)
  train_rows = ~data.test & (data.role == roles.LABELLED)
  if train_rows.sum() < baselines.MIN_SAMPLES:
    logging.warning("%d labelled pixels to fit PLSR and the random forest "
                    "(< %d): not fitted.", train_rows.sum(),
                    baselines.MIN_SAMPLES)
    return {}
  x, y = data.satellite[train_rows], forward(data.target[train_rows])
  inputs = {"PLSR": (x, y), "random forest": (x, y)}
  library_rows = ~data.test & data.has_lab & data.has_target
  library = _library_on_sensor(data, library_rows)
  if library is not None:
    inputs["pooled MLP"] = (np.concatenate([library, x]), np.concatenate(
        [forward(data.target[library_rows]), y]))
  return inputs


def _library_on_sensor(data: samples.Data,
                       rows: np.ndarray) -> np.ndarray | None:
  """The lab spectra of `rows` resampled forward to the sensor's bands, or
  None where the lab grid does not resample to them (MIR)."""
  try:
    matrix = from_config.forward_matrix(data.sensor, data.lab_grid)
  except errors.UserError as e:
    logging.warning("The pooled MLP is not fitted: %s", e)
    return None
  return data.lab[rows] @ matrix.T


def _run(plan: stages.Plan, data: samples.Data, held: tuple[int, ...],
         config: ml_collections.ConfigDict, workdir: epath.Path,
         mesh: jax.sharding.Mesh):
  """Trains without the area of the folds `held` into cv/fold<j>[_<k>]/
  (restored when finished) and predicts their labelled pixels: (the data
  with them held out, the parameters, their rows, {method: EC})."""
  fold = samples.held_out(data, np.isin(data.fold, held), config.data)
  rows = fold.test & (data.role == roles.LABELLED)
  params = train.train_plan(
      plan, fold, workdir / "cv" / ("fold" + "_".join(map(str, held))), mesh)
  return fold, params, rows, _predictions(plan, fold, params, rows, config,
                                          mesh)


def _cross_validate(plan: stages.Plan, data: samples.Data,
                    config: ml_collections.ConfigDict, workdir: epath.Path,
                    mesh: jax.sharding.Mesh, classes: bool):
  """(out-of-fold predictions of the labelled pixels per method, the
  selected one first; metrics per method and fold; fold sizes; the
  student's out-of-fold prediction and difficulty scores
  (intervals.difficulties); validation's choices per fold and for the final
  model)."""
  labelled = data.role == roles.LABELLED
  target = data.target[labelled].astype(np.float64)
  folds = sorted(set(data.fold[labelled].tolist()))
  held_out_sets = model_choice.held_out_sets(folds)
  runs, sizes = {}, {}
  student = plan.students[0]
  with_spread = student.config.model.encoder.dropout > 0
  mean, scores = np.full(labelled.sum(), np.nan), {}  # The student's.
  start = time.perf_counter()
  for done, held in enumerate(held_out_sets):
    # ETA of the runs left and the final models.
    logging.info("[cv] run %d of %d: fold(s) %s held out%s", done + 1,
                 len(held_out_sets), "+".join(map(str, held)),
                 reporting.eta(start, done, len(held_out_sets) + 1))
    fold, params, rows, predictions = _run(plan, data, held, config,
                                           workdir, mesh)
    runs[held] = {name: np.full(labelled.sum(), np.nan)
                  for name in predictions}
    for name, pred in predictions.items():
      runs[held][name][rows[labelled]] = pred
    if len(held) > 1:
      continue
    sizes[held[0]] = {"points": int(rows.sum()),
                      "library": int((fold.test & fold.has_lab).sum())}
    if with_spread:
      readers = intervals.fit_readers(student, params[student.name], fold,
                                      mesh)
      mean[rows[labelled]], fold_scores = intervals.difficulties(
          student, params[student.name], fold.satellite[rows], mesh,
          student.covariates(fold, rows), readers)
      for name, value in fold_scores.items():
        scores.setdefault(name, np.full(len(mean), np.nan))[
            rows[labelled]] = value
  selected, choices, final = model_choice.select(  # PLSR first.
      runs, data.fold[labelled], target, config.data.target_transform,
      first=("PLSR",))
  oof = {} if selected is None else {model_choice.SELECTED: selected}
  oof.update(model_choice.validation_predictions(runs, data.fold[labelled],
                                                None))
  fold_of = data.fold[labelled]
  per_fold = {name: {k: metrics.finite_metrics(
      target[fold_of == k], pred[fold_of == k], classes) for k in folds}
              for name, pred in oof.items()}
  for k in folds:
    logging.info("[cv] fold %d: R² / RMSE %s%s", k, ", ".join(
        f"{name} {m[k]['r2']:.2f} / {m[k]['rmse']:.2f}"
        for name, m in per_fold.items() if m.get(k)),
        f"; validation chose {choices[k].winner}" if k in choices else "")
  # Read from the features in some folds only (too few pixels in others):
  # none.
  scores = {k: v for k, v in scores.items() if np.isfinite(v).all()}
  return (oof, per_fold, sizes, (mean, scores) if with_spread else None,
          {**{f"fold {k}": c for k, c in choices.items()},
           cv_report.FINAL: final})


def _curve_run(plan: stages.Plan, data: samples.Data,
               draw: label_curve.Draw, teacher: Any,
               config: ml_collections.ConfigDict, workdir: epath.Path,
               mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  """Outer fold draw.fold's labelled pixels predicted by every method
  trained on the drawn points alone: the other labelled points are held
  out beside the fold's area (their pixels feed alignment as the fold's do
  when transductive). The students train into cv/curve/<draw>/ from the
  outer run's `teacher`."""
  outer = data.fold == draw.fold
  labelled = data.role == roles.LABELLED
  unused = labelled.copy()
  unused[np.flatnonzero(labelled)[draw.points]] = False
  fold = samples.held_out(data, outer | unused, config.data)
  params = train.train_plan(plan, fold, workdir / "cv" / "curve" / draw.name,
                            mesh, teacher_params=teacher)
  return _predictions(plan, fold, params, outer & labelled, config, mesh)


def _label_curve(plan: stages.Plan, data: samples.Data,
                 oof: dict[str, np.ndarray],
                 config: ml_collections.ConfigDict, workdir: epath.Path,
                 mesh: jax.sharding.Mesh, classes: bool) -> dict | None:
  """The label-efficiency curve (label_curve.py), None when not asked for:
  the students and peers per size, draw and outer fold; `oof` gives
  every training point's row."""
  wanted = label_curve.sizes(config.label_curve)
  if not wanted:
    return None
  labelled = data.role == roles.LABELLED
  fold = data.fold[labelled]
  methods = [s.name for s in plan.students] + list(label_curve.PEERS)
  draws, skipped = label_curve.draws(fold, wanted, config.seed)
  pooled, teachers = {}, {}
  start = time.perf_counter()
  for done, draw in enumerate(draws):
    logging.info("[cv] label curve run %d of %d: %s%s", done + 1, len(draws),
                 draw.name, reporting.eta(start, done, len(draws)))
    if draw.fold not in teachers:  # It reads no labelled pixel: restored.
      teachers[draw.fold] = train.train_stage(
          plan.teacher, samples.held_out(data, data.fold == draw.fold,
                                         config.data),
          None, None, workdir / "cv" / f"fold{draw.fold}", mesh)
    predictions = _curve_run(plan, data, draw, teachers[draw.fold], config,
                             workdir, mesh)
    for name in methods:
      if name in predictions:
        pooled.setdefault((draw.size, draw.draw), {}).setdefault(
            name, np.full(len(fold), np.nan))[fold == draw.fold] = (
                predictions[name])
  return label_curve.score(
      pooled, {n: oof[n] for n in methods if n in oof},
      data.target[labelled].astype(np.float64), fold, skipped, classes)


def _save_final_model(workdir: epath.Path, data: samples.Data,
                      config: ml_collections.ConfigDict,
                      choice: model_choice.Choice,
                      oof: dict[str, np.ndarray], threshold: float | None
                      ) -> dict[str, Any] | None:
  """Saves validation's final model for mapping (final_model.py), its
  interval calibrated on its out-of-fold predictions unless it is the
  student alone (whose calibration is its own); returns what that interval
  achieved, cross-fitted (None for the student)."""
  labelled = data.role == roles.LABELLED
  transform = config.data.target_transform
  judged = fitted = None
  if final_model.members(choice) != [final_model.STUDENT]:
    target = data.target[labelled].astype(np.float64)
    mean = choice.out_of_group(oof, target, data.fold[labelled], transform)
    fitted, judged = evaluate.cross_fitted_interval(
        mean, None, target, data.fold[labelled], transform, threshold,
        final_model.describe(choice))
  if sharding.is_main_process():
    final_model.save(workdir / final_model.FOLDER, choice, transform,
                     config.seed, _baseline_inputs(data, transform), fitted)
  return judged


def train_and_validate(config: ml_collections.ConfigDict,
                       workdir: epath.PathLike) -> dict[str, Any]:
  """Cross-validates, trains the final models; returns the CV results."""
  config_numbers.check(config)
  label_curve.sizes(config.label_curve)
  paths.check_writable(workdir, "--workdir")
  workdir = epath.Path(workdir)
  # Every fold trains the same networks on the same shapes: compiled once.
  compilation.use_persistent_cache()
  mesh = sharding.make_mesh()
  data = samples.load_data(config.data)  # Validates before any write.
  plan = stages.plan(config, data.lab_grid)
  _check(plan, data)
  run_config.save(config, workdir, data.lab_grid)
  counts = np.bincount(data.role, minlength=len(roles.ROLE_NAMES))
  logging.info("Project %s: %s", config.data.project, ", ".join(
      f"{n} {c}" for n, c in zip(roles.ROLE_NAMES, counts)))
  classes = config.data.ec_method == ec_methods.CLASS_METHOD
  with compilation.CompileClock() as clock:
    oof, per_fold, sizes, student_oof, choices = _cross_validate(
        plan, data, config, workdir, mesh, classes)
    curve = _label_curve(plan, data, oof, config, workdir, mesh, classes)
    logging.info("[cv] training the final models on every point")
    params = train.train_plan(plan, data, workdir, mesh)
  logging.info("[cv] %s", clock.summary())
  labelled = data.role == roles.LABELLED
  # The FAO limit is one of ECe.
  threshold = calibration.EXCEEDANCE_THRESHOLD if classes else None
  judged = {}
  if student_oof is not None:
    student = plan.students[0]
    fitted, judged["student"] = evaluate.cross_fitted_interval(
        *student_oof, data.target[labelled].astype(np.float64),
        data.fold[labelled], config.data.target_transform, threshold,
        readers=intervals.fit_readers(student, params[student.name], data,
                                      mesh))
    if sharding.is_main_process():
      calibration.save(fitted, workdir / plan.students[0].name)
  final = choices[cv_report.FINAL]
  chosen = _save_final_model(workdir, data, config, final, oof, threshold)
  # Where the points speak for a map: read by the mapper.
  applicability.fit_and_save(data.satellite[labelled], data.fold[labelled],
                             workdir)
  if chosen:
    judged[f"{final_model.describe(final)} (maps)"] = chosen
  target = data.target[data.role == roles.LABELLED].astype(np.float64)
  results = {}
  for name, pred in oof.items():
    ok = np.isfinite(pred)  # A baseline may not be fitted in some fold.
    if ok.sum() >= metrics.MIN_SAMPLES:
      results[name] = {"input": INPUTS.get(name, "pixels"),
                       "target": target[ok], "pred": pred[ok],
                       "overall": metrics.finite_metrics(target, pred,
                                                         classes)}
  text = cv_report.write(workdir, config, data, results, oof, per_fold,
                         sizes, classes, judged, choices, curve)
  logging.info("Cross-validation (%s):\n%s", workdir / "cv.md", text)
  return results
