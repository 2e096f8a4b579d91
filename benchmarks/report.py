"""Scores, tables and plots of benchmarks.compare runs.

A unit is one held-out region (or LimeSoDa set) under one seed: the seed's
predictions are pooled over its splits (under the folds protocol a set's
out-of-fold predictions over the folds run), then scored per region. Tables
give mean ± sd over units.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Sequence

import numpy as np

from benchmarks import interval_summary
from deepsalt_jax import evaluate
from deepsalt_jax import metrics

SCORES = ("r2", "r2_log", "rmse", "rpd", "rpiq", "class_accuracy", "kappa")
HEADERS = {"r2": "R²", "r2_log": "R² log", "rmse": "RMSE ({unit})",
           "rpd": "RPD", "rpiq": "RPIQ", "class_accuracy": "class acc.",
           "kappa": "kappa"}
BASELINES = ("plsr", "rf", "plsr_lab", "coral_ridge", "pooled_mlp", "epo",
             "ds")
# What a user would reach for instead of DeepSalt (the student's rivals).
PEERS = BASELINES + ("source_only", "plain", "finetune", "dann",
                     "dann_labels")
REFERENCE = "teacher_lab"  # Sees lab spectra of the test samples: no rival.
# From this share of a region's sum of squares in its largest target, the
# verdict says that one sample mostly decides the region's R².
ONE_SAMPLE_SHARE = 0.5


def shipped(methods: Sequence[str]) -> str:
  """The student as the method ships it, measured against the peers:
  validation's choice (the candidates' ensemble or one of them hedged with
  it) where it ran, else the default student."""
  return "selected" if "selected" in methods else "student"


@dataclasses.dataclass
class Run:
  """Predictions of every method on one split's held-out samples."""
  split: str
  seed: int
  labelled_fraction: float
  target: np.ndarray  # [n_test] target units.
  region: np.ndarray  # [n_test] region index.
  preds: dict[str, np.ndarray]  # method -> [n_test]; NaN = not fitted.
  seconds: float
  # Deep method -> its calibrated interval on the split (evaluate.report's
  # 'interval': overall and per region).
  intervals: dict[str, Any] = dataclasses.field(default_factory=dict)


def check_settings(out: pathlib.Path, settings: dict[str, Any]) -> None:
  """Refuses to mix runs of other settings in one --out."""
  path = out / "settings.json"
  if path.exists():
    saved = json.loads(path.read_text())
    if saved != settings:
      raise ValueError(
          f"{out} holds runs made with other settings ({saved}); these are "
          f"{settings}. Use a new --out, or delete {out} to start over.")
  out.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(settings, indent=2))


def unit_scores(runs: Sequence[Run], method: str,
                region_names: Sequence[str],
                classes: bool) -> dict[tuple[str, int], dict]:
  """Metrics per (region, seed) with predictions for all its samples;
  `classes`: FAO salinity-class agreement too (EC in dS/m)."""
  out = {}
  for seed in sorted({r.seed for r in runs}):
    mine = [r for r in runs if r.seed == seed and method in r.preds]
    if not mine:
      continue
    target = np.concatenate([r.target for r in mine])
    pred = np.concatenate([r.preds[method] for r in mine])
    region = np.concatenate([r.region for r in mine])
    for index in np.unique(region):
      rows = region == index
      if rows.sum() >= metrics.MIN_SAMPLES and np.isfinite(pred[rows]).all():
        out[(region_names[index], seed)] = metrics.regression_metrics(
            target[rows], pred[rows], classes)
  return out


def _mean_sd(values: Sequence[float]) -> dict[str, float | None]:
  """Mean and sample sd (None for one value: JSON has no NaN)."""
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()),
          "sd": float(values.std(ddof=1)) if len(values) > 1 else None}


def _keys(scores: dict[tuple[str, int], dict]) -> list[str]:
  present = set.intersection(*(set(s) for s in scores.values()))
  return [k for k in SCORES if k in present]


def summarise(scores: dict[tuple[str, int], dict]) -> dict[str, Any]:
  if not scores:
    return {"units": 0}
  return {"units": len(scores), **{k: _mean_sd([s[k] for s in scores.values()])
                                   for k in _keys(scores)}}


def per_region(scores: dict[tuple[str, int], dict]) -> dict[str, dict]:
  regions = sorted({region for region, _ in scores})
  return {region: {k: float(np.mean([s[k] for (r, _), s in scores.items()
                                     if r == region])) for k in _keys(scores)}
          for region in regions}


