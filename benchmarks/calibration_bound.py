r"""How far calibration can take a region no model saw (issue 21).

  python -m benchmarks.calibration_bound --out=runs/bench_linear

Reads the trained units of a leave-one-region-out run of
`benchmarks.compare --dataset=salinity` with `selected` among its methods
(<out>/runs/<region>/seed<k>/lf<f>/: the candidate students and
choice.json); trains nothing. Per unit it restores the candidates, predicts
the validation and held-out samples, forms what ships
(`selection.shipped`) and calibrates its 90 % interval and P(EC >
threshold) three ways:

- validation blocks: as a run does (`calibration.fit` on the unit's
  validation samples, the candidates' spread or constant);
- other regions: on what ships mispredicts in the other regions' units
  of the same seed, their held-out samples (`--per_region` drawn from
  each): the errors of whole regions no model trained on, the region
  shift that blocks inside the training regions cannot show. An oracle: a
  run has no such samples (it would have to train again without some of
  its regions), so it bounds what such a calibration could give;
- other regions, per class: the same, split by the FAO class of the
  prediction (a Mondrian split; a class with fewer than
  `calibration.MIN_SAMPLES` calibration samples uses them all).

Prints a markdown table: pooled coverage, the lowest coverage of a region
(its seeds pooled), the regions below 80 %, the mean interval score and
the largest |mean P - share exceeding| of a reliability bin of 30 or more
held-out samples, pooled over the units. 56-72 s for 22 units on 2 CPU
cores.
"""
from __future__ import annotations

import collections
import functools
from typing import Any, Sequence

from absl import app
from absl import flags
from etils import epath
import numpy as np

from configs import distill
from deepsalt_jax import calibration
from deepsalt_jax import metrics
from deepsalt_jax import run_config
from deepsalt_jax import samples
from deepsalt_jax import selection
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import targets

WAYS = ("validation blocks", "other regions", "other regions, per class")


def restore(workdir: epath.Path, mesh: Any,
            extra: Sequence[str] = ()) -> dict[str, Any]:
  """The predictions of one trained unit's candidate students and of the
  students `extra` (any the unit trained, a peer of `--methods` too):
  {'validation', 'test': {each student's prediction under its name,
  target, blocks, region}, 'candidates': the run's, 'winner': its saved
  choice, 'on': what chose it, 'transform'}, target units."""
  config = run_config.with_defaults(run_config.load(workdir),
                                    lambda job: distill.get_config())
  plan = stages.plan(config, run_config.lab_grid(workdir))
  data = samples.load_data(config.data)
  transform = config.data.target_transform
  _, inverse = targets.on_numpy(transform, np.float64)
  trained = {stage.name: stage for stage in plan.students}
  names = tuple(dict.fromkeys(tuple(plan.candidates) + tuple(extra)))
  missing = sorted(set(names) - set(trained))
  if missing:
    raise SystemExit(f"{workdir} trained no {missing}; it has "
                     f"{', '.join(trained)}.")
  choice = selection.load_choice(workdir)
  out = {"candidates": tuple(plan.candidates), "transform": transform,
         "winner": choice["winner"],
         "on": choice.get("on", selection.VALIDATION_BLOCKS)}
  for part, rows in (("validation", data.validation), ("test", data.test)):
    out[part] = {"target": data.target[rows].astype(np.float64),
                 "blocks": data.blocks[rows],
                 "region": np.asarray(data.region_names)[data.region[rows]]}
  params = {name: trained[name].restore(workdir, data.sensor, mesh)[0]
            for name in names}
  for part, rows in (("validation", data.validation), ("test", data.test)):
    out[part].update({n: inverse(p) for n, p in selection.predictions(
        plan, params, data, rows, mesh, names).items()})
  return out


def ship(restored: dict[str, Any], candidates: Sequence[str] | None = None
         ) -> dict[str, Any]:
  """What ships from a `restore`d unit: {'validation', 'test': {pred,
  spread (the candidates'), and `restored`'s}, 'winner'}, target units.

  `candidates`: restored students to ship from, validation's choice among
  them replayed as `selection.choose` makes it on the validation blocks
  (refused for a run that chose on regions it held out: their networks
  know only the run's candidates); None: the run's own, and its saved
  choice.
  """
  transform = restored["transform"]
  if candidates is None:
    names, winner = restored["candidates"], restored["winner"]
  elif selection.chose_on_regions(restored):
    raise SystemExit(
        f"The run chose what ships on {restored['on']}; a replay on the "
        "validation blocks would not be its choice. Replay a benchmark run "
        "with --calibration_regions=0.")
  else:
    names = tuple(candidates)
    missing = sorted(set(names) - set(restored["validation"]))
    if missing:
      raise SystemExit(f"{missing} were not restored.")
    val = restored["validation"]
    _, winner, _ = selection.winner_of({n: val[n] for n in names},
                                       val["target"], val["blocks"],
                                       transform, names)
  out = {"winner": winner}
  for part in ("validation", "test"):
    members = {n: restored[part][n] for n in names}
    out[part] = {**restored[part],
                 "pred": selection.shipped(members, winner, transform),
                 "spread": selection.spread(list(members.values()),
                                            transform)}
  return out


def _classes(pred: np.ndarray) -> np.ndarray:
  return np.digitize(pred, metrics.SALINITY_CLASS_EDGES)


