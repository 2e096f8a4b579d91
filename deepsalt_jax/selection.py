"""Model selection on the validation samples: each stage's best step, and
the best of the candidate students.

Every `train.eval_every` steps (and at the last) a stage's predictions on its
validation samples (`Data.validation`: labelled samples in whole spatial
blocks held out of training) are scored by the RMSE of the transformed
target. The best step's parameters are saved in <stage>/best with the score
in <stage>/best.json, so a resumed run keeps selecting where it stopped, and
evaluation and mapping restore that step (`stages.Stage.params_directories`).
Without validation samples the last step is kept. A stage that starts as
PLSR (`stages.Stage.starts_as_plsr`) is scored at step 0 too, and a later
step replaces that start only if it beats it by more than one standard
error (`pick`; the start's errors in <stage>/start.json): the network must
learn what PLSR misses beyond validation's noise. A start that is kept is
the PLSR refitted with the validation samples too (`Stage.kept_start`),
as a model chosen on held-out data is refitted on all of it; a step kept
over it is saved as the mean of the two (`Stage.kept_step`), since a few
validation samples let some steps through by chance.

`choose` then picks the run's model among the candidates' ensemble (the
mean of the candidate students, `Plan.candidates`, in the transformed
target; `ensemble`) and the candidates themselves, each at its best step, by
the one-standard-error rule: in that order (the ensemble, then the default
student first), the first whose validation MSE exceeds the lowest by no more
than one standard error of their difference over the validation blocks. A
single student must beat the ensemble by more than validation's own noise:
with a few blocks inside the training regions, near-equal scores do not rank
transfer to a new region (docs/results.md measures both rules). Even then
it ships hedged, as the mean of it and the ensemble (`shipped`), as a MIR
teacher's step keeps half its PLSR start and own data's winner half of
PLSR's prediction (model_choice.py): a win on 50 samples of the training
regions may be chance in a new one. Where the run holds groups of its
training regions out of extra trainings (`calibration_regions`,
region_calibration.py), the rule is applied to those regions' labelled
pixels instead, with the region as the unit: errors in a region no network
saw rank transfer to a new one, where the blocks' do not (docs/results.md).
The pick is reported as SELECTED, mapped by default and saved in
<workdir>/choice.json.
"""
from __future__ import annotations

import functools
import json
import math
from typing import Any, Sequence, TYPE_CHECKING

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from deepsalt_jax import checkpoint
from deepsalt_jax import paths
from deepsalt_jax import predict
from deepsalt_jax import samples
from deepsalt_jax import schedule
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import targets

if TYPE_CHECKING:  # intervals imports this module.
  from deepsalt_jax import intervals

BEST_FILE = "best.json"
START_FILE = "start.json"  # A PLSR start's validation errors.
CHOICE_FILE = "choice.json"
# The row of the candidate validation chose (as the own-data CV names its).
SELECTED = "selected (validation)"
# The row (and folder of the calibration) of the candidates' mean.
ENSEMBLE = "ensemble"
# The folder of the calibration of what ships (validation's choice).
SHIPPED = "selected"
# What a choice was made on by default (intervals.Samples.about), and in
# choices saved before they said.
VALIDATION_BLOCKS = "the validation blocks"


def _transformed(stage: stages.Stage, target: np.ndarray) -> np.ndarray:
  forward, _ = targets.TRANSFORMS[stage.config.data.target_transform]
  return np.asarray(forward(target))


def _transformed_predictions(stage: stages.Stage, model: Any, params: Any,
                             x: np.ndarray, covariates: np.ndarray | None,
                             mesh: jax.sharding.Mesh) -> np.ndarray:
  """`model`'s predictions of `x` in the transformed target."""
  pred, _ = predict.predict(model, params, x, mesh,
                            stage.config.train.eval_batch_size,
                            inverse=targets.TRANSFORMS["identity"][1],
                            covariates=covariates)
  return np.asarray(pred, np.float64)


