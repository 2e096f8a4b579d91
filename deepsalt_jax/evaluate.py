"""Evaluation on the held-out samples: predictions, metrics, table, plot.

`report` scores the models a run trained (called at the end of training,
writing results.json/.md and parity.png). `evaluate_checkpoints`
(`--mode=eval`) restores the parameters of every stage of a finished run
from its checkpoints, with the run's own config, and writes
eval-<step>.json/.md and eval-<step>.png beside them.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
from typing import Any

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from deepsalt_jax import calibration
from deepsalt_jax import intervals
from deepsalt_jax import metrics
from deepsalt_jax import predict
from deepsalt_jax import run_config
from deepsalt_jax import samples
from deepsalt_jax import selection
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_spectral import errors

# Table columns: metric key -> header ({unit} filled in).
COLUMNS = {"r2": "R²", "r2_log": "R² log", "rmse": "RMSE ({unit})",
           "rpd": "RPD", "rpiq": "RPIQ", "bias": "bias ({unit})",
           "class_accuracy": "class acc.", "kappa": "kappa"}


@dataclasses.dataclass(frozen=True)
class Entry:
  """A model to score: its name, what it reads, and its test inputs."""
  name: str
  input: str  # 'lab' or 'satellite'.
  model: Any
  params: Any
  x: np.ndarray  # Inputs of the held-out samples.
  method: str | None = None  # The model's method to apply (default call).
  # The calibrated interval (calibration.fit), if there is one.
  calibration: dict[str, Any] | None = None
  covariates: np.ndarray | None = None  # Of the held-out samples, if read.


def with_difficulty(entry: Entry, fitted: dict[str, Any] | None,
                    mesh: jax.sharding.Mesh,
                    config: ml_collections.ConfigDict
                    ) -> tuple[np.ndarray, np.ndarray | None]:
  """(the entry's prediction, the difficulty score its calibration `fitted`
  reads, or None)."""
  return intervals.with_difficulty(intervals.runner(
      entry.model, entry.params, mesh, config, entry.covariates,
      entry.method), fitted)(entry.x)


def entries(plan: stages.Plan, data: samples.Data,
            params: dict[str, Any],
            calibrations: dict[str, Any] | None = None) -> list[Entry]:
  """Every trained model of `plan`, plus the classic transfer baseline
  (what ships and the candidates' ensemble are `report`'s rows)."""
  teacher = plan.teacher
  test = data.subset(data.test)
  model = teacher.model(data.sensor)
  covariates = teacher.covariates(data, data.test)
  out = [Entry(teacher.name, "lab", model, params[teacher.name], test["lab"],
               covariates=covariates)]
  # The classic transfer (a sensor-space teacher on pixels is a source-only
  # network), where the lab grid has a physics route.
  pixels = teacher.pixel_inputs(data.sensor, test["satellite"])
  if pixels is not None:
    out.append(Entry(f"{teacher.name} (pixels)", "satellite", model,
                     params[teacher.name], pixels, method="from_prepared",
                     covariates=covariates))
  students = [Entry(student.name, student.input, student.model(data.sensor),
                    params[student.name], test[student.input],
                    calibration=(calibrations or {}).get(student.name),
                    covariates=student.covariates(data, data.test))
              for student in plan.students]
  return out + students


def score(target: np.ndarray, pred: np.ndarray, region: np.ndarray,
          region_names: tuple[str, ...], classes: bool) -> dict[str, Any]:
  """Metrics overall and per region; `classes`: FAO classes (EC only)."""
  return {"overall": metrics.regression_metrics(target, pred, classes),
          "per_region": metrics.per_region(target, pred, region, region_names,
                                           classes)}


def markdown_table(results: dict[str, dict], unit: str) -> str:
  keys = [k for k in COLUMNS if k in next(iter(results.values()))["overall"]]
  head = ("| model | input | " + " | ".join(
      COLUMNS[k].format(unit=unit) for k in keys) + " | n |")
  lines = [head, "|" + "---|" * (len(keys) + 3)]
  for name, res in results.items():
    m = res["overall"]
    cells = " | ".join(f"{m[k]:.3f}" for k in keys)
    lines.append(f"| {name} | {res['input']} | {cells} | {m['n']} |")
  return "\n".join(lines)


def parity_plot(path: epath.PathLike, results: dict[str, dict],
                unit: str) -> None:
  import matplotlib  # Lazy: plotting is only needed here.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 4),
                           squeeze=False)
  for ax, (name, res) in zip(axes[0], results.items()):
    y, p = np.asarray(res["target"]), np.asarray(res["pred"])
    hi = float(max(y.max(), p.max())) * 1.05
    ax.scatter(y, p, s=6, alpha=0.5)
    ax.plot([0, hi], [0, hi], "k--", lw=1)
    ax.set(xlim=(0, hi), ylim=(0, hi), xlabel=f"measured ({unit})",
           ylabel=f"predicted ({unit})",
           title=f"{name}\nR²={res['overall']['r2']:.2f} "
           f"RMSE={res['overall']['rmse']:.2f}")
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=110, format="png")
  plt.close(fig)
  epath.Path(path).write_bytes(buffer.getvalue())


def _summary(fitted: dict[str, Any]) -> dict[str, Any]:
  """A calibration for reports: less its scores and feature readers."""
  return {k: v for k, v in fitted.items()
          if k not in ("scores", *calibration.FEATURE_READERS)}


def interval_report(pred: np.ndarray, target: np.ndarray,
                    bounds: dict[str, np.ndarray], group: np.ndarray,
                    group_names: tuple[str, ...] | None,
                    threshold: float | None) -> dict[str, Any]:
  """Calibrated intervals (calibration.predictive) on held-out samples,
  overall and per group (region or fold): coverage, widths, interval score,
  and the exceedance reliability (`threshold` None: none)."""
  judge = lambda rows: calibration.judge(
      pred[rows], target[rows], {k: v[rows] for k, v in bounds.items()},
      threshold)
  return {"overall": judge(slice(None)),
          "per_group": {
              (group_names[g] if group_names else str(g)): judge(group == g)
              for g in np.unique(group)}}


def interval_table(intervals: dict[str, dict[str, Any]], unit: str,
                   group: str) -> str:
  """Markdown: per model, overall and per `group` (region, fold), what its
  calibrated interval achieved on held-out samples; '' without any."""
  if not intervals:
    return ""
  lines = [
      f"Calibrated {calibration.NOMINAL:.0%} intervals on the held-out "
      f"samples (width in {unit}; relative: width / prediction; interval "
      "score: Winkler, α = 0.1, lower is better; P gap: the largest "
      "|mean P(exceed) - share exceeding| of a bin of 30 or more):", "",
      f"| model | {group} | n | coverage | median width | median relative "
      "width | interval score | P gap |", "|---|---|---|---|---|---|---|---|"]
  notes = []
  for name, result in intervals.items():
    for where, judged in [("all", result["overall"]),
                          *result["per_group"].items()]:
      gap = judged["reliability_gap"]
      lines.append(
          f"| {name} | {where} | {judged['n']} | {judged['coverage']:.3f} | "
          f"{judged['median_width']:.3f} | "
          f"{judged['median_relative_width']:.3f} | "
          f"{judged['interval_score']:.3f} | "
          f"{'–' if gap is None else f'{gap:.3f}'} |")
    calibrated = result.get("calibration")
    if calibrated:
      notes.append(f"{name}: {calibration.describe(calibrated)}.")
    overall = result["overall"]
    if overall["threshold"] is not None:
      notes.append(
          f"{name}: P(EC > {overall['threshold']:g}) reliability (bin of P: "
          "samples, mean P, share exceeding): " +
          "; ".join(f"{b['p'][0]:.1f}-{b['p'][1]:.1f}: {b['n']}, "
                    f"{b['mean_p']:.2f}, {b['exceeded']:.2f}"
                    for b in overall["reliability"]) + ".")
  lines += [""] + [n + "\n" for n in notes]
  return "\n".join(lines).rstrip()


def _choice_text(choice: dict[str, Any]) -> str:
  """Under the table: validation's pick, every candidate's score and, for
  a pick by the one-standard-error rule (selection.pick), its margins."""
  scores = ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} none"
                     for k, v in choice["scores"].items())
  if "margins" not in choice:  # Runs before the rule: the lowest score.
    return (f"\n\n{selection.SELECTED} = {choice['winner']}: the lowest "
            "validation RMSE (transformed target, each candidate at its "
            f"best step) of {scores}.\n")
  margins = ", ".join(f"{k} {m['mse_excess']:.4f} ± {m['standard_error']:.4f}"
                      for k, m in choice["margins"].items())
  hedged = ("" if choice["winner"] == selection.ENSEMBLE else
            ", shipped as its mean with the ensemble")
  on = choice.get("on", selection.VALIDATION_BLOCKS)
  units = ("regions" if selection.chose_on_regions(choice)
           else "validation blocks")
  return (f"\n\n{selection.SELECTED} = {choice['winner']}{hedged}: the "
          "first (the candidates' ensemble, then the default student) whose "
          f"MSE on {on} is within one standard error of the lowest "
          f"({choice['lowest']}). RMSE there (transformed target, each "
          f"candidate at its best step): {scores}; MSE above the lowest ± its "
          f"standard error over the {units}: {margins}.\n")


def report(entries_: list[Entry], data: samples.Data,
           config: ml_collections.ConfigDict, workdir: epath.PathLike,
           mesh: jax.sharding.Mesh, name: str = "results",
           extra: dict[str, Any] | None = None,
           shipped: tuple[tuple[str, ...], dict[str, Any]] = ((), {})
           ) -> dict[str, Any]:
  """Scores each entry on the held-out samples and, given `shipped` (the
  candidates' names and the calibrations of `calibrate_shipped`), what
  validation ships (`extra['choice']`) and the candidates' ensemble.

  Writes <name>.json, <name>.md and the parity plot (<name>.png, or
  parity.png for the training run's results) into `workdir` and logs the
  table.
  """
  salinity = config.data.name == "salinity"
  unit = "dS/m" if salinity else "%"
  test = data.subset(data.test)
  threshold = calibration.EXCEEDANCE_THRESHOLD if salinity else None

  def result(entry_input, pred, fitted, difficulty=None):
    out = {"input": entry_input, "target": test["target"], "pred": pred,
           **score(test["target"], pred, test["region"], data.region_names,
                   classes=salinity)}
    if fitted:
      out["interval"] = {
          "calibration": _summary(fitted),
          **interval_report(pred, test["target"], calibration.predictive(
              fitted, pred, difficulty, threshold), test["region"],
                            data.region_names, threshold)}
    return out

  results = {}
  for entry in entries_:
    fitted = None
    if entry.calibration:  # Students only.
      fitted, why = calibration.for_spread(entry.calibration,
                                           predict.MC_SAMPLES)
      if not fitted:
        logging.warning("[%s] no interval coverage: %s.", entry.name, why)
    pred, difficulty = with_difficulty(entry, fitted, mesh, config)
    results[entry.name] = result(entry.input, pred, fitted, difficulty)
  members, fitted = shipped
  if members:  # Listed before the students.
    preds = {m: results[m]["pred"] for m in members}
    transform = config.data.target_transform
    spread_ = selection.spread(list(preds.values()), transform)
    winner = ((extra or {}).get("choice") or {}).get("winner")
    rows = [(name, result(results[members[0]]["input"],
                          selection.shipped(preds, chosen, transform),
                          fitted.get(folder), spread_))
            for name, folder, chosen in (
                (selection.SELECTED, selection.SHIPPED, winner),
                (selection.ENSEMBLE, selection.ENSEMBLE, selection.ENSEMBLE))
            if chosen]
    items = list(results.items())
    first = list(results).index(members[0])
    results = dict(items[:first] + rows + items[first:])
  table = markdown_table(results, unit)
  if sharding.is_main_process():
    workdir = epath.Path(workdir)
    parity_plot(workdir / ("parity.png" if name == "results"
                           else f"{name}.png"), results, unit)
    serialisable = {k: {kk: vv for kk, vv in v.items()
                        if kk not in ("target", "pred")}
                    for k, v in results.items()}
    setting = ("transductive: the held-out samples' unlabelled pixels fed "
               "the alignment stream (never their labels or lab spectra)"
               if config.data.transductive else
               "inductive: no held-out sample entered any training stream")
    (workdir / f"{name}.json").write_text(json.dumps(
        {"test_regions": config.data.test_regions,
         "test_folds": config.data.test_folds, "setting": setting,
         "unit": unit, **(extra or {}), "models": serialisable}, indent=2))
    intervals = interval_table(
        {k: v["interval"] for k, v in results.items() if "interval" in v},
        unit, "region")
    choice = (extra or {}).get("choice")
    chosen = _choice_text(choice) if choice else ""
    (workdir / f"{name}.md").write_text(table + chosen + "\n" + (
        "\n" + intervals + "\n" if intervals else ""))
    logging.info("Held out %s (%s; %s):\n%s",
                 config.data.test_regions or f"folds {config.data.test_folds}",
                 unit, setting, table)
    if intervals:
      logging.info("Calibrated intervals:\n%s", intervals)
  return results


def evaluate_checkpoints(config: ml_collections.ConfigDict,
                         workdir: epath.PathLike) -> dict[str, Any]:
  """Restores every stage of the run in `workdir` and evaluates it.

  `config` is the run's (run_config.load), its evaluation options changed
  at most (run_config.check_eval). Writes eval-<step>.json/.md/.png,
  <step> being the student's restored step (the teacher's in a teacher
  run).
  """
  workdir = epath.Path(workdir)
  if config.job == "cross_validation":
    raise errors.UserError(
        f"{workdir} is a run on your own data: spatial cross-validation "
        f"scores it ({workdir / 'cv.md'}). Re-running its training command "
        "restores the finished models and writes the report again.")
  mesh = sharding.make_mesh()
  plan = stages.plan(config, run_config.lab_grid(workdir))
  data = samples.load_data(config.data)
  params, steps = {}, {}
  for stage in plan.stages:
    params[stage.name], steps[stage.name] = stage.restore(
        workdir, data.sensor, mesh)
    logging.info("[%s] restored the checkpoint of step %d (of %d trained)",
                 stage.name, steps[stage.name], stage.config.train.steps)
  # Named for the run's model: the student (not a peer), else the teacher.
  name = f"eval-{steps[(plan.students or (plan.teacher,))[0].name]}"
  calibrations = {s.name: calibration.load(workdir / s.name)
                  for s in plan.students}
  choice = selection.load_choice(workdir) if plan.candidates else None
  results = report(entries(plan, data, params, calibrations), data, config,
                   workdir, mesh, name=name,
                   extra={"checkpoint_steps": steps, "choice": choice},
                   shipped=(plan.candidates, {
                       f: calibration.load(workdir / f)
                       for f in (selection.ENSEMBLE, selection.SHIPPED)}))
  logging.info("Evaluation written to %s", workdir / f"{name}.md")
  return results


def cross_fitted_interval(mean: np.ndarray,
                          scores: dict[str, np.ndarray] | None,
                          target: np.ndarray, fold: np.ndarray,
                          transform: str, threshold: float | None,
                          model: str | None = None,
                          readers: dict[str, Any] | None = None
                          ) -> tuple[dict[str, Any], dict[str, Any]]:
  """(the calibration from every fold, what the cross-fitted intervals
  achieved overall and per fold) of out-of-fold predictions `mean`
  (`scores`: their difficulties, `difficulties`, or None: a constant
  interval) by `model` (None: the student; named in the calibration,
  calibration.describe); `readers`: the final student's
  (intervals.fit_readers), saved if what one reads is kept.

  Cross-fitted: each fold's points judged by the interval calibrated on the
  other folds' out-of-fold errors (their folds are the calibration's
  groups); the calibration saved for mapping uses every fold.
  """
  part = lambda rows: {k: v[rows] for k, v in (scores or {}).items()}
  fit = functools.partial(calibration.fit, transform=transform,
                          mc_samples=predict.MC_SAMPLES, readers=readers)
  bounds = {}
  for k in np.unique(fold):
    other = fold != k
    fitted = fit(mean[other], target[other], fold[other],
                 difficulties=part(other))
    chosen = part(~other).get(fitted["difficulty"])
    for name, value in calibration.predictive(
        fitted, mean[~other], chosen, threshold).items():
      bounds.setdefault(name, np.zeros(len(target)))[~other] = value
  fitted = dict(fit(mean, target, fold, difficulties=scores),
                **({"model": model} if model else {}))
  judged = interval_report(mean, target, bounds, fold, None, threshold)
  return fitted, {"calibration": _summary(fitted), **judged}