def label_efficiency(label_runs: Sequence[Run], methods: Sequence[str],
                     region_names: Sequence[str],
                     classes: bool) -> list[dict[str, Any]]:
  """Per labelled fraction: each method's R² (mean, sd over units)."""
  rows = []
  for fraction in dict.fromkeys(r.labelled_fraction for r in label_runs):
    runs = [r for r in label_runs if r.labelled_fraction == fraction]
    r2 = {m: summarise(unit_scores(runs, m, region_names, classes)).get("r2")
          for m in methods}
    r2 = {m: v for m, v in r2.items() if v is not None}
    fitted = [m for m in BASELINES if m in r2]
    best = max(fitted, key=lambda m: r2[m]["mean"]) if fitted else None
    rows.append({"labelled_fraction": fraction, "r2": r2,
                 "best_baseline": best})
  return rows


def largest_shares(runs: Sequence[Run],
                   region_names: Sequence[str]) -> dict[str, float]:
  """Per region, the share of its held-out targets' sum of squares about
  their mean that its largest target holds: near 1, R² in target units
  is the prediction of that one sample (the seeds share the targets)."""
  out = {}
  for r in runs:
    for index in np.unique(r.region):
      y = np.asarray(r.target[r.region == index], np.float64)
      squares = (y - y.mean())**2
      total = squares.sum()
      out[region_names[index]] = (float(squares.max() / total) if total
                                  else 0.0)
  return out


def margins(per_region_r2: dict[str, dict[str, float]],
            methods: Sequence[str],
            shares: dict[str, float]) -> dict[str, Any] | None:
  """The shipped student against the best peer: per region (mean over
  seeds), its R² minus the best peer's there and which peer that was, the
  same in R² of log1p(target) (which one extreme sample cannot decide),
  and the region's `largest_shares`."""
  peers = [m for m in PEERS if m in methods and per_region_r2.get(m)]
  if shipped(methods) not in methods or not peers:
    return None
  student = per_region_r2[shipped(methods)]
  out = {}
  for region, own in student.items():
    rivals = {m: per_region_r2[m][region] for m in peers
              if region in per_region_r2[m]}
    if rivals:
      best = max(rivals, key=lambda m: rivals[m]["r2"])
      out[region] = {"peer": best, "peer_r2": rivals[best]["r2"],
                     "margin": own["r2"] - rivals[best]["r2"],
                     "largest_share": shares.get(region)}
      if "r2_log" in own:
        best_log = max(rivals, key=lambda m: rivals[m]["r2_log"])
        out[region].update(peer_log=best_log, margin_log=(
            own["r2_log"] - rivals[best_log]["r2_log"]))
  return out


def _against(student: str, peers: Sequence[str], scores: dict[str, dict],
             regions: dict[str, dict]) -> str:
  """The student against the single best peer (by mean R²), per region."""
  mean_r2 = lambda m: float(np.mean([s["r2"] for s in scores[m].values()]))
  best = max(peers, key=mean_r2)
  shared = sorted(set(regions[student]) & set(regions[best]))
  diff = [regions[student][r]["r2"] - regions[best][r]["r2"] for r in shared]
  return (f"{student} vs the best peer on average, {best}: mean R² "
          f"{mean_r2(student):.3f} vs {mean_r2(best):.3f} (margin "
          f"{mean_r2(student) - mean_r2(best):+.3f}); higher in "
          f"{sum(d > 0 for d in diff)} of {len(diff)} regions, more than "
          f"0.05 below in {sum(d < -0.05 for d in diff)} (worst "
          f"{min(diff):+.3f}).")


