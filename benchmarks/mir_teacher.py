r"""A MIR teacher on real MIR spectra: LimeSoDa's MIR sets, teacher vs PLSR.

  python -m benchmarks.mir_teacher --out=runs/benchmark_mir \
      [--sets=H.138,NRW.115,NRW.62,NRW.42,O.32] [--targets=SOC,clay,pH] \
      [--folds=1,...,10] [--encoders=mlp] [--steps_scale=1.0] \
      [--teacher_start=network|plsr] [--tiny]

Protocol (issue 14): within each LimeSoDa MIR set (data_prep.sources.
limesoda_mir: the instrument's wavenumber grid, increasing, reflectance as
measured), LimeSoDa's ten folds. For fold k of a set and target, the training
rows are the set's other folds; the fold's rows are only ever predicted.
  plsr     baselines.plsr on the training rows (components by inner 5-fold
           CV on those rows alone), every channel.
  teacher  configs/teacher.py's network with model.space='lab' on the set's
           grid (stages.TeacherStage, trained by train.train_plan): its step
           is chosen on validation samples drawn from the training rows
           (data.validation_fraction of them, samples.held_out). With
           --teacher_start=plsr it starts as PLSR of its training rows
           and keeps that start unless a step beats it on validation by
           more than one standard error, then keeps the mean of that step
           and the start (model.teacher_start).
Both see the same spectra and targets (no transform: SOC and clay in %, pH).
Scores per set x target: metrics of the pooled out-of-fold predictions, and
mean ± sd of the per-fold metrics (folds hold 3-14 samples: per-fold R² is
noisy). Teacher time: wall seconds of its training and prediction, summed
over the folds.

Outputs in --out: results.json, results.md, and runs/<set>/<target>/
<encoder>/fold<k>/predictions.json (a finished fold is reused, not retrained;
its checkpoints are deleted). Settings that change results need a new --out.
"""
from __future__ import annotations

import datetime
import functools
import json
import pathlib
import shutil
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np

from benchmarks import report
from configs import common
from configs import teacher as teacher_config
from data_prep import roles
from data_prep import sources
from deepsalt_jax import baselines
from deepsalt_jax import compilation
from deepsalt_jax import metrics
from deepsalt_jax import predict
from deepsalt_jax import reporting
from deepsalt_jax import samples
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import targets
from deepsalt_jax import train

SCORES = ("r2", "rmse", "rpiq")
HEADERS = {"r2": "R²", "rmse": "RMSE", "rpiq": "RPIQ"}
UNITS = {"SOC": "%", "clay": "%", "pH": "pH"}

def make_config(encoder: str, steps_scale: float, tiny: bool,
                seed: int = 0,
                teacher_start: str = "network") -> ml_collections.ConfigDict:
  """configs/teacher.py on the lab grid; targets untransformed."""
  config = teacher_config.get_config(
      f"dataset=soc,space=lab,encoder={encoder}" + (",tiny" if tiny else ""))
  config.seed = seed
  config.model.teacher_start = teacher_start
  config.data.target_transform = "identity"
  common.scale_steps(config, steps_scale)
  return config


def fold_data(mir: sources.MirSet, target: str, fold: int,
              config: ml_collections.ConfigDict) -> samples.Data:
  """The set as the trainer's Data: fold `fold` held out, validation drawn
  from the other folds (each sample its own block: the sets' coordinates
  are missing or displaced)."""
  n = len(mir.fold)
  data = samples.Data(
      lab=mir.spectra.astype(np.float32),
      satellite=np.zeros((n, 0), np.float32),  # A teacher reads no pixels.
      pair_satellite=np.zeros((n, 0), np.float32),
      target=mir.targets[target].astype(np.float32),
      region=np.zeros(n, np.int32), fold=mir.fold.astype(np.int32),
      role=np.full(n, roles.LABELLED), region_names=(mir.name,),
      test=np.zeros(n, bool), validation=np.zeros(n, bool),
      blocks=np.array([f"{mir.name}/{i}" for i in range(n)]),
      sensor=config.data.sensor, lab_grid=mir.grid)
  return samples.held_out(data, mir.fold == fold, config.data)


def plsr_fold(mir: sources.MirSet, target: str, fold: int, seed: int,
              tiny: bool) -> np.ndarray:
  """PLSR predictions of fold `fold`, fitted on the other folds alone."""
  train_rows = mir.fold != fold
  model = baselines.plsr(mir.spectra[train_rows],
                         mir.targets[target][train_rows],
                         max_components=3 if tiny else 20, seed=seed)
  return np.asarray(model(mir.spectra[~train_rows]), np.float64)


def teacher_fold(data: samples.Data,
                 config: ml_collections.ConfigDict, workdir: pathlib.Path,
                 mesh) -> np.ndarray:
  """The teacher's predictions of data's test rows, trained on its train
  rows (validation rows pick the step)."""
  plan = stages.plan(config, data.lab_grid)
  params = train.train_plan(plan, data, workdir, mesh)
  _, inverse = targets.TRANSFORMS[config.data.target_transform]
  pred, _ = predict.predict(plan.teacher.model(data.sensor),
                            params[plan.teacher.name], data.lab[data.test],
                            mesh, config.train.eval_batch_size, inverse)
  return np.asarray(pred, np.float64)


