"""Tests for deepsalt_spectral.sensors: built-ins, loaders, validation."""
import numpy as np
import pytest

from deepsalt_spectral import resampling
from deepsalt_spectral import sensors

# Measured max |built-in - published| after sorting both tables by centre:
# centre enmap 0.70, prisma 1.13 (the published PRISMA table itself jitters
# by +-0.5 nm band to band), emit 0.07 nm; FWHM enmap 0.59 (two detectors'
# bands within 0.2 nm of each other in the 900-1000 nm overlap may swap
# places), prisma 0.83, emit 0.06 nm.
TOLERANCE_NM = {  # sensor: (centre, fwhm)
    "enmap": (0.75, 0.6),
    "prisma": (1.2, 0.9),
    "emit": (0.1, 0.1),
}


@pytest.mark.parametrize("name", sensors.SENSORS)
def test_builtin_matches_published_table(name, reference_data):
  table = sensors.from_csv(reference_data / "sensors" / f"{name}.csv",
                           sort=True)
  sensor = sensors.builtin(name)
  assert sensor.n_bands == table.n_bands == {"enmap": 224, "prisma": 234,
                                             "emit": 285}[name]
  centre_tol, fwhm_tol = TOLERANCE_NM[name]
  assert np.max(np.abs(sensor.wavelength - table.wavelength)) < centre_tol
  assert np.max(np.abs(sensor.fwhm - table.fwhm)) < fwhm_tol
  np.testing.assert_array_equal(sensor.bad, table.bad)


def test_bad_windows_cover_the_bad_bands_of_real_enmap_l2a(reference_data):
  """Every band DLR's EnMAP L2A product flags bad (its bbl, read from real
  tiles) is bad in the built-in EnMAP table too."""
  rasterio = pytest.importorskip("rasterio")
  enmap = sensors.builtin("enmap")
  for tile in sorted((reference_data / "enmap_potsdam").glob("*.tif"))[:3]:
    with rasterio.open(tile) as dataset:
      tags = [dataset.tags(band) for band in range(1, dataset.count + 1)]
    flagged = np.array([float(t["wavelength"]) for t in tags
                        if float(t["bbl"]) == 0])
    assert flagged.size >= 6  # 1331-1391 nm in these tiles.
    nearest = np.abs(enmap.wavelength[:, None] - flagged[None]).argmin(0)
    assert np.all(np.abs(enmap.wavelength[nearest] - flagged) < 1.0)
    assert enmap.bad[nearest].all(), flagged[~enmap.bad[nearest]]
    assert sensors.in_bad_window(flagged).all()


@pytest.mark.parametrize("name", sensors.SENSORS)
def test_builtin_bad_bands_are_the_bad_windows(name):
  sensor = sensors.builtin(name)
  assert np.all(np.diff(sensor.wavelength) > 0)
  np.testing.assert_array_equal(sensor.bad,
                                sensors.in_bad_window(sensor.wavelength))
  np.testing.assert_array_equal(sensor.good_fwhm, sensor.fwhm[sensor.good])
  assert sensor.good.dtype.kind == "i"
  # Every good band is mostly supported by the lab grid, so simulated
  # satellite spectra never rest on a sliver of a band's response.
  coverage = resampling.band_coverage(resampling.lab_wavelengths(),
                                      sensor.good_wavelength, sensor.good_fwhm)
  assert coverage.min() > 0.6


def test_builtin_known_counts_and_lookup():
  assert sensors.builtin("enmap").good.size == 215
  emit = sensors.builtin(" EMIT ")
  assert emit is sensors.builtin("emit")
  np.testing.assert_array_equal(emit.bad[:4], [True, True, True, False])
  with pytest.raises(ValueError, match="Unknown sensor 'desis'"):
    sensors.builtin("desis")


def test_sensor_arrays_are_read_only():
  sensor = sensors.builtin("prisma")
  with pytest.raises(ValueError, match="read-only"):
    sensor.wavelength[0] = 0.0


def test_from_metadata_combines_bbl_with_bad_windows():
  sensor = sensors.from_metadata(
      ["500.0", "1000.0", "1400.0", "2000.0"], ["10", "10", "10", "10"],
      bbl=["1", "0", "1", "1"], units="Nanometers")
  np.testing.assert_array_equal(sensor.bad, [False, True, True, False])
  np.testing.assert_array_equal(sensor.good, [0, 3])
  assert sensor.name == "scene"


