"""Scene readers on the real EnMAP tiles and Hyperion cube, and on synthetic
ENVI, PRISMA and EMIT files written in their documented layouts."""
import logging
import pathlib

import affine
import h5py
import numpy as np
import pytest
import rasterio
import rasterio.warp

from data_prep import scenes
from data_prep.scenes import geotiff
from deepsalt_spectral import indices
from deepsalt_spectral import sensors

ENMAP_TILE = "enmap_potsdam/enmap_potsdam_tile_128_0.tif"
GAMSBERG = "gamsberg/cubus_gamsberg_subset"


# Synthetic files.
def _write_envi(folder: pathlib.Path, cube: np.ndarray, wavelength,
                interleave: str = "bsq", dtype: str = "<f4", offset: int = 0,
                extra: str = "", fwhm=True) -> pathlib.Path:
  """Writes cube [bands, lines, samples] as ENVI; returns the header path."""
  axes = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave]
  codes = {"f4": 4, "i2": 2, "u2": 12, "f8": 5}
  data = folder / "cube.img"
  data.write_bytes(b"\0" * offset +
                   np.ascontiguousarray(cube.transpose(axes)).astype(
                       dtype).tobytes())
  lines = [
      "ENVI", f"samples = {cube.shape[2]}", f"lines = {cube.shape[1]}",
      f"bands = {cube.shape[0]}", f"header offset = {offset}",
      f"data type = {codes[dtype[1:]]}", f"interleave = {interleave}",
      f"byte order = {1 if dtype[0] == '>' else 0}",
      "wavelength units = Nanometers",
      "wavelength = {" + ", ".join(f"{w:.2f}" for w in wavelength) + "}"]
  if fwhm:
    lines.append("fwhm = {" + ", ".join("10.0" for _ in wavelength) + "}")
  header = folder / "cube.hdr"
  header.write_text("\n".join(lines) + "\n" + extra)
  return header


def _soil_cube(n_bands=40, rows=4, cols=5, seed=0):
  """Reflectance fractions rising with wavelength, 500..2400 nm."""
  wavelength = np.linspace(500.0, 2400.0, n_bands)
  rng = np.random.default_rng(seed)
  base = 0.1 + 0.3 * (wavelength - 500) / 1900
  cube = base[:, None, None] + rng.uniform(0, 0.05, (1, rows, cols))
  return cube.astype(np.float32), wavelength


def _write_prisma(path, vnir_dn, swir_dn, vnir_cw, swir_cw, vnir_flags):
  with h5py.File(path, "w") as f:
    fields = f.create_group("HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields")
    fields["VNIR_Cube"] = vnir_dn
    fields["SWIR_Cube"] = swir_dn
    f.attrs["List_Cw_Vnir"] = np.asarray(vnir_cw, np.float32)
    f.attrs["List_Fwhm_Vnir"] = np.full(len(vnir_cw), 9.0, np.float32)
    f.attrs["List_Cw_Vnir_Flags"] = np.asarray(vnir_flags, np.int8)
    f.attrs["List_Cw_Swir"] = np.asarray(swir_cw, np.float32)
    f.attrs["List_Fwhm_Swir"] = np.full(len(swir_cw), 11.0, np.float32)
    f.attrs["List_Cw_Swir_Flags"] = np.ones(len(swir_cw), np.int8)
    f.attrs["L2ScaleVnirMin"], f.attrs["L2ScaleVnirMax"] = 0.0, 0.8
    f.attrs["L2ScaleSwirMin"], f.attrs["L2ScaleSwirMax"] = 0.0, 0.6
    f.attrs["Epsg_Code"] = np.int32(32633)
    f.attrs["Product_ULcorner_easting"] = 400000.0
    f.attrs["Product_ULcorner_northing"] = 5800000.0


def _write_emit(path, swath, wavelength, good, glt_x, glt_y, geotransform):
  with h5py.File(path, "w") as f:
    data = f.create_dataset("reflectance", data=swath)
    data.attrs["_FillValue"] = np.float32(-9999.0)
    params = f.create_group("sensor_band_parameters")
    params["wavelengths"] = wavelength.astype(np.float32)
    params["fwhm"] = np.full(wavelength.size, 8.5, np.float32)
    params["good_wavelengths"] = good.astype(np.uint8)
    location = f.create_group("location")
    location["glt_x"] = glt_x.astype(np.int32)
    location["glt_y"] = glt_y.astype(np.int32)
    location["lat"] = np.zeros(swath.shape[:2])
    location["lon"] = np.zeros(swath.shape[:2])
    f.attrs["geotransform"] = np.asarray(geotransform, np.float64)
    f.attrs["spatial_ref"] = rasterio.crs.CRS.from_epsg(4326).to_wkt()


