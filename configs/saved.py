"""The config a run was trained with, read back from <workdir>/config.json.

launch.py takes it when --mode=eval or --mode=map comes without --config:
  python launch.py --mode=map --workdir=runs/distill --scene=scene.tif
runs as
  python launch.py --mode=map --config=configs/saved.py:runs/distill ...
so evaluation options still override as usual
(--config.train.eval_batch_size=256). Fields added to the configs since the run was trained (the SAU
mode, covariates, the head, ...) take today's defaults, which reproduce what
runs of that time did. Not a config to train with.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from configs import distill
from configs import own_data
from configs import teacher
from deepsalt_jax import run_config


def _config_dict(tree: Any) -> Any:
  """Nested dicts as ConfigDicts; null (an unset optional number) becomes a
  float placeholder, so the command line can still set it."""
  if isinstance(tree, dict):
    return ml_collections.ConfigDict(
        {k: _config_dict(v) for k, v in tree.items()})
  if tree is None:
    return ml_collections.config_dict.placeholder(float)
  return tree


def _defaults(saved: dict[str, Any]) -> dict[str, Any]:
  """Today's config of the run's kind (teacher, own data or distill)."""
  if saved.get("stage") == "teacher":
    return teacher.get_config().to_dict()
  if saved.get("data", {}).get("name") == "own":
    return own_data.get_config().to_dict()
  return distill.get_config("compare=none").to_dict()


def _fill(saved: Any, defaults: Any) -> Any:
  """`saved` with the fields it lacks taken from `defaults`, recursively."""
  if not isinstance(saved, dict) or not isinstance(defaults, dict):
    return saved
  return {**defaults, **{k: _fill(v, defaults.get(k)) for k, v in
                         saved.items()}}


def get_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config; fields added since it was trained take today's
  defaults, which train as it did (run_config.differences ignores them)."""
  saved = run_config.load(workdir)
  return _config_dict(_fill(saved, _defaults(saved)))