def verdicts(scores: dict[str, dict], methods: Sequence[str],
             regions: dict[str, dict],
             region_margins: dict[str, Any] | None) -> list[str]:
  """Plain statements: does the shipped student beat the best peer, and
  where?"""
  student = shipped(methods)
  if student not in methods:
    return []
  lines = []
  peers = [m for m in PEERS if m in methods and scores[m]]
  if peers:
    lines.append(_against(student, peers, scores, regions))
  ensemble = student + ENSEMBLE_SUFFIX
  ensembled_peers = [m + ENSEMBLE_SUFFIX for m in peers
                     if scores.get(m + ENSEMBLE_SUFFIX)]
  if scores.get(ensemble) and ensembled_peers:
    lines.append(_against(ensemble, ensembled_peers, scores, regions))
  if region_margins:
    values = [m["margin"] for m in region_margins.values()]
    lines.append(
        f"against the best peer of each region: {student} wins "
        f"{sum(v > 0 for v in values)} of {len(values)} regions; it falls "
        f"more than 0.05 below on {sum(v < -0.05 for v in values)} "
        f"(worst {min(values):+.3f}).")
    logs = [m["margin_log"] for m in region_margins.values()
            if "margin_log" in m]
    if logs:
      lines.append(
          f"in R² log (of log1p of the target) against the best peer of "
          f"each region: wins {sum(v > 0 for v in logs)} of {len(logs)}; "
          f"more than 0.05 below on {sum(v < -0.05 for v in logs)} (worst "
          f"{min(logs):+.3f}).")
    decided = [f"{r} ({m['largest_share']:.0%})"
               for r, m in region_margins.items()
               if (m["largest_share"] or 0) >= ONE_SAMPLE_SHARE]
    if decided:
      lines.append(
          "one sample holds most of the sum of squares in "
          + ", ".join(decided) + " (the region's largest target): there the "
          "R² margin is mostly that sample's prediction, the R² log margin "
          "is not.")
  return lines


# Networks whose seeds are averaged into an ensemble when there are several.
ENSEMBLED = ("selected", "student", "source_only", "plain", "finetune", "dann",
             "dann_labels")
ENSEMBLE_SUFFIX = " (seed ensemble)"


def seed_ensembles(runs: Sequence[Run], methods: Sequence[str]
                   ) -> tuple[list[Run], list[str]]:
  """Per split, each network's prediction averaged over the seeds.

  Returns runs (one per split, seed 0) with methods named
  '<method> (seed ensemble)', and those names; nothing with one seed.
  """
  chosen = [m for m in ENSEMBLED if m in methods]
  by_split = {}
  for run in runs:
    by_split.setdefault(run.split, []).append(run)
  out = []
  for split, group in by_split.items():
    if len(group) < 2:
      continue
    preds = {m + ENSEMBLE_SUFFIX: np.mean([r.preds[m] for r in group], axis=0)
             for m in chosen if all(m in r.preds for r in group)}
    out.append(dataclasses.replace(group[0], seed=0, preds=preds))
  names = sorted({m for r in out for m in r.preds}, key=lambda m: (
      m != "student" + ENSEMBLE_SUFFIX, m))
  return out, names


def build(runs: Sequence[Run], label_runs: Sequence[Run],
          methods: Sequence[str], region_names: Sequence[str], unit: str,
          header: dict[str, Any]) -> dict[str, Any]:
  """The JSON-ready report."""
  classes = unit == "dS/m"
  ensemble_runs, ensembles = seed_ensembles(runs, methods)
  scores = {m: unit_scores(runs, m, region_names, classes) for m in methods}
  scores.update({m: unit_scores(ensemble_runs, m, region_names, classes)
                 for m in ensembles})
  regions = {m: per_region(scores[m]) for m in scores}
  region_margins = margins(regions, methods,
                           largest_shares(runs, region_names))
  label_methods = list(dict.fromkeys(m for r in label_runs for m in r.preds))
  missing = {m: sorted({(r.split, r.seed) for r in runs
                        if m in r.preds and not np.isfinite(r.preds[m]).all()})
             for m in methods}
  return {
      **header, "unit": unit,
      "summary": {m: summarise(scores[m]) for m in scores},
      "per_region": regions,
      "margins": region_margins,
      "verdicts": verdicts(scores, methods, regions, region_margins),
      "not_fitted": {m: v for m, v in missing.items() if v},
      "intervals": interval_summary.per_method(runs),
      "label_efficiency": label_efficiency(label_runs, label_methods,
                                           region_names, classes),
      "runs": [{"split": r.split, "seed": r.seed,
                "labelled_fraction": r.labelled_fraction,
                "seconds": round(r.seconds, 1), "n_test": len(r.target)}
               for r in (*runs, *label_runs)],
  }


def _cell(stat: dict[str, float] | None) -> str:
  if not stat:
    return "n/a"
  sd = "" if stat["sd"] is None else f" ± {stat['sd']:.3f}"
  return f"{stat['mean']:.3f}{sd}"


def _name(method: str) -> str:
  return f"{method} (reference)" if method == REFERENCE else method


