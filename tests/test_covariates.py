"""Covariates: the network branch, its statistics in the checkpoint, a tiny
own-data project trained with them, and maps reading them from rasters."""
import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.transform

import projects
from configs import distill
from configs import own_data
from deepsalt_jax import mapping
from deepsalt_jax import run_config
from deepsalt_jax import samples
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import train
from deepsalt_jax.mapping import covariate_rasters
from deepsalt_jax.models import covariate_branch
from deepsalt_jax.models import from_config
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid

SENSOR = "enmap"


def _plan(covariate_text="clay,soc", teacher_reads=False):
  config = distill.get_config("tiny,compare=none,candidates=none")
  config.data.covariates = covariate_text
  config.teacher.covariates = teacher_reads
  return stages.plan(config, lab_grid.visnir())


def _inputs(stage, n=6, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.05, 0.5, (n, stage.input_size(SENSOR))).astype(np.float32)
  c = rng.normal(20.0, 5.0, (n, 2)).astype(np.float32)
  return x, c


@pytest.mark.slow
def test_zero_initialised_branch_leaves_predictions_unchanged():
  plan = _plan(teacher_reads=True)
  for stage in plan.stages:
    params = stage.init_params(SENSOR, plan.teacher.init_params(SENSOR))
    assert set(params["covariates"]) == {"standardize", "project"}
    without = {k: v for k, v in params.items() if k != "covariates"}
    plain = (from_config.build_teacher if stage is plan.teacher
             else from_config.build_student)(
                 stage.config.model, SENSOR, lab_grid.visnir(),
                 target_transform=stage.config.data.target_transform)
    x, c = _inputs(stage)
    c[1, 0] = np.nan  # Missing values change nothing either.
    ours = stage.model(SENSOR).apply({"params": params}, x, train=False,
                                     covariates=c)
    theirs = plain.apply({"params": without}, x, train=False)
    np.testing.assert_array_equal(ours["pred"], theirs["pred"])
    np.testing.assert_array_equal(ours["features"], theirs["features"])


@pytest.mark.slow
def test_a_student_from_a_teacher_with_the_same_covariates_takes_them():
  plan = _plan(teacher_reads=True)
  teacher = plan.teacher.init_params(SENSOR)
  teacher["covariates"]["project"]["kernel"] += 1.0
  student = plan.students[0].init_params(SENSOR, teacher)
  np.testing.assert_array_equal(student["covariates"]["project"]["kernel"],
                                teacher["covariates"]["project"]["kernel"])
  # Without covariates in the teacher, the student's branch starts at zero.
  plain = _plan().students[0].init_params(SENSOR,
                                          _plan().teacher.init_params(SENSOR))
  assert not np.any(plain["covariates"]["project"]["kernel"])


def test_missing_values_are_imputed_with_the_training_mean():
  stage = _plan(teacher_reads=True).teacher
  values = np.array([[10.0, 1.0], [30.0, np.nan], [np.nan, 3.0]])
  params = covariate_branch.with_statistics(stage.init_params(SENSOR), values,
                                            ("clay", "soc"), "teacher")
  np.testing.assert_allclose(params["covariates"]["standardize"]["mean"],
                             [20.0, 2.0])
  np.testing.assert_allclose(params["covariates"]["standardize"]["scale"],
                             [10.0, 1.0])
  params["covariates"]["project"]["kernel"] += 0.3  # A trained branch.
  model = stage.model(SENSOR)
  x, _ = _inputs(stage, n=2)
  missing = np.array([[np.nan, np.nan], [20.0, 2.0]], np.float32)
  pred = model.apply({"params": params}, x[[0, 0]], train=False,
                     covariates=missing)["pred"]
  assert np.isfinite(pred).all()
  np.testing.assert_allclose(pred[0], pred[1], rtol=1e-6)


def test_a_covariate_missing_in_every_training_sample_is_refused():
  params = _plan(teacher_reads=True).teacher.init_params(SENSOR)
  with pytest.raises(errors.UserError, match=r"\['soc'\] have no value.*"
                     "teacher.*--config.data.covariates"):
    covariate_branch.with_statistics(params, np.array([[1.0, np.nan]] * 3),
                                     ("clay", "soc"), "teacher")


def test_the_teacher_reads_the_students_covariates_or_none():
  assert _plan().teacher.covariate_names == ()
  assert _plan(teacher_reads=True).teacher.covariate_names == ("clay", "soc")


