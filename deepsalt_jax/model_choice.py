"""Validation chooses the model: candidates scored on inner spatial folds.

Own data's cross-validation (cross_validation.py) predicts the labelled
pixels by every method (the candidates: the student, the teacher on the
pixels, PLSR, the random forest, the pooled MLP) from runs that each held
out whole spatial folds. Within outer fold k the inner folds are the other
folds: inner fold j is predicted by the run that held out j and k together,
so no candidate scored there saw the outer test fold or the inner fold it
is scored on. One run without {j, k} serves outer fold k (inner fold j)
and outer fold j (inner fold k): K(K - 1) / 2 runs beside the K outer ones.
The final model (every point) is chosen the same way from the outer runs'
out-of-fold predictions.

The criterion is the RMSE of the transformed target (log1p EC), pooled over
the inner folds' points: a factor of error counts alike at 1 and at 30
dS/m, so neither the saline tail nor the bulk decides alone. A stacked
candidate competes with the others: non-negative weights on their
transformed predictions, fitted on the inner out-of-fold predictions (its
own score cross-fitted: each inner fold by the weights fitted on the
others). The winner is the first candidate within one standard error of
the lowest (selection.pick over the inner folds: a few folds of ten
points do not rank near-equal scores), in the order `first` (own data:
PLSR, the linear model), then the networks (the default student first),
the other local models, the stack. A winner other than the first
candidate is hedged with it: the prediction is the mean of the two in the
transformed space (`Choice.hedge`), as a few folds let some wins through
by chance (docs/results.md measures it).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import numpy as np
from scipy import optimize

from deepsalt_jax import selection
from deepsalt_jax import targets

SELECTED = "selected (validation)"
STACKED = "stacked"
CRITERION = "RMSE of the transformed target on the inner spatial folds"
Runs = dict[tuple[int, ...], dict[str, np.ndarray]]


def held_out_sets(folds: list[int]) -> list[tuple[int, ...]]:
  """The folds each run holds out: each fold (the outer runs), then each
  pair of folds (the inner runs; none with fewer than 3 folds, where a pair
  would hold out every point)."""
  pairs = list(itertools.combinations(folds, 2)) if len(folds) > 2 else []
  return [(k,) for k in folds] + pairs


def validation_predictions(runs: Runs, fold: np.ndarray,
                           outer: int | None) -> dict[str, np.ndarray]:
  """Each method's predictions of the points outside fold `outer` (NaN in
  it) by the run that held out their own fold and `outer`.

  Args:
    runs: {held-out folds: {method: [n] predictions, NaN outside them}}.
    fold: [n] the points' folds.
    outer: the outer test fold, or None (the final choice: the outer runs).
  """
  out = {}
  for j in np.unique(fold):
    if j == outer:
      continue
    key = tuple(sorted({int(j)} | ({outer} if outer is not None else set())))
    for name, pred in runs[key].items():
      out.setdefault(name, np.full(len(fold), np.nan))[fold == j] = (
          pred[fold == j])
  return out


def stack_weights(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Non-negative least-squares weights of x's columns for y (no
  intercept): a mixture of the candidates, never one against another."""
  return optimize.nnls(np.asarray(x, np.float64), np.asarray(y, np.float64))[0]


@dataclasses.dataclass(frozen=True)
class Choice:
  """Candidates' inner-validation scores, the winner, the stack's weights
  (fitted on every inner fold) and the candidate the winner is hedged with
  ('': none)."""
  scores: dict[str, float]
  winner: str
  weights: dict[str, float]
  hedge: str = ""

  def predict(self, predictions: dict[str, np.ndarray],
              transform: str) -> np.ndarray:
    """The winner's prediction from the candidates' `predictions`."""
    if self.winner != STACKED:
      return self._hedged(predictions[self.winner], predictions, transform)
    forward, inverse = targets.on_numpy(transform)
    return self._hedged(inverse(sum(
        w * forward(predictions[name])
        for name, w in self.weights.items() if w > 0)), predictions,
                        transform)

  def out_of_group(self, predictions: dict[str, np.ndarray],
                   target: np.ndarray, group: np.ndarray,
                   transform: str) -> np.ndarray:
    """The winner's prediction of each group's points made without the
    group: a stack's weights refitted on the other groups (what the
    winner's interval is calibrated on)."""
    if self.winner != STACKED:
      return self._hedged(predictions[self.winner], predictions, transform)
    forward, inverse = targets.on_numpy(transform)
    names = [n for n in self.weights if n in predictions]
    z = np.stack([forward(predictions[n]) for n in names], axis=1)
    return self._hedged(inverse(_cross_fitted_stack(z, forward(target),
                                                    group)),
                        predictions, transform)

  def _hedged(self, pred: np.ndarray, predictions: dict[str, np.ndarray],
              transform: str) -> np.ndarray:
    """`pred` averaged with the hedge's prediction in the transformed
    space (`pred` itself without a hedge)."""
    if not self.hedge:
      return pred
    return selection.ensemble([pred, predictions[self.hedge]], transform)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def _cross_fitted_stack(z: np.ndarray, y: np.ndarray,
                        group: np.ndarray) -> np.ndarray:
  """The stack's prediction of each group by the weights fitted on the
  others."""
  stacked = np.empty_like(y)
  for g in np.unique(group):
    rows = group == g
    stacked[rows] = z[rows] @ stack_weights(z[~rows], y[~rows])
  return stacked


