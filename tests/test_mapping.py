"""Salinity maps of a real EnMAP tile with a tiny trained student."""
import functools
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from conftest import REPO, cpu_devices_env, tiny_config
from data_prep import scenes
from data_prep.scenes import geotiff
from deepsalt_jax import applicability
from deepsalt_jax import baselines
from deepsalt_jax import calibration
from deepsalt_jax import feature_distance
from deepsalt_jax import final_model
from deepsalt_jax import mapping
from deepsalt_jax import model_choice
from deepsalt_jax import predict
from deepsalt_jax import quantile_heads
from deepsalt_jax import run_config
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import targets
from deepsalt_jax import train
from deepsalt_jax.mapping import blocks
from deepsalt_jax.mapping import files
from deepsalt_jax.mapping import stats
from deepsalt_spectral import bands
from deepsalt_spectral import errors
from deepsalt_spectral import indices
from deepsalt_spectral import sensors

TILE = "enmap_potsdam/enmap_potsdam_tile_192_96.tif"  # The most bare soil.
NODATA_BLOCK = (slice(3, 6), slice(0, 10))  # Rows, columns set to nodata.


def _edited_tile(reference_data, path, edit):
  """A copy of the tile with `edit(raw [bands, rows, cols])` applied."""
  shutil.copyfile(reference_data / TILE, path)
  with rasterio.open(path, "r+") as ds:
    raw = ds.read()
    edit(raw)
    ds.write(raw)
  return path


def _read(path, band=1):
  with rasterio.open(path) as ds:
    return ds.read(band), ds.crs, ds.transform, ds.nodata


@pytest.fixture(scope="module")
def tile(reference_data, tmp_path_factory):
  """The real tile with a block of nodata pixels."""
  def add_nodata(raw):
    raw[(slice(None),) + NODATA_BLOCK] = -32768
  return _edited_tile(reference_data, tmp_path_factory.mktemp("scene") /
                      "tile.tif", add_nodata)


@pytest.fixture(scope="module")
def mapped(tiny_run, tile, tmp_path_factory):
  """The tile mapped with the default options: (report, output folder)."""
  config, workdir = tiny_run
  out = tmp_path_factory.mktemp("maps")
  return mapping.map_scene(config, workdir, tile, out), out


def _block(tile):
  """The tile's soil pixels at the student's bands, as a map reads them."""
  with geotiff.GeoTiffRows(tile) as rows:
    match = bands.match_bands(rows.wavelength[~rows.bad],
                              sensors.builtin("enmap"), 2.0, 0.9)
    return blocks.prepare(rows, 0, rows.shape[0], match,
                          indices.MaskThresholds())


def _options(**values):
  options = mapping.options.defaults()
  options.update(values)
  return options


def test_salinity_classes_known_answers():
  ec = np.array([0.0, 1.99, 2.0, 3.9, 4.0, 8.0, 15.9, 16.0, 100.0, np.nan])
  np.testing.assert_array_equal(stats.salinity_class(ec, 255),
                                [0, 0, 1, 1, 2, 3, 3, 4, 4, 255])


def test_ncai_known_answer():
  refl = np.array([0.3, 0.2, 0.3], np.float32)[:, None, None] * np.ones(
      (3, 1, 2), np.float32)
  scene = scenes.Scene(refl, np.array(indices.CAI_NM),
                       np.full(3, 10.0), np.zeros(3, bool),
                       np.array([[False, True]]))
  # (0.3 - 0.2) / (0.3 + 0.2); NaN at the nodata pixel.
  np.testing.assert_allclose(indices.ncai(scene), [[0.2, np.nan]],
                             rtol=1e-6)


def test_mapping_options_are_checked():
  check = mapping.options.check
  assert check(None).ndvi_max == 0.3
  assert check(_options(ndvi_max=0.5)).ndvi_max == 0.5
  with pytest.raises(ValueError, match="--mapping.mc_samples=1"):
    check(_options(mc_samples=1))
  options = check(_options(masks="water, cloud_haze"))
  assert mapping.options.thresholds(options) == indices.MaskThresholds(
      ndvi_max=None, ncai_max=None, reflectance_min=None,
      reflectance_max=None, ndrbi_min=0.0, cloud_blue_min=0.15)
  with pytest.raises(ValueError, match=r"unknown \['clouds'\]"):
    check(_options(masks="water,clouds"))