# --- A tiny own-data project with a covariate --------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory):
  """The tiny project with 'clay' in the points table (one point without)
  and in the library table (half of the samples without)."""
  folder = projects.write_project(tmp_path_factory.mktemp("cov") / "project")
  points = pd.read_csv(folder / "points.csv")
  points["Clay"] = np.linspace(10.0, 45.0, len(points))
  points.loc[3, "Clay"] = np.nan
  points.to_csv(folder / "points.csv", index=False)
  library = pd.read_csv(folder / "library.csv")
  clay = np.where(np.arange(len(library)) % 2, np.nan,
                  np.linspace(12.0, 40.0, len(library)))
  library = pd.concat([library, pd.Series(clay, name="clay")], axis=1)
  library.to_csv(folder / "library.csv", index=False)
  return folder


def _config(folder, data_dir):
  config = own_data.get_config("tiny")
  config.data = projects.data_config(folder, data_dir, covariates="clay")
  return config


@pytest.fixture(scope="module")
def run(project, tmp_path_factory):
  """(config, data, workdir) of the final teacher and student trained on
  the project."""
  config = _config(project, tmp_path_factory.mktemp("tfds"))
  data = samples.load_data(config.data)
  workdir = tmp_path_factory.mktemp("run")
  run_config.save(config, workdir, lab_grid.visnir())
  train.train_plan(stages.plan(config, lab_grid.visnir()), data, workdir,
                   sharding.make_mesh())
  return config, data, workdir


@pytest.mark.slow  # Builds and trains a project (the run fixture).
def test_project_covariates_come_from_points_and_library(run, project):
  _, data, _ = run
  assert data.covariate_names == ("clay",)
  points = pd.read_csv(project / "points.csv").set_index("sample_id")
  library = pd.read_csv(project / "library.csv").set_index("sample_id")
  value = dict(zip(data.sample_id, data.covariates[:, 0]))
  np.testing.assert_allclose(value["p2"], points.loc["p2", "Clay"])
  assert np.isnan(value["p3"])  # Left empty.
  np.testing.assert_allclose(value["l4"], library.loc["l4", "clay"])
  assert np.isnan(value["l5"])
  # p1 is a library sample without clay, paired with the point p1: the
  # point's value.
  paired = (data.sample_id == "p1") & data.has_lab
  np.testing.assert_allclose(data.covariates[paired, 0],
                             points.loc["p1", "Clay"])
  assert np.isnan(data.covariates[~data.has_target, 0]).all()  # Unlabelled.
  streams = stages.plan(run[0], lab_grid.visnir()).students[0].streams(data)
  batch_size = run[0].train.batch_size
  for stream in streams.values():  # Beside the spectra of every stream.
    assert stream[0]["covariates"].shape == (batch_size, 1)


@pytest.mark.slow  # Builds and trains a project (the run fixture).
def test_statistics_travel_with_the_checkpoint(run):
  config, data, workdir = run
  plan = stages.plan(config, lab_grid.visnir())
  rows = data.train & data.has_lab
  expected = (np.nanmean(data.covariates[rows], axis=0),
              np.nanstd(data.covariates[rows], axis=0))
  mesh = sharding.make_mesh()
  for stage in plan.stages:  # The student took the teacher's.
    params, _ = stage.restore(workdir, SENSOR, mesh)
    saved = params["covariates"]["standardize"]
    np.testing.assert_allclose(saved["mean"], expected[0], rtol=1e-5)
    np.testing.assert_allclose(saved["scale"], expected[1], rtol=1e-5)
    # Training moved the branch away from zero: it is used.
    assert np.abs(np.asarray(params["covariates"]["project"]["kernel"])).max(
    ) > 0


# --- Maps with covariate rasters ---------------------------------------------


def _write_raster(path, values, crs, transform, nodata=None):
  with rasterio.open(path, "w", driver="GTiff", height=values.shape[0],
                     width=values.shape[1], count=1, dtype="float32",
                     crs=crs, transform=transform, nodata=nodata) as ds:
    ds.write(values.astype(np.float32), 1)


def _map(config, workdir, scene, out, rasters):
  options = mapping.options.defaults()
  options.covariate_rasters = rasters
  return mapping.map_scene(config, workdir, scene, out, options)


