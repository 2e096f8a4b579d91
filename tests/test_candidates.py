"""Validation chooses among candidate students: the choice, its report, its
evaluation and its map."""
import json
import shutil

import numpy as np
import pytest
import rasterio

from deepsalt_jax import calibration
from deepsalt_jax import evaluate
from deepsalt_jax import intervals
from deepsalt_jax import mapping
from deepsalt_jax import region_calibration
from deepsalt_jax import samples
from deepsalt_jax import selection
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import train
from deepsalt_jax.mapping import files
from tests.conftest import tiny_config

TILE = "enmap_potsdam/enmap_potsdam_tile_192_96.tif"


BLOCKS = np.repeat(["a", "b", "c", "d"], 5)


def test_pick_takes_a_candidate_that_beats_the_default_beyond_the_noise():
  rng = np.random.default_rng(0)
  errors = {"student": np.ones(20),
            "library": 0.5 + 0.01 * rng.random(20), "latent": None}
  winner, details = selection.pick(errors, BLOCKS)
  assert winner == "library" and details["lowest"] == "library"
  assert set(details["margins"]) == {"student", "library"}  # Not 'latent'.
  margin = details["margins"]["student"]
  assert margin["mse_excess"] == pytest.approx(1.0 - errors["library"].mean())
  assert margin["standard_error"] < 0.01


def test_pick_keeps_the_default_within_one_standard_error():
  # Per-block MSE differences (student - latent): 0.1 and 0.3, one sample
  # each: excess 0.2, standard error sd/sqrt(2) = 0.1414/1.414 = 0.1.
  errors = {"student": np.array([1.1, 1.3]), "latent": np.array([1.0, 1.0])}
  winner, details = selection.pick(errors, np.array(["a", "b"]))
  assert details["lowest"] == "latent"
  assert details["margins"]["student"] == pytest.approx(
      {"mse_excess": 0.2, "standard_error": 0.1})
  assert winner == "latent"  # 0.2 > 0.1: beyond the noise.
  noisy = {"student": np.array([1.3, 0.9]), "latent": np.array([1.0, 1.0])}
  # Differences 0.3 and -0.1: excess 0.1 within its standard error 0.2.
  assert selection.pick(noisy, np.array(["a", "b"]))[0] == "student"
  # 'latent' (differences -0.6 and 1.4 from 'library': excess 0.4 within
  # its standard error 1.0) has a higher MSE than 'student' before it,
  # which is beyond the noise: the lowest wins.
  errors = {"student": np.array([1.2, 1.4]), "latent": np.array([0.5, 2.5]),
            "library": np.array([1.1, 1.1])}
  assert selection.pick(errors, np.array(["a", "b"]))[0] == "library"
  tie = {"latent": np.ones(4), "student": np.ones(4)}
  assert selection.pick(tie, BLOCKS[::5])[0] == "latent"  # The first.
  assert selection.pick({"student": None, "latent": None},
                        BLOCKS) == ("student", {})


def test_the_winner_is_scored_in_the_transformed_space_by_region():
  """`winner_of`: squared errors of log1p EC, the ensemble first, and the
  regions (or blocks) as the units of the standard error."""
  y = np.tile([0.5, 2.0, 8.0, 30.0], 6)
  regions = np.repeat(["r1", "r2", "r3"], 8)
  rng = np.random.default_rng(0)
  members = {"student": y * 2.0 + 1.0,  # Far off in every region.
             "library": y * np.exp(0.05 * rng.standard_normal(y.size))}
  errors, winner, details = selection.winner_of(members, y, regions,
                                                "log1p", ["student",
                                                          "library"])
  assert list(errors) == [selection.ENSEMBLE, "student", "library"]
  np.testing.assert_allclose(errors["student"],
                             (np.log1p(members["student"]) - np.log1p(y))**2)
  assert winner == "library" and details["lowest"] == "library"
  # Three regions: the standard error of the ensemble's excess is that of
  # its three per-region mean differences.
  per_region = [np.mean(errors[selection.ENSEMBLE][regions == r]
                        - errors["library"][regions == r])
                for r in ("r1", "r2", "r3")]
  assert details["margins"][selection.ENSEMBLE]["standard_error"] == (
      pytest.approx(np.std(per_region, ddof=1) / np.sqrt(3)))


def test_the_ensemble_averages_in_the_transformed_space():
  np.testing.assert_allclose(
      selection.ensemble([np.array([0.0, 1.0]), np.array([3.0, 1.0])],
                         "log1p"), [1.0, 1.0])  # expm1 of mean log1p.
  np.testing.assert_allclose(
      selection.ensemble([np.array([2.0]), np.array([4.0])], "identity"),
      [3.0])