# Real EnMAP L2A tiles.
def test_enmap_tiles_match_band_table_and_file_values(reference_data):
  table = np.loadtxt(reference_data / "sensors/enmap.csv", delimiter=",",
                     skiprows=1)
  order = np.argsort(table[:, 0], kind="stable")
  enmap = sensors.builtin("enmap")
  for path in sorted((reference_data / "enmap_potsdam").glob("*.tif")):
    scene = scenes.read_scene(path)
    assert scene.reflectance.shape == (224, 32, 32)
    np.testing.assert_allclose(scene.wavelength, table[order, 0], atol=0.01)
    np.testing.assert_allclose(scene.fwhm, table[order, 1], atol=0.01)
    np.testing.assert_allclose(scene.wavelength, enmap.wavelength, atol=1.5)
    with rasterio.open(path) as ds:
      raw = ds.read()
      tag_order = np.argsort([float(ds.tags(b)["wavelength"])
                              for b in range(1, 225)], kind="stable")
      transform, crs = ds.transform, ds.crs
    raw = raw[tag_order]
    empty = np.all(raw == -32768, axis=(1, 2))
    assert empty.sum() == 6 and np.all(scene.bad[empty])
    assert np.array_equal(scene.bad, scene.sensor.bad)
    assert scene.transform == transform and scene.crs == crs
    assert not scene.nodata.any()
    good = scene.reflectance[scene.good][:, ~scene.nodata]
    assert good.min() >= 0.0 and good.max() <= 1.5
    np.testing.assert_allclose(
        scene.reflectance[scene.good], raw[scene.good] * 1e-4, rtol=1e-6)


def test_extract_pixels_round_trip_on_map_and_lonlat(reference_data):
  scene = scenes.read_scene(reference_data / ENMAP_TILE)
  rows, cols = np.array([0, 5, 31]), np.array([0, 17, 31])
  xs, ys = scene.transform @ (cols + 0.5, rows + 0.5)
  spectra = scenes.extract_pixels(scene, xs, ys, coords="map")
  np.testing.assert_array_equal(spectra, scene.reflectance[:, rows, cols].T)
  lon, lat = rasterio.warp.transform(scene.crs, "EPSG:4326", xs, ys)
  np.testing.assert_allclose(
      scenes.extract_pixels(scene, lon, lat), spectra, rtol=0, atol=0)
  mean3 = scenes.extract_pixels(scene, xs[1:2], ys[1:2], coords="map",
                                window=3)
  np.testing.assert_allclose(
      mean3[0], scene.reflectance[:, 4:7, 16:19].mean(axis=(1, 2)), rtol=1e-6)
  # A corner window only averages the pixels inside the scene.
  corner = scenes.extract_pixels(scene, xs[:1], ys[:1], coords="map",
                                 window=3)
  np.testing.assert_allclose(
      corner[0], scene.reflectance[:, :2, :2].mean(axis=(1, 2)), rtol=1e-6)


def test_extract_pixels_outside_raises_or_gives_nan(reference_data):
  scene = scenes.read_scene(reference_data / ENMAP_TILE)
  x0, y0 = scene.transform @ (0.5, 0.5)
  xs, ys = [x0, x0 - 1000.0, x0], [y0, y0, y0 + 45.0]
  with pytest.raises(ValueError, match=r"2 of 3 points.*point 1.*point 2"):
    scenes.extract_pixels(scene, xs, ys, coords="map")
  out = scenes.extract_pixels(scene, xs, ys, coords="map", outside="nan")
  assert np.isfinite(out[0, scene.good]).all()
  assert np.isnan(out[1:]).all()


