"""Properties of the simulated salinity and satellite view on real soils."""
import numpy as np
import pytest

from data_prep import forward_model as fm
from data_prep import satellite_view as sv
from data_prep import sources
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors

WL = resampling.lab_wavelengths()


@pytest.fixture(scope="module")
def soils() -> sources.LabSpectra:
  return sources.concatenate(sources.limesoda(), sources.icraf())


@pytest.fixture(scope="module")
def endmembers() -> dict[str, np.ndarray]:
  return sources.vegetation_endmembers()


def _band(nm: float) -> int:
  return int(np.argmin(np.abs(WL - nm)))


def _local_depth(x: np.ndarray, nm: float, left: float, right: float):
  """1 - x(nm) / linear continuum between the shoulders `left` and `right`."""
  a, b, c = _band(left), _band(nm), _band(right)
  continuum = x[:, a] + (x[:, c] - x[:, a]) * (WL[b] - WL[a]) / (WL[c] - WL[a])
  return 1.0 - x[:, b] / continuum


def _salted(soil: np.ndarray, ec: float, salt: str | None = None):
  n = len(soil)
  if salt is None:  # An even mix of all salts.
    composition = np.full((n, len(fm.SALTS)), 1.0 / len(fm.SALTS))
  else:
    composition = np.zeros((n, len(fm.SALTS)))
    composition[:, fm.SALT_NAMES.index(salt)] = 1.0
  return fm.add_salt(soil, np.full(n, ec), composition)


def test_no_salt_leaves_the_soil_unchanged(soils):
  soil = soils.reflectance[::50]
  np.testing.assert_allclose(_salted(soil, 0.0), soil, rtol=1e-12)


def test_more_salt_brightens_the_visible(soils):
  soil = soils.reflectance[::5]
  vis = (WL >= 450) & (WL <= 700)
  low, high = _salted(soil, 1.0), _salted(soil, 30.0)
  gain = high[:, vis].mean(axis=1) - low[:, vis].mean(axis=1)
  assert np.mean(gain > 0) > 0.95
  assert np.median(gain) > 0.05


@pytest.mark.parametrize("nm, left, right, salt", [
    (1960, 1790, 2100, None),  # 1940 nm water/hydrated salts: shoulder.
    (1750, 1700, 1790, "gypsum"),  # Gypsum's 1750 nm sulfate feature.
])
def test_more_salt_deepens_salt_features(soils, nm, left, right, salt):
  soil = soils.reflectance[::5]
  low = _local_depth(_salted(soil, 1.0, salt), nm, left, right)
  high = _local_depth(_salted(soil, 30.0, salt), nm, left, right)
  assert np.mean(high > low) > 0.95
  assert np.median(high - low) > 0.02


def test_salt_weakens_the_clay_feature(soils):
  soil = soils.reflectance
  clayey = soil[_local_depth(soil, 2200, 2120, 2270) > 0.03]
  assert len(clayey) > 500
  low = _local_depth(_salted(clayey, 1.0, "halite"), 2200, 2120, 2270)
  high = _local_depth(_salted(clayey, 30.0, "halite"), 2200, 2120, 2270)
  assert np.all(high < low)
  assert np.median(high / low) < 0.6


def test_ec_is_skewed_with_a_saline_tail_and_region_specific(soils):
  ec, lab, composition = fm.simulate_salinity(
      soils.reflectance, soils.region, sources.REGIONS, seed=0)
  assert lab.shape == soils.reflectance.shape and np.all(np.isfinite(lab))
  np.testing.assert_allclose(composition.sum(axis=1), 1.0)
  assert np.all(ec > 0)
  assert np.mean(ec) > 1.5 * np.median(ec)  # Right-skewed.
  assert 0.005 < np.mean(ec > 16.0) < 0.1  # A few saline samples.
  medians = [np.median(ec[soils.region == r]) for r in np.unique(soils.region)]
  assert max(medians) > 2.0 * min(medians)
  gypsum = fm.SALT_NAMES.index("gypsum")
  mean_gypsum = [composition[soils.region == r, gypsum].mean()
                 for r in np.unique(soils.region)]
  assert max(mean_gypsum) - min(mean_gypsum) > 0.3


def test_ec_correlates_with_soil_brightness_within_regions(soils):
  ec, _, _ = fm.simulate_salinity(soils.reflectance, soils.region,
                                  sources.REGIONS, seed=0)
  rows = soils.region == sources.REGIONS.index("ICRAF Africa")
  vis = soils.reflectance[rows][:, (WL >= 500) & (WL <= 700)].mean(axis=1)
  body = ec[rows] < 16.0
  rho = np.corrcoef(vis[body], np.log(ec[rows][body]))[0, 1]
  assert 0.15 < rho < 0.5  # Params.brightness_correlation = 0.3.


def test_region_draws_depend_only_on_seed_and_name():
  a = fm.region_salinity("ICRAF Asia", seed=0)
  b = fm.region_salinity("ICRAF Asia", seed=0)
  np.testing.assert_array_equal(a.composition, b.composition)
  assert (a.ec_median, a.ec_sigma) == (b.ec_median, b.ec_sigma)
  c = fm.region_salinity("ICRAF Asia", seed=1)
  assert a.ec_median != c.ec_median