def test_a_student_that_beats_the_ensemble_ships_hedged_with_it():
  preds = {"student": np.array([1.0, 0.0]), "latent": np.array([7.0, 2.0])}
  # Ensemble: mean of 1, 7 and of 0, 2 (identity); latent hedged: mean of
  # latent and that.
  np.testing.assert_allclose(
      selection.shipped(preds, selection.ENSEMBLE, "identity"), [4.0, 1.0])
  np.testing.assert_allclose(
      selection.shipped(preds, "latent", "identity"), [5.5, 1.5])
  # log1p: the ensemble of 3 and 15 is 7 (geometric mean of 4 and 16,
  # less 1); latent hedged, that of 16 and 8.
  np.testing.assert_allclose(
      selection.shipped({"student": np.array([3.0]),
                         "latent": np.array([15.0])}, "latent", "log1p"),
      [np.sqrt(16 * 8) - 1])
  assert selection.shipped_name("latent", ["student", "latent"]) == (
      "student 'latent' and the ensemble of 2 candidate students, their "
      "mean")
  assert selection.shipped_name(selection.ENSEMBLE, ["student", "latent"]) == (
      "the ensemble of 2 candidate students")


@pytest.fixture(scope="module")
def candidate_run(prepared_data_dir, tmp_path_factory):
  config = tiny_config("distill", prepared_data_dir,
                       "compare=none,candidates=library")
  workdir = tmp_path_factory.mktemp("candidates")
  return config, workdir, train.train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_the_selected_row_is_validations_pick(candidate_run):
  config, workdir, results = candidate_run
  scores = {n: json.loads((workdir / n / selection.BEST_FILE).read_text())[
      "validation_rmse"] for n in ("student", "library")}
  saved = json.loads((workdir / "results.json").read_text())
  # Chosen on the validation blocks: this run holds no regions out.
  assert saved["choice"]["on"] == selection.VALIDATION_BLOCKS
  # Each candidate re-scored at its best step gives the score it was
  # selected with.
  for name, score in scores.items():
    assert saved["choice"]["scores"][name] == pytest.approx(score, rel=1e-5)
  margins = saved["choice"]["margins"]
  order = (selection.ENSEMBLE, "student", "library")
  assert list(saved["choice"]["scores"]) == list(order)
  winner = next(n for n in order
                if margins[n]["mse_excess"] <= margins[n]["standard_error"])
  assert saved["choice"]["winner"] == winner
  scores = saved["choice"]["scores"]
  assert saved["choice"]["lowest"] == min(scores, key=scores.get)
  # The ensemble row: the candidates' mean, with its own calibration.
  np.testing.assert_allclose(
      results[selection.ENSEMBLE]["pred"],
      selection.ensemble([results[n]["pred"] for n in ("student", "library")],
                         "log1p"), rtol=1e-6)
  # What ships: the ensemble, or a student that beat it hedged with it.
  hedged = winner != selection.ENSEMBLE
  np.testing.assert_allclose(
      results[selection.SELECTED]["pred"],
      selection.ensemble([results[winner]["pred"],
                          results[selection.ENSEMBLE]["pred"]], "log1p")
      if hedged else results[winner]["pred"], rtol=1e-6)
  # Listed first among the students.
  table = (workdir / "results.md").read_text()
  assert table.index(selection.SELECTED) < table.index("| student |")
  # With the candidates' validation scores and the winner.
  assert (f"\n\n{selection.SELECTED} = {winner}"
          f"{', shipped as its mean with the ensemble' if hedged else ''}: "
          "the first (the candidates' ensemble" in table and
          f"library {scores['library']:.4f}" in table)
  # The intervals of what ships and of the ensemble: their saved
  # calibrations (the spread preferred: first) on the members' spread.
  spread = selection.spread([results[n]["pred"] for n in ("student",
                                                          "library")],
                            "log1p")
  for row, folder in ((selection.SELECTED, selection.SHIPPED),
                      (selection.ENSEMBLE, selection.ENSEMBLE)):
    fitted = calibration.load(workdir / folder)
    assert list(fitted["candidates"]) == ["members", "constant"]
    pred = results[row]["pred"]
    judged = calibration.judge(pred, results["student"]["target"],
                               calibration.predictive(fitted, pred, spread))
    overall = results[row]["interval"]["overall"]
    assert overall["interval_score"] == pytest.approx(
        judged["interval_score"])
    assert overall["coverage"] == judged["coverage"]
  # Evaluation restores the same choice and ensemble.
  evaluated = evaluate.evaluate_checkpoints(config, workdir)
  for name in (selection.SELECTED, selection.ENSEMBLE):
    np.testing.assert_allclose(evaluated[name]["pred"],
                               results[name]["pred"], rtol=1e-5)


