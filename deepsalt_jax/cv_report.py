"""The own-data spatial cross-validation's report: cv.md, cv.json, cv.png.

`write` takes what cross_validation.py measured (pooled and per-fold
metrics, the out-of-fold predictions, validation's choices per fold and on
every point, the cross-fitted intervals, the label curve) and writes the
report a user reads first, with the final model that maps named.
"""
from __future__ import annotations

import json
from typing import Any

from etils import epath
import ml_collections
import numpy as np

from data_prep import ec_methods
from data_prep import roles
from deepsalt_jax import evaluate
from deepsalt_jax import final_model
from deepsalt_jax import label_curve
from deepsalt_jax import model_choice
from deepsalt_jax import samples
from deepsalt_jax import sharding

FINAL = "all points (final)"  # The final model's choice.


def _fold_table(per_fold: dict[str, dict[int, Any]], key: str,
                folds: list[int]) -> str:
  """Markdown: one row per method, one column per fold, then mean ± sd."""
  lines = ["| method | " + " | ".join(f"fold {k}" for k in folds) +
           " | mean ± sd |", "|---|" + "---|" * (len(folds) + 1)]
  for name, scores in per_fold.items():
    values = [scores[k][key] if scores.get(k) else np.nan for k in folds]
    cells = " | ".join("–" if np.isnan(v) else f"{v:.3f}" for v in values)
    finite = np.array([v for v in values if np.isfinite(v)])
    summary = (f"{finite.mean():.3f} ± {finite.std():.3f}" if finite.size
               else "–")
    lines.append(f"| {name} | {cells} | {summary} |")
  return "\n".join(lines)


def write(workdir: epath.Path, config: ml_collections.ConfigDict,
           data: samples.Data, results: dict[str, dict],
           oof: dict[str, np.ndarray], per_fold: dict[str, dict[int, Any]],
           sizes: dict[int, dict], classes: bool,
           intervals: dict[str, dict[str, Any]],
           choices: dict[str, model_choice.Choice],
           curve: dict | None) -> str:
  """cv.json, cv.md and cv.png (with the label curve: its section and
  cv_label_efficiency.png); returns the markdown. `intervals`: what each
  model's interval achieved, cross-fitted."""
  label = ec_methods.label(config.data.ec_method)
  final = choices[FINAL]
  maps = final_model.describe(final)
  unit = f"{config.data.ec_method}, dS/m"
  folds = sorted(sizes)
  report = data.report
  pairs = report["library"]["pair distance m"]
  distance = (f": median {pairs['median']:.0f} m, max {pairs['max']:.0f} m"
              if pairs else "")
  setting = ("transductive: a held-out fold's unlabelled pixels fed the "
             "alignment stream (never its labels or lab spectra)"
             if config.data.transductive else
             "inductive: nothing of a held-out fold entered training")
  header = [
      f"# Spatial cross-validation: {label}",
      "",
      f"Project {config.data.project}: {report['points']['labelled pixels']}"
      f" labelled pixels (each the mean of the soil pixels in a "
      f"{report['window']} x {report['window']} window) of "
      f"{report['points']['read']} field points "
      f"(dropped: {report['points']['dropped'] or 'none'}), "
      f"{report['library']['samples']} library spectra "
      f"({report['library']['paired by sample id']} paired by sample id, "
      f"{report['library']['paired by distance']} by distance{distance}), "
      f"{report['unlabelled pixels']} unlabelled pixels; sensor "
      f"{report['sensor']}.",
      f"EC method: {config.data.ec_method} "
      f"({ec_methods.METHODS[config.data.ec_method]})"
      + (f"; {report['ec_conversion']}." if report["ec_conversion"] else "."),
      f"{len(folds)} folds (k-means of the points' coordinates); every "
      f"method retrained per fold; {setting}.",
      "Fold sizes (points / library spectra held out): " + ", ".join(
          f"{k}: {s['points']} / {s['library']}" for k, s in sizes.items())
      + ".",
      "" if classes else "FAO salinity classes are defined on ECe: no class "
      "agreement for " + config.data.ec_method + ".",
      "",
      "Pooled out-of-fold predictions:",
      "",
      evaluate.markdown_table(results, unit),
      "",
      "R² per fold:",
      "",
      _fold_table(per_fold, "r2", folds),
      "",
      f"RMSE ({unit}) per fold:",
      "",
      _fold_table(per_fold, "rmse", folds),
      "",
      f"Validation's choice ({model_choice.CRITERION}, "
      f"{config.data.target_transform} EC; in bold the winner: the first, "
      "PLSR first, within one standard error of the lowest; a winner other "
      "than PLSR is hedged with it, the mean of the two): "
      "within outer fold k the inner folds are the other folds, each "
      "predicted by a run that held it out with k; the final model's choice "
      "uses the outer folds' out-of-fold predictions"
      + ("." if len(choices) > 1 else
         "; with fewer than 3 folds no inner fold is left, so there is no "
         f"{model_choice.SELECTED!r} row."),
      "",
      model_choice.markdown(choices),
      "",
      f"Maps (--mode=map) are made by {maps}, validation's choice on every "
      "point, trained on every point (saved in "
      f"{final_model.FOLDER}/; --mapping.model=student maps with the "
      "student).",
  ]
  if intervals:
    header += ["", "Intervals, cross-fitted (each fold calibrated on the "
               "other folds' out-of-fold errors; maps use the calibration "
               "from every fold; a model without an MC spread gets a "
               f"constant width in {config.data.target_transform} space):",
               "", evaluate.interval_table(intervals, unit, "fold")]
  if curve:
    header += ["", label_curve.markdown(curve)]
  text = "\n".join(header) + "\n"
  if sharding.is_main_process():
    (workdir / "cv.md").write_text(text)
    evaluate.parity_plot(workdir / "cv.png", results, unit)
    if curve:
      label_curve.plot(workdir / "cv_label_efficiency.png", curve)
    (workdir / "cv.json").write_text(json.dumps({
        "target": label, "ec_method": config.data.ec_method,
        "unit": unit, "setting": setting, "data": report,
        "intervals": intervals,
        "selection": {"criterion": f"{model_choice.CRITERION} "
                                   f"({config.data.target_transform} EC)",
                      "choices": {k: c.to_json() for k, c in choices.items()},
                      "maps": maps},
        "folds": {str(k): s for k, s in sizes.items()},
        "label_curve": curve,
        "methods": {name: {"input": res["input"], "overall": res["overall"],
                           "per_fold": {str(k): v for k, v in
                                        per_fold[name].items()}}
                    for name, res in results.items()},
        # Out-of-fold predictions per labelled pixel (NaN: not fitted).
        "predictions": [
            {"sample_id": str(data.sample_id[i]), "fold": int(data.fold[i]),
             "measured": float(data.target[i]),
             **{name: float(pred[j]) for name, pred in oof.items()}}
            for j, i in enumerate(np.flatnonzero(
                data.role == roles.LABELLED))]}, indent=2))
  return text
