"""The benchmark's calibrated intervals summarised over its units.

Each deep method's interval was judged per held-out split and seed
(evaluate.report's 'interval', carried by report.Run.intervals); these are
pooled here for results.json and results.md.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _pooled_reliability(units: Sequence[dict[str, Any]]
                        ) -> list[dict[str, Any]]:
  """The exceedance reliability bins of `units` pooled (by samples)."""
  bins = {}
  for u in units:
    for b in u["reliability"]:
      n, p, exceeded = bins.get(tuple(b["p"]), (0, 0.0, 0.0))
      bins[tuple(b["p"])] = (n + b["n"], p + b["n"] * b["mean_p"],
                             exceeded + b["n"] * b["exceeded"])
  return [{"p": list(k), "n": n, "mean_p": p / n, "exceeded": e / n}
          for k, (n, p, e) in sorted(bins.items())]


def per_method(runs: Sequence[Any]) -> dict[str, Any]:
  """Per method, per held-out split and seed, what its calibrated interval
  achieved; pooled coverage (weighted by samples), per split (its seeds
  pooled), the mean over units of the interval score and the exceedance
  reliability pooled over units."""
  out = {}
  for method in dict.fromkeys(m for r in runs for m in r.intervals):
    units = {f"{r.split} seed {r.seed}": r.intervals[method]["overall"]
             for r in runs if method in r.intervals}
    n = sum(u["n"] for u in units.values())
    by_split = {}
    for r in runs:
      if method in r.intervals:
        u = r.intervals[method]["overall"]
        hits, total = by_split.get(r.split, (0.0, 0))
        by_split[r.split] = (hits + u["coverage"] * u["n"], total + u["n"])
    reliability = _pooled_reliability(units.values())
    out[method] = {
        "per_split": units,
        "pooled_coverage": sum(u["coverage"] * u["n"]
                               for u in units.values()) / n,
        "coverage_by_split": {k: h / t for k, (h, t) in by_split.items()},
        "pooled_reliability": reliability,
        # As calibration.judge's: the largest gap of a bin of 30 or more.
        "pooled_reliability_gap": max(
            (abs(b["mean_p"] - b["exceeded"]) for b in reliability
             if b["n"] >= 30), default=None),
        "mean_interval_score": float(np.mean(
            [u["interval_score"] for u in units.values()])),
        "coverage_range": [min(u["coverage"] for u in units.values()),
                           max(u["coverage"] for u in units.values())]}
  return out
