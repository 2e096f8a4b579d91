"""The label-efficiency curve's draws, scores and table (label_curve.py);
the CV job that runs it is tested in test_own_data.py."""
import numpy as np
import pytest

from deepsalt_jax import label_curve
from deepsalt_spectral import errors

FOLD = np.repeat([1, 2, 3], [10, 14, 12])  # Outer folds train on 26, 22, 24.


def test_draws_hold_out_the_outer_fold_with_the_stated_sizes_nested():
  runs, skipped = label_curve.draws(FOLD, (4, 8, 16, 22, 40), seed=0)
  assert skipped == {22: "fold 2 trains on 22 points",
                     40: "fold 2 trains on 22 points"}
  assert len(runs) == label_curve.DRAWS * 3 * 3  # Draws x sizes x folds.
  by = {(r.size, r.draw, r.fold): r for r in runs}
  assert len(by) == len(runs)
  for (size, draw, k), run in by.items():
    assert len(np.unique(run.points)) == size
    assert not (FOLD[run.points] == k).any()
    if size > 4:  # Nested: the smaller size's points lie within.
      smaller = by[(size // 2, draw, k)].points
      assert set(smaller) <= set(run.points)
  # Draws differ from each other, and the seed reproduces them.
  assert not np.array_equal(by[(8, 0, 1)].points, by[(8, 1, 1)].points)
  again, _ = label_curve.draws(FOLD, (4, 8, 16, 22, 40), seed=0)
  assert all(np.array_equal(a.points, b.points) for a, b in zip(runs, again))
  other, _ = label_curve.draws(FOLD, (4, 8, 16), seed=1)
  assert not np.array_equal(other[0].points, runs[0].points)


@pytest.mark.parametrize("text", ["8,x", "2,8", "-4"])
def test_sizes_refuse_what_plsr_cannot_fit(text):
  with pytest.raises(errors.UserError, match="label_curve"):
    label_curve.sizes(text)


def test_sizes_parse_and_sort():
  assert label_curve.sizes("") == ()
  assert label_curve.sizes("32, 8,16,8") == (8, 16, 32)


def test_scores_pool_the_folds_and_summarise_the_draws():
  rng = np.random.default_rng(0)
  target = np.exp(rng.normal(1, 1, FOLD.size))
  noisy = lambda sd: target * np.exp(rng.normal(0, sd, target.size))
  pooled = {(8, d): {"student": noisy(0.5), "PLSR": noisy(0.2)}
            for d in range(label_curve.DRAWS)}
  pooled[(8, 0)]["PLSR"][:3] = np.nan  # Not fitted in one fold: left out.
  curve = label_curve.score(pooled, {"student": noisy(0.1),
                                     "PLSR": noisy(0.1)},
                            target, FOLD, {40: "fold 2 trains on 22 points"},
                            classes=True)
  rows = {(r["points"], r["method"]): r for r in curve["rows"]}
  assert list(rows) == [(8, "student"), (label_curve.ALL, "student"),
                        (label_curve.ALL, "PLSR")]
  student = rows[(8, "student")]
  assert len(student["draws"]) == label_curve.DRAWS
  r2 = [d["r2"] for d in student["draws"]]
  assert student["mean"]["r2"] == pytest.approx(np.mean(r2))
  assert student["sd"]["r2"] == pytest.approx(np.std(r2, ddof=1))
  assert set(student["mean"]) == {"r2", "r2_log", "kappa"}
  assert rows[(label_curve.ALL, "PLSR")]["sd"] is None
  assert curve["training points"] == {"1": 26, "2": 22, "3": 24}
  table = label_curve.markdown(curve)
  assert "| 8 | student | " in table and "| all (22-26) | PLSR | " in table
  assert "| 40 | skipped: fold 2 trains on 22 points |" in table
