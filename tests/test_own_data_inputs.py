"""A user's own files: readers, placement, and every bad input named.

Tiny projects (tests/projects.py) built in-process; each refusal names the
file, column or rows and the fix, and leaves neither a workdir nor a
prepared dataset.
"""
import json
import logging
import types

import numpy as np
import pandas as pd
import pytest

import opus_files
import projects
from data_prep import datasets
from data_prep import roles
from data_prep import sources
from data_prep.libraries import formats
from data_prep.project import folds
from data_prep.project import inputs
from data_prep.project import points as points_lib
from deepsalt_jax import cross_validation
from deepsalt_jax import stages
from deepsalt_spectral import lab_grid
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors


@pytest.fixture
def project(tmp_path):
  return projects.write_project(tmp_path / "project")


def _records(config):
  """({(role name, sample id): record}, the builder's report)."""
  source, info = _load(config)
  records = [source[i] for i in range(len(source))]
  return {(roles.ROLE_NAMES[r["role"]], r["sample_id"].decode()): r
          for r in records}, info.metadata["report"]


def _load(config):
  return datasets.load_project(config.to_dict(), config.data_dir)


def _refused(config, tmp_path, match, overrides=None):
  """The CV job refuses the project before writing anything; `overrides`:
  {'train.steps': value, ...} of the job's config."""
  from configs import own_data
  full = own_data.get_config("tiny")
  full.data = config
  full.update_from_flattened_dict(overrides or {})
  with pytest.raises(ValueError, match=match):
    cross_validation.train_and_validate(full, tmp_path / "run")
  assert not (tmp_path / "run").exists()
  assert not list((tmp_path / "tfds").rglob("*"))  # Not even a folder.


def test_points_become_labelled_and_library_pairs(project, tmp_path):
  config = projects.data_config(project, tmp_path / "tfds")
  records, report = _records(config)
  # p0, p1 share their id with library spectra: a labelled record each and
  # a paired library record with the same pixel.
  for name in ("p0", "p1"):
    np.testing.assert_array_equal(records["labelled", name]["satellite"],
                                  records["paired", name]["satellite"])
    assert np.isnan(records["labelled", name]["lab"]).all()
  paired = [r for (role, _), r in records.items() if role == "paired"]
  library = [r for (role, _), r in records.items() if role == "library"]
  assert report["library"]["paired by sample id"] == 2
  assert report["library"]["paired by distance"] == 4
  assert len(paired) == 6 and len(library) == 6
  for r in paired:
    assert np.isfinite(r["lab"]).all() and np.isfinite(r["satellite"]).all()
  for r in library:
    assert np.isnan(r["satellite"]).all() and np.isfinite(r["target"])
  # Pairs by distance are at most half a pixel's diagonal away.
  assert report["library"]["pair distance m"]["max"] <= 30 * 0.7072
  assert report["unlabelled pixels"] == 20


def test_duplicate_pixels_merge_and_drops_are_counted(project, tmp_path):
  points = pd.read_csv(project / "points.csv")
  lon, lat = projects.pixel_lonlat([0, 20], [0, 0])  # Vegetation, outside.
  extra = pd.DataFrame({"sample_id": ["veg", "far", "twin"],
                        "lon": [lon[0], lon[1], points.lon[3]],
                        "lat": [lat[0], lat[1], points.lat[3]],
                        "ec": [1.0, 1.0, 3.0]})
  pd.concat([points, extra]).to_csv(project / "points.csv", index=False)
  records, report = _records(projects.data_config(project, tmp_path / "tfds"))
  assert report["points"]["dropped"] == {"green_vegetation": 1,
                                         "outside every scene": 1}
  assert report["points"]["merged"] == 1
  twin = records["labelled", "p3+twin"]
  assert twin["target"] == pytest.approx((points.ec[3] + 3.0) / 2)


def test_points_in_another_crs_are_reprojected(project, tmp_path):
  """x/y in Web Mercator land on the pixels lon/lat gave."""
  points = pd.read_csv(project / "points.csv")
  x, y = points_lib.rasterio.warp.transform("EPSG:4326", "EPSG:3857",
                                            list(points.lon),
                                            list(points.lat))
  points.assign(x=x, y=y).drop(columns=["lon", "lat"]).to_csv(
      project / "mercator.csv", index=False)
  base, _ = _records(projects.data_config(project, tmp_path / "a"))
  moved, _ = _records(projects.data_config(
      project, tmp_path / "b", points="mercator.csv", points_crs="EPSG:3857"))
  for key in (("labelled", "p4"), ("labelled", "p5")):
    assert (moved[key]["row"], moved[key]["col"]) == (base[key]["row"],
                                                      base[key]["col"])