def test_geotiff_band_table_from_enmap_metadata_xml(tmp_path, caplog):
  # Detector order as DLR delivers it: VNIR to 950 nm, then SWIR from 900.
  wavelength = np.array([500.0, 700.0, 950.0, 900.0, 1600.0, 2200.0])
  rng = np.random.default_rng(3)
  raw = rng.integers(500, 5000, (6, 3, 4)).astype(np.int16)
  raw[:, 2, 3] = -32768
  raw[2] = -32768  # The 950 nm band has no data at all.
  path = tmp_path / "ENMAP01-____L2A-DT01-SPECTRAL_IMAGE.TIF"
  with rasterio.open(path, "w", driver="GTiff", width=4, height=3, count=6,
                     dtype="int16", nodata=-32768, crs="EPSG:32633",
                     transform=affine.Affine(30, 0, 1e5, 0, -30, 5e6)) as ds:
    ds.write(raw)
  bands = "".join(
      f'<bandID number="{i + 1}"><wavelengthCenterOfBand>{w}'
      f"</wavelengthCenterOfBand><FWHMOfBand>{8 + i}</FWHMOfBand></bandID>"
      for i, w in enumerate(wavelength))
  (tmp_path / "ENMAP01-____L2A-DT01-METADATA.XML").write_text(
      f"<level_X><specific><bandCharacterisation>{bands}"
      "</bandCharacterisation></specific></level_X>")
  with caplog.at_level(logging.WARNING):
    scene = scenes.read_scene(path)
  assert "x 10000" in caplog.text
  order = np.argsort(wavelength)
  np.testing.assert_array_equal(scene.wavelength, wavelength[order])
  np.testing.assert_array_equal(scene.fwhm, (8.0 + np.arange(6))[order])
  assert scene.nodata[2, 3] and scene.nodata.sum() == 1
  assert np.array_equal(scene.bad, [False, False, False, True, False, False])
  assert np.isnan(scene.reflectance[3]).all()
  good = scene.good
  np.testing.assert_allclose(scene.reflectance[good, :2],
                             raw[order][good, :2] * 1e-4, rtol=1e-6)


# Real Hyperion cube (ENVI).
def test_gamsberg_envi_cube(reference_data, caplog):
  path = reference_data / GAMSBERG
  with caplog.at_level(logging.WARNING):
    scene = scenes.read_scene(path.with_suffix(".hdr"))
  assert "x 10000" in caplog.text
  assert scene.reflectance.shape == (189, 25, 10)
  assert scene.wavelength[0] == pytest.approx(426.82, abs=1e-3)
  assert scene.wavelength[-1] == pytest.approx(2324.91, abs=1e-3)
  assert scene.fwhm[0] == pytest.approx(11.3871)
  raw = np.fromfile(path, "<f4").reshape(189, 25, 10)
  np.testing.assert_allclose(scene.reflectance, raw * 1e-4, rtol=1e-6)
  assert np.array_equal(scene.bad, sensors.in_bad_window(scene.wavelength))
  assert scene.crs is None and scene.transform is None
  good = scene.reflectance[scene.good][:, ~scene.nodata]
  assert 0.0 <= good.min() and good.max() <= 1.0
  # The data path finds its header too; scale overrides the detection.
  halved = scenes.read_scene(path, scale=0.5e-4)
  np.testing.assert_allclose(halved.reflectance, scene.reflectance / 2,
                             rtol=1e-6)


def test_gamsberg_wavelengths_from_band_names(reference_data, tmp_path):
  source = reference_data / GAMSBERG
  text = source.with_suffix(".hdr").read_text()
  start = text.index("wavelength = {")
  header = text[:start] + text[text.index("}", start) + 1:]
  assert "wavelength = {" not in header
  (tmp_path / "cube.hdr").write_text(header)
  (tmp_path / "cube").symlink_to(source)
  scene = scenes.read_envi(tmp_path / "cube.hdr")
  reference = scenes.read_envi(source.with_suffix(".hdr"))
  np.testing.assert_allclose(scene.wavelength, reference.wavelength)


# Synthetic ENVI.
@pytest.mark.parametrize("interleave,dtype", [("bsq", "<f4"), ("bil", ">i2"),
                                              ("bip", "<u2")])
