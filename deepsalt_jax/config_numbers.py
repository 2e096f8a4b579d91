"""The numbers of a training config, checked before any work.

A negative step count or a batch of 0 would otherwise fail inside optax or
a gather after the dataset was built and the workdir written (a workdir
that then refuses the corrected command as another run's). The training
jobs call `check` first.
"""
from typing import Callable

import ml_collections

from deepsalt_spectral import errors

# Field -> (test, what to use); fields a config lacks are not checked.
_TRAIN = {
    "steps": (lambda v: v >= 1, "at least 1 step"),
    "batch_size": (lambda v: v >= 1, "at least 1 sample"),
    "eval_batch_size": (lambda v: v >= 1, "at least 1 sample"),
    "learning_rate": (lambda v: v > 0, "a rate above 0"),
    "warmup_steps": (lambda v: v >= 0, "0 or more steps"),
    "log_every": (lambda v: v >= 1, "at least 1 step"),
    "eval_every": (lambda v: v >= 0, "0 (no selection) or more steps"),
    "checkpoint_every": (lambda v: v >= 1, "at least 1 step"),
    "keep_checkpoints": (lambda v: v >= 1, "at least 1"),
    "grad_clip": (lambda v: v > 0, "a gradient norm above 0"),
    "weight_decay": (lambda v: v >= 0, "0 or more"),
    "average_decay": (lambda v: 0 <= v < 1, "0 (no average) or a decay in "
                      "(0, 1)"),
}
_DATA = {
    "folds": (lambda v: v >= 2, "at least 2 folds"),
    "unlabelled_pixels": (lambda v: v >= 0, "0 or more pixels"),
    "window": (lambda v: v >= 1 and v % 2 == 1, "an odd number of pixels"),
    "max_ec": (lambda v: v > 0, "an EC above 0 (dS/m)"),
    "min_coverage": (lambda v: 0 < v <= 1, "a share in (0, 1]"),
    "band_tolerance_nm": (lambda v: v >= 0, "0 or more nm"),
    "labelled_fraction": (lambda v: 0 <= v <= 1, "a share in [0, 1]"),
    "paired_fraction": (lambda v: 0 <= v <= 1, "a share in [0, 1]"),
    "validation_fraction": (lambda v: 0 <= v < 1, "a share in [0, 1)"),
}
_RUN = {
    "calibration_regions": (lambda v: v >= 0,
                            "0 (the validation blocks) or a number of "
                            "groups of training regions"),
}
_LOSS = {
    "distill_pred_fade": (lambda v: 0 <= v <= 1,
                          "a share of the steps in [0, 1]"),
}


def _check(group: ml_collections.ConfigDict, prefix: str,
           rules: dict[str, tuple[Callable, str]]) -> None:
  for field, (ok, wanted) in rules.items():
    value = group.get(field)
    if value is None:
      continue
    name = f"{prefix}.{field}" if prefix else field
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise errors.UserError(f"--config.{name}={value!r}: use a "
                             f"number ({wanted}).")
    if not ok(value):
      raise errors.UserError(f"--config.{name}={value!r}: use "
                             f"{wanted}.")


def check(config: ml_collections.ConfigDict) -> None:
  """Raises a UserError naming the first number out of range."""
  _check(config, "", _RUN)
  _check(config.train, "train", _TRAIN)
  _check(config.data, "data", _DATA)
  if "loss" in config:
    _check(config.loss, "loss", _LOSS)
  if "teacher" in config:  # A student's teacher: its steps and batch size.
    _check(config.teacher, "teacher", _TRAIN)
