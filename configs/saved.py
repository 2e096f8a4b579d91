"""The config a run was trained with, read back from <workdir>/config.json.

launch.py takes it when --mode=eval or --mode=map comes without --config:
  python launch.py --mode=map --workdir=runs/distill --scene=scene.tif
runs as
  python launch.py --mode=map --config=configs/saved.py:runs/distill ...
so evaluation and mapping options still override as usual
(--config.mapping.mc_samples=0). The `mapping` options are today's defaults
(configs/common.mapping_config), not those saved with the run: they say how
to map, not what was trained, and a run saved before an option existed
still maps. Not a config to train with.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from configs import common
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


def get_config(workdir: str) -> ml_collections.ConfigDict:
  config = _config_dict(run_config.load(workdir))
  if "mapping" in config:
    config.mapping = common.mapping_config()
  return config
