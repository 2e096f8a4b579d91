"""Validation's choice of model on own data: nested folds, stacking, winner."""
import numpy as np
import pytest

from deepsalt_jax import final_model
from deepsalt_jax import model_choice


def _runs(fold, predict):
  """Runs of every held-out set: {held: {method: predictions of its points
  (NaN elsewhere)}}, `predict(held, rows)` giving {method: values}."""
  out = {}
  for held in model_choice.held_out_sets(sorted(set(fold.tolist()))):
    rows = np.isin(fold, held)
    out[held] = {name: np.where(rows, values, np.nan)
                 for name, values in predict(held, rows).items()}
  return out


def test_inner_predictions_come_from_runs_without_the_outer_fold():
  fold = np.repeat([1, 2, 3, 4], 5)
  assert model_choice.held_out_sets([1, 2, 3, 4]) == [
      (1,), (2,), (3,), (4,), (1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
  assert model_choice.held_out_sets([1, 2]) == [(1,), (2,)]
  # Each run predicts its code: which folds it held out.
  code = lambda held: sum(10 ** (k - 1) for k in held)
  runs = _runs(fold, lambda held, rows: {"m": np.full(len(fold),
                                                      code(held), float)})
  for outer in (1, 2, 3, 4):
    pred = model_choice.validation_predictions(runs, fold, outer)["m"]
    assert np.isnan(pred[fold == outer]).all()
    for i in np.flatnonzero(fold != outer):
      # Neither the outer test fold nor the point's own fold trained it.
      assert pred[i] == code((outer, fold[i]))
  final = model_choice.validation_predictions(runs, fold, None)["m"]
  np.testing.assert_array_equal(final, [code((k,)) for k in fold])


def test_stack_weights_are_non_negative_and_recover_a_mixture():
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 3, (200, 4))
  y = 0.3 * x[:, 0] + 0.7 * x[:, 1]
  np.testing.assert_allclose(model_choice.stack_weights(x, y),
                             [0.3, 0.7, 0, 0], atol=1e-9)
  # Least squares would subtract the second column; NNLS leaves it out.
  w = model_choice.stack_weights(x[:, :2], x[:, 0] - 0.5 * x[:, 1])
  assert w[0] > 0 and w[1] == 0


def test_the_winner_of_each_fold_gives_its_selected_predictions():
  rng = np.random.default_rng(1)
  fold = np.repeat([1, 2, 3], 8)
  target = np.exp(rng.uniform(0, 3, fold.size))
  noise = {h: rng.normal(0, 1, fold.size) for h in
           model_choice.held_out_sets([1, 2, 3])}
  # "good" and "bad" err in opposite directions in log1p EC ("bad" twice
  # as far): their mixture 2/3, 1/3 is exact.
  runs = _runs(fold, lambda held, rows: {
      "good": np.expm1(np.log1p(target) + 0.1 * noise[held]),
      "bad": np.expm1(np.log1p(target) - 0.2 * noise[held]),
      "constant": np.full(fold.size, 3.0)})
  selected, choices, final = model_choice.select(runs, fold, target, "log1p")
  assert set(choices) == {1, 2, 3}
  for k, choice in choices.items():
    assert set(choice.scores) == {"good", "bad", "constant",
                                  model_choice.STACKED}
    assert choice.winner == min(choice.scores, key=choice.scores.get)
    assert all(w >= 0 for w in choice.weights.values())
    assert choice.winner == model_choice.STACKED
    assert choice.scores[model_choice.STACKED] < 1e-6
    np.testing.assert_allclose(list(choice.weights.values()), [2 / 3, 1 / 3, 0],
                               atol=1e-6)
    expected = np.expm1(sum(w * np.log1p(runs[(k,)][n][fold == k])
                            for n, w in choice.weights.items()))
    np.testing.assert_allclose(selected[fold == k], expected, rtol=1e-6)
  assert final.winner == model_choice.STACKED
  # Without the mixture, the close candidate wins and is used as it is.
  runs = {h: {"good": r["good"], "constant": r["constant"]}
          for h, r in runs.items()}
  selected, choices, _ = model_choice.select(runs, fold, target, "log1p")
  for k, choice in choices.items():
    assert choice.winner in ("good", model_choice.STACKED)
    if choice.winner == "good":
      np.testing.assert_array_equal(selected[fold == k],
                                    runs[(k,)]["good"][fold == k])
  assert "| winner |" in model_choice.markdown(
      {f"fold {k}": c for k, c in choices.items()})


def test_two_folds_give_no_nested_choice_but_a_final_one():
  fold = np.repeat([1, 2], 6)
  target = np.linspace(1, 12, fold.size)
  runs = _runs(fold, lambda held, rows: {"a": target + 0.1, "b": target * 2})
  selected, choices, final = model_choice.select(runs, fold, target, "log1p")
  assert selected is None and choices == {}
  assert final.winner in ("a", model_choice.STACKED)


def test_the_simplest_candidate_within_one_standard_error_wins():
  """PLSR, named first, wins over a student whose lower MSE is within the
  noise of the groups, and loses to one below it beyond the noise; the
  scores are the RMSEs either way."""
  rng = np.random.default_rng(1)
  group = np.repeat([1, 2, 3, 4], 10)
  target = np.expm1(rng.uniform(0.5, 3.0, group.size))
  y = np.log1p(target)
  # A shared error (which no stack removes) and small ones of their own.
  noise = rng.normal(0.0, 0.1, group.size)
  close = {"student": np.expm1(y + noise + rng.normal(0.0, 0.02, y.size)),
           "PLSR": np.expm1(y + noise + rng.normal(0.0, 0.03, y.size))}
  choice = model_choice.choose(close, target, group, "log1p",
                               first=("PLSR",))
  assert min(choice.scores, key=choice.scores.get) == "student"
  assert choice.winner == "PLSR"
  # Without an order the first given, the student, is within the noise.
  assert model_choice.choose(close, target, group, "log1p").winner == (
      "student")
  assert choice.hedge == ""  # The first candidate needs no hedge.
  far = dict(close, student=np.expm1(y + 0.2 * noise))
  won = model_choice.choose(far, target, group, "log1p", first=("PLSR",))
  assert won.winner == "student"
  # Its win over PLSR is hedged: the mean of the two in log1p EC.
  assert won.hedge == "PLSR"
  np.testing.assert_allclose(
      won.predict(far, "log1p"),
      np.expm1((np.log1p(far["student"]) + np.log1p(far["PLSR"])) / 2),
      rtol=1e-6)
  np.testing.assert_allclose(
      won.out_of_group(far, target, group, "log1p"),
      won.predict(far, "log1p"), rtol=1e-6)
  assert "student (mean with PLSR)" in model_choice.markdown({"all": won})
  assert model_choice.choose(far, target, group, "log1p").hedge == ""
  np.testing.assert_allclose(
      model_choice.choose(far, target, group, "log1p").scores["student"],
      np.sqrt(np.mean((0.2 * noise)**2)), rtol=1e-5)


def test_a_stack_with_a_candidate_student_reads_it_as_a_network():
  """A candidate student (by its name) and the teacher on the pixels are
  the run's networks; the scikit-learn members are fitted; the stack
  combines them in log1p."""
  choice = model_choice.Choice({}, model_choice.STACKED, {
      "no_distill_pred": 0.5, "PLSR": 0.3, final_model.TEACHER: 0.2,
      "student": 0.0})
  x = np.zeros((3, 4))
  plsr = lambda x: np.full(len(x), np.log1p(2.0))
  chosen = final_model.FinalModel(choice, "log1p", {"PLSR": plsr}, None)
  assert chosen.networks == ["no_distill_pred", final_model.TEACHER]
  networks = {"no_distill_pred": np.full(3, 8.0),
              final_model.TEACHER: np.full(3, 1.0)}
  np.testing.assert_allclose(chosen.predict(x, networks), np.expm1(
      0.5 * np.log1p(8.0) + 0.3 * np.log1p(2.0) + 0.2 * np.log1p(1.0)))


if __name__ == "__main__":
  pytest.main([__file__])