def test_envi_layouts_scaling_and_georeference(tmp_path, interleave, dtype):
  cube, wavelength = _soil_cube()
  stored = np.round(cube * 10000).astype(dtype)
  stored[:, 0, 0] = 0  # A nodata pixel, declared below.
  extra = ("reflectance scale factor = 10000\ndata ignore value = 0\n"
           "bbl = {" + ", ".join("0" if i == 3 else "1"
                                 for i in range(len(wavelength))) + "}\n"
           "map info = {UTM, 1.000, 1.000, 366015.0, 5809965.0, 30.0, 30.0, "
           "33, North, WGS-84, units=Meters}\n")
  header = _write_envi(tmp_path, stored, wavelength, interleave, dtype,
                       offset=16, extra=extra)
  scene = scenes.read_scene(header)
  expected = stored.astype(np.float32) * np.float32(1e-4)
  assert scene.nodata[0, 0] and scene.nodata.sum() == 1
  assert np.isnan(scene.reflectance[:, 0, 0]).all()
  np.testing.assert_allclose(scene.reflectance[:, 1:], expected[:, 1:],
                             rtol=1e-6)
  assert scene.bad[3] and scene.bad.sum() == 1 + np.sum(
      sensors.in_bad_window(wavelength))
  assert scene.transform == affine.Affine(30, 0, 366015, 0, -30, 5809965)
  assert scene.crs == "EPSG:32633"


def test_envi_micrometres_and_missing_fwhm(tmp_path, caplog):
  cube, wavelength = _soil_cube()
  header = _write_envi(tmp_path, cube, wavelength / 1000.0, fwhm=False)
  header.write_text(header.read_text().replace(
      "wavelength units = Nanometers", "wavelength units = Micrometers")
      .replace("{" + ", ".join(f"{w:.2f}" for w in wavelength / 1000.0),
               "{" + ", ".join(f"{w:.4f}" for w in wavelength / 1000.0)))
  with caplog.at_level(logging.WARNING):
    scene = scenes.read_envi(header)
  np.testing.assert_allclose(scene.wavelength, wavelength, atol=0.05)
  assert "FWHM" in caplog.text
  np.testing.assert_allclose(scene.fwhm, np.gradient(scene.wavelength))


def test_envi_units_that_contradict_the_values_are_named(tmp_path):
  """A header that says Nanometers over micrometre values."""
  cube, wavelength = _soil_cube()
  header = _write_envi(tmp_path, cube, wavelength / 1000.0)
  with pytest.raises(ValueError, match="units say 'Nanometers' but the "
                     "wavelengths end at 2.4, which looks like micrometres"):
    scenes.read_scene(header)


def test_envi_percent_detected_with_warning(tmp_path, caplog):
  cube, wavelength = _soil_cube()
  header = _write_envi(tmp_path, cube * 100, wavelength)
  with caplog.at_level(logging.WARNING):
    scene = scenes.read_envi(header)
  assert "percent" in caplog.text
  np.testing.assert_allclose(scene.reflectance, cube, rtol=1e-5)


def test_scene_sorts_detector_ordered_bands(tmp_path):
  cube, wavelength = _soil_cube()
  order = np.r_[20:40, 0:20]  # SWIR detector first, as some products do.
  scene = scenes.read_envi(_write_envi(tmp_path, cube[order],
                                       wavelength[order]))
  np.testing.assert_allclose(scene.wavelength, np.round(wavelength, 2))
  np.testing.assert_allclose(scene.reflectance, cube, rtol=1e-6)


# Bad input.
def test_nan_pixels_are_masked_not_fatal_unless_declared_nodata(
    tmp_path, caplog):
  cube, wavelength = _soil_cube()
  cube[:, 1, 2] = np.nan
  cube[5, 0, 1] = np.inf  # One band of another pixel.
  header = _write_envi(tmp_path, cube, wavelength)
  scene = scenes.read_envi(header)
  expected = np.zeros(scene.shape, bool)
  expected[1, 2] = expected[0, 1] = True
  np.testing.assert_array_equal(scene.non_finite, expected)
  np.testing.assert_array_equal(scene.nodata, expected)
  assert "2 pixels with NaN/Inf" in caplog.text
  masks = indices.soil_masks(scene, indices.NDVI_ONLY)  # Bands from 500 nm.
  np.testing.assert_array_equal(masks["non_finite"], expected)
  assert not (masks["nodata"] | masks["soil"])[expected].any()
  scene = scenes.read_envi(header, nodata=float("nan"))
  assert scene.nodata[1, 2] and not scene.non_finite[1, 2]