def markdown(result: dict[str, Any]) -> str:
  """results.md: what was run on what, then the tables."""
  unit, protocol = result["unit"], result["protocol"]
  held = ("held-out region" if protocol == "regions" else
          "LimeSoDa set (out-of-fold predictions of the folds run)")
  lines = [
      f"# Benchmark: {result['dataset']} ({result['sensor']}), "
      f"{protocol} protocol",
      "",
      f"- Date (UTC): {result['date']}; wall time {result['wall_seconds']} s",
      f"- Command: `{result['command'] or '(called from Python)'}`",
      f"- Target: {result['target']}",
      f"- Measured: {result['measured']}",
      f"- Simulated: {result['simulated']} Which pixels are labelled or "
      "paired is simulated too (data_prep.roles, from each sample's u).",
      f"- Held out: {', '.join(result['splits'])}; seeds 0..{result['seeds'] - 1}"
      f"; a unit = one {held} x seed.",
      f"- Training: teacher {result['steps']['teacher']} steps, each student "
      f"{result['steps']['student']} steps (steps_scale="
      f"{result['steps_scale']}{', tiny models' if result['tiny'] else ''}); "
      f"every network: {result['model_size']}; labelled fraction "
      f"{result['labelled_fraction']}, paired {result['paired_fraction']} "
      f"({result['pair_view']} pixel) of the training part's samples; "
      f"{result['validation_fraction']:.0%} of the labelled samples held out "
      "(spatial blocks) to pick each network's step.",
      f"- Setting: {result['setting']} ("
      + ("the held-out regions' unlabelled pixels feed the alignment of the "
         "student, DANN and CORAL; never their labels or lab spectra)"
         if result["setting"] == "transductive" else
         "no held-out sample enters any stream)") + ".",
  ]
  if protocol == "folds":
    lines.append("- Folds protocol: baselines are fitted per LimeSoDa set; "
                 "the deep models once per fold on the training folds of all "
                 "five sets pooled, scored per set.")
  keys = [k for k in SCORES if any(k in stat for stat in
                                    result["summary"].values())]
  lines += ["", "## Mean ± sd over units", "",
            "| method | " + " | ".join(HEADERS[k].format(unit=unit)
                                      for k in keys) + " | units |",
            "|---" * (len(keys) + 2) + "|"]
  for method, stat in result["summary"].items():
    lines.append(f"| {_name(method)} | " + " | ".join(
        _cell(stat.get(k)) for k in keys) + f" | {stat['units']} |")
  regions = sorted({r for v in result["per_region"].values() for r in v})
  for key, title in (("r2", "R²"), ("rmse", f"RMSE ({unit})")):
    lines += ["", f"## {title} per {held.split(' (')[0]} (mean over seeds)",
              "", "| method | " + " | ".join(regions) + " |",
              "|---" * (len(regions) + 1) + "|"]
    for method, table in result["per_region"].items():
      lines.append(f"| {_name(method)} | " + " | ".join(
          f"{table[r][key]:.3f}" if r in table else "n/a" for r in regions)
                   + " |")
  if result["margins"]:
    student = shipped(result["per_region"])
    lines += ["", f"## {_name(student)} against the best peer of each region",
              "", "Largest share: the share of the region's sum of squares "
              "(about its mean) that its largest target holds; R² log "
              "margin: against the best peer in R² log.", "",
              f"| region | {_name(student)} R² | best peer | its R² | "
              "margin | R² log margin (peer) | largest share |",
              "|---|---|---|---|---|---|---|"]
    for region, m in result["margins"].items():
      log = (f"{m['margin_log']:+.3f} ({m['peer_log']})"
             if "margin_log" in m else "–")
      share = ("–" if m["largest_share"] is None
               else f"{m['largest_share']:.2f}")
      lines.append(
          f"| {region} | {result['per_region'][student][region]['r2']:.3f}"
          f" | {m['peer']} | {m['peer_r2']:.3f} | {m['margin']:+.3f} | "
          f"{log} | {share} |")
  if result["label_efficiency"]:
    methods = list(result["label_efficiency"][0]["r2"])
    lines += ["", f"## Label efficiency: R² (mean ± sd) on "
              f"{', '.join(result['label_splits'])}", "",
              "| labelled | paired | " + " | ".join(methods)
              + " | best baseline |", "|---" * (len(methods) + 3) + "|"]
    for row, paired in zip(result["label_efficiency"],
                           result["paired_fractions"]):
      note = " (no pairs: student without distillation)" if paired == 0 else ""
      lines.append(
          f"| {row['labelled_fraction']:.0%}{note} | {paired:.0%} | "
          + " | ".join(_cell(row["r2"].get(m)) for m in methods)
          + f" | {row['best_baseline'] or 'n/a'} |")
  for method, judged in result.get("intervals", {}).items():
    lines += ["", f"## {method}: calibrated 90 % intervals per held-out "
              "split", "", f"Pooled coverage {judged['pooled_coverage']:.3f}"
              f" (per split {judged['coverage_range'][0]:.3f} to "
              f"{judged['coverage_range'][1]:.3f}); mean interval score "
              f"{judged['mean_interval_score']:.3f} (Winkler, α = 0.1, "
              f"{unit}). P gap: the largest |mean P(EC > 4) - share "
              "exceeding| of a bin of 30 or more.", "",
              f"| split | n | coverage | median width ({unit}) | median "
              "relative width | interval score | P gap |",
              "|---|---|---|---|---|---|---|"]
    for split, u in judged["per_split"].items():
      gap = u["reliability_gap"]
      lines.append(
          f"| {split} | {u['n']} | {u['coverage']:.3f} | "
          f"{u['median_width']:.3f} | {u['median_relative_width']:.3f} | "
          f"{u['interval_score']:.3f} | "
          f"{'–' if gap is None else f'{gap:.3f}'} |")
    lines += ["", "Coverage per held-out split, seeds pooled: " + ", ".join(
        f"{k} {v:.3f}" for k, v in judged["coverage_by_split"].items())
              + ".", "", "Exceedance reliability pooled over units (bin: "
              "samples, mean P, share exceeding): " + "; ".join(
                  f"{b['p'][0]:.1f}-{b['p'][1]:.1f}: {b['n']}, "
                  f"{b['mean_p']:.2f}, {b['exceeded']:.2f}"
                  for b in judged["pooled_reliability"])
              + ". Largest gap of a bin of 30 or more: " + (
                  "–" if judged["pooled_reliability_gap"] is None
                  else f"{judged['pooled_reliability_gap']:.3f}") + "."]
  lines += ["", "## Verdict", ""] + [f"- {v}" for v in result["verdicts"]]
  for method, where in result["not_fitted"].items():
    lines.append(f"- {method} was not fitted (fewer than 5 training samples) "
                 f"in {len(where)} run(s): {where}; those units are missing.")
  lines += ["", "## Methods", ""] + [
      f"- **{m}**: {d}" for m, d in result["descriptions"].items()]
  return "\n".join(lines) + "\n"


