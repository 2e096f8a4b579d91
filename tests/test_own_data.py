"""A user's own project end to end: example project -> streams -> spatial
cross-validation -> final student -> map; and the same on real EnMAP tiles.
"""
import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.warp

import projects
from conftest import REPO
from configs import own_data
from data_prep import example_project
from data_prep import roles
from data_prep import sources
from deepsalt_jax import baselines
from deepsalt_jax import cross_validation
from deepsalt_jax import final_model
from deepsalt_jax import label_curve
from deepsalt_jax import model_choice
from deepsalt_jax import run_config
from deepsalt_jax import samples
from deepsalt_jax import stages
from deepsalt_jax.models import from_config
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid


@pytest.fixture(scope="session")
def example(tmp_path_factory) -> pathlib.Path:
  """The example project at tiny size (2 scenes of 40 x 40 px)."""
  folder = tmp_path_factory.mktemp("example") / "project"
  example_project.write(folder, size="tiny")
  return folder


@pytest.fixture(scope="session")
def mir_example(tmp_path_factory) -> pathlib.Path:
  """The example project with its MIR library (real LimeSoDa spectra,
  simulated EC), tiny size."""
  folder = tmp_path_factory.mktemp("example_mir") / "project"
  example_project.write(folder, size="tiny", library="mir")
  return folder


MIR_LIBRARY = "library/mir.csv"


# The default student and the candidates every run trains beside it.
STUDENTS = ("student", *own_data.DEFAULT_CANDIDATES.split("+"))


def _config(project, data_dir, arg="tiny"):
  config = own_data.get_config(arg)
  config.data.update(project=str(project), data_dir=str(data_dir))
  return config


def test_example_project_gives_streams_by_role_and_availability(
    example, tmp_path):
  config = _config(example, tmp_path)
  data = samples.load_data(config.data)
  report = data.report
  # 24 points on soil, 3 on vegetation, 1 between the scenes.
  assert report["points"]["read"] == 28
  assert report["points"]["dropped"] == {"green_vegetation": 3,
                                         "outside every scene": 1}
  assert (data.role == roles.LABELLED).sum() == 24
  assert report["library"]["paired by sample id"] == 12
  assert report["library"]["paired by distance"] > 30
  assert set(np.unique(data.fold[data.role == roles.LABELLED])) == {1, 2}
  for role, (lab, pixel, target) in {
      roles.LABELLED: (False, True, True), roles.PAIRED: (True, True, True),
      roles.UNLABELLED: (False, True, False),
      roles.LIBRARY: (True, False, True)}.items():
    rows = data.role == role
    assert (data.has_lab[rows] == lab).all(), roles.ROLE_NAMES[role]
    assert (data.has_pixel[rows] == pixel).all(), roles.ROLE_NAMES[role]
    assert (data.has_target[rows] == target).all(), roles.ROLE_NAMES[role]
  # Hold out fold 1 with its labels and lab spectra poisoned: no stream of
  # teacher or student sees them (its unlabelled pixels may feed alignment).
  test = data.fold == 1
  lab, target = data.lab.copy(), data.target.copy()
  lab[test], target[test] = np.inf, np.inf
  fold = dataclasses.replace(data, test=test, lab=lab, target=target)
  plan = stages.plan(config, lab_grid.visnir())
  for stage in plan.stages:
    for name, stream in stage.streams(fold).items():
      for values in stream[0].values():
        assert np.isfinite(values).all(), (stage.name, name)
  teacher = plan.teacher.streams(fold)["lab"]
  assert len(teacher.arrays["lab"]) == (~test & data.has_lab).sum()


