"""The intervals a trained run fits, and the difficulty scores they read.

Each student's interval on its validation samples (`calibrate`: its
candidate difficulties the head's and the whole network's MC spread, the
width of its quantile heads and its features' distance to its training
pixels'), and those of what a run with candidates ships and of their
ensemble (`calibrate_shipped`: scaled by the candidates' spread). The
conformal calibration itself is calibration.py; evaluate.py and the maps
apply what is fitted here.
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

from data_prep import roles
from deepsalt_jax import calibration
from deepsalt_jax import feature_distance
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


# calibration.FEATURE_READERS: (what was fitted, features) -> the score.
_READ = {"quantile_heads": quantile_heads.width,
         "feature_distance": feature_distance.distance}


def _read(readers: dict[str, Any], features: np.ndarray
          ) -> dict[str, np.ndarray]:
  """{difficulty: its score} of the `readers` (calibration.FEATURE_READERS
  -> what was fitted, or None) from the student's `features`."""
  return {name: _READ[name](fitted, features)
          for name, fitted in readers.items() if fitted is not None}


def with_difficulty(run: Callable[..., tuple[np.ndarray, np.ndarray]],
                    fitted: dict[str, Any] | None
                    ) -> Callable[..., tuple[np.ndarray, Any]]:
  """`run` (predict.predict with a network and its options bound) made to
  give (prediction in target units, the difficulty score the calibration
  `fitted` reads: an MC spread, one read from the features, or None)."""
  difficulty = fitted["difficulty"] if fitted else "constant"
  if difficulty in calibration.MC_MODES:
    return functools.partial(run, mc_samples=fitted["mc_samples"],
                             mc_mode=fitted["mc_mode"])
  if difficulty in calibration.FEATURE_READERS:
    def from_features(x, **kwargs):
      pred, features = run(x, features=True, **kwargs)
      return pred, _READ[difficulty](fitted[difficulty], features)
    return from_features
  return lambda x, **kwargs: (run(x, **kwargs)[0], None)


def fit_readers(stage: stages.Stage, params: Any, data: samples.Data,
                mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """{calibration.FEATURE_READERS name: fitted, or None with too few
  pixels}: the student's quantile heads on its labelled training pixels,
  the distance to its labelled and paired ones."""
  config = stage.config
  rows = data.train & np.isin(data.role, (roles.LABELLED, roles.PAIRED))
  _, features = runner(stage.model(config.data.sensor), params, mesh,
                       config, stage.covariates(data, rows))(
                           getattr(data, stage.input)[rows], features=True)
  labelled = data.role[rows] == roles.LABELLED
  forward, _ = targets.on_numpy(config.data.target_transform)
  return {"quantile_heads": quantile_heads.fit(
              features[labelled], forward(data.target[rows][labelled]),
              calibration.NOMINAL),
          "feature_distance": feature_distance.fit(features)}


def difficulties(stage: stages.Stage, params: Any, x: np.ndarray,
                 mesh: jax.sharding.Mesh,
                 covariates: np.ndarray | None,
                 readers: dict[str, Any]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(the student's prediction of `x`, {difficulty: its score} in
  calibration.DIFFICULTIES' order, its preference): the MC spreads mapping
  uses and what the fitted `readers` read."""
  run = runner(stage.model(stage.config.data.sensor), params, mesh,
               stage.config, covariates)
  mean, features = run(x, features=True)
  out = _read(readers, features)
  for difficulty, mode in calibration.MC_MODES.items():
    out[difficulty] = run(x, mc_samples=predict.MC_SAMPLES, mc_mode=mode)[1]
  return mean, {d: out[d] for d in calibration.DIFFICULTIES if d in out}


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
  readers = fit_readers(stage, params, data, mesh)
  mean, scores = difficulties(stage, params, inputs[0], mesh,
                              stage.covariates(data, data.validation),
                              readers)
  fitted = calibration.fit(mean, inputs[1], data.blocks[data.validation],
                           config.data.target_transform, scores,
                           predict.MC_SAMPLES, readers)
  if sharding.is_main_process():
    calibration.save(fitted, epath.Path(workdir) / stage.name)
  logging.info("[%s] %s; cross-fitted interval score by difficulty: %s",
               stage.name, calibration.describe(fitted), ", ".join(
                   f"{k} {v['interval_score']:.3g}"
                   if v["interval_score"] is not None else f"{k} none"
                   for k, v in fitted["candidates"].items()))
  return fitted


@dataclasses.dataclass(frozen=True)
class Samples:
  """Samples no candidate trained on, which choose (selection.choose) and
  calibrate what a run with candidates ships: each candidate's predictions
  (target units), the measured values and each sample's group (spatial
  block or region)."""
  members: dict[str, np.ndarray]
  target: np.ndarray
  groups: np.ndarray
  # What they are, in words.
  about: str = selection.VALIDATION_BLOCKS
  # Regions no network saw (region_calibration.py; groups are regions),
  # not the validation blocks: their errors grow with the prediction,
  # which is then a candidate difficulty too, and their bias changes with
  # it, which the interval's centre follows (calibration.fit's `location`;
  # the blocks' errors do neither: docs/uncertainty.md).
  regions: bool = False

  @classmethod
  def concatenate(cls, parts: list[Samples], about: str) -> Samples:
    return cls({n: np.concatenate([p.members[n] for p in parts])
                for n in parts[0].members},
               np.concatenate([p.target for p in parts]),
               np.concatenate([p.groups for p in parts]), about,
               all(p.regions for p in parts))


def validation_samples(plan: stages.Plan, preds: dict[str, np.ndarray],
                       data: samples.Data) -> Samples | None:
  """The validation samples, from the candidates' predictions `preds`
  (transformed target, selection.validation_predictions); None without
  candidates or validation samples."""
  if not plan.candidates or len(preds) < len(plan.candidates):
    return None
  _, inverse = targets.on_numpy(
      plan.students[0].config.data.target_transform, np.float64)
  return Samples({n: inverse(preds[n]) for n in plan.candidates},
                 data.target[data.validation].astype(np.float64),
                 data.blocks[data.validation])


def calibrate_shipped(plan: stages.Plan, choice: dict[str, Any] | None,
                      on: Samples | None,
                      workdir: epath.PathLike) -> dict[str, Any]:
  """Fits and saves the intervals of the candidates' ensemble
  (<workdir>/ensemble/) and of what validation ships (<workdir>/selected/:
  the ensemble, or the candidate it chose hedged with it) on the
  calibration samples `on` (`validation_samples`, or regions no network
  saw, region_calibration.py); their difficulty preferably the
  candidates' spread (calibration.fit). {folder: calibration}; {} without
  a choice or samples."""
  if not choice or on is None:
    return {}
  transform = plan.students[0].config.data.target_transform
  difficulties = {"members": selection.spread(list(on.members.values()),
                                              transform),
                  **({"prediction": None} if on.regions else {}),
                  "constant": None}
  fits, out = {}, {}
  for folder, winner in ((selection.ENSEMBLE, selection.ENSEMBLE),
                         (selection.SHIPPED, choice["winner"])):
    if winner not in fits:  # What ships is often the ensemble.
      fits[winner] = dict(calibration.fit(
          selection.shipped(on.members, winner, transform), on.target,
          on.groups, transform, difficulties, location=on.regions),
                          model=selection.shipped_name(winner,
                                                       plan.candidates),
                          **({"samples": on.about} if on.regions else {}))
    out[folder] = fits[winner]
    if sharding.is_main_process():
      directory = epath.Path(workdir) / folder
      directory.mkdir(parents=True, exist_ok=True)
      calibration.save(out[folder], directory)
  return out
