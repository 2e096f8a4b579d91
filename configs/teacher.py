"""Teacher: spectral encoder + head learns EC from lab spectra.

Command: python launch.py --config=configs/teacher.py
Variants (`:arg`): dataset=salinity|soc, sensor=enmap|prisma|emit,
space=sensor|lab, encoder=mlp|conv|transformer, head=linear|bounded, tiny.
Run time: about 1 min on 2 CPU cores (1000 steps at 17 steps/s, plus a few
seconds to build the default data the first time; measured 2026-11-25).
Expected result: on the held-out regions SC.93 + ICRAF South America, lab
spectra, R^2 0.879 and RMSE 1.92 dS/m on the simulated salinity benchmark.
"""
from __future__ import annotations

import ml_collections

from configs import common
from deepsalt_jax import choices
from deepsalt_spectral import sensors


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, flags=("tiny",),
                          keys={"dataset": choices.DATASETS,
                                "sensor": sensors.SENSORS,
                                **common.model_args()})
  config = ml_collections.ConfigDict()
  config.job = "teacher"
  config.seed = 0
  dataset = args.get("dataset", "salinity")
  config.data = common.data_config(dataset, args.get("sensor", "enmap"))
  config.model = common.model_config(args.get("space", "auto"),
                                     args.get("encoder", "mlp"),
                                     args.get("head", "linear"), dataset)
  # As many steps as the students get (configs/distill.py): a sensor-space
  # teacher is also the source-only network they are compared with.
  config.train = common.train_config(steps=1200, batch_size=128)
  config.loss = ml_collections.ConfigDict(dict(regression="huber"))
  if args.get("tiny"):
    common.tiny(config)
  return config