def test_a_raster_on_another_grid_is_resampled_to_the_scenes(tmp_path):
  """A clay field linear in easting, stored in degrees on a coarser grid,
  read back on the scene's UTM grid."""
  with rasterio.open(projects.write_project(tmp_path / "p") / "scenes" /
                     "a.tif") as scene:
    crs, transform, shape = scene.crs, scene.transform, scene.shape
  lon, lat = projects.pixel_lonlat([0, 9], [0, 9])
  west, east = lon.min() - 0.01, lon.max() + 0.01
  north, south = lat.max() + 0.01, lat.min() - 0.01
  cols = 40
  degrees = rasterio.transform.from_bounds(west, south, east, north, cols, 20)
  field = np.tile(np.linspace(0.0, 100.0, cols), (20, 1))
  _write_raster(tmp_path / "clay.tif", field, "EPSG:4326", degrees)
  with covariate_rasters.on_grid({"clay": tmp_path / "clay.tif"}, crs,
                                 transform, shape) as read:
    values = read(0, shape[0])[..., 0]
  assert values.shape == shape and np.isfinite(values).all()
  rows, cols_ = np.mgrid[:shape[0], :shape[1]]
  pixel_lon, _ = projects.pixel_lonlat(rows.ravel(), cols_.ravel())
  # The field at each pixel centre (linear in longitude: bilinear is exact
  # up to the pixel-centre convention, half a raster cell).
  expected = (pixel_lon - west) / (east - west) * 100.0 * cols / (cols - 1) - (
      100.0 / (cols - 1) / 2)
  np.testing.assert_allclose(values.ravel(), expected, atol=0.2)
  # Beyond a raster's extent there is no value, though it declares no nodata.
  half = rasterio.transform.from_origin(*projects.ORIGIN, 30, 30)
  _write_raster(tmp_path / "half.tif", np.full((shape[0], 5), 7.0), crs, half)
  with covariate_rasters.on_grid({"clay": tmp_path / "half.tif"}, crs,
                                 transform, shape) as read:
    values = read(0, shape[0])[..., 0]
  assert (values[:, :5] == 7.0).all() and np.isnan(values[:, 5:]).all()


@pytest.mark.slow  # Builds and trains a project (the run fixture).
def test_maps_read_the_covariates_from_rasters(run, project, tmp_path):
  config, _, workdir = run
  scene = project / "scenes" / "a.tif"
  with rasterio.open(scene) as ds:
    crs, transform, shape = ds.crs, ds.transform, ds.shape
  clay = np.full(shape, 30.0)
  clay[:2, :] = -1.0  # Nodata in the two top rows.
  _write_raster(tmp_path / "clay.tif", clay, crs, transform, nodata=-1.0)
  report = _map(config, workdir, scene, tmp_path / "same",
                f"clay={tmp_path / 'clay.tif'}")
  # Rows 0-1 are soil but have no clay: not mapped, and counted. (0, 0) is
  # vegetation.
  assert report["pixels"][covariate_rasters.MASK] == 2 * shape[1] - 1
  assert report["pixels"]["soil"] == (shape[0] - 2) * shape[1]
  assert report["covariates"] == {"clay": str(tmp_path / "clay.tif")}
  with rasterio.open(tmp_path / "same" / "a_ec.tif") as ds:
    ec = ds.read(1, masked=True)
  assert ec.mask[:2].all() and not ec.mask[2:].any()

  # The same clay on a coarser grid in degrees: resampled, every soil pixel
  # mapped.
  lon, lat = projects.pixel_lonlat([0, 9], [0, 9])
  degrees = rasterio.transform.from_bounds(
      lon.min() - 0.01, lat.min() - 0.01, lon.max() + 0.01, lat.max() + 0.01,
      7, 5)
  _write_raster(tmp_path / "clay_deg.tif", np.full((5, 7), 30.0),
                "EPSG:4326", degrees)
  other = _map(config, workdir, scene, tmp_path / "other",
               f"clay={tmp_path / 'clay_deg.tif'}")
  assert other["pixels"][covariate_rasters.MASK] == 0
  assert other["pixels"]["soil"] == shape[0] * shape[1] - 1
  with rasterio.open(tmp_path / "other" / "a_ec.tif") as ds:
    resampled = ds.read(1, masked=True)
  # Same clay everywhere: the same EC where both are mapped.
  np.testing.assert_allclose(resampled[2:], ec[2:], rtol=1e-5)


@pytest.mark.slow  # Builds and trains a project (the run fixture).
def test_a_missing_raster_is_refused_before_any_map(run, project, tmp_path):
  config, _, workdir = run
  scene = project / "scenes" / "a.tif"
  with pytest.raises(errors.UserError,
                     match="no raster for clay.*covariate_rasters='clay="):
    _map(config, workdir, scene, tmp_path / "maps", "")
  with pytest.raises(errors.UserError, match="does not exist"):
    _map(config, workdir, scene, tmp_path / "maps",
         f"clay={tmp_path / 'nothing.tif'}")
  with pytest.raises(errors.UserError, match=r"\['soc'\].*does not read"):
    _map(config, workdir, scene, tmp_path / "maps",
         f"clay={scene},soc={scene}")
  assert not (tmp_path / "maps").exists()
  assert json.loads((workdir / "config.json").read_text())["data"][
      "covariates"] == "clay"