def _cached_teacher(mir: sources.MirSet, target: str, fold: int,
                    config: ml_collections.ConfigDict, workdir: pathlib.Path,
                    mesh) -> tuple[np.ndarray, float]:
  """(predictions, seconds) of a teacher fold, reused when saved."""
  path = workdir / "predictions.json"
  if path.exists():
    saved = json.loads(path.read_text())
    return np.asarray(saved["pred"], np.float64), saved["seconds"]
  start = time.perf_counter()
  pred = teacher_fold(fold_data(mir, target, fold, config), config, workdir,
                      mesh)
  seconds = time.perf_counter() - start
  shutil.rmtree(workdir / "teacher", ignore_errors=True)  # Checkpoints.
  path.write_text(json.dumps({"pred": pred.tolist(), "seconds": seconds}))
  return pred, seconds


def _scores(y: np.ndarray, pred: np.ndarray, folds: np.ndarray
            ) -> dict[str, Any]:
  """Pooled out-of-fold metrics and the per-fold metrics' mean ± sd."""
  per_fold = {(f"fold{k}", 0): metrics.regression_metrics(
      y[folds == k], pred[folds == k]) for k in np.unique(folds)}
  summary = report.summarise(per_fold)
  return {"pooled": metrics.regression_metrics(y, pred),
          "folds": {k: summary[k] for k in SCORES if k in summary},
          "per_fold": {name: m for (name, _), m in per_fold.items()}}


def run_set(mir: sources.MirSet, target: str, folds: Sequence[int],
            encoders: Sequence[str], settings: dict[str, Any],
            out: pathlib.Path, mesh) -> dict[str, Any]:
  """Every method on one set and target, over the folds."""
  rows = np.isin(mir.fold, folds)
  y, fold_of = mir.targets[target][rows], mir.fold[rows]
  preds = {"plsr": np.full(len(y), np.nan)}
  seconds = {"plsr": 0.0}
  for k in folds:
    start = time.perf_counter()
    preds["plsr"][fold_of == k] = plsr_fold(mir, target, k, 0,
                                            settings["tiny"])
    seconds["plsr"] += time.perf_counter() - start
  for encoder in encoders:
    name = f"teacher ({encoder})"
    config = make_config(encoder, settings["steps_scale"], settings["tiny"],
                         teacher_start=settings.get("teacher_start",
                                                    "network"))
    preds[name], seconds[name] = np.full(len(y), np.nan), 0.0
    for k in folds:
      workdir = out / "runs" / mir.name / target / encoder / f"fold{k}"
      workdir.mkdir(parents=True, exist_ok=True)
      pred, took = _cached_teacher(mir, target, k, config, workdir, mesh)
      preds[name][fold_of == k] = pred
      seconds[name] += took
  result = {"set": mir.name, "target": target, "n": int(len(y)),
            "channels": mir.grid.size, "grid": mir.grid.describe(),
            "methods": {}}
  for method, pred in preds.items():
    result["methods"][method] = {**_scores(y, pred, fold_of),
                                 "seconds": round(seconds[method], 1)}
    logging.info("[mir] %s %s %s: pooled R² %.3f in %.0f s", mir.name,
                 target, method,
                 result["methods"][method]["pooled"]["r2"], seconds[method])
  return result


def _cell(stat: dict[str, float | None]) -> str:
  sd = "" if stat["sd"] is None else f" ± {stat['sd']:.2f}"
  return f"{stat['mean']:.2f}{sd}"


