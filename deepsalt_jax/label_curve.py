"""How many field samples do I need: own data's label-efficiency curve.

Own data's cross-validation (cross_validation.py, `config.label_curve`)
retrains the student and the peers on subsets of each outer fold's training
points and scores them on the same outer test folds, pooled over folds.
Draw d orders every labelled point once at random (seeded by the config's
seed and d); a size of n takes, in each outer fold, the first n points of
that order outside the fold. So the draws are nested (the 8 points lie
within the 16) and a curve moves by the points added, not by a new draw.
Only the field points are subsampled: the library and its pairs stay whole.
The curve's last size, ALL (every training point), is the cross-validation
itself.
"""
from __future__ import annotations

import dataclasses
import io

from etils import epath
import numpy as np

from deepsalt_jax import baselines
from deepsalt_jax import final_model
from deepsalt_jax import metrics
from deepsalt_spectral import errors

DRAWS = 3
# The peers a user would fit instead, beside the students.
PEERS = tuple(final_model.FITS)
ALL = "all"
KEYS = {"r2": "R²", "r2_log": "R² of log EC", "kappa": "kappa"}


def sizes(text: str) -> tuple[int, ...]:
  """config.label_curve ('8,16,32'; '' = no curve) as sorted sizes."""
  try:
    out = sorted({int(s) for s in text.split(",") if s.strip()})
  except ValueError:
    out = None
  if out is None or (out and out[0] < baselines.MIN_SAMPLES):
    raise errors.UserError(
        f"--config.label_curve={text!r}: use comma-separated numbers of "
        f"field points, each at least {baselines.MIN_SAMPLES} (PLSR's inner "
        "CV needs them), e.g. 8,16,32; '' for no curve.")
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class Draw:
  """One run of the curve: outer fold `fold` trained on `points` (indices
  among the labelled pixels), `size` of them, from draw `draw`."""
  size: int
  draw: int
  fold: int
  points: np.ndarray

  @property
  def name(self) -> str:
    return f"n{self.size}_draw{self.draw}_fold{self.fold}"


def draws(fold: np.ndarray, wanted: tuple[int, ...], seed: int
          ) -> tuple[list[Draw], dict[int, str]]:
  """(the curve's runs, the sizes skipped with why) for labelled pixels in
  folds `fold`.

  A size is skipped when some outer fold has no more training points than
  that: there it would be the cross-validation's own run, or fewer points
  than asked.
  """
  folds = sorted(set(fold.tolist()))
  available = {k: int((fold != k).sum()) for k in folds}
  smallest = min(available, key=available.get)
  kept = [n for n in wanted if n < available[smallest]]
  skipped = {n: f"fold {smallest} trains on {available[smallest]} points"
             for n in wanted if n not in kept}
  runs = []
  for d in range(DRAWS):
    order = np.random.default_rng([seed, d]).permutation(len(fold))
    for k in folds:
      outside = order[fold[order] != k]
      runs += [Draw(n, d, k, np.sort(outside[:n])) for n in kept]
  return runs, skipped


