"""Teacher: spectral encoder + head learns EC from lab spectra.

Command: python launch.py --config=configs/teacher.py
Variants (`:arg`): dataset=salinity|soc, tiny.
Run time: about 1-2 min on 2 CPU cores (plus ~1 min to build the default data
the first time).
Expected result: on the held-out regions, lab-spectrum R^2 of about 0.9 on
the simulated salinity benchmark (see README for the measured table).
"""
from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, flags=("tiny",),
                          keys={"dataset": common.DATASETS,
                                "sensor": common.SENSORS})
  config = ml_collections.ConfigDict()
  config.stage = "teacher"
  config.seed = 0
  config.data = common.data_config(args.get("dataset", "salinity"),
                                   args.get("sensor", "enmap"))
  config.model = common.model_config()
  config.train = common.train_config(steps=1000, batch_size=128)
  config.loss = ml_collections.ConfigDict(dict(regression="huber"))
  if args.get("tiny"):
    common.tiny(config)
  return config