def test_x10000_float_scene_with_a_nan_pixel_is_detected_and_masked(
    reference_data, tmp_path, caplog):
  """Float reflectance x 10000 without scale tags and one NaN pixel: the
  NaN is left out of the scale detection, then masked and counted."""
  with rasterio.open(reference_data / ENMAP_TILE) as src:
    raw = src.read().astype(np.float32)
    profile = dict(src.profile, dtype="float32")
    tags = [src.tags(b) for b in range(1, src.count + 1)]
  raw[:, 4, 5] = np.nan
  path = tmp_path / "x10000.tif"
  with rasterio.open(path, "w", **profile) as dst:  # No SCALE tags.
    dst.write(raw)
    for b, band_tags in enumerate(tags, start=1):
      dst.update_tags(b, **band_tags)
  expected = scenes.read_scene(reference_data / ENMAP_TILE)
  with caplog.at_level(logging.WARNING):
    scene = scenes.read_scene(path)
  assert "looks like reflectance x 10000" in caplog.text
  assert "1 pixels with NaN/Inf" in caplog.text
  assert scene.non_finite[4, 5] and scene.non_finite.sum() == 1
  assert scene.nodata[4, 5]
  valid = ~scene.nodata
  np.testing.assert_allclose(scene.reflectance[:, valid],
                             expected.reflectance[:, valid], rtol=1e-6)
  with geotiff.GeoTiffRows(path) as rows:  # How the mapper reads it.
    block = rows.read(0, 8)
  assert block.non_finite[4, 5] and block.non_finite.sum() == 1
  np.testing.assert_allclose(block.reflectance[:, ~block.nodata],
                             expected.reflectance[:, :8][:, ~block.nodata],
                             rtol=1e-6)


def test_pixel_missing_some_good_bands_becomes_nodata(tmp_path, caplog):
  cube, wavelength = _soil_cube()
  cube[7, 2, 3] = -1.0
  header = _write_envi(tmp_path, cube, wavelength,
                       extra="data ignore value = -1\n")
  with caplog.at_level(logging.WARNING):
    scene = scenes.read_envi(header)
  assert "1 pixels lack data in some good bands" in caplog.text
  assert scene.nodata[2, 3] and scene.nodata.sum() == 1
  assert not scene.bad[7]


def test_negative_reflectance_is_refused(tmp_path):
  cube, wavelength = _soil_cube()
  header = _write_envi(tmp_path, cube - 0.3, wavelength)
  with pytest.raises(ValueError, match="below -0.01"):
    scenes.read_envi(header)


def test_duplicate_wavelengths_are_refused(tmp_path):
  cube, wavelength = _soil_cube()
  wavelength[5] = wavelength[4]
  with pytest.raises(ValueError, match="strictly increasing"):
    scenes.read_envi(_write_envi(tmp_path, cube, wavelength))


def test_all_nodata_scene_is_refused(tmp_path):
  cube, wavelength = _soil_cube()
  header = _write_envi(tmp_path, np.full_like(cube, -1.0), wavelength,
                       extra="data ignore value = -1\n")
  with pytest.raises(ValueError, match="every pixel is nodata"):
    scenes.read_envi(header)


def test_scene_constructor_refuses_unsorted_bands():
  cube, wavelength = _soil_cube()
  with pytest.raises(ValueError, match="strictly increasing"):
    scenes.Scene(reflectance=cube, wavelength=wavelength[::-1],
                 fwhm=np.full(40, 10.0), bad=np.zeros(40, bool),
                 nodata=np.zeros(cube.shape[1:], bool))


def test_missing_wavelengths_and_unknown_format(tmp_path):
  cube, wavelength = _soil_cube()
  header = _write_envi(tmp_path, cube, wavelength)
  text = header.read_text()
  header.write_text(text[:text.index("wavelength =")])
  with pytest.raises(ValueError, match="no 'wavelength' key"):
    scenes.read_envi(header)
  other = tmp_path / "scene.xyz"
  other.write_bytes(b"not a scene")
  with pytest.raises(ValueError, match="Unknown scene format"):
    scenes.read_scene(other)


