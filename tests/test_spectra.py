"""deepsalt_spectral: lab grid, SRF resampling, its inverse; preprocessing."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

import preprocessing
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors


def _enmap_table(reference_data):
  table = np.loadtxt(reference_data / "sensors" / "enmap.csv", delimiter=",",
                     skiprows=1)
  return table[:, 0], table[:, 1]


# Lab grid.


def test_lab_wavelengths_grid():
  grid = resampling.lab_wavelengths()
  assert grid.shape == (180,)
  assert grid[0] == 400.0 and grid[-1] == 2450.0
  assert set(np.diff(grid)) == {10.0, 110.0, 170.0}
  assert not np.any((grid >= 1360) & (grid <= 1450))
  assert not np.any((grid >= 1800) & (grid <= 1950))
  assert {1350.0, 1460.0, 1790.0, 1960.0} <= set(grid)


def test_lab_wavelengths_match_earthlib():
  config = pytest.importorskip("earthlib.config")
  with open(config.header_path) as f:
    header = f.read()
  values = re.search(r"wavelength\s*=\s*\{([^}]*)\}", header).group(1)
  micrometres = np.array([float(v) for v in values.split(",")])
  np.testing.assert_allclose(resampling.lab_wavelengths(), micrometres * 1000,
                             atol=1e-9)


# Resampling matrix.


def test_rows_sum_to_one_and_constant_is_preserved():
  enmap = sensors.builtin("enmap")
  src = resampling.lab_wavelengths()
  matrix = resampling.resampling_matrix(src, enmap.wavelength, enmap.fwhm)
  coverage = resampling.band_coverage(src, enmap.wavelength, enmap.fwhm)
  assert matrix.shape == (224, 180)
  assert np.all(matrix >= 0)
  supported = coverage > 0
  np.testing.assert_allclose(matrix[supported].sum(axis=1), 1.0, atol=1e-12)
  np.testing.assert_allclose(matrix[supported] @ np.full(180, 0.37), 0.37,
                             atol=1e-12)
  # Only bands inside the lab grid's water-vapour gaps lack all support.
  assert np.all(enmap.bad[~supported])


def test_linear_spectrum_gives_band_centre():
  # Linear interpolation keeps a line exact and a symmetric SRF averages it
  # to the value at the centre.
  src = resampling.lab_wavelengths()
  centre = np.array([450.3, 1001.7, 1650.0, 2201.25])
  fwhm = np.array([6.5, 10.0, 12.0, 8.0])
  matrix = resampling.resampling_matrix(src, centre, fwhm)
  np.testing.assert_allclose(resampling.band_coverage(src, centre, fwhm), 1.0)
  np.testing.assert_allclose(matrix @ (0.1 + 2e-4 * src), 0.1 + 2e-4 * centre,
                             rtol=1e-9)


def test_each_srf_is_the_gaussian_to_three_fwhm_on_the_whole_grid():
  # The SRFs are evaluated on a window around each band; the result is the
  # definition on the whole 1 nm grid to the bit (a dataset's satellite view
  # is built from these matrices).
  rng = np.random.default_rng(0)
  src = resampling.lab_wavelengths()
  centre = np.sort(rng.uniform(380.0, 2500.0, 60))
  fwhm = rng.uniform(3.0, 25.0, 60)
  srf, _, _ = resampling._srf_and_support(src, centre, fwhm)
  grid = np.arange(np.floor(np.min(centre - 3 * fwhm)),
                   np.ceil(np.max(centre + 3 * fwhm)) + 1.0)
  distance = grid[None, :] - centre[:, None]
  sigma = fwhm[:, None] / (2.0 * np.sqrt(2.0 * np.log(2.0)))
  expected = np.where(np.abs(distance) > 3 * fwhm[:, None], 0.0,
                      np.exp(-0.5 * (distance / sigma)**2))
  np.testing.assert_array_equal(srf, expected)


def test_band_in_gap_has_no_coverage():
  src = np.concatenate([np.arange(400.0, 1001.0, 10.0),
                        np.arange(1200.0, 1501.0, 10.0)])
  centre = np.array([800.0, 1100.0, 1000.0, 400.0])
  fwhm = np.full(4, 10.0)
  coverage = resampling.band_coverage(src, centre, fwhm)
  matrix = resampling.resampling_matrix(src, centre, fwhm)
  assert coverage[0] == pytest.approx(1.0)
  assert coverage[1] == 0.0
  np.testing.assert_array_equal(matrix[1], 0.0)
  # Bands centred on a gap edge or the source's first sample see about half
  # their response (the 1 nm sample at the centre counts as covered).
  assert coverage[2:] == pytest.approx([0.5, 0.5], abs=0.05)
  # Their renormalised rows use only samples on the supported side.
  assert np.all(matrix[2, src > 1000] == 0)
  np.testing.assert_allclose(matrix[2:].sum(axis=1), 1.0)


def test_real_enmap_bands_lose_the_lab_water_gaps(reference_data):
  centre, fwhm = _enmap_table(reference_data)
  coverage = resampling.band_coverage(resampling.lab_wavelengths(), centre,
                                      fwhm)
  # 1390.84 nm lies mid-gap (lab grid jumps 1350 -> 1460).
  assert coverage[centre == 1390.84] == pytest.approx(0.0, abs=1e-12)
  assert coverage[centre == 1048.19] == pytest.approx(1.0)


def test_gaussian_rows_match_tabulated_enmap_srfs(reference_data):
  """Gaussians from centre+FWHM vs DLR's tabulated 1 nm EnMAP responses.

  Each row is compared to the tabulated curve normalised to unit sum.
  Measured: max |difference| 0.0020 per 1 nm sample (1.3 % of the curve's
  peak), L1 distance at most 0.0164 and median 0.0073 per band.
  """
  centre, fwhm = _enmap_table(reference_data)
  with open(reference_data / "sensors" / "enmap_srf_1nm.geojson") as f:
    features = json.load(f)["features"]
  assert len(features) == centre.size
  src = np.arange(380.0, 2501.0)
  matrix = resampling.resampling_matrix(src, centre, fwhm)
  max_abs, l1 = [], []
  for row, feature in zip(matrix, features):
    profile = feature["properties"]["profiles"]
    tabulated = np.zeros_like(src)
    tabulated[np.searchsorted(src, profile["x"])] = profile["y"]
    tabulated /= tabulated.sum()
    max_abs.append(np.max(np.abs(row - tabulated)))
    l1.append(np.sum(np.abs(row - tabulated)))
  assert max(max_abs) < 0.0025
  assert max(l1) < 0.02
  assert np.median(l1) < 0.01


def test_resampling_matrix_rejects_bad_input():
  with pytest.raises(ValueError, match="strictly increasing"):
    resampling.resampling_matrix([400.0, 420.0, 410.0], [410.0], [10.0])
  with pytest.raises(ValueError, match="positive"):
    resampling.resampling_matrix([400.0, 410.0, 420.0], [410.0], [0.0])
  with pytest.raises(ValueError, match="same length"):
    resampling.resampling_matrix([400.0, 410.0, 420.0], [410.0, 415.0], [5.0])


def test_resample_numpy_and_jax_agree():
  emit = sensors.builtin("emit")
  src = resampling.lab_wavelengths()
  matrix = resampling.resampling_matrix(src, emit.wavelength, emit.fwhm)
  x = np.random.default_rng(0).uniform(0.05, 0.6, (2, 3, 180))
  x = x.astype(np.float32)
  expected = resampling.resample(x, matrix)
  got = jax.jit(resampling.resample)(jnp.asarray(x), matrix)
  assert isinstance(got, jax.Array) and got.shape == (2, 3, 285)
  assert expected.dtype == got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(expected, x.astype(np.float64) @ matrix.T,
                             rtol=1e-5)


# Preprocessing.


def test_snv_known_answer_numpy_and_jax():
  x = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [10.0, 20.0, 30.0, 40.0, 50.0]])
  expected = np.array([-2.0, -1.0, 0.0, 1.0, 2.0]) / np.sqrt(2.5)
  np.testing.assert_allclose(preprocessing.snv(x), [expected, expected])
  np.testing.assert_allclose(preprocessing.snv(jnp.asarray(x, jnp.float32)),
                             [expected, expected], rtol=1e-6)


def test_savgol_derivative_of_quadratic_is_exact():
  # A quadratic is fitted exactly, edges (mode 'interp') included.
  t = np.arange(30.0)
  x = 3.0 * t**2 - 2.0 * t + 1.0
  np.testing.assert_allclose(preprocessing.savgol_derivative(x), 6.0 * t - 2.0,
                             atol=1e-9)
  np.testing.assert_allclose(preprocessing.savgol_derivative(x, deriv=2), 6.0,
                             atol=1e-9)
  # delta converts per-band to per-nm derivatives on a 10 nm grid.
  wavelength = 400.0 + 10.0 * t
  np.testing.assert_allclose(
      preprocessing.savgol_derivative(0.2 + 1e-3 * wavelength, delta=10.0),
      1e-3)


@pytest.mark.parametrize("window,order,deriv", [(11, 2, 1), (7, 3, 2),
                                                (5, 2, 0)])
def test_savgol_jax_matches_scipy(window, order, deriv):
  x = np.random.default_rng(1).normal(size=(2, 4, 40))
  expected = scipy.signal.savgol_filter(x, window, order, deriv=deriv,
                                        axis=-1)
  np.testing.assert_allclose(
      preprocessing.savgol_derivative(x, window, order, deriv), expected)
  fn = jax.jit(preprocessing.savgol_derivative, static_argnums=(1, 2, 3))
  got = fn(jnp.asarray(x, jnp.float32), window, order, deriv)
  assert got.shape == x.shape
  np.testing.assert_allclose(got, expected, atol=2e-5)


def test_savgol_rejects_bad_windows():
  with pytest.raises(ValueError, match="odd window"):
    preprocessing.savgol_derivative(np.zeros(20), window=10)
  with pytest.raises(ValueError, match="fewer than the window"):
    preprocessing.savgol_derivative(np.zeros(8), window=11)


def test_continuum_removal_of_convex_spectrum_is_one():
  wavelength = np.linspace(400.0, 2400.0, 101)
  # Concave down everywhere: the spectrum is its own upper hull.
  x = 0.6 - 1e-7 * (wavelength - 1300.0)**2
  np.testing.assert_allclose(
      preprocessing.continuum_removal(x, wavelength), 1.0)


def test_continuum_removal_triangle_dip_depth():
  wavelength = np.arange(2000.0, 2401.0, 10.0)
  continuum = 0.2 + 5e-4 * (wavelength - 2000.0)  # sloped line
  dip = np.clip(1.0 - np.abs(wavelength - 2200.0) / 50.0, 0.0, None)
  x = continuum * (1.0 - 0.4 * dip)
  cr = preprocessing.continuum_removal(np.stack([x, continuum]), wavelength)
  np.testing.assert_allclose(cr[0], 1.0 - 0.4 * dip, atol=1e-12)
  assert 1.0 - cr[0].min() == pytest.approx(0.4)
  np.testing.assert_allclose(cr[1], 1.0)


def test_continuum_removal_rejects_non_positive():
  with pytest.raises(ValueError, match="positive"):
    preprocessing.continuum_removal([0.2, 0.0, 0.3], [400.0, 410.0, 420.0])
  with pytest.raises(ValueError, match="bands"):
    preprocessing.continuum_removal([0.2, 0.3], [400.0, 410.0, 420.0])