def choose(predictions: dict[str, np.ndarray], target: np.ndarray,
           group: np.ndarray, transform: str,
           first: Sequence[str] = ()) -> Choice:
  """Scores the candidates (predictions of the same points, each made
  without the point's `group`) and the stack of them; the winner is the
  first, in the order `first`, the others, the stack, within one standard
  error (over the groups) of the lowest MSE; a winner other than `first`'s
  first is hedged with it.

  A candidate with a missing prediction (not fitted in some run) is left
  out.
  """
  forward, _ = targets.on_numpy(transform)
  y = forward(target)
  names = [n for n, p in predictions.items() if np.isfinite(p).all()]
  names = ([n for n in first if n in names]
           + [n for n in names if n not in first])
  z = np.stack([forward(predictions[n]) for n in names], axis=1)
  errors = {name: (z[:, i] - y)**2 for i, name in enumerate(names)}
  errors[STACKED] = (_cross_fitted_stack(z, y, group) - y)**2
  scores = {name: float(np.sqrt(np.mean(e))) for name, e in errors.items()}
  weights = dict(zip(names, stack_weights(z, y).tolist()))
  winner = selection.pick(errors, group)[0]
  preferred = next((n for n in first if n in names), "")
  return Choice(scores, winner, weights,
                preferred if winner != preferred else "")


def select(runs: Runs, fold: np.ndarray, target: np.ndarray,
           transform: str, first: Sequence[str] = ()
           ) -> tuple[np.ndarray | None, dict[int, Choice], Choice]:
  """(the selected out-of-fold predictions, or None with fewer than 3
  folds; each outer fold's choice; the final model's choice), `choose`
  preferring the candidates `first` in that order.

  Outer fold k's selected prediction is its winner's prediction by the run
  that held out k alone.
  """
  folds = sorted(set(fold.tolist()))
  outer_runs = {(k,): runs[(k,)] for k in folds}
  oof = validation_predictions(outer_runs, fold, None)
  final = choose(oof, target, fold, transform, first)
  if len(folds) < 3:
    return None, {}, final
  selected = np.full(len(fold), np.nan)
  choices = {}
  for k in folds:
    inner = fold != k
    candidates = validation_predictions(runs, fold, k)
    choices[k] = choose({n: p[inner] for n, p in candidates.items()},
                        target[inner], fold[inner], transform, first)
    selected[~inner] = choices[k].predict(
        {n: p[~inner] for n, p in oof.items()}, transform)
  return selected, choices, final


def markdown(choices: dict[str, Choice]) -> str:
  """One row per candidate, one column per choice (its inner RMSE, the
  winner's in bold), then the winners and the stacks' weights."""
  names = list(dict.fromkeys(n for c in choices.values() for n in c.scores))
  lines = ["| candidate | " + " | ".join(choices) + " |",
           "|---|" + "---|" * len(choices)]
  for name in names:
    cells = [("–" if name not in c.scores else
              f"**{c.scores[name]:.3f}**" if name == c.winner else
              f"{c.scores[name]:.3f}") for c in choices.values()]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines.append("| winner | " + " | ".join(
      c.winner + (f" (mean with {c.hedge})" if c.hedge else "")
      for c in choices.values()) + " |")
  lines.append("| stack weights | " + " | ".join(
      ", ".join(f"{n} {w:.2f}" for n, w in c.weights.items() if w > 0.005)
      or "none" for c in choices.values()) + " |")
  return "\n".join(lines)
