r"""Honest evaluation: held-out regions/folds, baselines, ablations, labels.

  python -m benchmarks.compare --dataset=salinity --out=runs/benchmark_salinity \
      [--regions="SC.93,ICRAF Asia"] [--seeds=2] [--steps_scale=1.0] \
      [--methods=plsr,rf,student,...] [--label_fractions=1,0.5,0.2,0.1,0.05,0.02] \
      [--label_splits=SC.93] [--tiny]
  python -m benchmarks.compare --dataset=soc --out=runs/benchmark_soc [--folds=1,2]

Protocols (docs/results.md gives the tables they produced):
  regions (salinity default): leave one region out. Each held-out region is
    a training run of its own (data.test_regions=<region>); within the other
    regions only data.labelled_fraction of the satellite samples are
    labelled. Metrics in target units on the held-out region.
  folds (soc default): LimeSoDa's ten folds. Run k holds out fold k of every
    LimeSoDa set (data.test_folds=k). The chemometric baselines are fitted
    per set, as LimeSoDa intends; the deep models are fitted once per fold on
    the training folds of all five sets pooled (one teacher, one student) and
    scored per set. Out-of-fold predictions are pooled per set, then scored.
  --protocol=regions on soc gives the cross-dataset stress test.
Every unit (held-out region, or set pooled over folds) x seed is scored;
tables give mean ± sd over units x seeds, and per unit.

Methods (--methods, default all): see benchmarks/descriptions.py. Baselines
see exactly the pixels the student is given: satellite spectra of the
LABELLED role in the training part; targets through the config's transform
(log1p for EC), then inverted. The deep variants of one unit and seed
share one teacher.

Label efficiency: R² as data.labelled_fraction falls, on --label_splits.
Roles come from each sample's fixed u (data_prep.roles): u < lf labelled,
then paired_fraction = min(0.4, 1 - lf) paired, the rest unlabelled. At
lf = 1 nothing is left to pair, so the student runs without distillation and
reconstruction there (marked in the table). Seeds change initialisation and
batch order, not which pixels are labelled.

Outputs in --out: results.json, results.md, label_efficiency.png,
parity_baselines.png, parity_deep.png, and runs/ (the training workdirs).
Re-running with the same --out reuses finished training runs (their Orbax
checkpoints); settings that change results need a new --out.
Run time: with every method, one unit x seed trains a teacher and seven
students: ~25 min at --steps_scale=1 on 2 CPU cores, ~4 min at 0.1.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import pathlib
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np

from benchmarks import descriptions
from benchmarks import report
from configs import common
from configs import distill
from data_prep import datasets
from data_prep import roles
from deepsalt_jax import baselines
from deepsalt_jax import choices
from deepsalt_jax import reporting
from deepsalt_jax import samples
from deepsalt_jax import selection
from deepsalt_jax import targets
from deepsalt_jax import train
from deepsalt_jax.models import from_config

# Students trained beside 'student' in one trainer call (config.compare).
VARIANTS = {**distill.VARIANTS,
            "coral": {"loss": {"alignment": "coral"}},
            "adversarial": {"loss": {"alignment": "adversarial"}}}
# Method -> the trainer's name for it.
TRAINER_NAMES = {"source_only": "teacher (pixels)", "teacher_lab": "teacher",
                 "student": "student", "selected": selection.SELECTED,
                 "ensemble": selection.ENSEMBLE,
                 **{name: name for name in VARIANTS}}
METHODS = report.BASELINES + tuple(TRAINER_NAMES)
# A baseline needs this many training samples; fewer leaves its
# predictions out (reported as missing), never replaced by a guess.
MIN_TRAIN = 5

_DATASET = flags.DEFINE_enum("dataset", "salinity", ("salinity", "soc"),
                             "Benchmark: simulated salinity or real SOC.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_SENSOR = flags.DEFINE_enum("sensor", "enmap", ("enmap", "prisma", "emit"),
                            "Simulated satellite.")
_PROTOCOL = flags.DEFINE_enum(
    "protocol", "auto", ("auto", "regions", "folds"),
    "auto: regions for salinity, folds for soc (see the module docstring).")
_REGIONS = flags.DEFINE_list("regions", [], "Held-out regions (regions "
                             "protocol); default every region.")
_FOLDS = flags.DEFINE_list("folds", [], "Held-out folds (folds protocol); "
                           "default 1..10.")
_SEEDS = flags.DEFINE_integer("seeds", 2, "Seeds per unit: 0..seeds-1.")
_STEPS_SCALE = flags.DEFINE_float("steps_scale", 1.0, "Multiplies the "
                                  "teacher's and the students' train.steps.")
_SPACE = flags.DEFINE_enum("space", "sensor", ("sensor", "lab"),
                           "Where the teacher reads spectra (model.space).")
_ENCODER = flags.DEFINE_enum("encoder", "mlp", choices.ENCODERS,
                             "model.encoder.kind of every network.")
_COVARIATES = flags.DEFINE_string(
    "covariates", "", "data.covariates of the students (e.g. 'clay,soc'; "
    "the teacher reads none, so it is the run without them).")
_TRANSDUCTIVE = flags.DEFINE_bool(
    "transductive", True, "Held-out regions' unlabelled pixels feed the "
    "alignment streams (students, DANN, CORAL) or nothing of them does.")
_PAIRED = flags.DEFINE_float("paired_fraction", 0.4, "Paired samples (of "
                             "the training part; min(this, 1 - labelled)).")
_LINEAR_PATH = flags.DEFINE_bool(
    "linear_path", True, "The deep models with a linear path beside the "
    "network (model.linear_path); --nolinear_path: without, as outputs "
    "made before it existed.")
_PAIR_VIEW = flags.DEFINE_enum("pair_view", "same",
                               ("same", "neighbour", "date"),
                               "What a pair's pixel is (data.pair_view).")
_CALIBRATION_REGIONS = flags.DEFINE_integer(
    "calibration_regions", 0, "calibration_regions of each run (0 here, 3 in "
    "the main command: K more trainings per unit): what ships chosen and "
    "calibrated on groups of its training regions trained without "
    "(region_calibration.py); 0: on the validation blocks.")
_METHODS = flags.DEFINE_list("methods", list(METHODS), "Methods to run.")
_FRACTIONS = flags.DEFINE_list(
    "label_fractions", ["1", "0.5", "0.2", "0.1", "0.05", "0.02"],
    "Labelled fractions for the label-efficiency curve; empty: skip it.")
_LABEL_SPLITS = flags.DEFINE_list(
    "label_splits", [], "Held-out regions (or fold numbers) of the "
    "label-efficiency runs; default the first held-out one.")
_LABEL_METHODS = flags.DEFINE_list(
    "label_methods", ["student", "plsr", "rf", "plsr_lab"],
    "Methods on the label-efficiency curve.")
_TINY = flags.DEFINE_bool("tiny", False, "Tiny models and steps (tests).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data dir; '' = "
                                "$DEEPSALT_DATA_DIR or the default cache.")


@dataclasses.dataclass(frozen=True)
class Split:
  """One held-out part: a region, or fold k of every LimeSoDa set."""
  name: str
  test_regions: str = ""
  test_folds: str = ""

  @property
  def slug(self) -> str:
    return self.name.replace(" ", "_")


def make_splits(protocol: str, regions: Sequence[str], folds: Sequence[str],
                region_names: Sequence[str]) -> list[Split]:
  if protocol == "regions":
    unknown = sorted(set(regions) - set(region_names))
    if unknown:
      raise ValueError(f"--regions names unknown regions {unknown}; valid: "
                       f"{', '.join(region_names)}.")
    return [Split(r, test_regions=r) for r in (regions or region_names)]
  folds = folds or [str(k) for k in range(1, 11)]
  if not all(f.isdigit() and 1 <= int(f) <= 10 for f in folds):
    raise ValueError(f"--folds must be LimeSoDa folds 1..10, got {folds}.")
  return [Split(f"fold{f}", test_folds=f) for f in folds]


def paired_for(labelled_fraction: float, paired_fraction: float) -> float:
  """The paired fraction: min(paired_fraction, 1 - lf), 1e-6 below."""
  return min(paired_fraction,
             math.floor((1.0 - labelled_fraction) * 1e6) / 1e6)


def make_config(settings: dict[str, Any], split: Split, seed: int,
                labelled_fraction: float) -> ml_collections.ConfigDict:
  """configs/distill.py for the settings, one split, seed and fraction."""
  arg = (f"dataset={settings['dataset']},sensor={settings['sensor']},"
         f"space={settings['space']},encoder={settings['encoder']},"
         "compare=none,candidates=none" + (",tiny" if settings["tiny"] else
                                           ""))
  config = distill.get_config(arg)
  config.seed = seed
  config.data.update(data_dir=settings["data_dir"],
                     test_regions=split.test_regions,
                     test_folds=split.test_folds,
                     transductive=settings["transductive"],
                     labelled_fraction=labelled_fraction,
                     paired_fraction=paired_for(labelled_fraction,
                                                settings["paired_fraction"]),
                     pair_view=settings["pair_view"])
  common.scale_steps(config, settings["steps_scale"])
  config.data.covariates = settings["covariates"]
  config.calibration_regions = settings.get("calibration_regions", 0)
  # Outputs made before the setting existed have no linear path.
  config.model.linear_path = settings.get("linear_path", False)
  if config.data.paired_fraction == 0:  # Nothing to distil or reconstruct.
    config.loss.update(w_distill_feature=0.0, w_distill_pred=0.0,
                       w_reconstruction=0.0)
  return config


def _numpy(fn):
  return lambda x: np.asarray(fn(x), np.float64)


def fit_baselines(data: samples.Data, methods: Sequence[str],
                  per_region: bool, config: ml_collections.ConfigDict,
                  tiny: bool) -> dict[str, np.ndarray]:
  """Baseline predictions (target units) for data's test rows.

  The baselines see every labelled pixel of the training part, validation
  samples included (they pick their own settings by inner CV). per_region:
  one model per region (LimeSoDa's within-set protocol), else one model on
  all training regions. A model with fewer than MIN_TRAIN training samples
  is not fitted: its predictions stay NaN. EPO and DS learn the lab-to-pixel
  difference from the paired samples of the training part.
  """
  forward, inverse = map(
      _numpy, targets.TRANSFORMS[config.data.target_transform])
  train_rows = ~data.test
  labelled = train_rows & (data.role == roles.LABELLED)
  test = data.subset(data.test)
  # Source-only transfer: lab spectra resampled forward to the bands.
  source = data.lab @ from_config.forward_matrix(data.sensor, data.lab_grid).T
  unlabelled = data.satellite[~data.test & (data.role == roles.UNLABELLED)]
  if config.data.transductive:
    unlabelled = np.concatenate([unlabelled, test["satellite"]])
  paired = train_rows & (data.role == roles.PAIRED)
  pairs = (data.pair_satellite[paired], source[paired])
  # The pooled MLP's and EPO's training sets stack the resampled library
  # over the pixels, so their rows index the samples twice; EPO's inner CV
  # holds out whole regions (LimeSoDa's sets: whole spatial blocks).
  pixel = np.repeat([False, True], len(data.target))
  inner_groups = np.tile(data.blocks if per_region else data.region, 2)
  max_components = 3 if tiny else 20
  # method -> fit(training inputs, targets, training rows).
  fitters = {
      "plsr": lambda x, y, _: baselines.plsr(
          x, y, max_components=max_components, seed=config.seed),
      "rf": lambda x, y, _: baselines.random_forest(
          x, y, seed=config.seed, trees=20 if tiny else 300),
      "coral_ridge": lambda x, y, _: baselines.coral_ridge(x, y, unlabelled),
      "pooled_mlp": lambda x, y, _: baselines.pooled_mlp(
          x, y, max_iter=20 if tiny else 300, seed=config.seed),
      "epo": lambda x, y, rows: baselines.epo(
          x, y, pixel[rows], inner_groups[rows], *pairs,
          max_dims=2 if tiny else 8, max_components=max_components),
      "ds": lambda x, y, _: baselines.ds(
          x, y, *pairs, max_components=max_components, seed=config.seed),
  }
  fitters["plsr_lab"] = fitters["plsr"]
  pooled = (np.concatenate([train_rows, labelled]),
            np.concatenate([source, data.satellite]), test["satellite"])
  # method -> (training rows, training inputs, test inputs).
  inputs = {"plsr": (labelled, data.satellite, test["satellite"]),
            "rf": (labelled, data.satellite, test["satellite"]),
            "plsr_lab": (train_rows, source, test["satellite"]),
            "coral_ridge": (train_rows, source, test["satellite"]),
            "ds": (train_rows, source, test["satellite"]),
            "pooled_mlp": pooled, "epo": pooled}
  groups = np.unique(test["region"]) if per_region else [None]
  out = {}
  for method in (m for m in methods if m in report.BASELINES):
    out[method] = np.full(len(test["target"]), np.nan)
    rows, x_train, x_test = inputs[method]
    times = len(rows) // len(data.target)
    target, region = np.tile(data.target, times), np.tile(data.region, times)
    for group in groups:
      fit_rows = rows if group is None else rows & (region == group)
      predict_rows = (slice(None) if group is None
                      else test["region"] == group)
      if fit_rows.sum() < MIN_TRAIN:
        where = "" if group is None else f" of {data.region_names[group]}"
        logging.warning("%s: %d training samples%s (< %d): not fitted.",
                        method, fit_rows.sum(), where, MIN_TRAIN)
        continue
      predict = fitters[method](x_train[fit_rows], forward(target[fit_rows]),
                                fit_rows)
      out[method][predict_rows] = np.maximum(
          inverse(predict(x_test[predict_rows])), 0.0)
  return out


def train_deep(config: ml_collections.ConfigDict, methods: Sequence[str],
               workdir: pathlib.Path
               ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Deep predictions for the test rows (one teacher, the named students),
  and the students' calibrated intervals (evaluate.report)."""
  deep = [m for m in methods if m in TRAINER_NAMES]
  if not deep:
    return {}, {}
  config.compare = ml_collections.ConfigDict(
      {m: VARIANTS[m] for m in deep if m in VARIANTS})
  if {"selected", "ensemble"} & set(deep):
    config.candidates = distill.get_config().candidates
  else:  # Nothing ships but the student: its own interval.
    config.calibration_regions = 0
  results = train.train_and_evaluate(config, workdir)
  return ({m: np.asarray(results[TRAINER_NAMES[m]]["pred"], np.float64)
           for m in deep},
          {m: results[TRAINER_NAMES[m]]["interval"] for m in deep
           if "interval" in results[TRAINER_NAMES[m]]})


def _model_size(config: ml_collections.ConfigDict) -> str:
  """The network every deep method shares, in words."""
  e = config.model.encoder
  return (f"{e.kind} encoder, features {e.features}, {e.num_blocks} blocks, "
          f"head {e.head_hidden}; teacher in {config.model.space} space")


def run_split(split: Split, seed: int, labelled_fraction: float,
              methods: Sequence[str], settings: dict[str, Any],
              out: pathlib.Path) -> report.Run:
  """Trains and scores every method on one held-out split."""
  start = time.perf_counter()
  config = make_config(settings, split, seed, labelled_fraction)
  data = samples.load_data(config.data)
  workdir = (out / "runs" / split.slug / f"seed{seed}" /
             f"lf{labelled_fraction:g}")
  preds = fit_baselines(data, methods, settings["protocol"] == "folds",
                        config, settings["tiny"])
  deep, intervals = train_deep(config, methods, workdir)
  preds.update(deep)
  test = data.subset(data.test)
  seconds = time.perf_counter() - start
  logging.info("[benchmark] %s seed %d labelled %g: %s in %.0f s",
               split.name, seed, labelled_fraction, ", ".join(preds),
               seconds)
  return report.Run(split.name, seed, labelled_fraction,
             test["target"].astype(np.float64), test["region"], preds,
             seconds, intervals)


def run_benchmark(dataset: str, out: str | pathlib.Path, *,
                  sensor: str = "enmap", protocol: str = "auto",
                  regions: Sequence[str] = (), folds: Sequence[str] = (),
                  seeds: int = 2, steps_scale: float = 1.0,
                  space: str = "sensor", encoder: str = "mlp",
                  covariates: str = "", transductive: bool = True, paired_fraction: float = 0.4,
                  pair_view: str = "same", linear_path: bool = True,
                  methods: Sequence[str] = METHODS,
                  label_fractions: Sequence[float] = (1, .5, .2, .1, .05,
                                                      .02),
                  label_splits: Sequence[str] = (),
                  label_methods: Sequence[str] = ("student", "plsr", "rf",
                                                  "plsr_lab"),
                  tiny: bool = False, data_dir: str = "",
                  calibration_regions: int = 0,
                  command: str = "") -> dict[str, Any]:
  """Runs the benchmark; writes and returns the report (see module doc)."""
  unknown = sorted((set(methods) | set(label_methods)) - set(METHODS))
  if unknown:
    raise ValueError(f"Unknown methods {unknown}; valid: "
                     f"{', '.join(METHODS)}.")
  if seeds < 1:
    raise ValueError(f"--seeds must be >= 1, got {seeds}.")
  if not all(0 < f <= 1 for f in label_fractions):
    raise ValueError(f"--label_fractions must lie in (0, 1], got "
                     f"{list(label_fractions)}.")
  protocol = {"auto": "regions" if dataset == "salinity" else "folds"}.get(
      protocol, protocol)
  out = pathlib.Path(out)
  settings = dict(dataset=dataset, sensor=sensor, protocol=protocol,
                  steps_scale=steps_scale, tiny=tiny, data_dir=data_dir,
                  space=space, encoder=encoder, covariates=covariates,
                  transductive=transductive,
                  paired_fraction=paired_fraction, pair_view=pair_view,
                  # Absent in outputs made before they existed, which had
                  # none.
                  **({"linear_path": True} if linear_path else {}),
                  **({"calibration_regions": calibration_regions}
                     if calibration_regions else {}))
  report.check_settings(out, settings)
  info = datasets.build(dataset, sensor, data_dir or None).info
  region_names = tuple(info.features["region"].names)
  splits = make_splits(protocol, regions, folds, region_names)
  lf = common.data_config(dataset).labelled_fraction
  base = make_config(settings, splits[0], 0, lf)
  start = time.perf_counter()
  runs = [run_split(s, seed, lf, methods, settings, out)
          for s in splits for seed in range(seeds)]

  by_name = {s.name: s for s in splits}
  chosen = [by_name.get(n) or by_name.get(f"fold{n}")
            for n in (label_splits or [splits[0].name])]
  if None in chosen:
    raise ValueError(f"--label_splits {list(label_splits)} must name held-out"
                     f" splits: {', '.join(by_name)}.")
  label_runs = [run_split(s, seed, f, label_methods, settings, out)
                for f in label_fractions for s in chosen
                for seed in range(seeds)] if label_fractions else []

  unit = "dS/m" if dataset == "salinity" else "%"
  result = report.build(
      runs, label_runs, methods, region_names, unit,
      header=dict(
          dataset=dataset, sensor=sensor, protocol=protocol,
          command=command, splits=[s.name for s in splits], seeds=seeds,
          date=datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec="seconds"),
          steps={"teacher": base.teacher.steps,
                 "student": base.train.steps},
          steps_scale=steps_scale, tiny=tiny, space=space, encoder=encoder,
          linear_path=linear_path, model_size=_model_size(base),
          calibration_regions=calibration_regions,
          setting="transductive" if transductive else "inductive",
          pair_view=pair_view, labelled_fraction=lf,
          paired_fraction=paired_for(lf, paired_fraction),
          validation_fraction=base.data.validation_fraction,
          label_splits=[s.name for s in chosen],
          label_fractions=list(label_fractions),
          paired_fractions=[paired_for(f, paired_fraction)
                            for f in label_fractions],
          measured=info.metadata["measured"],
          simulated=info.metadata["simulated"],
          target=info.metadata["target"],
          wall_seconds=round(time.perf_counter() - start),
          descriptions={m: descriptions.DESCRIPTIONS[m] for m in methods}))
  report.write(out, result, runs, methods, unit)
  return result


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  reporting.quiet_library_logs()
  command = "python -m benchmarks.compare " + " ".join(
      repr(a) if " " in a else a for a in sys.argv[1:])
  result = run_benchmark(
      _DATASET.value, _OUT.value, sensor=_SENSOR.value,
      protocol=_PROTOCOL.value, regions=_REGIONS.value, folds=_FOLDS.value,
      seeds=_SEEDS.value, steps_scale=_STEPS_SCALE.value,
      space=_SPACE.value, encoder=_ENCODER.value,
      covariates=_COVARIATES.value, transductive=_TRANSDUCTIVE.value,
      paired_fraction=_PAIRED.value,
      pair_view=_PAIR_VIEW.value, linear_path=_LINEAR_PATH.value,
      methods=_METHODS.value,
      label_fractions=[float(f) for f in _FRACTIONS.value],
      label_splits=_LABEL_SPLITS.value, label_methods=_LABEL_METHODS.value,
      tiny=_TINY.value, data_dir=_DATA_DIR.value,
      calibration_regions=_CALIBRATION_REGIONS.value, command=command)
  print((pathlib.Path(_OUT.value) / "results.md").read_text())
  logging.info("Done in %d s; outputs in %s", result["wall_seconds"],
               _OUT.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["out"])
  app.run(main)