@pytest.mark.slow
def test_a_replayed_choice_is_the_runs(candidate_run):
  """benchmarks.candidate_replay's restore: validation's choice replayed
  among the run's candidates is the run's, and ships what it shipped."""
  from benchmarks import calibration_bound
  _, workdir, results = candidate_run
  mesh = sharding.make_mesh()
  restored = calibration_bound.restore(workdir, mesh)
  saved = calibration_bound.ship(restored)
  replayed = calibration_bound.ship(restored, ("student", "library"))
  assert replayed["winner"] == saved["winner"] == json.loads(
      (workdir / "results.json").read_text())["choice"]["winner"]
  np.testing.assert_allclose(replayed["test"]["pred"],
                             results[selection.SELECTED]["pred"], rtol=1e-5)
  # One candidate ships as itself; the other is only predicted beside it.
  alone = calibration_bound.ship(restored, ("library",))
  np.testing.assert_allclose(alone["test"]["pred"],
                             results["library"]["pred"], rtol=1e-5)
  np.testing.assert_allclose(alone["test"]["student"],
                             results["student"]["pred"], rtol=1e-5)
  with pytest.raises(SystemExit, match="trained no \\['finetune'\\]"):
    calibration_bound.restore(workdir, mesh, ("finetune",))


@pytest.mark.slow
def test_regions_held_out_calibrate_what_ships(candidate_run, tmp_path,
                                               caplog):
  """calibration_regions=2 on a finished run: the run's networks are
  restored (nothing of them retrains, the points are the same), the
  candidates train again without each group of regions, and what ships
  is calibrated on those groups' labelled pixels; a re-run restores
  them."""
  config, workdir, results = candidate_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  config = config.copy_and_resolve_references()
  config.calibration_regions = 2
  regional = train.train_and_evaluate(config, run)
  for name in (selection.ENSEMBLE, "student", "library"):
    np.testing.assert_array_equal(regional[name]["pred"],
                                  results[name]["pred"])
  data = samples.load_data(config.data)
  plan = stages.plan(config, data.lab_grid)
  groups = region_calibration.groups(config, plan, data)
  rows = [region_calibration.calibration_rows(data, g) for g in groups]
  for folder in (selection.SHIPPED, selection.ENSEMBLE):
    fitted = calibration.load(run / folder)
    assert fitted["validation_samples"] == sum(r.sum() for r in rows)
    assert fitted["groups"] == len(np.concatenate(groups))  # Regions.
    assert "(2 groups)" in calibration.describe(fitted)
    # A new region's errors grow with the prediction: a candidate here.
    assert list(fitted["candidates"]) == ["members", "prediction",
                                          "constant"]
    # And its bias changes with it: the interval's centre follows a line
    # fitted here, not on the blocks.
    assert fitted["location"] != [0.0, 0.0]
    assert ("corrected by the line of the samples' errors"
            in calibration.describe(fitted))
    assert calibration.load(workdir / folder)["location"] == [0.0, 0.0]
  # Each group's candidates are its own networks, trained without it.
  for k in range(2):
    assert (run / region_calibration.DIR / "2_groups" / f"group{k}" /
            "library" / selection.BEST_FILE).exists()
  # The calibration samples, rebuilt from the restored groups, calibrate
  # what ships as the run did.
  with caplog.at_level("INFO"):
    again = region_calibration.calibration_samples(
        groups, plan, data, run, sharding.make_mesh(), train.train_plan)
  assert "training for" not in caplog.text
  np.testing.assert_array_equal(
      again.target, np.concatenate([data.target[r] for r in rows]))
  # What ships is chosen on these samples, region by region, not on the
  # blocks.
  choice = json.loads((run / selection.CHOICE_FILE).read_text())
  _, winner, details = selection.winner_of(
      again.members, again.target, again.groups, "log1p", plan.candidates)
  assert (choice["winner"], choice["lowest"]) == (winner, details["lowest"])
  assert "(2 groups)" in choice["on"] and "regions" in choice["criterion"]
  np.testing.assert_allclose(regional[selection.SELECTED]["pred"],
                             selection.shipped(
                                 {n: results[n]["pred"]
                                  for n in plan.candidates}, winner,
                                 "log1p"), rtol=1e-5)
  refit = intervals.calibrate_shipped(plan, choice, again,
                                      tmp_path / "refit")
  assert refit[selection.SHIPPED]["scores"] == calibration.load(
      run / selection.SHIPPED)["scores"]
  # The interval differs from the validation blocks' one.
  assert (regional[selection.SELECTED]["interval"] !=
          results[selection.SELECTED]["interval"])
  # The benchmarks read the run's own choice back; a replay on the blocks
  # would not be it, and is refused.
  from benchmarks import calibration_bound
  restored = calibration_bound.restore(run, sharding.make_mesh())
  np.testing.assert_allclose(calibration_bound.ship(restored)["test"]["pred"],
                             regional[selection.SELECTED]["pred"], rtol=1e-5)
  with pytest.raises(SystemExit, match="chose what ships on labelled"):
    calibration_bound.ship(restored, plan.candidates)


