"""Validation chooses among candidate students: the choice, its report, its
evaluation and its map."""
import json
import shutil

import numpy as np
import pytest
import rasterio

from deepsalt_jax import evaluate
from deepsalt_jax import mapping
from deepsalt_jax import selection
from deepsalt_jax import stages
from deepsalt_jax import train
from deepsalt_jax.mapping import files
from tests.conftest import tiny_config

TILE = "enmap_potsdam/enmap_potsdam_tile_192_96.tif"


def _plan(candidates):
  return stages.Plan(teacher=None, students=(), candidates=candidates)


def _best(workdir, name, score):
  (workdir / name).mkdir(parents=True, exist_ok=True)
  (workdir / name / selection.BEST_FILE).write_text(json.dumps(
      {"step": 3, "validation_rmse": score}))


def test_choose_keeps_the_lowest_validation_score(tmp_path):
  _best(tmp_path, "student", 0.5)
  _best(tmp_path, "library", 0.3)
  # 'latent' has no score (no validation samples): never chosen.
  choice = selection.choose(_plan(("student", "latent", "library")), tmp_path)
  assert choice["winner"] == "library"
  assert choice["scores"] == {"student": 0.5, "latent": None,
                              "library": 0.3}
  assert selection.load_choice(tmp_path) == choice


def test_choose_keeps_the_default_student_on_ties_and_without_scores(
    tmp_path):
  assert selection.choose(_plan(("student", "latent")),
                          tmp_path)["winner"] == "student"
  _best(tmp_path, "latent", 0.4)
  _best(tmp_path, "student", 0.4)
  assert selection.choose(_plan(("latent", "student")),
                          tmp_path)["winner"] == "student"
  assert selection.choose(_plan(()), tmp_path / "none") is None


def test_the_ensemble_averages_in_the_transformed_space():
  np.testing.assert_allclose(
      selection.ensemble([np.array([0.0, 1.0]), np.array([3.0, 1.0])],
                         "log1p"), [1.0, 1.0])  # expm1 of mean log1p.
  np.testing.assert_allclose(
      selection.ensemble([np.array([2.0]), np.array([4.0])], "identity"),
      [3.0])


@pytest.fixture(scope="module")
def candidate_run(prepared_data_dir, tmp_path_factory):
  config = tiny_config("distill", prepared_data_dir,
                       "compare=none,candidates=library")
  workdir = tmp_path_factory.mktemp("candidates")
  return config, workdir, train.train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_the_selected_row_is_the_candidate_of_the_lowest_score(
    candidate_run):
  config, workdir, results = candidate_run
  scores = {n: json.loads((workdir / n / selection.BEST_FILE).read_text())[
      "validation_rmse"] for n in ("student", "library")}
  winner = min(scores, key=scores.get)
  saved = json.loads((workdir / "results.json").read_text())
  assert saved["choice"]["winner"] == winner
  assert saved["choice"]["scores"] == pytest.approx(scores)
  np.testing.assert_array_equal(results[selection.SELECTED]["pred"],
                                results[winner]["pred"])
  assert (results[selection.SELECTED]["interval"]["overall"] ==
          results[winner]["interval"]["overall"])
  # Listed first among the students.
  table = (workdir / "results.md").read_text()
  assert table.index(selection.SELECTED) < table.index("| student |")
  # With the candidates' validation scores and the winner.
  assert (f"\n\n{selection.SELECTED} = {winner}: the lowest validation "
          f"RMSE" in table and f"library {scores['library']:.4f}" in table)
  # The ensemble row: the candidates' mean, with its own calibration.
  np.testing.assert_allclose(
      results[selection.ENSEMBLE]["pred"],
      selection.ensemble([results[n]["pred"] for n in ("student", "library")],
                         "log1p"), rtol=1e-6)
  assert results[selection.ENSEMBLE]["interval"]["calibration"][
      "difficulty"] == "constant"
  assert (workdir / selection.ENSEMBLE / "calibration.json").exists()
  # Evaluation restores the same choice and ensemble.
  evaluated = evaluate.evaluate_checkpoints(config, workdir)
  for name in (selection.SELECTED, selection.ENSEMBLE):
    np.testing.assert_allclose(evaluated[name]["pred"],
                               results[name]["pred"], rtol=1e-5)


@pytest.mark.slow
def test_the_map_comes_from_the_chosen_student(candidate_run, reference_data,
                                               tmp_path):
  """With 'library' chosen the map is library's, named so; the student's
  map is another; the ensemble's is their mean in log1p."""
  config, workdir, _ = candidate_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  choice = json.loads((run / selection.CHOICE_FILE).read_text())
  (run / selection.CHOICE_FILE).write_text(json.dumps(
      dict(choice, winner="library")))
  tile = reference_data / TILE
  report = mapping.map_scene(config, run, tile, tmp_path / "selected")
  assert report["model"]["name"] == "student 'library'"
  assert report["model"]["checkpoint_steps"].keys() == {"library"}
  options = mapping.options.defaults()
  options.model = "student"
  mapping.map_scene(config, run, tile, tmp_path / "student", options)
  options.model = "ensemble"
  ensemble = mapping.map_scene(config, run, tile, tmp_path / "ensemble",
                               options)
  assert ensemble["model"]["name"] == "the ensemble of 2 candidate students"
  ec, described = {}, {}
  for name in ("selected", "student", "ensemble"):
    with rasterio.open(tmp_path / name / f"{tile.stem}_ec.tif") as ds:
      ec[name], described[name] = ds.read(1), ds.descriptions[0]
  assert "student 'library', validation's choice" in described["selected"]
  assert described["ensemble"].endswith(
      "the ensemble of 2 candidate students")
  valid = ec["ensemble"] != files.EC_NODATA
  assert not np.array_equal(ec["selected"], ec["student"])
  np.testing.assert_allclose(
      ec["ensemble"][valid], selection.ensemble(
          [ec["selected"][valid], ec["student"][valid]], "log1p"),
      rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_run_with_candidates_but_no_choice_is_refused_for_maps(
    candidate_run, reference_data, tmp_path):
  config, workdir, _ = candidate_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  (run / selection.CHOICE_FILE).unlink()
  with pytest.raises(ValueError, match="--mapping.model=student"):
    mapping.map_scene(config, run, reference_data / TILE, tmp_path / "maps")
