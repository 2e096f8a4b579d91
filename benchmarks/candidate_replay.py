r"""What ships from another set of candidate students, replayed (issue 20).

  python -m benchmarks.candidate_replay --out=runs/bench --add=finetune \
      [--peer=finetune] [--seeds=0,1]

Reads the trained units of a leave-one-region-out run of
`benchmarks.compare --dataset=salinity` with `selected` among its methods
and the added students among its methods too (a peer such as finetune);
trains nothing. Per unit it restores the run's candidate students,
`--add` and `--peer` once, replays validation's choice among the
candidates plus `--add` as `selection.choose` makes it on the validation
blocks (a run with `--calibration_regions` is refused), forms what ships
(`selection.shipped`) and calibrates its
interval as a run does (calibration_bound's "validation blocks"). Prints
the mean R² of what ships per held-out region (seeds averaged) with and
without the added students, beside `--peer`, how many regions each is
higher than the peer in, and the interval summary of each. Without the
added students it reproduces the run's own figures (`results.md` of the
run). docs/results.md, "finetune as a sixth candidate", is its output.
"""
from __future__ import annotations

import collections
import functools
from typing import Any, Sequence

from absl import app
from absl import flags
from etils import epath
import numpy as np

from benchmarks import calibration_bound
from deepsalt_jax import calibration
from deepsalt_jax import metrics
from deepsalt_jax import selection
from deepsalt_jax import sharding


def region_scores(units: dict[tuple[str, str], dict[str, Any]], peer: str
                  ) -> dict[str, tuple[float, float]]:
  """{region: (R² of what ships, R² of `peer`)} on the held-out samples,
  each the mean over the region's seeds."""
  scores = collections.defaultdict(list)
  for (region, _), unit in units.items():
    test = unit["test"]
    scores[region].append(tuple(
        metrics.regression_metrics(test["target"], test[name])["r2"]
        for name in ("pred", peer)))
  return {r: tuple(np.mean(v, axis=0)) for r, v in sorted(scores.items())}


def _define_flags() -> dict[str, Any]:
  """The command line's flags (defined when run as a script only)."""
  return dict(
      out=flags.DEFINE_string("out", None, "A benchmarks.compare output "
                              "folder.", required=True),
      add=flags.DEFINE_list("add", None, "Students added to the run's "
                            "candidates (trained in the units, e.g. a peer "
                            "of --methods).", required=True),
      peer=flags.DEFINE_string("peer", "finetune", "The student compared "
                               "region by region (trained in the units)."),
      seeds=flags.DEFINE_list("seeds", None, "Only these seeds' units "
                              "(e.g. 0,1); default all."),
      threshold=flags.DEFINE_float(
          "threshold", calibration.EXCEEDANCE_THRESHOLD,
          "P(EC > threshold) of the interval summary."))


def main(argv: Sequence[str], options: dict[str, Any]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  value = {name: flag.value for name, flag in options.items()}
  mesh = sharding.make_mesh()
  workdirs = [w for w in sorted(epath.Path(value["out"]).glob(
      "runs/*/seed*/lf*")) if (w / selection.CHOICE_FILE).exists() and (
          not value["seeds"] or w.parent.name[4:] in value["seeds"])]
  if not workdirs:
    raise SystemExit(f"No unit with {selection.CHOICE_FILE} under "
                     f"{value['out']}/runs: run benchmarks.compare with "
                     "--methods=selected,... first.")
  added = "with " + "+".join(value["add"])
  sets = {"the run's": {}, added: {}}
  for workdir in workdirs:  # Each unit restored once, shipped both ways.
    restored = calibration_bound.restore(
        workdir, mesh, tuple(value["add"]) + (value["peer"],))
    key = (str(restored["test"]["region"][0]), workdir.parent.name)
    sets["the run's"][key] = calibration_bound.ship(restored)
    sets[added][key] = calibration_bound.ship(restored, tuple(
        dict.fromkeys(restored["candidates"] + tuple(value["add"]))))
  print(f"{len(workdirs)} units; what ships, R² per held-out region (seeds "
        f"averaged), against {value['peer']}\n")
  scores = {label: region_scores(units, value["peer"])
            for label, units in sets.items()}
  labels = list(scores)
  print("| region | " + " | ".join(labels) + f" | {value['peer']} |")
  print("|---" * (len(labels) + 2) + "|")
  regions = list(scores[labels[0]])
  for region in regions:
    print(f"| {region} | " + " | ".join(
        f"{scores[l][region][0]:.3f}" for l in labels) +
          f" | {scores[labels[0]][region][1]:.3f} |")
  print("| mean | " + " | ".join(
      f"{np.mean([scores[l][r][0] for r in regions]):.3f}" for l in labels) +
        f" | {np.mean([scores[labels[0]][r][1] for r in regions]):.3f} |")
  print("| higher than the peer in | " + " | ".join(
      f"{sum(scores[l][r][0] > scores[l][r][1] for r in regions)} of "
      f"{len(regions)}" for l in labels) + " | |\n")
  print("| candidates | validation ships | pooled coverage | lowest region | "
        "mean interval score | largest P gap |")
  print("|---|---|---|---|---|---|")
  for label, units in sets.items():
    s = calibration_bound.summary(units, "validation blocks", 0,
                                  value["threshold"])
    winners = collections.Counter(u["winner"] for u in units.values())
    print(f"| {label} | {dict(winners)} | {s['pooled']:.3f} | {s['lowest']} "
          f"| {s['interval_score']:.2f} | {s['gap']:.3f} |")


if __name__ == "__main__":
  app.run(functools.partial(main, options=_define_flags()))