def markdown(result: dict[str, Any]) -> str:
  """results.md: what was run, then one row per set x target x method."""
  lines = [
      "# A MIR teacher on LimeSoDa's MIR sets, against PLSR",
      "",
      f"- Date (UTC): {result['date']}; wall time {result['wall_seconds']} s",
      f"- Command: `{result['command'] or '(called from Python)'}`",
      f"- Data: {result['data']}",
      f"- Folds: {', '.join(map(str, result['folds']))} (LimeSoDa's); "
      f"{result['protocol']}",
      f"- Teacher: {result['teacher']}",
      "",
      "Pooled: metrics of the out-of-fold predictions of the whole set; "
      "folds: mean ± sd of the per-fold metrics. RMSE in % (SOC, clay) or pH "
      "units. Time: wall seconds over all folds.",
      "",
      "| set | target | n | method | R² pooled | RMSE pooled | RPIQ pooled "
      "| R² folds | RMSE folds | RPIQ folds | time (s) |",
      "|---" * 11 + "|",
  ]
  for row in result["results"]:
    for method, m in row["methods"].items():
      pooled = " | ".join(f"{m['pooled'][k]:.3f}" for k in SCORES)
      folds = " | ".join(_cell(m["folds"][k]) if k in m["folds"] else "n/a"
                         for k in SCORES)
      lines.append(f"| {row['set']} | {row['target']} | {row['n']} | "
                   f"{method} | {pooled} | {folds} | {m['seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def run_benchmark(out: str | pathlib.Path, *,
                  sets: Sequence[str] = sources.LIMESODA_MIR_SETS,
                  targets: Sequence[str] = tuple(sources.LIMESODA_TARGETS),
                  folds: Sequence[int] = range(1, 11),
                  encoders: Sequence[str] = ("mlp",),
                  steps_scale: float = 1.0, tiny: bool = False,
                  teacher_start: str = "network",
                  command: str = "") -> dict[str, Any]:
  """Runs the benchmark; writes and returns the report (module doc)."""
  unknown = sorted(set(targets) - set(sources.LIMESODA_TARGETS))
  if unknown:
    raise ValueError(f"Unknown targets {unknown}; valid: "
                     f"{', '.join(sources.LIMESODA_TARGETS)}.")
  folds = sorted(int(k) for k in folds)
  if not folds or not all(1 <= k <= 10 for k in folds):
    raise ValueError(f"--folds must be LimeSoDa folds 1..10, got {folds}.")
  out = pathlib.Path(out)
  settings = dict(steps_scale=steps_scale, tiny=tiny,
                  # Saved only when not the default: older outputs read on.
                  **({"teacher_start": teacher_start}
                     if teacher_start != "network" else {}))
  report.check_settings(out, settings)
  mesh = sharding.make_mesh()
  start = time.perf_counter()
  results = []
  compilation.use_persistent_cache()  # Every fold compiles the same steps.
  for name in sets:
    mir = sources.limesoda_mir(name)
    results += [run_set(mir, target, folds, encoders, settings, out, mesh)
                for target in targets]
  config = make_config(encoders[0] if encoders else "mlp", steps_scale, tiny,
                       teacher_start=teacher_start)
  result = dict(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      command=command, wall_seconds=round(time.perf_counter() - start),
      folds=folds, steps_scale=steps_scale, tiny=tiny,
      data=("LimeSoDa MIR sets " + ", ".join(
          f"{r['set']} ({r['grid']})" for r in results[::len(targets)])
            + "; measured SOC and clay (%) and pH, nothing simulated."),
      protocol=("per set, fold k held out and only predicted; PLSR "
                "components by inner 5-fold CV on the other folds; the "
                "teacher's step chosen on "
                f"{config.data.validation_fraction:.0%} of the other folds' "
                "samples, drawn at random"),
      teacher=(f"{', '.join(encoders)} encoder(s) of configs/teacher.py, "
               f"{config.train.steps} steps of {config.train.batch_size}, "
               f"validation every {config.train.eval_every} steps"
               + (", starting as PLSR (model.teacher_start=plsr)"
                  if teacher_start == "plsr" else "")
               + (", tiny" if tiny else "")),
      results=results)
  (out / "results.json").write_text(json.dumps(result, indent=2))
  (out / "results.md").write_text(markdown(result))
  return result


def _define_flags() -> dict[str, Any]:
  """The command line's flags. Defined when run as a script only: tests
  import this module beside benchmarks.compare, whose --out, --folds,
  --steps_scale and --tiny would clash."""
  return dict(
      out=flags.DEFINE_string("out", None, "Output folder.", required=True),
      sets=flags.DEFINE_list("sets", list(sources.LIMESODA_MIR_SETS),
                             "LimeSoDa MIR sets."),
      targets=flags.DEFINE_list("targets", list(sources.LIMESODA_TARGETS),
                                "Targets."),
      folds=flags.DEFINE_list("folds", [], "Held-out folds; default 1..10."),
      encoders=flags.DEFINE_list("encoders", ["mlp"], "Teacher encoders "
                                 "(model.encoder.kind)."),
      steps_scale=flags.DEFINE_float("steps_scale", 1.0, "Multiplies the "
                                     "teacher's train.steps."),
      tiny=flags.DEFINE_bool("tiny", False, "Tiny models and steps."),
      teacher_start=flags.DEFINE_enum(
          "teacher_start", "network", ["network", "plsr"],
          "Where the teacher starts (model.teacher_start)."))


def main(argv: Sequence[str], options: dict[str, Any]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  reporting.quiet_library_logs()
  value = {name: flag.value for name, flag in options.items()}
  command = "python -m benchmarks.mir_teacher " + " ".join(sys.argv[1:])
  result = run_benchmark(
      value["out"], sets=value["sets"], targets=value["targets"],
      folds=[int(k) for k in value["folds"]] or range(1, 11),
      encoders=value["encoders"], steps_scale=value["steps_scale"],
      tiny=value["tiny"], teacher_start=value["teacher_start"],
      command=command)
  print((pathlib.Path(value["out"]) / "results.md").read_text())
  logging.info("Done in %d s; outputs in %s", result["wall_seconds"],
               value["out"])


if __name__ == "__main__":
  app.run(functools.partial(main, options=_define_flags()))