def test_mir_example_holds_real_spectra_with_ec_following_clay(mir_example):
  spectra = pd.read_csv(mir_example / MIR_LIBRARY, index_col="sample_id")
  library = pd.read_csv(mir_example / "library" / "library.csv",
                        index_col="sample_id")
  assert spectra.index.tolist() == library.index.tolist()
  sets = [sources.limesoda_mir(n) for n in example_project.MIR_SETS]
  wn = sets[0].grid.axis
  # High to low wavenumber, as FTIR software exports.
  np.testing.assert_allclose(spectra.columns.astype(float), wn[::-1])
  absorbance = np.log10(1 / np.concatenate([s.spectra for s in sets]))
  clay = np.concatenate([s.targets["clay"] for s in sets])
  # Each row is one real LimeSoDa spectrum as log10(1/R), each used once.
  match = [int(np.argmin(np.abs(absorbance - row).max(axis=1)))
           for row in spectra.to_numpy()[:, ::-1]]
  assert sorted(match) == list(range(len(absorbance)))
  np.testing.assert_allclose(spectra.to_numpy()[:, ::-1],
                             absorbance[match], atol=6e-6)
  ranks = lambda v: np.argsort(np.argsort(v))
  rho = np.corrcoef(ranks(library["ec"]), ranks(clay[match]))[0, 1]
  assert 0.85 < rho < 0.93  # A loose link, as its README says.
  text = (mir_example / "README.md").read_text()
  assert "NRW.115" in text and "--config.data.library=library/mir.csv" in text


def test_physics_sau_on_a_mir_library_is_refused(mir_example, tmp_path):
  config = _config(mir_example, tmp_path / "tfds", "tiny,sau=physics")
  config.data.library = MIR_LIBRARY
  with pytest.raises(errors.UserError) as refused:
    cross_validation.train_and_validate(config, tmp_path / "run")
  message = str(refused.value)
  assert "\n" not in message and "Use sau=latent" in message
  assert "absorbance in cm-1" in message
  assert not (tmp_path / "run").exists()


def test_validation_chooses_on_inner_folds_without_the_outer_one(
    example, tmp_path, monkeypatch):
  """The CV job with training replaced by fixed predictions (the networks'
  training is tested elsewhere): each run holds out its folds, every outer
  fold's choice comes from the pair runs, and the selected row, listed
  first, is the winner's."""
  config = _config(example, tmp_path / "tfds")
  config.data.folds = 3
  config.model.encoder.dropout = 0.0  # No MC-dropout spread to compute.
  rng = np.random.default_rng(0)
  trained = []

  def train_plan(plan, data, workdir, mesh):
    del plan, mesh
    labelled = data.role == roles.LABELLED
    held = tuple(np.unique(data.fold[data.test & labelled]).tolist())
    # No point of a held-out fold trains the run.
    assert not np.isin(data.fold[labelled & ~data.test], held).any()
    trained.append((held, workdir.name))
    return {}

  def predictions(plan, data, params, rows, config, mesh):
    del plan, params, config, mesh
    y = np.log1p(data.target[rows].astype(np.float64))
    return {name: np.expm1(y + rng.normal(0, sd, y.size))
            for name, sd in (("student", 0.3), ("PLSR", 0.1),
                             ("random forest", 0.6))}

  monkeypatch.setattr(cross_validation.train, "train_plan", train_plan)
  monkeypatch.setattr(cross_validation, "_predictions", predictions)
  results = cross_validation.train_and_validate(config, tmp_path / "run")
  assert trained == [((1,), "fold1"), ((2,), "fold2"), ((3,), "fold3"),
                     ((1, 2), "fold1_2"), ((1, 3), "fold1_3"),
                     ((2, 3), "fold2_3"), ((), "run")]
  assert list(results)[0] == model_choice.SELECTED
  cv = json.loads((tmp_path / "run" / "cv.json").read_text())
  assert list(cv["methods"])[0] == model_choice.SELECTED
  selection = cv["selection"]
  assert set(selection["choices"]) == {"fold 1", "fold 2", "fold 3",
                                       "all points (final)"}
  final = model_choice.Choice(**selection["choices"]["all points (final)"])
  assert selection["maps"] == final_model.describe(final)
  points = cv["predictions"]
  for k in (1, 2, 3):
    choice = model_choice.Choice(**selection["choices"][f"fold {k}"])
    assert set(choice.scores) == {"student", "PLSR", "random forest",
                                  model_choice.STACKED}
    assert choice.winner == min(choice.scores, key=choice.scores.get)
    rows = [p for p in points if p["fold"] == k]
    winner = choice.predict({n: np.array([p[n] for p in rows])
                             for n in choice.scores if n in rows[0]},
                            "log1p")
    np.testing.assert_allclose([p[model_choice.SELECTED] for p in rows],
                               winner, rtol=1e-6)
  text = (tmp_path / "run" / "cv.md").read_text()
  table = text[text.index("| model |"):]
  assert table.splitlines()[2].startswith(f"| {model_choice.SELECTED} |")
  assert "| winner |" in text
  assert (f"Maps (--mode=map) are made by {final_model.describe(final)}, "
          "validation's choice on every point") in text
  # What maps need is saved: PLSR (the best candidate, in the final
  # model) as the PLSR of every labelled pixel, and the final model's
  # interval, calibrated on its out-of-fold predictions.
  saved = final_model.load(tmp_path / "run")
  assert saved.choice == final and "PLSR" in saved.members
  data = samples.load_data(config.data)
  labelled = data.role == roles.LABELLED
  x, y = data.satellite[labelled], np.log1p(data.target[labelled])
  np.testing.assert_allclose(
      saved.fitted["PLSR"](x), baselines.plsr(x, y, seed=config.seed)(x),
      rtol=1e-6)
  if final.winner != "student":
    assert saved.calibration["model"] == final_model.describe(final)
    assert saved.calibration["difficulty"] == "constant"
    assert f"| {final_model.describe(final)} (maps) | all |" in text