def test_from_metadata_reads_real_enmap_scene(reference_data):
  rasterio = pytest.importorskip("rasterio")
  tile = sorted((reference_data / "enmap_potsdam").glob("*.tif"))[0]
  with rasterio.open(tile) as dataset:
    tags = [dataset.tags(band) for band in range(1, dataset.count + 1)]
  wavelength = np.array([float(t["wavelength"]) for t in tags])
  fwhm = [t["fwhm"] for t in tags]
  bbl = [t["bbl"] for t in tags]
  units = tags[0]["wavelength_units"]
  # EnMAP L2A stores bands in detector order: VNIR up to 993 nm, then SWIR
  # from 902 nm. Readers reorder the tags and the image's band axis.
  with pytest.raises(ValueError, match="unsorted band centres"):
    sensors.from_metadata(wavelength, fwhm, bbl=bbl, units=units)
  order = np.argsort(wavelength, kind="stable")
  sensor = sensors.from_metadata(
      wavelength[order], np.take(fwhm, order), bbl=np.take(bbl, order),
      units=units, name="enmap_potsdam")
  table = sensors.from_csv(reference_data / "sensors" / "enmap.csv")
  np.testing.assert_array_equal(sensor.wavelength, table.wavelength)
  np.testing.assert_array_equal(sensor.fwhm, table.fwhm)
  # DLR flags 1331-1391 nm; BAD_WINDOWS adds 1939-1958 nm.
  np.testing.assert_array_equal(
      sensor.wavelength[sensor.bad],
      [1331.22, 1343.18, 1355.13, 1367.06, 1378.96, 1390.84, 1939.44,
       1948.98, 1958.49])


def test_micrometres_are_converted(tmp_path):
  path = tmp_path / "um.csv"
  path.write_text("wavelength,fwhm\n0.45,0.01\n0.55,0.012\n2.2,0.009\n")
  sensor = sensors.from_csv(path)
  assert sensor.name == "um"
  np.testing.assert_allclose(sensor.wavelength, [450.0, 550.0, 2200.0])
  np.testing.assert_allclose(sensor.fwhm, [10.0, 12.0, 9.0])
  from_tags = sensors.from_metadata([0.45, 0.55], [0.01, 0.01],
                                    units="micrometers")
  np.testing.assert_allclose(from_tags.wavelength, [450.0, 550.0])
  with pytest.raises(ValueError, match="units='um'"):
    sensors.from_metadata([0.45, 0.55], [0.01, 0.01], units="nm")
  with pytest.raises(ValueError, match="micrometres"):
    sensors.Sensor("x", np.array([0.45, 0.55]), np.ones(2), np.zeros(2))
  with pytest.raises(ValueError, match="unknown wavelength units"):
    sensors.from_metadata([450.0], [10.0], units="cm-1")


def test_invalid_tables_are_rejected(tmp_path, reference_data):
  with pytest.raises(ValueError, match="unsorted band centres"):
    sensors.from_csv(reference_data / "sensors" / "prisma.csv")
  with pytest.raises(ValueError, match="duplicate band centres"):
    sensors.from_metadata([450.0, 450.0, 460.0], [5.0, 5.0, 5.0])
  with pytest.raises(ValueError, match="positive"):
    sensors.from_metadata([450.0, 460.0], [5.0, 0.0])
  with pytest.raises(ValueError, match="1 \\(good\\) or 0 \\(bad\\)"):
    sensors.from_metadata([450.0, 460.0], [5.0, 5.0], bbl=[1, 2])
  with pytest.raises(ValueError, match="bbl has 1 entries"):
    sensors.from_metadata([450.0, 460.0], [5.0, 5.0], bbl=[1])
  with pytest.raises(ValueError, match="same shape"):
    sensors.Sensor("x", np.array([450.0, 460.0]), np.ones(3), np.zeros(2))
  path = tmp_path / "bad_header.csv"
  path.write_text("lambda,width\n450,10\n460,10\n")
  with pytest.raises(ValueError, match="wavelength,fwhm"):
    sensors.from_csv(path)