def test_simulation_is_deterministic_from_the_seed(soils, endmembers):
  soil, region = soils.reflectance[::60], soils.region[::60]
  sensor = sensors.builtin("enmap")
  first = fm.simulate_salinity(soil, region, sources.REGIONS, seed=3)
  second = fm.simulate_salinity(soil, region, sources.REGIONS, seed=3)
  other = fm.simulate_salinity(soil, region, sources.REGIONS, seed=4)
  for x, y in zip(first, second):
    np.testing.assert_array_equal(x, y)
  assert not np.allclose(first[0], other[0])
  view = lambda seed: sv.satellite_view(first[1], region, sources.REGIONS,
                                        sensor, endmembers, seed)
  np.testing.assert_array_equal(view(3), view(3))
  assert not np.allclose(view(3), view(4))


@pytest.mark.parametrize("name", sensors.SENSORS)
def test_satellite_view_has_good_bands_and_plausible_values(
    soils, endmembers, name):
  sensor = sensors.builtin(name)
  lab = soils.reflectance[::4]
  sat = sv.satellite_view(lab, soils.region[::4], sources.REGIONS, sensor,
                          endmembers, seed=0)
  assert sat.shape == (len(lab), sensor.good.size)
  assert np.all(np.isfinite(sat))
  assert sat.min() >= 0.0 and sat.max() <= 1.5
  # The lab spectrum, resampled, still explains the shape of the view; the
  # field is darker than the lab (roughness, shadow, moisture).
  ideal = resampling.resample(lab, resampling.resampling_matrix(
      WL, sensor.good_wavelength, sensor.good_fwhm))
  r = [np.corrcoef(s, i)[0, 1] for s, i in zip(sat, ideal)]
  assert np.median(r) > 0.9
  assert 0.6 < np.median(sat.mean(axis=1) / ideal.mean(axis=1)) < 0.95


# Every effect of the view switched off: the nominal SRF resampling alone.
_IDEAL = sv.ViewParams(
    field_darkening_range=(1.0, 1.0), field_moisture_range=(0.0, 0.0),
    green_fraction=(1e-9, 1e9), dry_fraction=(1e-9, 1e9),
    illumination_range=(1.0, 1.0), centre_shift_sigma_nm=(0.0, 0.0),
    smile_range_nm=(0.0, 0.0), fwhm_error_sigma=0.0,
    calibration_gain_range=(1.0, 1.0), calibration_offset_range=(0.0, 0.0),
    gain_sigma_region=(0.0,) * 3, gain_sigma_pixel=(0.0,) * 3,
    offset_sigma_region=(0.0,) * 3, offset_sigma_pixel=(0.0,) * 3,
    gas_sigma_region=0.0, gas_sigma_pixel=0.0, pattern_sigma_region=0.0,
    pattern_sigma_pixel=0.0, stripe_sigma=0.0, snr_knots=((400, 1e12),))


def test_with_every_effect_off_the_view_is_the_nominal_resampling(
    soils, endmembers):
  sensor = sensors.builtin("enmap")
  lab, region = soils.reflectance[:30], soils.region[:30]
  sat = sv.satellite_view(lab, region, sources.REGIONS, sensor, endmembers,
                          seed=0, params=_IDEAL)
  nominal = lab @ resampling.resampling_matrix(
      WL, sensor.good_wavelength, sensor.good_fwhm).T
  np.testing.assert_allclose(sat, nominal, rtol=1e-6, atol=1e-9)


def test_the_view_is_made_with_the_flown_not_the_nominal_bands(
    soils, endmembers):
  """No inverse crime: a scene's bands are shifted (and smiled) away from
  the nominal table that the methods use."""
  import dataclasses
  sensor = sensors.builtin("enmap")
  lab, region = soils.reflectance[:200], soils.region[:200]
  shifted = dataclasses.replace(_IDEAL, centre_shift_sigma_nm=(0.5, 1.0),
                                smile_range_nm=(1.0, 3.0))
  sat = sv.satellite_view(lab, region, sources.REGIONS, sensor, endmembers,
                          seed=0, params=shifted)
  nominal = lab @ resampling.resampling_matrix(
      WL, sensor.good_wavelength, sensor.good_fwhm).T
  relative = np.abs(sat / nominal - 1.0)
  assert 1e-4 < np.median(relative) < 0.02
  # Each sample equals a resampling at centres shifted by at most the
  # scene shift plus the smile (<= 3 sd + 3 nm).
  best = []
  for shift in np.arange(-6.0, 6.01, 0.25):
    m = resampling.resampling_matrix(WL, sensor.good_wavelength + shift,
                                     sensor.good_fwhm)
    best.append(np.abs(sat[:, :60] - lab @ m[:60].T).max(axis=1))
  assert np.median(np.min(best, axis=0)) < np.median(
      np.abs(sat[:, :60] - nominal[:, :60]).max(axis=1))


def test_satellite_view_drops_bands_flagged_bad(soils, endmembers):
  enmap = sensors.builtin("enmap")
  bbl = np.ones(enmap.n_bands)
  bbl[enmap.good[:5]] = 0  # Flag five more bands as bad.
  sensor = sensors.from_metadata(enmap.wavelength, enmap.fwhm, bbl=bbl,
                                 name="enmap")
  sat = sv.satellite_view(soils.reflectance[:20], soils.region[:20],
                          sources.REGIONS, sensor, endmembers, seed=0)
  assert sat.shape == (20, enmap.good.size - 5)


def test_noise_is_larger_in_the_swir():
  snr = sv.snr(np.array([600.0, 2300.0]), "enmap")
  assert snr[0] > 1.5 * snr[1]
  assert sv.snr(np.array([600.0]), "prisma")[0] < snr[0]
