"""Model selection on the validation samples: each stage's best step, and
the best of the candidate students.

Every `train.eval_every` steps (and at the last) a stage's predictions on its
validation samples (`Data.validation`: labelled samples in whole spatial
blocks held out of training) are scored by the RMSE of the transformed
target. The best step's parameters are saved in <stage>/best with the score
in <stage>/best.json, so a resumed run keeps selecting where it stopped, and
evaluation and mapping restore that step (`stages.Stage.params_directories`).
Without validation samples the last step is kept.

`choose` then keeps the candidate student (`Plan.candidates`) of the lowest
best score: the run's model, reported as SELECTED and mapped by default. Its
choice is saved in <workdir>/choice.json. `ensemble` averages the
candidates instead (the ENSEMBLE row; `--mapping.model=ensemble`).
"""
from __future__ import annotations

import json
import math
from typing import Any

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from deepsalt_jax import checkpoint
from deepsalt_jax import predict
from deepsalt_jax import samples
from deepsalt_jax import schedule
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import targets

BEST_FILE = "best.json"
CHOICE_FILE = "choice.json"
# The row of the candidate validation chose (as the own-data CV names its).
SELECTED = "selected (validation)"
# The row (and folder of the calibration) of the candidates' mean.
ENSEMBLE = "ensemble"


class Selector:
  """Scores a stage on its validation samples and keeps the best step."""

  def __init__(self, stage: stages.Stage, data: samples.Data,
               directory: epath.Path, mesh: jax.sharding.Mesh):
    self._stage, self._mesh = stage, mesh
    self._directory = epath.Path(directory)
    self._every = stage.config.train.eval_every
    inputs = stage.validation_inputs(data)
    self.enabled = inputs is not None and self._every > 0
    if not self.enabled:
      return
    forward, _ = targets.TRANSFORMS[
        stage.config.data.target_transform]
    self._x, self._y = inputs[0], np.asarray(forward(inputs[1]))
    self._covariates = stage.covariates(data, data.validation)
    self._model = stage.model(data.sensor)
    self._params = None
    path = self._directory / BEST_FILE
    saved = json.loads(path.read_text()) if path.exists() else {}
    self.best_step = saved.get("step")
    self.best_score = saved.get("validation_rmse", math.inf)

  def due(self, step: int) -> bool:
    return self.enabled and schedule.is_time(
        step, self._every, self._stage.config.train.steps)

  def update(self, step: int, params: Any) -> float:
    """Scores `params` (the state after `step`); keeps them if best."""
    pred, _ = predict.predict(self._model, params, self._x, self._mesh,
                              self._stage.config.train.eval_batch_size,
                              inverse=targets.TRANSFORMS["identity"][1],
                              covariates=self._covariates)
    score = float(np.sqrt(np.mean((pred - self._y)**2)))
    if score < self.best_score:
      self.best_score, self.best_step = score, step
      self._params = jax.tree.map(jnp.copy, params)
      ckpt = checkpoint.Checkpointer(self._directory / "best")
      ckpt.save_params(step, self._params)
      ckpt.close()
      if sharding.is_main_process():
        (self._directory / BEST_FILE).write_text(json.dumps(
            {"step": step, "validation_rmse": score}))
    return score

  def selected(self, params: Any) -> Any:
    """The best step's parameters (`params`, the last, when disabled)."""
    if not self.enabled or self.best_step is None:
      return params
    if self._params is None:  # Chosen before this run resumed: on disk.
      ckpt = checkpoint.Checkpointer(self._directory / "best")
      self._params, _ = ckpt.restore_params(jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                         sharding=x.sharding), params))
      ckpt.close()
    logging.info("[%s] selected step %d (validation RMSE %.4f in the "
                 "transformed target)", self._stage.name, self.best_step,
                 self.best_score)
    return self._params


def choose(plan: stages.Plan, workdir: epath.PathLike) -> dict[str, Any] | None:
  """The candidate student of the lowest validation score (None without
  candidates), saved in <workdir>/choice.json.

  Every candidate is scored on the same validation samples at its best
  step. Without validation samples (no scores) the default student stays.
  """
  if not plan.candidates:
    return None
  workdir = epath.Path(workdir)
  scores = {}
  for name in plan.candidates:
    path = workdir / name / BEST_FILE
    scores[name] = (json.loads(path.read_text())["validation_rmse"]
                    if path.exists() else math.inf)
  winner = min(plan.candidates, key=lambda n: (scores[n], n != "student"))
  choice = {"criterion": "validation RMSE of the transformed target, each "
                         "candidate at its best step",
            "scores": {n: None if math.isinf(v) else v
                       for n, v in scores.items()},
            "winner": winner}
  logging.info("[selection] %s (validation RMSE: %s)", winner, ", ".join(
      f"{n} {v:.4f}" for n, v in scores.items()))
  if sharding.is_main_process():
    (workdir / CHOICE_FILE).write_text(json.dumps(choice, indent=2))
  return choice


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