def predictive(way: str, unit: dict[str, Any],
               pool: dict[str, np.ndarray] | None,
               threshold: float) -> dict[str, np.ndarray]:
  """The held-out samples' bounds and P(EC > threshold), calibrated `way`
  (`pool`: the other regions' held-out samples; unused on the validation
  blocks)."""
  test = unit["test"]
  if way == "validation blocks":
    val = unit["validation"]
    fitted = calibration.fit(val["pred"], val["target"], val["blocks"],
                             "log1p", {"members": val["spread"],
                                       "constant": None})
    return calibration.predictive(fitted, test["pred"], test["spread"],
                                  threshold)
  out = {k: np.zeros(test["pred"].size) for k in ("lower", "upper", "p")}
  split = way.endswith("per class")
  held_class = _classes(test["pred"]) if split else np.zeros(
      test["pred"].size, int)
  pool_class = _classes(pool["pred"]) if split else np.zeros(
      pool["pred"].size, int)
  for c in np.unique(held_class):
    rows = pool_class == c
    if rows.sum() < calibration.MIN_SAMPLES:
      rows = np.ones_like(rows)
    fitted = calibration.fit(pool["pred"][rows], pool["target"][rows],
                             pool["region"][rows], "log1p",
                             {"constant": None})
    held = held_class == c
    for k, v in calibration.predictive(fitted, test["pred"][held], None,
                                       threshold).items():
      out[k][held] = v
  return out


def _pool(units: dict[tuple[str, str], dict[str, Any]], key: tuple[str, str],
          per_region: int) -> dict[str, np.ndarray]:
  """The held-out samples of the other regions' units of `key`'s seed,
  `per_region` drawn from each."""
  rng = np.random.default_rng(0)
  parts = []
  for (region, seed), unit in sorted(units.items()):
    if seed != key[1] or region == key[0]:
      continue
    test = unit["test"]
    rows = rng.choice(test["pred"].size, min(per_region, test["pred"].size),
                      replace=False)
    parts.append({k: v[rows] for k, v in test.items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def summary(units: dict[tuple[str, str], dict[str, Any]], way: str,
            per_region: int, threshold: float) -> dict[str, Any]:
  hits, scores, p, exceeded = collections.defaultdict(list), [], [], []
  for key, unit in sorted(units.items()):
    test = unit["test"]
    pool = (None if way == "validation blocks" else
            _pool(units, key, per_region))
    out = predictive(way, unit, pool, threshold)
    hits[key[0]].append((test["target"] >= out["lower"]) &
                        (test["target"] <= out["upper"]))
    scores.append(calibration.interval_score(
        test["target"], out["lower"], out["upper"]).mean())
    p.append(out["p"])
    exceeded.append(test["target"] > threshold)
  coverage = {r: float(np.concatenate(h).mean()) for r, h in hits.items()}
  bins = calibration.reliability(np.concatenate(p), np.concatenate(exceeded))
  lowest = min(coverage, key=coverage.get)
  return {"pooled": float(np.concatenate(sum(hits.values(), [])).mean()),
          "lowest": f"{coverage[lowest]:.3f} ({lowest})",
          "below": ", ".join(r for r, c in coverage.items() if c < 0.8),
          "interval_score": float(np.mean(scores)),
          "gap": max(abs(b["mean_p"] - b["exceeded"]) for b in bins
                     if b["n"] >= 30)}


def _define_flags() -> dict[str, Any]:
  """The command line's flags. Defined when run as a script only: tests
  import this module beside benchmarks.compare, whose --out would clash."""
  return dict(
      out=flags.DEFINE_string("out", None, "A benchmarks.compare output "
                              "folder.", required=True),
      per_region=flags.DEFINE_integer(
          "per_region", 200, "Held-out samples drawn from each other region."),
      threshold=flags.DEFINE_float(
          "threshold", calibration.EXCEEDANCE_THRESHOLD, "P(EC > threshold)."))


def main(argv: Sequence[str], options: dict[str, Any]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  value = {name: flag.value for name, flag in options.items()}
  mesh = sharding.make_mesh()
  units = {}
  for workdir in sorted(epath.Path(value["out"]).glob("runs/*/seed*/lf*")):
    if (workdir / selection.CHOICE_FILE).exists():
      unit = ship(restore(workdir, mesh))
      units[(str(unit["test"]["region"][0]), workdir.parent.name)] = unit
  if not units:
    raise SystemExit(f"No unit with {selection.CHOICE_FILE} under "
                     f"{value['out']}/runs: run benchmarks.compare with "
                     "--methods=selected,... first.")
  print(f"{len(units)} units; P(EC > {value['threshold']:g}); other regions: "
        f"{value['per_region']} held-out samples of each\n")
  print("| calibrated on | pooled coverage | lowest region | regions below "
        "80 % | mean interval score | largest P gap |")
  print("|---|---|---|---|---|---|")
  for way in WAYS:
    s = summary(units, way, value["per_region"], value["threshold"])
    print(f"| {way} | {s['pooled']:.3f} | {s['lowest']} | "
          f"{s['below'] or 'none'} | {s['interval_score']:.2f} | "
          f"{s['gap']:.3f} |")


if __name__ == "__main__":
  app.run(functools.partial(main, options=_define_flags()))