def plot_label_efficiency(path: pathlib.Path, rows: list[dict[str, Any]],
                          title: str) -> None:
  import matplotlib  # Lazy: only the report plots.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  fractions = np.array([r["labelled_fraction"] for r in rows]) * 100
  for method in rows[0]["r2"] if rows else ():
    stats = [r["r2"].get(method) for r in rows]
    keep = [i for i, s in enumerate(stats) if s]
    ax.errorbar(fractions[keep], [stats[i]["mean"] for i in keep],
                yerr=[stats[i]["sd"] or 0.0 for i in keep],
                marker="o", capsize=3, label=method,
                lw=2.5 if method == "student" else 1.2)
  ax.set(xscale="log", xlabel="labelled satellite samples in training (%)",
         ylabel="R² on held-out samples", title=title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(out: pathlib.Path, result: dict[str, Any], runs: Sequence[Run],
          methods: Sequence[str], unit: str) -> None:
  """results.json, results.md, label_efficiency.png and parity plots."""
  (out / "results.json").write_text(json.dumps(result, indent=2))
  (out / "results.md").write_text(markdown(result))
  if result["label_efficiency"]:
    plot_label_efficiency(
        out / "label_efficiency.png", result["label_efficiency"],
        f"{result['dataset']}: held out {', '.join(result['label_splits'])}")
  # Parity of the first seed, pooled over the held-out splits.
  first = [r for r in runs if r.seed == min(x.seed for x in runs)]
  target = np.concatenate([r.target for r in first])
  pooled = {}
  for method in methods:
    pred = np.concatenate([r.preds[method] for r in first])
    keep = np.isfinite(pred)
    if keep.sum() >= metrics.MIN_SAMPLES:
      pooled[method] = {"target": target[keep], "pred": pred[keep],
                        "overall": metrics.regression_metrics(target[keep],
                                                              pred[keep])}
  for name, group in (("baselines", (*BASELINES, "source_only")),
                      ("deep", [m for m in methods if m not in BASELINES
                                and m != "source_only"])):
    chosen = {_name(m): pooled[m] for m in group if m in pooled}
    if chosen:
      evaluate.parity_plot(out / f"parity_{name}.png", chosen, unit)