# Synthetic PRISMA L2D and EMIT L2A.
def test_prisma_l2d_round_trip(tmp_path):
  rows, cols = 3, 4
  vnir_cw = [900.0, 700.0, 0.0, 500.0]  # Long to short; one band not given.
  swir_cw = [2200.0, 1600.0, 1000.0]
  rng = np.random.default_rng(1)
  vnir = rng.integers(5000, 60000, (rows, 4, cols)).astype(np.uint16)
  swir = rng.integers(5000, 60000, (rows, 3, cols)).astype(np.uint16)
  vnir[0, :, 0] = swir[0, :, 0] = 0  # A pixel outside the swath.
  path = tmp_path / "PRS_L2D_STD_test.he5"
  _write_prisma(path, vnir, swir, vnir_cw, swir_cw, [1, 1, 0, 1])
  scene = scenes.read_scene(path)
  np.testing.assert_allclose(scene.wavelength,
                             [500, 700, 900, 1000, 1600, 2200])
  np.testing.assert_allclose(scene.fwhm, [9, 9, 9, 11, 11, 11])
  expected = np.concatenate([vnir[:, [3, 1, 0]] * (0.8 / 65535),
                             swir[:, ::-1] * (0.6 / 65535)], axis=1)
  expected = expected.transpose(1, 0, 2)
  assert scene.nodata[0, 0] and scene.nodata.sum() == 1
  np.testing.assert_allclose(scene.reflectance[:, 1:], expected[:, 1:],
                             rtol=1e-5)
  assert scene.transform == affine.Affine(30, 0, 400000, 0, -30, 5800000)
  assert scene.crs == "EPSG:32633"


def test_emit_l2a_orthorectified_and_swath(tmp_path):
  wavelength = np.array([450.0, 660.0, 870.0, 1400.0, 2200.0])
  good = np.array([1, 1, 1, 0, 1])
  rng = np.random.default_rng(2)
  swath = rng.uniform(0.05, 0.5, (3, 2, 5)).astype(np.float32)
  swath[2, 1] = -9999.0
  swath[:, :, 3] = -0.01  # EMIT's value at bad wavelengths.
  # 2 x 3 north-up grid; cell (0, 2) has no swath pixel (0 = none).
  glt_x = np.array([[1, 2, 0], [1, 2, 2]])
  glt_y = np.array([[1, 1, 0], [2, 2, 3]])
  geotransform = (20.0, 0.0005, 0.0, -30.0, 0.0, -0.0005)
  path = tmp_path / "EMIT_L2A_RFL_001_test.nc"
  _write_emit(path, swath, wavelength, good, glt_x, glt_y, geotransform)
  scene = scenes.read_scene(path)
  assert scene.reflectance.shape == (5, 2, 3)
  assert np.array_equal(scene.bad, good == 0)
  np.testing.assert_array_equal(scene.reflectance[:, 0, 1], swath[0, 1])
  np.testing.assert_array_equal(scene.reflectance[:, 1, 0], swath[1, 0])
  assert np.array_equal(scene.nodata, [[False, False, True],
                                       [False, False, True]])
  assert scene.transform == affine.Affine.from_gdal(*geotransform)
  # Pixel (row 1, col 1) holds swath (1, 1); its lon/lat centre finds it.
  lon, lat = scene.transform @ (1.5, 1.5)
  np.testing.assert_array_equal(
      scenes.extract_pixels(scene, [lon], [lat])[0], swath[1, 1])
  raw = scenes.read_emit(path, ortho=False)
  assert raw.reflectance.shape == (5, 3, 2) and raw.transform is None
  assert raw.nodata[2, 1] and raw.nodata.sum() == 1


# Bare-soil pixels.
def _mixed_scene():
  """4 x 4 scene: soil, vegetation (row 1), water (row 2), nodata (3, 3)."""
  wavelength = np.arange(420.0, 2420.0, 20.0)
  soil = 0.1 + 0.3 * (wavelength - 420) / 2000
  veg = np.where(wavelength < 700, 0.05, 0.45)
  water = np.where(wavelength < 600, 0.08, 0.02)
  cube = np.repeat(soil[:, None, None], 4, 1).repeat(4, 2).astype(np.float32)
  cube[:, 1, :] = veg[:, None]
  cube[:, 2, :] = water[:, None]
  nodata = np.zeros((4, 4), bool)
  nodata[3, 3] = True
  cube[:, 3, 3] = np.nan
  return scenes.Scene(reflectance=cube, wavelength=wavelength,
                      fwhm=np.full(wavelength.size, 20.0),
                      bad=sensors.in_bad_window(wavelength), nodata=nodata)