@pytest.mark.slow
def test_the_map_comes_from_the_chosen_student(candidate_run, reference_data,
                                               tmp_path):
  """With 'library' chosen the map is library's hedged with the
  ensemble, named so; the student's map is another; the ensemble's is
  their mean in log1p."""
  config, workdir, _ = candidate_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  choice = json.loads((run / selection.CHOICE_FILE).read_text())
  (run / selection.CHOICE_FILE).write_text(json.dumps(
      dict(choice, winner="library")))
  tile = reference_data / TILE
  report = mapping.map_scene(config, run, tile, tmp_path / "selected")
  assert report["model"]["name"] == (
      "student 'library' and the ensemble of 2 candidate students, their "
      "mean")
  # Every candidate runs, for the spread that scales the interval.
  assert report["model"]["checkpoint_steps"].keys() == {"student",
                                                        "library"}
  options = mapping.options.defaults()
  options.model = "student"
  mapping.map_scene(config, run, tile, tmp_path / "student", options)
  options.model = "ensemble"
  # An interval scaled by the members' spread (whichever the run kept).
  calibration.save(dict(calibration.load(run / selection.ENSEMBLE),
                        difficulty="members", difficulty_scale=0.05),
                   run / selection.ENSEMBLE)
  ensemble = mapping.map_scene(config, run, tile, tmp_path / "ensemble",
                               options)
  assert ensemble["model"]["name"] == "the ensemble of 2 candidate students"
  ec, described = {}, {}
  for name in ("selected", "student", "ensemble"):
    with rasterio.open(tmp_path / name / f"{tile.stem}_ec.tif") as ds:
      ec[name], described[name] = ds.read(1), ds.descriptions[0]
      if name == "ensemble":
        bounds = ds.read(2), ds.read(3)
        assert "spread of the candidate students' predictions" in (
            ds.descriptions[1])
  assert "students, their mean, validation's choice" in described["selected"]
  assert described["ensemble"].endswith(
      "the ensemble of 2 candidate students")
  valid = ec["ensemble"] != files.EC_NODATA
  assert not np.array_equal(ec["selected"], ec["student"])
  # In log1p, ensemble = (library + student) / 2 and selected = (library +
  # ensemble) / 2: library's own map is 2 ensemble - student.
  log = {k: np.log1p(v[valid].astype(np.float64)) for k, v in ec.items()}
  library = np.expm1(2 * log["ensemble"] - log["student"])
  members = [library, ec["student"][valid]]
  np.testing.assert_allclose(
      log["selected"], (np.log1p(library) + log["ensemble"]) / 2, atol=1e-5)
  # Its bounds: the calibration on the members' spread per pixel.
  fitted = calibration.load(run / selection.ENSEMBLE)
  expected = calibration.interval(fitted, ec["ensemble"][valid],
                                  selection.spread(members, "log1p"))
  for band, want in zip(bounds, expected):
    np.testing.assert_allclose(band[valid], want, rtol=1e-4, atol=1e-4)
  # Validation's choice of the ensemble maps the ensemble, named so.
  (run / selection.CHOICE_FILE).write_text(json.dumps(
      dict(choice, winner=selection.ENSEMBLE)))
  chosen = mapping.map_scene(config, run, tile, tmp_path / "chosen")
  assert chosen["model"]["made_by"].endswith("validation's choice of model")
  with rasterio.open(tmp_path / "chosen" / f"{tile.stem}_ec.tif") as ds:
    np.testing.assert_array_equal(ds.read(1), ec["ensemble"])


@pytest.mark.slow
def test_a_run_with_candidates_but_no_choice_is_refused_for_maps(
    candidate_run, reference_data, tmp_path):
  config, workdir, _ = candidate_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  (run / selection.CHOICE_FILE).unlink()
  with pytest.raises(ValueError, match="--mapping.model=student"):
    mapping.map_scene(config, run, reference_data / TILE, tmp_path / "maps")