def test_label_curve_trains_on_drawn_points_and_restores_its_runs(
    example, tmp_path, monkeypatch):
  """The CV job with the curve, each stage's training replaced by a marker
  file: every curve run trains its students on the drawn points alone,
  never on the outer test fold, with the outer run's teacher; a re-run
  restores every run; cv.json, cv.md and the figure hold the curve."""
  config = _config(example, tmp_path / "tfds")
  config.data.folds = 3
  config.model.encoder.dropout = 0.0  # No MC-dropout spread to compute.
  config.label_curve = "4,8,30"  # 30: more than the 24 points.
  calls = []

  def train_stage(stage, data, teacher, teacher_params, workdir, mesh):
    del teacher, teacher_params, mesh
    done = workdir / stage.name / "done"
    calls.append((workdir.relative_to(tmp_path / "run"), stage.name,
                   done.exists()))
    if workdir.parent.name == "curve":
      size, _, k = map(int, re.fullmatch(r"n(\d+)_draw(\d+)_fold(\d+)",
                                         workdir.name).groups())
      labelled = data.role == roles.LABELLED
      trains = data.train & labelled
      assert trains.sum() == size
      assert not (data.fold[trains] == k).any()
      assert data.test[data.fold == k].all()
    done.parent.mkdir(parents=True, exist_ok=True)
    done.touch()
    return {}

  def predictions(plan, data, params, rows, config, mesh):
    del plan, params, config, mesh
    y = data.target[rows].astype(np.float64)
    return {name: y * (1 + sd) for name, sd in (
        ("student", 0.3), ("PLSR", 0.1), ("random forest", 0.6),
        ("pooled MLP", 0.2), ("teacher (pixels)", 0.5))}

  monkeypatch.setattr(cross_validation.train, "train_stage", train_stage)
  monkeypatch.setattr(cross_validation, "_predictions", predictions)
  cross_validation.train_and_validate(config, tmp_path / "run")
  curve_runs = {str(w) for w, _, _ in calls if w.parent.name == "curve"}
  assert len(curve_runs) == label_curve.DRAWS * 2 * 3  # Sizes 4, 8; 3 folds.
  for workdir, stage, restored in calls:
    if workdir.parent.name == "curve":  # Only the students train there.
      assert stage in STUDENTS and not restored
    elif stage == "teacher" and restored:  # A curve run's teacher.
      assert workdir.parent.name == "cv"
      assert re.fullmatch(r"fold\d+", workdir.name)  # The outer run's.
  assert sum(s == "teacher" and r for _, s, r in calls) == 3  # One a fold.
  first = calls[:]
  calls.clear()
  cross_validation.train_and_validate(config, tmp_path / "run")
  assert [(w, s) for w, s, _ in calls] == [(w, s) for w, s, _ in first]
  assert all(restored for _, _, restored in calls)

  cv = json.loads((tmp_path / "run" / "cv.json").read_text())
  curve = cv["label_curve"]
  assert curve["skipped"] == {"30": curve["skipped"]["30"]}
  rows = {(r["points"], r["method"]) for r in curve["rows"]}
  assert rows == {(n, m) for n in (4, 8, "all") for m in (
      "student", "PLSR", "random forest", "pooled MLP")}
  text = (tmp_path / "run" / "cv.md").read_text()
  assert "| 4 | student | " in text and "| 30 | skipped: fold " in text
  assert (tmp_path / "run" / "cv_label_efficiency.png").stat().st_size > 0


