r"""The example project's maps against the EC they were simulated from.

  python -m benchmarks.example_maps --maps=runs/example/maps [--seed=0] \
      [--size=default]

The example project (`data_prep.example_project`) is simulated, so every
pixel's EC is known: this regenerates the landscape of `--seed` and
`--size` (those the project's README.md names; about 5 s) and judges each
`<scene>_ec.tif` in `--maps` on the pixels it mapped, against that EC.
Field points are window means with a sampling error, so a map is held to
a stricter truth than the cross-validation was. Prints a markdown table
per scene: R² of log EC, RMSE (dS/m) and bias in log1p, the largest
prediction, and the calibrated interval's coverage, median width, interval
score and largest P(EC > 4) reliability gap (a bin of 30 or more pixels).
It reads the simulation's secret, so it is a benchmark, never a method.
"""
from typing import Sequence

from absl import app
from absl import flags
import numpy as np
import rasterio

from data_prep import example_landscape as landscape
from deepsalt_jax import calibration
from deepsalt_jax import metrics
from deepsalt_spectral import sensors

_MAPS = flags.DEFINE_string("maps", None, "A folder of the example's maps.",
                            required=True)
_SEED = flags.DEFINE_integer("seed", 0, "The example project's seed.")
_SIZE = flags.DEFINE_enum("size", "default", list(landscape.SIZES),
                          "The example project's size.")

COLUMNS = ("scene", "pixels", "R² log EC", "RMSE", "bias (log1p)", "max EC",
           "coverage", "median width", "interval score", "P gap")


def judge(ec_file: str, truth: np.ndarray) -> dict[str, float]:
  """The map in `ec_file` (bands: EC, lower, upper, P) on its mapped
  pixels against `truth` [rows, cols]."""
  with rasterio.open(ec_file) as ds:
    bands = ds.read(masked=True)
  mapped = ~np.ma.getmaskarray(bands[0])
  ec, lower, upper, p = (np.asarray(b)[mapped] for b in bands)
  target = truth[mapped]
  point = metrics.regression_metrics(target, ec)
  judged = calibration.judge(ec, target, {"lower": lower, "upper": upper,
                                          "p": p})
  return {"pixels": int(mapped.sum()), "R² log EC": point["r2_log"],
          "RMSE": point["rmse"],
          "bias (log1p)": float(np.mean(np.log1p(ec) - np.log1p(target))),
          "max EC": float(ec.max()), "coverage": judged["coverage"],
          "median width": judged["median_width"],
          "interval score": judged["interval_score"],
          "P gap": judged["reliability_gap"]}


def main(argv: Sequence[str]) -> None:
  del argv
  land = landscape.simulate(landscape.SIZES[_SIZE.value], _SEED.value,
                            sensors.builtin("enmap"))
  print("| " + " | ".join(COLUMNS) + " |")
  print("|" + "---|" * len(COLUMNS))
  for scene in land.scenes:
    row = judge(f"{_MAPS.value}/{scene.name}_ec.tif", scene.ec)
    cells = [scene.name] + [
        "n/a" if row[c] is None else f"{row[c]:.3g}" if c != "pixels"
        else str(row[c]) for c in COLUMNS[1:]]
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
  app.run(main)