def test_match_bands(reference_data):
  enmap = sensors.builtin("enmap")
  same = bands.match_bands(enmap.good_wavelength, enmap, 2.0, 0.9)
  assert same.method == "direct"
  np.testing.assert_array_equal(same.matrix, np.eye(enmap.good.size))
  # A real L2A tile: its good bands are the built-in EnMAP's good bands.
  scene = scenes.read_scene(reference_data / TILE)
  match = bands.match_bands(scene.wavelength[scene.good], enmap, 2.0, 0.9)
  assert match.method == "direct"
  # Bands 3 nm off are resampled; inside a segment their responses are
  # fully covered (at segment ends only 19-25 %).
  shifted = bands.match_bands(enmap.good_wavelength + 3.0, enmap, 2.0, 0.1)
  assert shifted.method == "resampled" and (~shifted.direct).sum() > 100
  assert np.median(shifted.coverage) == pytest.approx(1.0)
  np.testing.assert_allclose(shifted.matrix.sum(axis=1), 1.0, rtol=1e-6)
  # A missing band (here 2200 nm) leaves a gap nothing is interpolated
  # across: its neighbours reach ~1 % of its response, which is refused.
  wanted = int(np.argmin(np.abs(enmap.good_wavelength - 2200.0)))
  source = np.delete(enmap.good_wavelength, wanted)
  with pytest.raises(ValueError, match=r"1 of the enmap bands.*2199.7 nm "
                     r"\(1%\)"):
    bands.match_bands(source, enmap, 2.0, 0.9)
  match = bands.match_bands(source, enmap, 2.0, 0.01)
  assert (~match.direct).sum() == 1
  x = np.random.default_rng(0).uniform(size=(3, source.size))
  np.testing.assert_array_equal(match(x)[:, match.direct],
                                x[:, match.matrix[match.direct].argmax(1)])
  # A VNIR-only sensor cannot stand in for EnMAP's 420-2450 nm.
  desis = sensors.from_csv(reference_data / "sensors" / "desis.csv")
  with pytest.raises(ValueError, match="cannot stand in"):
    bands.match_bands(desis.good_wavelength, enmap, 2.0, 0.9)


def test_geotiff_rows_equal_the_whole_scene(reference_data):
  scene = scenes.read_scene(reference_data / TILE)
  with geotiff.GeoTiffRows(reference_data / TILE) as rows:
    assert rows.shape == scene.shape
    np.testing.assert_array_equal(rows.bad, scene.bad)
    block = rows.read(10, 17)
    np.testing.assert_array_equal(block.reflectance,
                                  scene.reflectance[:, 10:17])
    assert block.transform.f == scene.transform.f - 10 * 30.0


def test_window_means_are_the_points_spectra(tile):
  """A mapped pixel's spectrum is what a point placed on it gets
  (placement: the mean of the window's soil pixels), whatever the blocks."""
  scene = geotiff.read_geotiff(tile)
  soil = indices.soil_masks(scene, indices.MaskThresholds())["soil"]
  with geotiff.GeoTiffRows(tile) as rows:
    match = bands.match_bands(rows.wavelength[~rows.bad],
                              sensors.builtin("enmap"), 2.0, 0.9)
    split = [blocks.prepare(rows, a, b, match, indices.MaskThresholds(),
                            window=3) for a, b in ((0, 7), (7, 20),
                                                   (20, rows.shape[0]))]
    single = blocks.prepare(rows, 0, rows.shape[0], match,
                            indices.MaskThresholds())
  r = np.concatenate([b.rows + b.start for b in split])
  c = np.concatenate([b.cols for b in split])
  x = np.concatenate([b.x for b in split])
  np.testing.assert_array_equal(np.nonzero(soil), (r, c))
  placed = scenes.extract_pixels(scene, c + 0.5, r + 0.5, coords="pixel",
                                 window=3, mask=soil)
  np.testing.assert_allclose(x, match(placed[:, scene.good]), rtol=1e-5,
                             atol=1e-6)
  # Window 1 is each pixel alone, and the means do smooth.
  np.testing.assert_array_equal(single.x, match(
      scene.reflectance[:, r, c].T[:, scene.good]))
  assert np.abs(x - single.x).max() > 0.01


