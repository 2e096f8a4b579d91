r"""Is the simulated satellite view as dark and as rough as real EnMAP soil?

  python -m benchmarks.realism [--output=realism.json]

Compares the benchmark's simulated EnMAP pixels (all regions of the
'salinity' dataset) with real EnMAP L2A bare-soil pixels (the Potsdam tiles
in $DEEPSALT_REFERENCE_DATA/enmap_potsdam, soil mask of
`deepsalt_spectral.indices.soil_masks`, NDVI <= 0.3), on the EnMAP good
bands, with three statistics:
  brightness  median and 95th percentile reflectance at 860 nm;
  roughness   median over spectra of the relative second difference over
              500-900 nm, mean |x[i-1] - 2 x[i] + x[i+1]| / mean(x) (noise,
              striping and residual features all raise it);
  separability  cross-validated AUC of a random forest telling real from
              simulated spectra after dividing each by its mean (shape only;
              0.5 = indistinguishable, 1.0 = always told apart).
Soils differ (Potsdam is not saline), so the aim is not AUC 0.5 but a
simulated view no cleaner and no brighter than real pixels. Prints a Markdown
table. Run time: about 1 min on 2 CPU cores.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

from absl import app
from absl import flags
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.model_selection import cross_val_predict
from sklearn.metrics import roc_auc_score

from configs import common
from data_prep import datasets
from data_prep import scenes
from deepsalt_spectral import bands
from deepsalt_spectral import sensors

_OUTPUT = flags.DEFINE_string("output", None, "Optional JSON output file.")

ROUGHNESS_NM = (500.0, 900.0)
BRIGHTNESS_NM = 860.0
SAMPLES = 1500  # Per side for the classifier.


def real_soil_pixels(folder: pathlib.Path) -> np.ndarray:
  """[n, EnMAP good bands] bare-soil pixels of every tile in `folder`."""
  enmap = sensors.builtin("enmap")
  out = []
  for path in sorted(folder.glob("*.tif")):
    scene = scenes.read_scene(path)
    match = bands.match_bands(scene.wavelength[scene.good], enmap, 2.0, 0.9)
    soil = scenes.soil_pixels(scene)
    out.append(match(scene.reflectance[scene.good][:, soil].T))
  return np.concatenate(out)


def simulated_pixels(data_dir: str | None) -> np.ndarray:
  source, _ = datasets.load("salinity", "enmap", data_dir)
  return np.stack([source[i]["satellite"] for i in range(len(source))])


def statistics(x: np.ndarray, wavelength: np.ndarray) -> dict[str, float]:
  band = int(np.argmin(np.abs(wavelength - BRIGHTNESS_NM)))
  window = (wavelength >= ROUGHNESS_NM[0]) & (wavelength <= ROUGHNESS_NM[1])
  part = x[:, window]
  second = np.abs(part[:, :-2] - 2 * part[:, 1:-1] + part[:, 2:])
  roughness = second.mean(axis=1) / part.mean(axis=1)
  return {"n": int(len(x)),
          "median_860nm": float(np.median(x[:, band])),
          "p95_860nm": float(np.percentile(x[:, band], 95)),
          "median_roughness": float(np.median(roughness))}


def separability(real: np.ndarray, simulated: np.ndarray,
                 seed: int = 0) -> float:
  """CV AUC of a random forest on mean-normalised spectra (balanced)."""
  rng = np.random.default_rng(seed)
  n = min(SAMPLES, len(real), len(simulated))
  x = np.concatenate([real[rng.choice(len(real), n, replace=False)],
                      simulated[rng.choice(len(simulated), n, replace=False)]])
  x = x / x.mean(axis=1, keepdims=True)
  y = np.repeat([1, 0], n)
  forest = RandomForestClassifier(200, random_state=seed, n_jobs=-1)
  score = cross_val_predict(forest, x, y, method="predict_proba",
                            cv=StratifiedKFold(5, shuffle=True,
                                               random_state=seed))[:, 1]
  return float(roc_auc_score(y, score))


def run(data_dir: str | None = None) -> dict[str, Any]:
  wavelength = sensors.builtin("enmap").good_wavelength
  real = real_soil_pixels(common.reference_data_dir() / "enmap_potsdam")
  simulated = simulated_pixels(data_dir)
  return {"real": statistics(real, wavelength),
          "simulated": statistics(simulated, wavelength),
          "auc_real_vs_simulated": separability(real, simulated)}


def markdown(result: dict[str, Any]) -> str:
  lines = ["| pixels | n | median R(860 nm) | 95th pct R(860 nm) | median "
           "roughness 500-900 nm |", "|---|---|---|---|---|"]
  for name in ("real", "simulated"):
    s = result[name]
    lines.append(f"| {name} | {s['n']} | {s['median_860nm']:.3f} | "
                 f"{s['p95_860nm']:.3f} | {s['median_roughness']:.4f} |")
  lines.append(f"\nRandom-forest AUC real vs simulated (shape only): "
               f"{result['auc_real_vs_simulated']:.3f}")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  result = run()  # Prepared data in $DEEPSALT_DATA_DIR (or the cache).
  print(markdown(result))
  if _OUTPUT.value:
    pathlib.Path(_OUTPUT.value).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
