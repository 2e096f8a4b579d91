r"""SOC ceiling: how much SOC signal each view keeps when every sample is
labelled.

  python -m benchmarks.soc_ceiling

Per LimeSoDa set of the SOC dataset (`dataset=soc`: measured SOC, real lab
spectra, the satellite view simulated), cross-validation over LimeSoDa's
ten folds with every training sample labelled (the SOC benchmark labels 20
%, benchmarks.compare): PLSR (components by inner CV, `baselines.plsr`)
and the random forest (`baselines.random_forest`) on the satellite pixels
and on the lab spectra (the dataset's lab grid). A local model fitted on
all of a set's pixels is what a transfer method could at best approach
from those pixels, so its R² bounds what any method can show on the
benchmark's view; the lab columns show the signal the view loses. Prints a
markdown table (R² of the out-of-fold predictions); not a test. About 2
min on 2 CPU cores.
"""
from __future__ import annotations

from typing import Callable

from absl import app
import numpy as np
from sklearn import metrics

from configs import distill
from deepsalt_jax import baselines
from deepsalt_jax import samples

MODELS = {"PLSR": baselines.plsr,
          "random forest": baselines.random_forest}


def cross_validated_r2(x: np.ndarray, y: np.ndarray, folds: np.ndarray,
                       fit: Callable[[np.ndarray, np.ndarray],
                                     Callable[[np.ndarray], np.ndarray]]
                       ) -> float:
  """R² of the out-of-fold predictions, `fit(x, y) -> predict` refitted
  without each fold."""
  pred = np.zeros(len(y))
  for k in np.unique(folds):
    held = folds == k
    pred[held] = np.ravel(fit(x[~held], y[~held])(x[held]))
  return float(metrics.r2_score(y, pred))


def main(argv) -> None:
  del argv
  config = distill.get_config("dataset=soc,compare=none,candidates=none")
  config.data.test_folds = "1"  # Any: every sample is used below.
  data = samples.load_data(config.data)
  target = data.target.astype(np.float64)
  columns = [f"{m}, {view}" for view in ("satellite", "lab") for m in MODELS]
  print(f"| set (n) | {' | '.join(columns)} |")
  print("|---|" + "---|" * len(columns))
  means = np.zeros(len(columns))
  sets = np.unique(data.region)
  for r in sets:
    rows = data.region == r
    r2 = [cross_validated_r2(getattr(data, view)[rows], target[rows],
                             data.fold[rows], fit)
          for view in ("satellite", "lab") for fit in MODELS.values()]
    means += np.array(r2) / len(sets)
    print(f"| {data.region_names[r]} ({rows.sum()}) | "
          + " | ".join(f"{v:.2f}" for v in r2) + " |")
  print("| mean | " + " | ".join(f"{v:.2f}" for v in means) + " |")


if __name__ == "__main__":
  app.run(main)