def score(pooled: dict[tuple[int, int], dict[str, np.ndarray]],
          everything: dict[str, np.ndarray], target: np.ndarray,
          fold: np.ndarray, skipped: dict[int, str], classes: bool
          ) -> dict:
  """The curve (cv.json's 'label_curve'): rows per size (ALL last) and
  method, each with every draw's metrics on the pooled outer test folds,
  their mean and sd (ddof 1) over draws.

  Args:
    pooled: {(size, draw): {method: [m] predictions of the labelled
      pixels, each fold's by its run}}.
    everything: {method: [m]} the cross-validation's out-of-fold
      predictions (every training point).
    target: [m] measured EC.
    fold: [m] the labelled pixels' folds.
    skipped: {size: why} from `draws`.
    classes: whether kappa is defined (ECe).
  """
  by_size = {}
  for (size, _), predictions in sorted(pooled.items()):
    for name, pred in predictions.items():
      by_size.setdefault(size, {}).setdefault(name, []).append(pred)
  by_size[ALL] = {name: [pred] for name, pred in everything.items()}
  keys = [k for k in KEYS if classes or k != "kappa"]
  rows = []
  for size, methods in by_size.items():
    for name, predictions in methods.items():
      if not all(np.isfinite(p).all() for p in predictions):
        continue  # A peer not fitted in some run: not on the same points.
      scores = [metrics.regression_metrics(target, p, classes)
                for p in predictions]
      values = {k: np.array([s[k] for s in scores]) for k in keys}
      rows.append({
          "points": size, "method": name, "draws": scores,
          "mean": {k: float(v.mean()) for k, v in values.items()},
          "sd": ({k: float(v.std(ddof=1)) for k, v in values.items()}
                 if len(scores) > 1 else None)})
  return {"draws": DRAWS, "nested": True,
          "training points": {str(k): int((fold != k).sum())
                              for k in sorted(set(fold.tolist()))},
          "skipped": {str(n): why for n, why in skipped.items()},
          "rows": rows}


def markdown(curve: dict) -> str:
  """cv.md's section: what was run, then the table."""
  rows, training = curve["rows"], curve["training points"].values()
  keys = [k for k in KEYS if k in rows[0]["mean"]]
  lines = [
      "How many field points: the label-efficiency curve "
      "(`config.label_curve`). Each outer fold's training points subsampled "
      f"to n ({curve['draws']} seeded draws, nested: a draw orders the "
      "points once and n takes the first n outside the fold); the students, "
      "PLSR, the random forest and the pooled MLP retrained on them (the "
      "library and its pairs whole, the outer test fold held out as above) "
      "and scored on the same outer test folds, pooled; mean ± sd over "
      f"draws. {ALL!r} is the cross-validation above (every training point, "
      "one run). Figure: cv_label_efficiency.png.",
      "",
      "| field points | method | " + " | ".join(KEYS[k] for k in keys)
      + " |", "|---|---|" + "---|" * len(keys)]
  every = f"{ALL} ({min(training)}-{max(training)})"
  for row in rows:
    size = every if row["points"] == ALL else str(row["points"])
    cells = [f"{row['mean'][k]:.3f}" + (
        f" ± {row['sd'][k]:.3f}" if row["sd"] else "") for k in keys]
    lines.append(f"| {size} | {row['method']} | " + " | ".join(cells) + " |")
  for size, why in curve["skipped"].items():
    lines.append(f"| {size} | skipped: {why} |" + " – |" * len(keys))
  return "\n".join(lines)


def plot(path: epath.PathLike, curve: dict) -> None:
  """R², R² of log EC and kappa against the field points, per method
  (mean ± sd over draws; 'all' at the folds' mean training points)."""
  import matplotlib  # Lazy: plotting is only needed here.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = curve["rows"]
  keys = [k for k in KEYS if k in rows[0]["mean"]]
  every = float(np.mean(list(curve["training points"].values())))
  x_of = lambda row: every if row["points"] == ALL else row["points"]
  counts = sorted({r["points"] for r in rows if r["points"] != ALL})
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4),
                           squeeze=False)
  for ax, key in zip(axes[0], keys):
    for name in dict.fromkeys(r["method"] for r in rows):
      mine = [r for r in rows if r["method"] == name]
      ax.errorbar([x_of(r) for r in mine], [r["mean"][key] for r in mine],
                  yerr=[r["sd"][key] if r["sd"] else 0 for r in mine],
                  marker="o", capsize=3, label=name)
    ax.set(xscale="log", xlabel="field points per outer fold",
           ylabel=KEYS[key], title=f"{KEYS[key]} (pooled outer folds)")
    ax.set_xticks(counts + [every],
                  [str(n) for n in counts] + [f"{ALL} ({every:.0f})"])
    ax.minorticks_off()
  axes[0][0].legend()
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=110, format="png")
  plt.close(fig)
  epath.Path(path).write_bytes(buffer.getvalue())