def _launch(*args):
  return subprocess.run([sys.executable, "launch.py", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_three_commands_on_the_example_project(example, tmp_path):
  """What README's walkthrough types, at tiny size: train with spatial CV,
  then map one scene. (The label curve's runs are checked with stand-in
  training in test_label_curve_trains_on_drawn_points_and_restores_its_runs:
  six more trainings here would cost a minute of the suite.)"""
  workdir = tmp_path / "run"
  result = _launch("--config=configs/own_data.py:tiny",
                   f"--config.data.project={example}",
                   f"--config.data.data_dir={tmp_path / 'tfds'}",
                   f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  cv = json.loads((workdir / "cv.json").read_text())
  assert cv["ec_method"] == "ECe" and cv["unit"] == "ECe, dS/m"
  assert set(cv["methods"]) == {*STUDENTS, "teacher (pixels)", "PLSR",
                                "random forest", "pooled MLP"}
  for method in cv["methods"].values():
    assert method["overall"]["n"] == 24
    assert set(method["per_fold"]) == {"1", "2"}
    assert {"r2", "rmse", "rpd", "bias", "class_accuracy", "kappa"} <= set(
        method["overall"])
  # Two folds leave no inner fold: no selected row, only the final choice.
  assert list(cv["selection"]["choices"]) == ["all points (final)"]
  assert len(cv["predictions"]) == 24
  assert {"sample_id", "fold", "measured", "student", "PLSR"} <= set(
      cv["predictions"][0])
  text = (workdir / "cv.md").read_text()
  assert "EC (ECe, dS/m)" in text and "RMSE (ECe, dS/m)" in text
  assert (workdir / "cv.png").stat().st_size > 0
  assert cv["label_curve"] is None  # Opt-in.
  for fold in ("fold1", "fold2"):
    assert (workdir / "cv" / fold / "student" / "checkpoints").is_dir()
  assert (workdir / "student" / "checkpoints").is_dir()

  # The README's third command: every scene of the folder, and the region.
  result = _launch("--mode=map", f"--workdir={workdir}",
                   f"--scene={example / 'scenes'}",
                   f"--config.data.data_dir={tmp_path / 'tfds'}")
  assert result.returncode == 0, result.stderr[-3000:]
  scenes = sorted((example / "scenes").glob("*.tif"))
  region = json.loads((workdir / "maps" / "region_report.json").read_text())
  assert sorted(region["per_scene"]) == sorted(s.stem for s in scenes)
  scene = scenes[0]
  with rasterio.open(workdir / "maps" / f"{scene.stem}_ec.tif") as ds:
    assert ds.descriptions[0].startswith("EC (ECe, dS/m)")
    assert "calibrated 90% interval" in ds.descriptions[1]
    ec = ds.read(1, masked=True)
  assert ec.count() > 0.5 * ec.size and float(ec.min()) >= 0
  report = json.loads((workdir / "maps" /
                       f"{scene.stem}_report.json").read_text())
  assert report["model"]["target"] == "EC (ECe, dS/m)"
  result = _launch("--mode=eval", f"--workdir={workdir}")
  assert result.returncode == 2 and "cv.md" in result.stderr


@pytest.mark.slow
def test_the_commands_on_the_mir_example(mir_example, tmp_path):
  """docs/own_data.md's MIR commands at tiny size: sau=auto takes the latent
  SAU, CV has no teacher-on-pixels row (no physics route), the maps are
  written."""
  workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
  # Without the candidate student (the example's test trains it).
  result = _launch("--config=configs/own_data.py:tiny,candidates=none",
                   f"--config.data.project={mir_example}",
                   f"--config.data.library={MIR_LIBRARY}",
                   f"--config.data.data_dir={data_dir}",
                   f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  cv = json.loads((workdir / "cv.json").read_text())
  assert set(cv["methods"]) == {"student", "PLSR", "random forest"}
  assert cv["methods"]["student"]["overall"]["n"] == 24
  text = (workdir / "cv.md").read_text()
  assert "| student |" in text and "teacher (pixels)" not in text
  wn = sources.limesoda_mir(example_project.MIR_SETS[0]).grid.axis
  grid = run_config.lab_grid(workdir)
  assert grid == lab_grid.LabGrid(wn, "cm-1", "absorbance")
  model = ml_collections.ConfigDict(run_config.load(workdir)["model"])
  assert model.sau == "auto"
  assert from_config.sau_mode(model, "enmap", grid) == "latent"

  result = _launch("--mode=map", f"--workdir={workdir}",
                   f"--scene={mir_example / 'scenes'}",
                   f"--config.data.data_dir={data_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  region = json.loads((workdir / "maps" / "region_report.json").read_text())
  scenes = sorted(p.stem for p in (mir_example / "scenes").glob("*.tif"))
  assert sorted(region["per_scene"]) == scenes
  with rasterio.open(workdir / "maps" / f"{scenes[0]}_ec.tif") as ds:
    ec = ds.read(1, masked=True)
  assert ec.count() > 0.5 * ec.size and float(ec.min()) >= 0


@pytest.mark.slow
def test_real_enmap_tiles_with_points_on_real_pixels(reference_data,
                                                     tmp_path):
  """Three real Potsdam L2A tiles as the project's scenes. The field points
  and library coordinates sit on real bare-soil pixels; their EC values and
  library spectra are synthetic (the tiles have no salinity data)."""
  from data_prep import scenes
  from deepsalt_jax import cross_validation
  from deepsalt_spectral import indices
  config = _config(tmp_path / "project", tmp_path / "tfds",
                   "tiny,candidates=none")
  config.data.update(library="library.csv", library_metadata="")
  soil = indices.MaskThresholds(**config.data.masks.to_dict())
  tiles = sorted((reference_data / "enmap_potsdam").glob("*.tif"))[:3]
  project = tmp_path / "project"
  (project / "scenes").mkdir(parents=True)
  lon, lat = [], []
  for tile in tiles:
    shutil.copy(tile, project / "scenes" / tile.name)
    scene = scenes.read_scene(tile)
    rows, cols = np.nonzero(scenes.soil_pixels(scene, soil))
    pick = np.random.default_rng(0).choice(rows.size, 8, replace=False)
    x, y = scene.transform @ (cols[pick] + 0.5, rows[pick] + 0.5)
    lo, la = rasterio.warp.transform(scene.crs, "EPSG:4326", x, y)
    lon += lo
    lat += la
  ec = np.exp(np.linspace(-1, 2.5, len(lon)))  # Synthetic labels.
  pd.DataFrame({"sample_id": [f"pt{i}" for i in range(len(lon))],
                "lon": lon, "lat": lat, "ec": ec}).to_csv(
                    project / "points.csv", index=False)
  n = 30
  spectra = np.stack([projects.soil(projects.LAB_NM, b)
                      for b in np.linspace(0.6, 1.4, n)])
  library = pd.DataFrame(spectra,
                         columns=[f"{w:g}" for w in projects.LAB_NM])
  # Every fourth point's sample is in the library: pairs in every tile.
  library.insert(0, "sample_id", [f"pt{4 * i}" if i < 6 else f"lib{i}"
                                  for i in range(n)])
  library.insert(1, "ec", np.exp(np.linspace(-1, 2.5, n)))
  library.to_csv(project / "library.csv", index=False)
  results = cross_validation.train_and_validate(config, tmp_path / "run")
  report = json.loads((tmp_path / "run" / "cv.json").read_text())["data"]
  assert report["points"]["labelled pixels"] == 24
  assert report["library"]["paired by sample id"] == 6
  assert results["student"]["overall"]["n"] == 24