def test_geojson_points(project, tmp_path):
  points = pd.read_csv(project / "points.csv")
  features = [{"type": "Feature",
               "geometry": {"type": "Point", "coordinates": [lo, la]},
               "properties": {"ID": i, "EC": ec, "date": "2024-01-02"}}
              for i, lo, la, ec in points.itertuples(index=False)]
  (project / "points.geojson").write_text(json.dumps(
      {"type": "FeatureCollection", "features": features}))
  read = points_lib.read_points(project / "points.geojson")
  np.testing.assert_allclose(read.x, points.lon)
  assert list(read.sample_id) == list(points.sample_id)
  assert read.date[0] == "2024-01-02" and read.where[0] == "feature 1"


def _envi_library(folder, wavelength=projects.LAB_NM, units=""):
  spectra = np.stack([projects.soil(projects.LAB_NM, b) for b in (0.9, 1.1)])
  spectra.astype("<f4").tofile(folder / "lib.sli")
  (folder / "lib.hdr").write_text(
      "ENVI\nsamples = 206\nlines = 2\nbands = 1\nheader offset = 0\n"
      "file type = ENVI Spectral Library\ndata type = 4\nbyte order = 0\n"
      + (f"wavelength units = {units}\n" if units else "") +
      "wavelength = {" + ", ".join(map(str, wavelength)) + "}\n"
      "spectra names = {soil b, soil a}\n")


def test_envi_library_with_metadata_keyed_by_name(tmp_path):
  _envi_library(tmp_path)
  pd.DataFrame({"name": ["soil a", "soil b"], "EC": [2.0, 4.0],
                "lat": [34.0, np.nan], "lon": [8.0, np.nan]}).to_csv(
                    tmp_path / "meta.csv", index=False)
  table, targets = formats.read_envi_library(tmp_path / "lib.sli",
                                             tmp_path / "meta.csv")
  assert list(table.ids) == ["soil b", "soil a"]
  assert targets.loc["soil b", "target"] == 4.0
  assert np.isnan(targets.loc["soil b", "lat"])
  _, _, names = sources.read_envi_library_with_names(tmp_path / "lib.sli")
  assert names == ["soil b", "soil a"]


def test_library_in_micrometres_is_named_as_such(tmp_path):
  """Micrometres labelled nanometres are refused as micrometres (not as
  wavenumbers); labelled micrometres, or unlabelled, they are read."""
  micrometres = projects.LAB_NM / 1000
  _envi_library(tmp_path, micrometres, units="Nanometers")
  with pytest.raises(ValueError, match=r"lib.hdr: the wavelength units say "
                     r"'Nanometers' but the wavelengths end at 2.45, which "
                     r"looks like micrometres"):
    sources.read_envi_library_with_names(tmp_path / "lib.sli")
  for units in ("Micrometers", ""):
    _envi_library(tmp_path, micrometres, units=units)
    _, nm, _ = sources.read_envi_library_with_names(tmp_path / "lib.sli")
    np.testing.assert_allclose(nm, projects.LAB_NM)
  library = pd.DataFrame(
      [projects.soil(projects.LAB_NM)],
      columns=[f"{w:g}" for w in micrometres]).assign(sample_id="a", ec=1.0)
  library.to_csv(tmp_path / "library.csv", index=False)
  with pytest.raises(ValueError, match=r"library.csv: its wavelengths "
                     r"\(0.4-2.45 nm\) look like micrometres; name the "
                     r"columns in nm"):
    formats.read_csv_library(tmp_path / "library.csv")


def test_ec_methods_need_a_declared_conversion(project, tmp_path):
  config = projects.data_config(project, tmp_path / "tfds",
                                library_ec_method="EC1:5")
  _refused(config, tmp_path, r"library's EC is EC1:5 but data.ec_method is "
           r"ECe.*ec_conversion.factor")
  config.ec_conversion.update(factor=5.6, source="a calibration")
  records, report = _records(config)
  assert records["paired", "l5"]["target"] == pytest.approx(
      5.6 * pd.read_csv(project / "library.csv").ec[5], rel=1e-5)
  assert "x 5.6 -> ECe; source: a calibration" in report["ec_conversion"]