class Selector:
  """Scores a stage on its validation samples and keeps the best step."""

  def __init__(self, stage: stages.Stage, data: samples.Data,
               directory: epath.Path, mesh: jax.sharding.Mesh):
    self._stage, self._mesh = stage, mesh
    self._finish = functools.partial(stage.finish, data=data, mesh=mesh)
    self._directory = epath.Path(directory)
    self._every = stage.config.train.eval_every
    inputs = stage.validation_inputs(data)
    self.enabled = inputs is not None and self._every > 0
    if not self.enabled:
      return
    self._x, self._y = inputs[0], _transformed(stage, inputs[1])
    self._covariates = stage.covariates(data, data.validation)
    self._units = units(data.blocks[data.validation])  # Of the SE.
    self.scores_start = stage.starts_as_plsr()
    start = self._directory / START_FILE
    self._start = (np.asarray(json.loads(start.read_text())["squared_errors"])
                   if start.exists() else None)
    self._model = stage.model(data.sensor)
    self._params = None
    path = self._directory / BEST_FILE
    saved = json.loads(path.read_text()) if path.exists() else {}
    self.best_step = saved.get("step")
    self.best_score = saved.get("validation_rmse", math.inf)

  def due(self, step: int) -> bool:
    return self.enabled and schedule.is_time(
        step, self._every, self._stage.config.train.steps)

  def update(self, step: int, params: Any, kept: Any = None) -> float:
    """Scores `params` (the state after `step`) as they would be kept,
    finished (`Stage.finish`); keeps them (or `kept`, what stands for them
    once chosen) if best and, after a PLSR start, beyond one standard error
    of it."""
    finished = self._finish(params)
    errors = (_transformed_predictions(
        self._stage, self._model, finished, self._x, self._covariates,
        self._mesh) - self._y)**2
    score = float(np.sqrt(np.mean(errors)))
    if step == 0 and self.scores_start:
      self._start = errors
      if sharding.is_main_process():
        paths.write_atomically(self._directory / START_FILE, json.dumps(
            {"squared_errors": errors.tolist()}))
    beats_start = (self._start is None or step == 0 or pick(
        {"start": self._start, "step": errors}, self._units)[0] == "step")
    if beats_start and score < self.best_score:
      self.best_score, self.best_step = score, step
      # `kept` is `params` itself but after a PLSR start: finished once.
      same = kept is None or kept is params
      self._params = jax.tree.map(
          jnp.copy, finished if same else self._finish(kept))
      self._save(step, self._params)
      if sharding.is_main_process():
        paths.write_atomically(self._directory / BEST_FILE, json.dumps(
            {"step": step, "validation_rmse": score}))
    return score

  def _save(self, step: int, params: Any) -> None:
    ckpt = checkpoint.Checkpointer(self._directory / stages.BEST_DIR)
    ckpt.save_params(step, params)
    ckpt.close()

  def keep_last(self, step: int, params: Any, iterate: Any) -> Any:
    """Without validation: what training made at its last `step`
    (`params`), finished (`Stage.finish`), saved where a restore looks
    first (`Stage.params_directories`) unless it is the last checkpoint's
    `iterate` itself (a running average or finished numbers differ; the
    checkpoint holds the iterate, which resuming needs). Once."""
    params = self._finish(params)
    if (params is not iterate
        and not (self._directory / stages.BEST_DIR).exists()):
      self._save(step, params)
    return params

  def selected(self, params: Any) -> Any:
    """The best step's parameters (`params` finished when no step was
    scored)."""
    if not self.enabled or self.best_step is None:
      return self._finish(params)
    if self._params is None:  # Chosen before this run resumed: on disk.
      ckpt = checkpoint.Checkpointer(self._directory / stages.BEST_DIR)
      self._params, _ = ckpt.restore_params(jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                         sharding=x.sharding), params))
      ckpt.close()
    logging.info("[%s] selected step %d (validation RMSE %.4f in the "
                 "transformed target)", self._stage.name, self.best_step,
                 self.best_score)
    return self._params


def units(blocks: np.ndarray) -> np.ndarray:
  """The units errors are grouped by: the blocks, or each sample when
  there is a single block."""
  blocks = np.asarray(blocks)
  return blocks if np.unique(blocks).size > 1 else np.arange(blocks.size)


