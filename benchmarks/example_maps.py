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
score and largest P(EC > 4) reliability gap (a bin of 30 or more pixels);
then the share of the mapped pixels outside the area of applicability
(`<scene>_masks.tif`, docs/mapping.md) and the RMSE in log1p and coverage
inside and outside it. It reads the simulation's secret, so it is a
benchmark, never a method.
"""
from typing import Sequence

from absl import app
from absl import flags
import numpy as np
import rasterio

from data_prep import example_landscape as landscape
from deepsalt_jax import applicability
from deepsalt_jax import calibration
from deepsalt_jax import metrics
from deepsalt_spectral import sensors

_MAPS = flags.DEFINE_string("maps", None, "A folder of the example's maps.",
                            required=True)
_SEED = flags.DEFINE_integer("seed", 0, "The example project's seed.")
_SIZE = flags.DEFINE_enum("size", "default", list(landscape.SIZES),
                          "The example project's size.")

COLUMNS = ("scene", "pixels", "R² log EC", "RMSE", "bias (log1p)", "max EC",
           "coverage", "median width", "interval score", "P gap", "outside",
           "RMSE log1p inside", "RMSE log1p outside", "coverage inside",
           "coverage outside")


def judge(ec_file: str, truth: np.ndarray,
          outside: np.ndarray | None = None) -> dict[str, float | None]:
  """The map in `ec_file` (bands: EC, lower, upper, P) on its mapped
  pixels against `truth` [rows, cols]; inside and outside the area of
  applicability where `outside` [rows, cols] flags it."""
  with rasterio.open(ec_file) as ds:
    bands = ds.read(masked=True)
  mapped = ~np.ma.getmaskarray(bands[0])
  ec, lower, upper, p = (np.asarray(b)[mapped] for b in bands)
  target = truth[mapped]
  error = np.log1p(ec) - np.log1p(target)
  covered = (target >= lower) & (target <= upper)
  flagged = (np.zeros(ec.shape, bool) if outside is None
             else outside[mapped])
  part = lambda values, rows: float(values[rows].mean()) if rows.any() else (
      None)
  point = metrics.regression_metrics(target, ec)
  judged = calibration.judge(ec, target, {"lower": lower, "upper": upper,
                                          "p": p})
  return {"pixels": int(mapped.sum()), "R² log EC": point["r2_log"],
          "RMSE": point["rmse"],
          "bias (log1p)": float(np.mean(error)),
          "max EC": float(ec.max()), "coverage": judged["coverage"],
          "median width": judged["median_width"],
          "interval score": judged["interval_score"],
          "P gap": judged["reliability_gap"],
          "outside": float(flagged.mean()),
          "RMSE log1p inside": _root(part(error**2, ~flagged)),
          "RMSE log1p outside": _root(part(error**2, flagged)),
          "coverage inside": part(covered, ~flagged),
          "coverage outside": part(covered, flagged)}


def _root(value: float | None) -> float | None:
  return None if value is None else float(np.sqrt(value))


def _outside(masks_file: str) -> np.ndarray | None:
  """The masks file's band of pixels outside the area of applicability
  (None: a map made without one)."""
  with rasterio.open(masks_file) as ds:
    if applicability.MASK not in ds.descriptions:
      return None
    return ds.read(ds.descriptions.index(applicability.MASK) + 1) == 1


def main(argv: Sequence[str]) -> None:
  del argv
  land = landscape.simulate(landscape.SIZES[_SIZE.value], _SEED.value,
                            sensors.builtin("enmap"))
  print("| " + " | ".join(COLUMNS) + " |")
  print("|" + "---|" * len(COLUMNS))
  for scene in land.scenes:
    stem = f"{_MAPS.value}/{scene.name}"
    row = judge(f"{stem}_ec.tif", scene.ec, _outside(f"{stem}_masks.tif"))
    cells = [scene.name] + [
        "n/a" if row[c] is None else f"{row[c]:.3g}" if c != "pixels"
        else str(row[c]) for c in COLUMNS[1:]]
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
  app.run(main)