@pytest.mark.parametrize("edit,match", [
    ({"lon": "lat", "lat": "lon"}, "look swapped"),
    ("projected", "look projected"),
    ("microsiemens", r"EC up to .* µS/cm or mS/m.*points_ec_units=uS/cm"),
    ("no_ec", r"points.csv: no ec column; expected one of"),
    ("no_coordinates", r"no numeric coordinates \(lon, lat\) at line 3"),
])
def test_bad_points_are_named(project, tmp_path, edit, match):
  points = pd.read_csv(project / "points.csv")
  if isinstance(edit, dict):
    points = points.rename(columns=edit)
  elif edit == "projected":
    points = points.assign(lon=points.lon * 1e5, lat=points.lat * 1e5)
  elif edit == "microsiemens":
    points = points.assign(ec=points.ec * 1000)
  elif edit == "no_ec":
    points = points.drop(columns="ec")
  else:
    points.loc[1, "lat"] = np.nan
  points.to_csv(project / "points.csv", index=False)
  _refused(projects.data_config(project, tmp_path / "tfds"), tmp_path, match)


@pytest.mark.parametrize("field,value,match", [
    ("train.steps", -5, "--config.train.steps=-5: use at least 1 step"),
    ("train.batch_size", 0,
     "--config.train.batch_size=0: use at least 1 sample"),
    ("data.folds", 1, "--config.data.folds=1: use at least 2 folds"),
])
def test_config_numbers_are_checked_first(project, tmp_path, field, value,
                                          match):
  _refused(projects.data_config(project, tmp_path / "tfds"), tmp_path, match,
           {field: value})


def test_an_empty_points_file_is_named(project, tmp_path):
  (project / "points.csv").write_bytes(b"")
  _refused(projects.data_config(project, tmp_path / "tfds"), tmp_path,
           r"points.csv is empty \(no header line\)")


def _european(path):
  """The CSV as Excel saves it in much of Europe: BOM, ';', decimal commas."""
  pd.read_csv(path).to_csv(path, sep=";", decimal=",", index=False,
                           encoding="utf-8-sig")


def test_european_excel_csvs_are_read(project, tmp_path):
  for name in ("points.csv", "library.csv"):  # With a covariate column.
    table = pd.read_csv(project / name)
    table.assign(clay=np.linspace(5.5, 40.25, len(table))).to_csv(
        project / name, index=False)
  settings = projects.data_config(project, tmp_path / "tfds",
                                  covariates="clay").to_dict()
  sensor = sensors.builtin("enmap")
  points = inputs.read_points(settings)
  library = inputs.read_library(settings, sensor)
  for name in ("points.csv", "library.csv"):
    _european(project / name)
  assert (project / "points.csv").read_bytes().startswith(b"\xef\xbb\xbf")
  european = inputs.read_points(settings)
  for field in ("x", "y", "ec", "sample_id", "covariates"):
    np.testing.assert_array_equal(getattr(european, field),
                                  getattr(points, field))
  read = inputs.read_library(settings, sensor)
  for field in ("lab", "ec", "sample_id", "lon", "lat", "covariates"):
    np.testing.assert_array_equal(getattr(read, field),
                                  getattr(library, field))


def test_a_csv_without_a_known_separator_is_named(project, tmp_path):
  points = pd.read_csv(project / "points.csv")
  points.to_csv(project / "points.csv", sep="|", index=False)
  _refused(projects.data_config(project, tmp_path / "tfds"), tmp_path,
           r"points.csv: its header line 'sample_id\|lon\|lat\|ec' has no "
           r"field separator \(',', ';', tab\)")


def test_points_outside_every_scene(project, tmp_path):
  points = pd.read_csv(project / "points.csv")
  points.assign(lat=points.lat + 1.0).to_csv(project / "points.csv",
                                             index=False)
  _refused(projects.data_config(project, tmp_path / "tfds"), tmp_path,
           r"none of the 8 field points lies on a bare-soil pixel.*\(8 outside "
           r"every scene\). Check data.points_crs")


def test_points_all_off_soil(project, tmp_path):
  projects.write_scene(project / "scenes" / "a.tif", vegetation=[
      (r, c) for r in range(10) for c in range(10)])
  _refused(projects.data_config(project, tmp_path / "tfds"), tmp_path,
           r"8 green_vegetation\).*soil masks \(data.masks")