def pick(errors: dict[str, np.ndarray | None], blocks: np.ndarray
         ) -> tuple[str, dict[str, Any]]:
  """(winner, details) by the one-standard-error rule.

  Args:
    errors: per candidate, in order (the default first), its squared errors
      on the validation samples, or None (not scored: never picked; nor is
      a candidate with an error that is not finite).
    blocks: the validation samples' spatial blocks.

  The standard error of a candidate's excess over the lowest MSE is that of
  the mean of their per-block MSE differences (blocks, not samples: errors
  within a block are correlated). The winner is the first candidate within
  one standard error of the lowest whose MSE is no higher than that of any
  candidate before it: a candidate whose differences are noisy would
  otherwise pass where a preferred one with a lower MSE did not. Without
  scores the first candidate stays.
  """
  names = list(errors)
  scored = [n for n in names
            if errors[n] is not None and np.isfinite(errors[n]).all()]
  if not scored:
    return names[0], {}
  mse = {n: float(np.mean(errors[n])) for n in scored}
  lowest = min(scored, key=mse.get)
  details = {}
  for n in scored:
    per_block = np.array([np.mean(errors[n][blocks == b] -
                                  errors[lowest][blocks == b])
                          for b in np.unique(blocks)])
    se = (float(per_block.std(ddof=1) / np.sqrt(per_block.size))
          if per_block.size > 1 else 0.0)
    details[n] = {"mse_excess": mse[n] - mse[lowest], "standard_error": se}
  # The lowest MSE before each candidate (inf before the first).
  before = np.minimum.accumulate([np.inf] + [mse[n] for n in scored])[:-1]
  winner = next(n for n, floor in zip(scored, before)
                if details[n]["mse_excess"] <= details[n]["standard_error"]
                and mse[n] <= floor)
  return winner, {"lowest": lowest, "margins": details}


def predictions(plan: stages.Plan, params: dict[str, Any],
                data: samples.Data, rows: np.ndarray,
                mesh: jax.sharding.Mesh,
                names: Sequence[str] | None = None
                ) -> dict[str, np.ndarray]:
  """{student: its predictions of `data`'s `rows` in the transformed
  target}, each at its best step (`params`): the candidates', or those of
  the students `names`."""
  by_name = {s.name: s for s in plan.students}
  return {name: _transformed_predictions(
      by_name[name], by_name[name].model(data.sensor), params[name],
      getattr(data, by_name[name].input)[rows],
      by_name[name].covariates(data, rows), mesh)
          for name in (plan.candidates if names is None else names)}


def validation_predictions(plan: stages.Plan, params: dict[str, Any],
                           data: samples.Data, mesh: jax.sharding.Mesh
                           ) -> dict[str, np.ndarray]:
  """The candidates' `predictions` of the validation samples; none
  without validation samples."""
  if not data.validation.any():
    return {}
  return predictions(plan, params, data, data.validation, mesh)


def candidate_errors(preds: dict[str, np.ndarray], y: np.ndarray,
                     candidates: Sequence[str]
                     ) -> dict[str, np.ndarray | None]:
  """What `pick` chooses among, in its order: the squared validation errors
  of the candidates' ensemble (averaged in the transformed space,
  `ensemble`; None unless every candidate is scored), then of each
  candidate (None: not scored). `preds` and `y` in the transformed target."""
  errors = {n: None if n not in preds else (preds[n] - y)**2
            for n in candidates}
  return {ENSEMBLE: (np.mean(list(preds.values()), axis=0) - y)**2
                    if len(preds) == len(candidates) else None, **errors}


def winner_of(members: dict[str, np.ndarray], target: np.ndarray,
              groups: np.ndarray, transform: str, candidates: Sequence[str]
              ) -> tuple[dict[str, np.ndarray | None], str, dict[str, Any]]:
  """(squared errors, winner, details): `pick` among the ensemble of
  `candidates` and each of them from their predictions `members` (target
  units) of samples with measured `target`, grouped by `groups` (spatial
  blocks or regions) for the standard error."""
  forward, _ = targets.on_numpy(transform, np.float64)
  errors = candidate_errors({n: forward(p) for n, p in members.items()},
                            forward(np.asarray(target, np.float64)),
                            candidates)
  return (errors, *pick(errors, units(groups)))


