"""The intervals a trained run fits, and the difficulty scores they read.

Each student's interval on its validation samples (`calibrate`: its
candidate difficulties the head's MC spread and the width of its quantile
heads), and those of what a run with candidates ships and of their
ensemble (`calibrate_shipped`: scaled by the candidates' spread). The
conformal calibration itself is calibration.py; evaluate.py and the maps
apply what is fitted here.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from data_prep import roles
from deepsalt_jax import calibration
from deepsalt_jax import predict
from deepsalt_jax import quantile_heads
from deepsalt_jax import samples
from deepsalt_jax import selection
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import targets


def runner(model: Any, params: Any, mesh: jax.sharding.Mesh,
           config: ml_collections.ConfigDict,
           covariates: np.ndarray | None = None, method: str | None = None
           ) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
  """x, **options -> predict.predict of `model` on x in target units, at
  the evaluation batch size."""
  _, inverse = targets.TRANSFORMS[config.data.target_transform]
  return functools.partial(predict.predict, model, params, mesh=mesh,
                           batch_size=config.train.eval_batch_size,
                           inverse=inverse, method=method,
                           covariates=covariates)


def with_difficulty(run: Callable[..., tuple[np.ndarray, np.ndarray]],
                    fitted: dict[str, Any] | None
                    ) -> Callable[..., tuple[np.ndarray, Any]]:
  """`run` (predict.predict with a network and its options bound) made to
  give (prediction in target units, the difficulty score the calibration
  `fitted` reads: the MC spread, the quantile heads' width, or None)."""
  difficulty = fitted["difficulty"] if fitted else "constant"
  if difficulty == "head_mc":
    return functools.partial(run, mc_samples=fitted["mc_samples"],
                             mc_mode=fitted["mc_mode"])
  if difficulty == "quantile_heads":
    def with_heads(x, **kwargs):
      pred, features = run(x, features=True, **kwargs)
      return pred, quantile_heads.width(fitted["quantile_heads"], features)
    return with_heads
  return lambda x, **kwargs: (run(x, **kwargs)[0], None)


def fit_quantile_heads(stage: stages.Stage, params: Any, data: samples.Data,
                       mesh: jax.sharding.Mesh) -> dict[str, Any] | None:
  """The student's quantile heads (quantile_heads.py) on its labelled
  training pixels; None with too few."""
  rows = data.train & (data.role == roles.LABELLED)
  config = stage.config
  _, features = runner(stage.model(config.data.sensor), params, mesh,
                       config, stage.covariates(data, rows))(
                           getattr(data, stage.input)[rows], features=True)
  forward, _ = targets.on_numpy(config.data.target_transform)
  return quantile_heads.fit(features, forward(data.target[rows]),
                            calibration.NOMINAL)


def difficulties(stage: stages.Stage, params: Any, x: np.ndarray,
                 mesh: jax.sharding.Mesh,
                 covariates: np.ndarray | None,
                 heads: dict[str, Any] | None
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(the student's prediction of `x`, {difficulty: its score}): the MC
  spread mapping uses and, given `heads`, their width."""
  run = runner(stage.model(stage.config.data.sensor), params, mesh,
               stage.config, covariates)
  mean, std = run(x, mc_samples=predict.MC_SAMPLES, mc_mode=predict.MC_MODE)
  out = {"head_mc": std}
  if heads is not None:
    out["quantile_heads"] = quantile_heads.width(
        heads, run(x, features=True)[1])
  return mean, out


def calibrate(stage: stages.Stage, params: Any, data: samples.Data,
              mesh: jax.sharding.Mesh,
              workdir: epath.PathLike) -> dict[str, Any] | None:
  """Fits and saves the stage's interval on its validation samples (None
  without validation samples, or without dropout: then the run's point
  predictions do not come from the MC passes)."""
  inputs = stage.validation_inputs(data)
  if inputs is None or not stage.config.model.encoder.dropout:
    return None
  config = stage.config
  heads = fit_quantile_heads(stage, params, data, mesh)
  mean, scores = difficulties(stage, params, inputs[0], mesh,
                              stage.covariates(data, data.validation), heads)
  fitted = calibration.fit(mean, inputs[1], data.blocks[data.validation],
                           config.data.target_transform, scores,
                           predict.MC_SAMPLES, predict.MC_MODE, heads)
  if sharding.is_main_process():
    calibration.save(fitted, epath.Path(workdir) / stage.name)
  logging.info("[%s] %s; cross-fitted interval score by difficulty: %s",
               stage.name, calibration.describe(fitted), ", ".join(
                   f"{k} {v['interval_score']:.3g}"
                   for k, v in fitted["candidates"].items()))
  return fitted


def calibrate_shipped(plan: stages.Plan, preds: dict[str, np.ndarray],
                      choice: dict[str, Any] | None, data: samples.Data,
                      workdir: epath.PathLike) -> dict[str, Any]:
  """Fits and saves the intervals of the candidates' ensemble
  (<workdir>/ensemble/) and of what validation ships (<workdir>/selected/:
  the ensemble, or the candidate it chose hedged with it) from the
  candidates' validation predictions `preds` (transformed target,
  selection.validation_predictions); their difficulty preferably the
  candidates' spread (calibration.fit). {folder: calibration}; {} without
  a choice or validation samples."""
  if not choice or len(preds) < len(plan.candidates):
    return {}
  transform = plan.students[0].config.data.target_transform
  _, inverse = targets.on_numpy(transform, np.float64)
  members = {n: inverse(preds[n]) for n in plan.candidates}
  spread = selection.spread(list(members.values()), transform)
  fits, out = {}, {}
  for folder, winner in ((selection.ENSEMBLE, selection.ENSEMBLE),
                         (selection.SHIPPED, choice["winner"])):
    if winner not in fits:  # What ships is often the ensemble.
      fits[winner] = dict(calibration.fit(
          selection.shipped(members, winner, transform),
          data.target[data.validation], data.blocks[data.validation],
          transform, {"members": spread, "constant": None}),
                          model=selection.shipped_name(winner,
                                                       plan.candidates))
    out[folder] = fits[winner]
    if sharding.is_main_process():
      directory = epath.Path(workdir) / folder
      directory.mkdir(parents=True, exist_ok=True)
      calibration.save(out[folder], directory)
  return out