def test_fewer_points_than_folds(tmp_path):
  with pytest.raises(ValueError, match=r"3 labelled field points .* "
                     r"data.folds=5"):
    folds.spatial_folds(np.arange(4.0), np.arange(4.0),
                        np.array([1, 1, 1, 0], bool), 5)


def test_library_must_cover_the_sensor(tmp_path):
  visnir = projects.write_project(tmp_path / "vnir",
                                  library_nm=np.arange(350, 1001, 10))
  _refused(projects.data_config(visnir, tmp_path / "tfds"), tmp_path,
           r"library covers 380-1000 nm but the enmap bands the model reads "
           r"span 419-2446 nm")
  # Increasing columns beyond 2500 could be nm or cm-1: the user says.
  unclear = projects.write_project(tmp_path / "unclear",
                                   library_nm=np.arange(2600, 25001, 400))
  _refused(projects.data_config(unclear, tmp_path / "tfds"), tmp_path,
           r"library.csv: spectral columns 2600-25000 reach beyond 2500 in "
           r"increasing order.*data.library_unit\) to 'cm-1'")


def test_scenes_of_mixed_sensors(project, tmp_path):
  projects.write_scene(project / "scenes" / "b.tif", sensor="prisma",
                       origin=(projects.ORIGIN[0] + 600, projects.ORIGIN[1]))
  _refused(projects.data_config(project, tmp_path / "tfds"), tmp_path,
           r"mixes sensors: a.tif has .* good bands.*b.tif has")


def test_a_changed_file_rebuilds(project, tmp_path):
  config = projects.data_config(project, tmp_path / "tfds")
  before, _ = _records(config)
  points = pd.read_csv(project / "points.csv")
  points.assign(ec=points.ec + 1).to_csv(project / "points.csv", index=False)
  after, _ = _records(config)
  key = ("labelled", "p5")
  assert after[key]["target"] == pytest.approx(before[key]["target"] + 1)


def test_a_killed_build_resumes_after_the_scenes_it_placed(
    project, tmp_path, monkeypatch, caplog):
  """A build that dies reading its second scene, run again, reads only that
  one and gives the records of a build never stopped."""
  projects.write_scene(project / "scenes" / "b.tif",
                       origin=(projects.ORIGIN[0] + 600, projects.ORIGIN[1]))
  config = projects.data_config(project, tmp_path / "tfds")
  read, real = [], inputs.scenes.read_scene

  def read_scene(path, *args, **kwargs):
    read.append(path.name)
    if read == ["a.tif", "b.tif"]:
      raise RuntimeError("killed")
    return real(path, *args, **kwargs)

  monkeypatch.setattr(inputs.scenes, "read_scene", read_scene)
  with pytest.raises(RuntimeError, match="killed"):
    _load(config)
  assert sorted(p.name for p in (tmp_path / "tfds").rglob("*.placed/*")) == [
      "scene_00000.pkl", "so_far.pkl"]
  with caplog.at_level(logging.INFO):
    resumed, report = _records(config)
  assert read == ["a.tif", "b.tif", "b.tif"]
  assert "Resumed the build: 1 of 2 scenes placed before (a)" in caplog.text
  assert report["scenes"] == ["a", "b"]
  assert not list((tmp_path / "tfds").rglob("*.placed"))  # Complete.
  whole, _ = _records(projects.data_config(project, tmp_path / "whole"))
  assert read[3:] == ["a.tif", "b.tif"]
  assert resumed.keys() == whole.keys()
  assert any(key[0] == "unlabelled" and value["scene"] == b"b"
             for key, value in whole.items())
  for key, record in whole.items():
    for field, value in record.items():
      np.testing.assert_array_equal(resumed[key][field], value)


def test_library_spectra_on_the_lab_grid(project, tmp_path):
  records, _ = _records(projects.data_config(project, tmp_path / "tfds"))
  lab = resampling.lab_wavelengths()
  inside = (lab > 420) & (lab < 2430)
  np.testing.assert_allclose(records["library", "l6"]["lab"][inside],
                             projects.soil(lab[inside], 0.8 + 0.4 * 6 / 11),
                             rtol=1e-3)
  _, info = _load(projects.data_config(project, tmp_path / "tfds"))
  assert lab_grid.LabGrid.from_json(info.metadata["lab_grid"]) == (
      lab_grid.visnir())