def test_map_keeps_georeference_nodata_and_classes(mapped, tile):
  report, out = mapped
  names = files.output_names("tile")
  assert sorted(p.name for p in out.iterdir()) == sorted(names.values())
  with rasterio.open(tile) as src:
    crs, transform = src.crs, src.transform
  ec, ec_crs, ec_transform, nodata = _read(out / names["ec"])
  lower, upper, p = (_read(out / names["ec"], b)[0] for b in (2, 3, 4))
  assert (ec_crs, ec_transform) == (crs, transform)
  for kind in ("ec", "class", "masks"):  # Cloud-Optimized GeoTIFFs.
    with rasterio.open(out / names[kind]) as ds:
      assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
      assert ds.profile["tiled"] and ds.block_shapes[0] == (
          files.COG_BLOCK, files.COG_BLOCK)
  masks = {n: _read(out / names["masks"], i)[0].astype(bool)
           for i, n in enumerate(indices.MASK_NAMES, start=1)}
  expected_nodata = np.zeros(ec.shape, bool)
  expected_nodata[NODATA_BLOCK] = True
  np.testing.assert_array_equal(masks["nodata"], expected_nodata)
  # The masks are those of the whole scene, all tests on by default (this
  # tile has vegetation, dry vegetation and L2A pixels with zero red and
  # NIR reflectance, 'dark').
  expected = indices.soil_masks(scenes.read_scene(tile),
                                indices.MaskThresholds())
  for name in indices.MASK_NAMES:
    np.testing.assert_array_equal(masks[name], expected[name], name)
  assert masks["green_vegetation"].any() and masks["dark"].any()
  assert masks["dry_vegetation"].any()
  valid = ec != nodata
  np.testing.assert_array_equal(valid, masks["soil"])
  assert not (valid & expected_nodata).any()
  assert 200 < valid.sum() < ec.size  # Bare soil; the rest masked.
  for band in (ec, lower, upper, p):
    assert np.all(np.isfinite(band[valid]))
    assert np.all(band[~valid] == nodata)
  assert np.all((ec[valid] >= 0) & (ec[valid] < 200))
  # The interval never reaches below zero (test_calibration.py: how it is
  # made).
  assert np.all((lower[valid] >= 0) & (lower[valid] < upper[valid]))
  assert np.all((p[valid] >= 0) & (p[valid] <= 1))
  classes, class_crs, class_transform, class_nodata = _read(out /
                                                            names["class"])
  assert (class_crs, class_transform, class_nodata) == (crs, transform, 255)
  np.testing.assert_array_equal(
      classes, stats.salinity_class(np.where(valid, ec, np.nan), 255))
  with rasterio.open(out / names["ec"]) as ds:
    assert "lower bound" in ds.descriptions[1]
    assert "upper bound" in ds.descriptions[2]
    assert "exceeds 4 dS/m" in ds.descriptions[3]
    assert ds.tags(1)["ec_method"] == "ECe"
  saved = json.loads((out / names["report"]).read_text())
  assert saved["uncertainty"]["method"] == calibration.KIND
  assert saved["interval"]["median_width_dS_per_m"] > 0
  likely = saved["interval"]["likely_exceeding"]
  assert likely["p>0.8"]["pixels"] == (p[valid] > 0.8).sum()
  assert likely["p>0.8"]["area_ha"] == pytest.approx(
      0.09 * (p[valid] > 0.8).sum())
  assert saved["pixels"]["soil"] == valid.sum()
  assert saved["pixels"] == report["pixels"]
  assert sum(c["pixels"] for c in saved["classes"].values()) == valid.sum()
  # 30 m pixels: 0.09 ha each.
  assert saved["soil_area_ha"] == pytest.approx(0.09 * valid.sum())
  assert sum(c["area_ha"] for c in saved["classes"].values()) == (
      pytest.approx(saved["soil_area_ha"]))
  ec_soil = ec[valid]
  assert saved["ec_dS_per_m"]["mean"] == pytest.approx(ec_soil.mean(),
                                                       rel=1e-5)
  for p in stats.PERCENTILES:  # To the histogram's resolution.
    assert saved["ec_dS_per_m"][f"p{p}"] == pytest.approx(
        np.percentile(ec_soil, p, method="inverted_cdf"),
        rel=stats.HIST_RATIO - 1)
  assert saved["soil_fraction_of_valid"] == pytest.approx(
      valid.sum() / (~expected_nodata).sum())
  assert (out / names["quicklook"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _float_tile(reference_data, path, edit, wavelength_shift=None):
  """The tile as float32 reflectance x 10000 (EnMAP's tags), `edit(raw)`
  applied; `wavelength_shift`: (band number, nm) moved in the tags."""
  with rasterio.open(reference_data / TILE) as src:
    raw = src.read().astype(np.float32)
    profile = dict(src.profile, dtype="float32")
    tags = [src.tags(b) for b in range(1, src.count + 1)]
    scales = src.scales
  edit(raw)
  with rasterio.open(path, "w", **profile) as dst:
    dst.write(raw)
    for b, band_tags in enumerate(tags, start=1):
      dst.update_tags(b, **band_tags)
    if wavelength_shift:
      band, nm = wavelength_shift
      dst.update_tags(band, wavelength=float(tags[band - 1]["wavelength"])
                      + nm)
    dst.scales = scales
  return path


def test_implausible_nan_and_cloudy_pixels_are_masked_and_counted(
    tiny_run, reference_data, tmp_path):
  """A flat 3.0-reflectance pixel, a NaN in one band of another and a cloud
  get no EC; the scene still maps and the report counts them. A band moved
  3 nm is resampled, and the report says so with its coverage."""
  with rasterio.open(reference_data / TILE) as src:
    wavelength = np.array([float(src.tags(b)["wavelength"])
                           for b in range(1, src.count + 1)])  # File order.
  soil = np.argwhere(scenes.soil_pixels(scenes.read_scene(
      reference_data / TILE)))
  (r0, c0), (r1, c1), (r2, c2) = soil[:3]

  def edit(raw):
    good = raw[:, r0, c0] != -32768
    raw[good, r0, c0] = 30000.0
    raw[np.flatnonzero(good)[50], r1, c1] = np.nan
    # White in the VNIR, dark in the SWIR: a water cloud.
    raw[good, r2, c2] = np.where(wavelength < 1300, 6000.0, 1500.0)[good]

  moved = int(np.argmin(np.abs(wavelength - 1000.0)))
  path = _float_tile(reference_data, tmp_path / "edited.tif", edit,
                     wavelength_shift=(moved + 1, 3.0))
  config, workdir = tiny_run
  report = mapping.map_scene(config, workdir, path, tmp_path / "maps")
  ec = _read(tmp_path / "maps" / "edited_ec.tif")[0]
  masks = {n: _read(tmp_path / "maps" / "edited_masks.tif", i)[0]
           for i, n in enumerate(indices.MASK_NAMES, start=1)}
  for (r, c), name in (((r0, c0), "out_of_range"), ((r1, c1), "non_finite"),
                       ((r2, c2), "cloud_haze")):
    assert masks[name][r, c] == 1 and masks["soil"][r, c] == 0, name
    assert ec[r, c] == files.EC_NODATA, name
  # The flat 3.0 pixel is also white and bright: a cloud too.
  assert [report["pixels"][n] for n in (
      "out_of_range", "non_finite", "cloud_haze")] == [1, 1, 2]
  assert report["pixels"]["soil"] == len(soil) - 3
  enmap = sensors.builtin("enmap").good_wavelength
  band = f"{enmap[np.argmin(np.abs(enmap - wavelength[moved]))]:.2f} nm"
  assert list(report["bands"]["resampled"]) == [band]
  assert report["bands"]["resampled"][band] >= 0.9
  assert report["bands"]["min_coverage"] == 0.9


def test_tiling_and_batching_do_not_change_the_map(tiny_run, tile, mapped,
                                                   tmp_path):
  """Blocks of 7 rows, batches of 64 px == one block, one batch (mapped)."""
  config, workdir = tiny_run
  mapping.map_scene(config, workdir, tile, tmp_path,
                    _options(tile_rows=7, batch_size=64))
  _, whole = mapped
  for band in (1, 2, 3, 4):
    np.testing.assert_allclose(_read(tmp_path / "tile_ec.tif", band)[0],
                               _read(whole / "tile_ec.tif", band)[0],
                               rtol=2e-5, atol=1e-6)


def test_the_interval_bands_are_the_calibration_of_the_run(
    tiny_run, tile, mapped, tmp_path):
  """Bands 2-4 are the run's calibrated interval and exceedance, and say
  so; without a calibration (or for other MC passes than it was fitted
  on) they are not computed; an older calibration is refused in one
  line."""
  config, workdir = tiny_run
  student = "student"  # The student's folder (stages.plan).
  fitted = calibration.load(workdir / student)
  assert fitted["kind"] == calibration.KIND
  # Every difficulty of a student was a candidate, in order of preference
  # (an ensemble's spread and a new region's 'prediction' are not).
  assert list(fitted["candidates"]) == [
      d for d in calibration.DIFFICULTIES
      if d not in ("members", "prediction")]
  report, whole = mapped
  assert report["uncertainty"]["calibration"] == {
      k: v for k, v in fitted.items()
      if k not in ("scores", *calibration.FEATURE_READERS)}
  ec, lower, upper, p = (_read(whole / "tile_ec.tif", b)[0]
                         for b in (1, 2, 3, 4))
  valid = ec != files.EC_NODATA
  # The interval of each pixel from its EC and its difficulty: what is read
  # from the student's features of the pixel, or the MC spread of the
  # pixel's own dropout masks (keyed by its index in the scene).
  difficulty = fitted["difficulty"]
  width = None
  if difficulty != "constant":
    block = _block(tile)
    assert valid.sum() == block.rows.size
    stage = stages.plan(config, run_config.lab_grid(workdir)).students[0]
    mesh = sharding.make_mesh()
    params, _ = stage.restore(workdir, "enmap", mesh)
    run = functools.partial(
        predict.predict, stage.model("enmap"), params, block.x, mesh, 256,
        targets.TRANSFORMS[config.data.target_transform][1],
        index=(block.rows * ec.shape[1] + block.cols).astype(np.int32))
    width = np.zeros(ec.shape)
    if difficulty in calibration.MC_MODES:
      score = run(mc_samples=fitted["mc_samples"],
                  mc_mode=fitted["mc_mode"])[1]
    else:
      read = {"quantile_heads": quantile_heads.width,
              "feature_distance": feature_distance.distance}[difficulty]
      score = read(fitted[difficulty], run(features=True)[1])
    width[block.rows, block.cols] = score
    width = width[valid]
  bounds = calibration.predictive(fitted, ec[valid], width, 4.0)
  # Computed here in one call, there in chunks: float32 apart,
  # so P (a step of 1 / calibration samples) may sit one step away.
  np.testing.assert_allclose(lower[valid], bounds["lower"], rtol=5e-3,
                             atol=1e-5)
  np.testing.assert_allclose(upper[valid], bounds["upper"], rtol=5e-3)
  np.testing.assert_allclose(p[valid], bounds["p"],
                             atol=1 / len(fitted["scores"]) + 1e-6)
  with rasterio.open(whole / "tile_ec.tif") as ds:
    assert "calibrated 90% interval" in ds.descriptions[1]
    assert calibration.describe(fitted) in ds.descriptions[1]
  uncalibrated = tmp_path / "run"
  shutil.copytree(workdir, uncalibrated)
  (uncalibrated / student / calibration.CALIBRATION_FILE).unlink()
  mapping.map_scene(config, uncalibrated, tile, tmp_path / "raw")
  with rasterio.open(tmp_path / "raw" / "tile_ec.tif") as ds:
    assert "not computed: the run has no calibration" in ds.descriptions[1]
    assert (ds.read(3) == files.EC_NODATA).all()
  # Five MC passes spread less than ten: an interval calibrated on ten is
  # not used.
  head = dict(fitted, difficulty="head_mc", mc_samples=10, mc_mode="head")
  calibration.save(head, uncalibrated / student)
  five = mapping.map_scene(config, uncalibrated, tile, tmp_path / "five",
                           _options(mc_samples=5))
  assert five["uncertainty"]["calibration"] is None
  (uncalibrated / student / calibration.CALIBRATION_FILE).write_text(
      json.dumps({"nominal": 0.9, "multiplier": 13.6, "mc_samples": 10,
                  "mc_mode": "head"}))
  with pytest.raises(errors.UserError, match="older calibration"):
    mapping.map_scene(config, uncalibrated, tile, tmp_path / "old")


@pytest.mark.slow
def test_eight_devices_from_the_command_line_give_the_same_map(
    tiny_run, tile, mapped, tmp_path):
  """launch.py --mode=map on 8 fake CPU devices == the in-process map."""
  _, workdir = tiny_run
  env = cpu_devices_env(8)
  result = subprocess.run(
      [sys.executable, "launch.py", "--mode=map",
       f"--workdir={workdir}", f"--scene={tile}", f"--output={tmp_path}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "px/s" in result.stderr and "ETA" in result.stderr
  report = json.loads((tmp_path / "tile_report.json").read_text())
  assert report["devices"] == 8
  _, out = mapped
  for band in (1, 2):
    np.testing.assert_allclose(_read(tmp_path / "tile_ec.tif", band)[0],
                               _read(out / "tile_ec.tif", band)[0],
                               rtol=2e-5, atol=1e-6)


def _write_envi(tile, path):
  """The GeoTIFF tile as an ENVI BSQ image with the same band table."""
  with rasterio.open(tile) as src:
    raw = src.read()
    tags = [src.tags(b) for b in range(1, src.count + 1)]
    t = src.transform
  raw.astype("<i2").tofile(path)
  table = lambda key: ", ".join(tag[key] for tag in tags)
  path.with_suffix(".hdr").write_text(
      f"ENVI\nsamples = {raw.shape[2]}\nlines = {raw.shape[1]}\n"
      f"bands = {raw.shape[0]}\ndata type = 2\ninterleave = bsq\n"
      "byte order = 0\ndata ignore value = -32768\n"
      "reflectance scale factor = 10000\nwavelength units = Nanometers\n"
      f"wavelength = {{{table('wavelength')}}}\nfwhm = {{{table('fwhm')}}}\n"
      f"bbl = {{{table('bbl')}}}\nmap info = {{UTM, 1, 1, {t.c}, {t.f}, "
      f"{t.a}, {-t.e}, 33, North, WGS-84}}\n")
  return path


def test_envi_scene_read_in_memory_gives_the_same_map(tiny_run, tile, mapped,
                                                      tmp_path):
  config, workdir = tiny_run
  scene = _write_envi(tile, tmp_path / "tile.bsq")
  mapping.map_scene(config, workdir, scene, tmp_path)
  _, geotiff_maps = mapped
  ec, crs, transform, _ = _read(tmp_path / "tile_ec.tif")
  expected, expected_crs, expected_transform, _ = _read(geotiff_maps /
                                                        "tile_ec.tif")
  assert (crs, transform) == (expected_crs, expected_transform)
  np.testing.assert_allclose(ec, expected, rtol=2e-5, atol=1e-6)


def test_band_mismatch_is_an_error(tiny_run, reference_data, tmp_path):
  """A VNIR-only scene cannot feed the EnMAP student; nothing is written."""
  with rasterio.open(reference_data / TILE) as src:
    wavelength = np.array([float(src.tags(b)["wavelength"])
                           for b in range(1, src.count + 1)])
    keep = np.flatnonzero(wavelength < 1000) + 1
    profile = dict(src.profile, count=keep.size)
    with rasterio.open(tmp_path / "vnir.tif", "w", **profile) as dst:
      dst.write(src.read(keep.tolist()))
      for i, b in enumerate(keep, start=1):
        dst.update_tags(i, **src.tags(int(b)))
      dst.scales = [src.scales[b - 1] for b in keep]
  config, workdir = tiny_run
  with pytest.raises(ValueError, match="cannot stand in"):
    mapping.map_scene(config, workdir, tmp_path / "vnir.tif",
                      tmp_path / "maps")
  assert not list((tmp_path / "maps").glob("*"))


def test_failure_midway_leaves_no_partial_file(tiny_run, tile, tmp_path,
                                               monkeypatch):
  """A read error after two blocks were written removes what was written."""
  read, written = geotiff.GeoTiffRows.read, []

  def failing_read(self, start, stop):
    if start >= 14:
      raise OSError("read error")
    return read(self, start, stop)

  def counting_write(self, start, *args):
    written.append(start)
    return write(self, start, *args)

  write = files.MapWriter.write
  monkeypatch.setattr(geotiff.GeoTiffRows, "read", failing_read)
  monkeypatch.setattr(files.MapWriter, "write", counting_write)
  config, workdir = tiny_run
  out = tmp_path / "maps"
  with pytest.raises(OSError, match="read error"):
    mapping.map_scene(config, workdir, tile, out, _options(tile_rows=7))
  assert written == [0, 7]
  assert not out.exists()  # Nor the folder the run made.


def test_all_nodata_scene_is_a_clear_error(tiny_run, reference_data, tmp_path):
  def blank(raw):
    raw[:] = -32768
  scene = _edited_tile(reference_data, tmp_path / "blank.tif", blank)
  config, workdir = tiny_run
  with pytest.raises(ValueError, match="every pixel is nodata"):
    mapping.map_scene(config, workdir, scene, tmp_path / "maps")
  assert not list((tmp_path / "maps").glob("*"))


def test_mask_thresholds_when_set(tiny_run, tile, tmp_path):
  """Water (NDRBI) and dry-vegetation (nCAI) masks, thresholds set: each
  pixel is masked exactly where its index crosses the threshold."""
  config, workdir = tiny_run
  scene = scenes.read_scene(tile)
  ndrbi, ncai = indices.ndrbi(scene), indices.ncai(scene)
  valid = ~scene.nodata & np.isfinite(ndrbi) & np.isfinite(ncai)
  water_t = float(np.quantile(ndrbi[valid], 0.2))
  dry_t = float(np.quantile(ncai[valid], 0.8))
  mapping.map_scene(config, workdir, tile, tmp_path,
                    _options(ndrbi_min=water_t, ncai_max=dry_t))
  masks = {n: _read(tmp_path / "tile_masks.tif", i)[0].astype(bool)
           for i, n in enumerate(indices.MASK_NAMES, start=1)}
  with np.errstate(invalid="ignore"):  # NaN: not flagged (but 'dark').
    np.testing.assert_array_equal(masks["water"],
                                  ~scene.nodata & (ndrbi < water_t))
    np.testing.assert_array_equal(masks["dry_vegetation"],
                                  ~scene.nodata & (ncai > dry_t))
  assert masks["water"].sum() > 10 and masks["dry_vegetation"].sum() > 10
  assert not (masks["soil"] & (masks["water"] | masks["dry_vegetation"]
                               | masks["green_vegetation"])).any()
  ec = _read(tmp_path / "tile_ec.tif")[0]
  np.testing.assert_array_equal(ec != files.EC_NODATA, masks["soil"])


def test_no_mc_samples_gives_the_same_ec_and_no_uncertainty(tiny_run, tile,
                                                            mapped,
                                                            tmp_path,
                                                            caplog):
  """mc_samples=0 means no uncertainty: bands 2-4 are nodata, and the log
  and the bands say so."""
  config, workdir = tiny_run
  report = mapping.map_scene(config, workdir, tile, tmp_path,
                             _options(mc_samples=0))
  assert ("--mapping.mc_samples=0: no uncertainty; bands 2-4 of each "
          "<scene>_ec.tif are nodata") in caplog.text
  _, default = mapped
  np.testing.assert_allclose(_read(tmp_path / "tile_ec.tif")[0],
                             _read(default / "tile_ec.tif")[0], rtol=1e-6)
  for band in (2, 3, 4):
    assert np.all(_read(tmp_path / "tile_ec.tif", band)[0] ==
                  files.EC_NODATA)
  assert report["uncertainty"]["method"] is None
  with rasterio.open(tmp_path / "tile_ec.tif") as ds:
    assert ds.descriptions[1:] == (
        "not computed: --mapping.mc_samples=0",) * 3


@pytest.mark.slow
def test_student_without_dropout_maps_without_uncertainty(
    prepared_data_dir, tile, tmp_path, caplog):
  config = tiny_config("distill", prepared_data_dir,
                       "compare=none,candidates=none")
  config.model.encoder.dropout = 0.0
  train.train_and_evaluate(config, tmp_path / "run")
  report = mapping.map_scene(config, tmp_path / "run", tile, tmp_path / "maps")
  assert report["uncertainty"]["samples"] == 0
  assert "No calibrated interval" in caplog.text
  assert np.all(_read(tmp_path / "maps" / "tile_ec.tif", 2)[0]
                == files.EC_NODATA)


def _plsr_choice(workdir, tile):
  """Saves a PLSR as validation's final model of `workdir` (fitted on 40 of
  the tile's soil pixels with made-up EC); returns its calibration."""
  x = _block(tile).x[:40]
  y = np.random.default_rng(0).uniform(0.2, 2.5, len(x))
  mean = np.expm1(y + np.random.default_rng(1).normal(0, 0.3, len(x)))
  fitted = dict(calibration.fit(mean, np.expm1(y), np.arange(len(x)) % 4,
                                "log1p"), model="PLSR")
  choice = model_choice.Choice({}, "PLSR", {"PLSR": 1.0})
  final_model.save(workdir / final_model.FOLDER, choice, "log1p", 0,
                   {"PLSR": (x, y)}, fitted)
  return fitted, baselines.plsr(x, y)


def test_a_plsr_choice_maps_the_plsr_and_names_it(tiny_run, tile, tmp_path):
  """Validation chose PLSR: the map is PLSR's prediction of each soil pixel
  with its constant calibrated interval, and the files say so."""
  config, workdir = tiny_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  fitted, plsr = _plsr_choice(run, tile)
  mapping.map_scenes(config, run, tile, tmp_path / "maps")
  ec, lower, upper, p = (_read(tmp_path / "maps" / "tile_ec.tif", b)[0]
                         for b in (1, 2, 3, 4))
  block = _block(tile)
  expected = np.maximum(np.expm1(plsr(block.x)), 0)
  valid = ec != files.EC_NODATA
  assert valid.sum() == block.rows.size > 200
  np.testing.assert_allclose(ec[block.rows, block.cols], expected,
                             rtol=1e-5, atol=1e-6)
  bounds = calibration.predictive(fitted, ec[valid], None, 4.0)
  np.testing.assert_allclose(lower[valid], bounds["lower"], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(upper[valid], bounds["upper"], rtol=1e-5)
  np.testing.assert_allclose(p[valid], bounds["p"], atol=1e-6)
  with rasterio.open(tmp_path / "maps" / "tile_ec.tif") as ds:
    assert ds.descriptions[0] == (
        "EC (ECe, dS/m), prediction of PLSR, validation's choice of model")
    assert ("samples PLSR did not train on" in ds.descriptions[1] and
            "constant width in log1p space, PLSR has no MC spread" in
            ds.descriptions[2])
  report = json.loads((tmp_path / "maps" / "tile_report.json").read_text())
  assert report["model"]["name"] == "PLSR"
  assert report["model"]["checkpoint_steps"] == {}  # No network restored.
  assert report["uncertainty"]["samples"] == 0
  region = (tmp_path / "maps" / "region_report.md").read_text()
  assert "Maps made by PLSR, validation's choice of model" in region


def test_pixels_outside_the_area_of_applicability_are_flagged(
    tiny_run, tile, mapped, tmp_path):
  """As the saved area of applicability says: in the masks file's band and
  the reports' counts and hectares; still mapped, the EC unchanged."""
  config, workdir = tiny_run
  run, out = tmp_path / "run", tmp_path / "maps"
  shutil.copytree(workdir, run)
  block = _block(tile)
  # Fitted on the darker half of the soil pixels: brighter ones lie outside.
  darker = block.x[np.argsort(block.x.mean(1))[:block.rows.size // 2]]
  domain = applicability.fit(darker, np.arange(len(darker)) % 3)
  applicability.save(domain, run)
  mapping.map_scenes(config, run, tile, out)
  outside = np.zeros(_read(tile)[0].shape, bool)
  outside[block.rows, block.cols] = domain.outside(block.x)
  assert 0 < outside.sum() < block.rows.size
  with rasterio.open(out / "tile_masks.tif") as ds:
    band = ds.descriptions.index(applicability.MASK) + 1
    np.testing.assert_array_equal(ds.read(band).astype(bool), outside)
  np.testing.assert_array_equal(_read(out / "tile_ec.tif")[0],
                                _read(mapped[1] / "tile_ec.tif")[0])
  report = json.loads((out / "tile_report.json").read_text())
  assert report["pixels"][applicability.MASK] == outside.sum()
  assert report["applicability"]["threshold"] == domain.threshold
  _, crs, transform, _ = _read(tile)
  area = stats.pixel_area_m2(crs, transform, 0, *outside.shape)
  assert report["outside_applicability_ha"] == pytest.approx(
      area[outside].sum() / 1e4, rel=1e-4)
  region = json.loads((out / "region_report.json").read_text())
  assert region["outside_applicability_ha"] == report[
      "outside_applicability_ha"]
  assert "outside applicability (ha)" in (out / "region_report.md"
                                          ).read_text()


def test_the_student_maps_when_forced_or_when_no_choice_was_saved(
    tiny_run, tile, mapped, tmp_path, caplog):
  """--mapping.model=student over a saved choice, and a run without one,
  give the student's map as before, byte for byte."""
  config, workdir = tiny_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  _plsr_choice(run, tile)
  mapping.map_scene(config, run, tile, tmp_path / "forced",
                    _options(model="student"))
  caplog.clear()
  mapping.map_scene(config, workdir, tile, tmp_path / "old")
  assert "no validation choice saved" in caplog.text
  _, default = mapped
  for out in ("forced", "old"):
    assert ((tmp_path / out / "tile_ec.tif").read_bytes() ==
            (default / "tile_ec.tif").read_bytes()), out
    report = json.loads((tmp_path / out / "tile_report.json").read_text())
    assert report["model"]["name"] == "student"
  with pytest.raises(ValueError, match="--mapping.model='plsr'"):
    mapping.options.check(_options(model="plsr"))


def _run_with_training_arrays(workdir, tile, tmp_path):
  """(a copy of the run `workdir`, a PLSR final model's calibration, 40
  spectra near the tile's pixels' mean and their made-up log1p EC) for a
  final model fitted on those arrays."""
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  fitted, plsr = _plsr_choice(run, tile)
  x = (plsr.centre + np.random.default_rng(2).normal(
      0, 0.01, (40, plsr.centre.size))).astype(np.float32)
  return run, fitted, x, np.random.default_rng(3).uniform(0.2, 2.5, 40)


def test_a_stack_maps_its_members_weighted_in_log_space(tiny_run, tile,
                                                        mapped, tmp_path):
  """A stack of PLSR, the student and a random forest (re-fitted from its
  saved training arrays) maps the weighted sum of their log1p EC."""
  config, workdir = tiny_run
  run, fitted, x, y = _run_with_training_arrays(workdir, tile, tmp_path)
  weights = {"PLSR": 0.5, "student": 0.3, "random forest": 0.2}
  choice = model_choice.Choice({}, model_choice.STACKED, weights)
  final_model.save(run / final_model.FOLDER, choice, "log1p", 0,
                   {"PLSR": (x, y), "random forest": (x, y)},
                   dict(fitted, model=final_model.describe(choice)))
  report = mapping.map_scene(config, run, tile, tmp_path / "maps")
  assert report["model"]["name"] == (
      "a stack of PLSR (0.50), student (0.30), random forest (0.20)")
  assert set(report["model"]["checkpoint_steps"]) == {"student"}
  block = _block(tile)
  _, student_maps = mapped
  student = _read(student_maps / "tile_ec.tif")[0][block.rows, block.cols]
  log_ec = (0.5 * baselines.plsr(x, y)(block.x) + 0.3 * np.log1p(student)
            + 0.2 * baselines.random_forest(x, y)(block.x))
  ec = _read(tmp_path / "maps" / "tile_ec.tif")[0]
  np.testing.assert_allclose(ec[block.rows, block.cols],
                             np.maximum(np.expm1(log_ec), 0), rtol=1e-5,
                             atol=1e-5)


def test_a_stack_with_the_teacher_reads_the_pixels_through_the_sau_start(
    tiny_run, tile, mapped, tmp_path):
  """The teacher in a stack maps as CV predicts it: the pixels through the
  SAU's fixed start, `from_prepared`, in one program with the student."""
  config, workdir = tiny_run
  run, fitted, x, y = _run_with_training_arrays(workdir, tile, tmp_path)
  weights = {"student": 0.6, final_model.TEACHER: 0.4}
  choice = model_choice.Choice({}, model_choice.STACKED, weights)
  final_model.save(run / final_model.FOLDER, choice, "log1p", 0, {},
                   dict(fitted, model=final_model.describe(choice)))
  report = mapping.map_scene(config, run, tile, tmp_path / "maps")
  assert set(report["model"]["checkpoint_steps"]) == {"student", "teacher"}
  block = _block(tile)
  teacher = stages.plan(config, run_config.lab_grid(workdir)).teacher
  mesh = sharding.make_mesh()
  params, _ = teacher.restore(workdir, "enmap", mesh)
  inverse = targets.TRANSFORMS[config.data.target_transform][1]
  teacher_ec = predict.predict(
      teacher.model("enmap"), params, teacher.pixel_inputs("enmap", block.x),
      mesh, 256, inverse, method="from_prepared")[0]
  _, student_maps = mapped
  student = _read(student_maps / "tile_ec.tif")[0][block.rows, block.cols]
  log_ec = 0.6 * np.log1p(student) + 0.4 * np.log1p(teacher_ec)
  assert np.ptp(np.log1p(teacher_ec) - np.log1p(student)) > 0.01
  ec = _read(tmp_path / "maps" / "tile_ec.tif")[0]
  np.testing.assert_allclose(ec[block.rows, block.cols],
                             np.maximum(np.expm1(log_ec), 0), rtol=1e-5,
                             atol=1e-5)


def test_a_student_hedged_with_plsr_maps_the_mean_in_log_space(
    tiny_run, tile, mapped, tmp_path):
  """Validation chose the student over PLSR, hedged with it: the map is the
  mean of their log1p EC, and the files name both."""
  config, workdir = tiny_run
  run, fitted, x, y = _run_with_training_arrays(workdir, tile, tmp_path)
  choice = model_choice.Choice({}, "student", {"student": 1.0}, "PLSR")
  final_model.save(run / final_model.FOLDER, choice, "log1p", 0,
                   {"PLSR": (x, y)},
                   dict(fitted, model=final_model.describe(choice)))
  report = mapping.map_scene(config, run, tile, tmp_path / "maps")
  assert report["model"]["name"] == "student and PLSR, their mean"
  block = _block(tile)
  _, student_maps = mapped
  student = _read(student_maps / "tile_ec.tif")[0][block.rows, block.cols]
  log_ec = (np.log1p(student) + baselines.plsr(x, y)(block.x)) / 2
  ec = _read(tmp_path / "maps" / "tile_ec.tif")[0]
  np.testing.assert_allclose(ec[block.rows, block.cols],
                             np.maximum(np.expm1(log_ec), 0), rtol=1e-5,
                             atol=1e-5)