def choose(plan: stages.Plan, workdir: epath.PathLike,
           on: intervals.Samples | None) -> dict[str, Any] | None:
  """Validation's pick (`pick`) among the candidates' ensemble and the
  candidate students from their predictions of samples none of them trained
  on (`on`: the validation blocks', intervals.validation_samples, or those
  of the regions a run held out of its region calibration,
  region_calibration.py, grouped by region); None without candidates.
  Without such samples the ensemble ships. Saved in
  <workdir>/choice.json."""
  if not plan.candidates:
    return None
  workdir = epath.Path(workdir)
  if on is None:
    errors, winner, details = dict.fromkeys(
        [ENSEMBLE, *plan.candidates]), ENSEMBLE, {}
  else:
    errors, winner, details = winner_of(
        on.members, on.target, on.groups,
        plan.students[0].config.data.target_transform, plan.candidates)
  regions = on is not None and on.regions
  choice = {"criterion": "RMSE of the transformed target, each candidate at "
                         "its best step; the first (the ensemble, then the "
                         "default student) within one standard error (over "
                         f"the {'regions' if regions else 'blocks'}) of the "
                         "lowest; a winner other than the ensemble ships as "
                         "its mean with the ensemble",
            "on": VALIDATION_BLOCKS if on is None else on.about,
            "scores": {n: None if e is None else float(np.sqrt(np.mean(e)))
                       for n, e in errors.items()},
            "winner": winner, **details}
  logging.info("[selection] %s (RMSE: %s; lowest %s)", winner,
               ", ".join(f"{n} {v:.4f}" for n, v in choice["scores"].items()
                         if v is not None), details.get("lowest"))
  if sharding.is_main_process():
    paths.write_atomically(workdir / CHOICE_FILE,
                           json.dumps(choice, indent=2))
  return choice


def chose_on_regions(choice: dict[str, Any]) -> bool:
  """Whether a saved choice (or what holds its 'on') was made on regions
  held out of extra trainings, not on the validation blocks (as every
  choice saved before it said what it was made on)."""
  return choice.get("on", VALIDATION_BLOCKS) != VALIDATION_BLOCKS


def load_choice(workdir: epath.PathLike) -> dict[str, Any] | None:
  """The run's saved choice (`choose`), or None (no candidates, or a run
  from before they existed)."""
  path = epath.Path(workdir) / CHOICE_FILE
  return json.loads(path.read_text()) if path.exists() else None


def ensemble(preds: list[np.ndarray], transform: str) -> np.ndarray:
  """The candidates' mean prediction (target units): averaged in the target
  transform's space, where the networks regress (log1p for EC: a geometric
  mean, not pulled up by one candidate's saline outlier)."""
  forward, inverse = targets.on_numpy(transform, np.float64)
  return np.maximum(inverse(np.mean([forward(np.asarray(p, np.float64))
                                     for p in preds], axis=0)), 0.0)


def spread(preds: list[np.ndarray], transform: str) -> np.ndarray:
  """The standard deviation of the candidates' predictions (target units)
  in the target transform's space: the ensemble's difficulty (calibration
  'members')."""
  forward, _ = targets.on_numpy(transform, np.float64)
  return np.std([forward(np.asarray(p, np.float64)) for p in preds], axis=0)


def shipped(preds: dict[str, np.ndarray], winner: str,
            transform: str) -> np.ndarray:
  """What ships, from the candidates' predictions (target units): their
  ensemble, or the `winner` hedged with it (the mean of the two in the
  transform's space)."""
  mean = ensemble(list(preds.values()), transform)
  return mean if winner == ENSEMBLE else ensemble([preds[winner], mean],
                                                  transform)


def shipped_name(winner: str, candidates: Sequence[str]) -> str:
  """What ships, in words (calibrations, maps): the candidates' ensemble,
  or the default student (the first candidate) or a candidate by name
  hedged with it."""
  name = f"the {ENSEMBLE} of {len(candidates)} candidate students"
  if winner == ENSEMBLE:
    return name
  student = winner if winner == candidates[0] else f"student {winner!r}"
  return f"{student} and {name}, their mean"