def test_a_mir_library_keeps_its_grid(project, tmp_path):
  """LimeSoDa's real MIR spectra (percent reflectance, decreasing cm-1
  columns) as the library: not refused for the sensor, stored on their own
  grid, paired as a vis-NIR library is."""
  wn, percent = projects.limesoda_mir()
  library = pd.read_csv(project / "library.csv")
  mir = pd.DataFrame(percent[:len(library)], columns=[f"{w:g}" for w in wn])
  pd.concat([library[["sample_id", "ec", "lat", "lon"]], mir], axis=1).to_csv(
      project / "library.csv", index=False)
  config = projects.data_config(project, tmp_path / "tfds",
                                library_quantity="reflectance")
  records, report = _records(config)
  grid = lab_grid.LabGrid(wn[::-1], "cm-1", "reflectance")
  _, info = _load(config)  # Prepared: the grid comes from its metadata.
  assert lab_grid.LabGrid.from_json(info.metadata["lab_grid"]) == grid
  assert info.features["lab"].shape == (wn.size,)
  np.testing.assert_allclose(records["library", "l6"]["lab"],
                             percent[6, ::-1] / 100, rtol=1e-6)
  assert records["labelled", "p0"]["lab"].shape == (wn.size,)
  assert np.isnan(records["labelled", "p0"]["lab"]).all()
  assert report["library"]["paired by sample id"] == 2
  assert report["library"]["paired by distance"] == 4
  assert report["library"]["grid"] == grid.describe()
  # Stated as absorbance (MIR's default), percent reflectance is refused.
  for i, (key, value, match) in enumerate([
      ("library_quantity", "", r"library.csv: median 1\d.\d+ is not "
       "absorbance"),
      ("library_unit", "um", r"data.library_unit='um': use one of nm, cm-1")]):
    config = projects.data_config(project, tmp_path / f"{i}" / "tfds",
                                  **{key: value})
    _refused(config, tmp_path / f"{i}", match)


def test_a_student_without_pairs_in_a_fold_is_refused():
  from configs import own_data
  plan = stages.plan(own_data.get_config("tiny"), lab_grid.visnir())
  labelled, paired = roles.LABELLED, roles.PAIRED
  data = types.SimpleNamespace(role=np.array([labelled, labelled, paired]),
                               fold=np.array([1, 2, 1]), sensor="enmap")
  with pytest.raises(ValueError, match="Every pair lies in the area of fold "
                     "1.*w_distill_feature=0"):
    cross_validation._check(plan, data)  # pylint: disable=protected-access
  # Three folds: the nested validation's run without folds 1 and 3 has
  # nothing to distil from either.
  data.role, data.fold = np.array([labelled] * 3 + [paired] * 2), np.array(
      [1, 2, 3, 1, 3])
  with pytest.raises(ValueError, match="Every pair lies in the area of fold "
                     "1[+]3"):
    cross_validation._check(plan, data)  # pylint: disable=protected-access
  data.role[3:] = labelled
  with pytest.raises(ValueError, match="No library sample pairs"):
    cross_validation._check(plan, data)  # pylint: disable=protected-access


def test_an_opus_library_in_a_project(project, tmp_path):
  """Bruker OPUS files (LimeSoDa's MIR as absorbance) keyed by file name."""
  wn, percent = projects.limesoda_mir()
  wn = np.linspace(wn[0], wn[-1], wn.size)  # OPUS axes are evenly spaced.
  library = pd.read_csv(project / "library.csv")
  (project / "opus").mkdir()
  for i, name in enumerate(library.sample_id):
    opus_files.write_opus(project / "opus" / f"{name}.0", wn,
                          np.log10(100 / percent[i]))
  library[["sample_id", "ec", "lat", "lon"]].to_csv(project / "meta.csv",
                                                    index=False)
  config = projects.data_config(project, tmp_path / "tfds", library="opus",
                                library_format="opus",
                                library_metadata="meta.csv")
  records, report = _records(config)
  _, info = _load(config)
  grid = lab_grid.LabGrid.from_json(info.metadata["lab_grid"])
  assert grid == lab_grid.LabGrid(wn[::-1], "cm-1", "absorbance")
  np.testing.assert_allclose(records["paired", "l3"]["lab"],
                             np.log10(100 / percent[3, ::-1]), rtol=1e-5)
  assert report["library"]["paired by distance"] == 4
