"""Calibration samples from regions no network of the run saw.

The validation blocks lie inside the training regions, whose labelled
pixels the networks trained on; a new region's errors are larger and grow
with the predicted EC, which the blocks cannot show (docs/uncertainty.md).
With `calibration_regions` = K > 0 a distill run splits its training
regions into K groups (drawn with the run's seed) and, for each, trains its
teacher and candidate students again with the group held out
(<workdir>/region_calibration/<K>_groups/group<k>/; each at the best step
on the remaining validation blocks) and predicts the group's labelled
pixels: errors of regions the networks never saw, on samples a user has
labels for. What the run ships is chosen on them (selection.choose: the
groups' candidates' errors stand for the run's) and calibrated on them
(intervals.calibrate_shipped) instead of on its validation blocks, with
the prediction's level a candidate
difficulty and the interval centred on the robust line of these errors on the
prediction (calibration.fit's `location`). It costs K more trainings of
the teacher and the candidates.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from data_prep import roles
from deepsalt_jax import intervals
from deepsalt_jax import samples
from deepsalt_jax import selection
from deepsalt_jax import stages
from deepsalt_jax import targets
from deepsalt_spectral import errors

DIR = "region_calibration"


def groups(config: ml_collections.ConfigDict, plan: stages.Plan,
           data: samples.Data) -> list[np.ndarray]:
  """The training regions (indices into data.region_names) in
  `config.calibration_regions` groups, drawn with the run's seed; [] when
  0. Only regions with labelled training pixels count."""
  k = config.get("calibration_regions", 0)
  if not k:
    return []
  if not plan.candidates:
    raise errors.UserError(
        f"--config.calibration_regions={k} chooses and calibrates what a "
        "run with candidate students ships; this run has none "
        "(candidates=none).")
  regions = np.unique(data.region[_labelled(data)])
  if k > regions.size:
    raise errors.UserError(
        f"--config.calibration_regions={k}: the training part has "
        f"{regions.size} regions with labelled pixels; use at most that "
        "(or 0: choose and calibrate on the validation blocks).")
  order = np.random.default_rng(config.seed).permutation(regions)
  return [np.sort(g) for g in np.array_split(order, k)]


def without(data: samples.Data, regions: np.ndarray) -> samples.Data:
  """`data` with `regions` held out too: neither trained on nor validated
  on (their unlabelled pixels feed a transductive alignment, as a held-out
  region's do)."""
  out = np.isin(data.region, regions)
  return dataclasses.replace(data, test=data.test | out,
                             validation=data.validation & ~out)


def _labelled(data: samples.Data) -> np.ndarray:
  """[n] bool: the training part's labelled pixels (training and
  validation ones)."""
  return (~data.test & (data.role == roles.LABELLED) & data.has_target
          & data.has_pixel)


def calibration_rows(data: samples.Data, regions: np.ndarray) -> np.ndarray:
  """[n] bool: the labelled pixels of `regions`, the samples a group's
  errors are measured on."""
  return np.isin(data.region, regions) & _labelled(data)


def candidates_only(plan: stages.Plan) -> stages.Plan:
  """The teacher and the candidate students of `plan`: what a group's
  run trains (no peers)."""
  return dataclasses.replace(plan, students=tuple(
      s for s in plan.students if s.name in plan.candidates))


def calibration_samples(
    held_out: list[np.ndarray], plan: stages.Plan, data: samples.Data,
    workdir: epath.Path, mesh: jax.sharding.Mesh,
    train_plan: Callable[..., dict[str, Any]]) -> intervals.Samples | None:
  """The candidates' predictions of each group's labelled pixels (`groups`
  of regions), trained (`train_plan`, train.py's; resumed or restored like
  the run's stages) without the group; None without groups."""
  if not held_out:
    return None
  parts = []
  sub = candidates_only(plan)
  _, inverse = targets.on_numpy(
      plan.students[0].config.data.target_transform, np.float64)
  for k, group in enumerate(held_out):
    rows = calibration_rows(data, group)
    logging.info("[region calibration] group %d of %d: %s held out (%d "
                 "labelled pixels)", k + 1, len(held_out),
                 ", ".join(data.region_names[r] for r in group), rows.sum())
    held = without(data, group)
    params = train_plan(sub, held, workdir / DIR / f"{len(held_out)}_groups"
                        / f"group{k}", mesh)
    preds = selection.predictions(sub, params, held, rows, mesh)
    parts.append(intervals.Samples(
        {n: inverse(p) for n, p in preds.items()},
        data.target[rows].astype(np.float64),
        np.asarray(data.region_names)[data.region[rows]], regions=True))
  return intervals.Samples.concatenate(parts, (
      f"labelled pixels of {len(np.concatenate(held_out))} training "
      f"regions, each predicted by the candidates trained without its "
      f"group of regions ({len(held_out)} groups)"))