def test_soil_pixels_and_their_seeded_subset():
  scene = _mixed_scene()
  assert indices.ndvi(scene)[1, 0] > 0.7
  mask = scenes.soil_pixels(scene, indices.NDVI_ONLY)
  assert mask[0].all() and not mask[1].any() and mask[3, :3].all()
  assert mask[2].all() and not mask[3, 3]  # Water passes NDVI alone.
  water = indices.MaskThresholds(ndrbi_min=-0.2)
  mask = scenes.soil_pixels(scene, water)
  assert not mask[2].any() and mask.sum() == 7
  np.testing.assert_array_equal(scenes.soil_pixels(scene), mask)  # Default.
  every = np.nonzero(mask)
  for n in (None, 7, 100):
    np.testing.assert_array_equal(scenes.seeded_subset(mask, n, 5), every)
  rows, cols = scenes.seeded_subset(mask, 3, seed=5)
  flat = rows * mask.shape[1] + cols
  assert flat.size == 3 and np.all(np.diff(flat) > 0)  # Raster order.
  assert mask[rows, cols].all()
  np.testing.assert_array_equal(scenes.seeded_subset(mask, 3, 5), (rows, cols))
  draws = {tuple(scenes.seeded_subset(mask, 3, seed)[1]) for seed in range(20)}
  assert len(draws) > 1  # The seed draws.
  assert scenes.seeded_subset(np.zeros_like(mask), 3, 5)[0].size == 0


def test_enmap_soil_pixels(reference_data):
  scene = scenes.read_scene(reference_data / ENMAP_TILE)
  mask = scenes.soil_pixels(scene)
  assert mask.shape == scene.reflectance.shape[1:]
  assert 0 < mask.sum() < mask.size
  assert np.all(indices.ndvi(scene)[mask] <= 0.3)


def _cube(spectra, wavelength):
  """A 1-row Scene of spectra [n, bands]."""
  cube = np.asarray(spectra, np.float32).T[:, None, :]
  return scenes.Scene(reflectance=cube, wavelength=wavelength,
                      fwhm=np.full(wavelength.size, 10.0),
                      bad=sensors.in_bad_window(wavelength),
                      nodata=np.zeros((1, cube.shape[2]), bool))


def test_default_masks_known_answers():
  """Each default test flags its case and no other; a bright salt crust
  (white but redder than blue, bright at 2.2 um) is soil."""
  w = np.arange(420.0, 2430.0, 10.0)
  ramp = lambda lo, hi: lo + (hi - lo) * (w - w[0]) / (w[-1] - w[0])
  spectra = {
      "soil": ramp(0.1, 0.4),
      "salt crust": np.where(w < 500, 0.66, 0.72),
      "cloud": np.where(w < 1300, 0.6, 0.2),  # White; water absorbs SWIR.
      "haze": ramp(0.1, 0.4) + np.where(w < 600, 0.15, 0.0),  # Blue > red.
      "flat 3.0": np.full(w.size, 3.0),
      "negative band": np.where(np.abs(w - 1200) < 5, -0.2, ramp(0.1, 0.4)),
      "water": np.where(w < 600, 0.06, 0.02),
      "dry vegetation": np.where(np.abs(w - 2100) < 40, 0.25, ramp(0.2, 0.4)),
      "green vegetation": np.where(w < 700, 0.05, 0.45),
  }
  masks = indices.soil_masks(_cube(list(spectra.values()), w),
                             indices.MaskThresholds())
  flagged = {name: [n for n in indices.MASK_NAMES if masks[n][0, i]]
             for i, name in enumerate(spectra)}
  assert flagged == {
      "soil": ["soil"], "salt crust": ["soil"], "cloud": ["cloud_haze"],
      "haze": ["cloud_haze", "water"], "flat 3.0": ["out_of_range",
                                                    "cloud_haze"],
      "negative band": ["out_of_range"], "water": ["water"],
      "dry vegetation": ["dry_vegetation"],
      "green vegetation": ["green_vegetation"]}


def test_default_masks_keep_the_simulated_training_pixels(prepared_data_dir):
  """The masks added to NDVI must not refuse the soils the student learned:
  >= 99 % of the simulated satellite pixels that pass NDVI pass them all,
  every saline one (EC > 8 dS/m) included."""
  from configs import distill
  from deepsalt_jax import samples
  config = distill.get_config()
  config.data.data_dir = str(prepared_data_dir)
  data = samples.load_data(config.data)
  enmap = sensors.builtin("enmap")
  scene = _cube(data.satellite, enmap.good_wavelength)
  soil = indices.soil_masks(scene, indices.MaskThresholds())["soil"][0]
  bare = indices.soil_masks(scene, indices.NDVI_ONLY)["soil"][0]
  assert soil[bare].mean() >= 0.99 and soil[bare & (data.target > 8)].all()
  assert not (soil & ~bare).any()
