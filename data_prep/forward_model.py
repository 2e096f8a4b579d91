"""Simulated salinity on top of real lab soil spectra.

The soil spectra are measured (see `sources`); everything this module adds is
simulated, from the physical effects below, with every number in `Params`.

Salinity (EC of the saturated paste extract, dS/m), on the lab grid:
* EC: per region a log-normal body (median and spread drawn per region) plus a
  saline tail (a few percent of samples near 20 dS/m, many above 16), so the
  distribution is right-skewed and differs between regions. Arid, saline soils
  tend to be poor in organic matter, so log EC is correlated with the soil's
  own visible brightness (a confounder, as clay and organic matter are in the
  field): a model may not read salinity from brightness alone across regions.
* Salt composition: a mixture of halite (NaCl), gypsum (CaSO4.2H2O) and sodium
  sulfate (thenardite/mirabilite) drawn per region, varied per sample.
* Salt crust: areal mixing of the soil with the salt spectrum, whose cover
  grows with EC and saturates (EC / (EC + crust_half_ec)). Salts are white
  (0.8-0.9 reflectance), so crusts brighten VIS/NIR. Each salt carries its
  absorptions: gypsum near 1450-1540, 1750, 1940, 2215 and 2265 nm; hydrated
  sulfates near 1480 and 1970 nm; halite only weak fluid-inclusion water. On
  the lab grid the 1360-1450 and 1800-1950 nm bands are missing, so the 1450
  and 1940 nm features appear at their shoulders.
* Salt coatings mask clay: part of the soil's Al-OH feature (2120-2270 nm)
  is filled in towards its continuum.
* Moisture: hygroscopic salts (halite most, gypsum least) hold water, which
  darkens the whole spectrum (more in the SWIR) and adds the 970, 1200, 1450
  and 1940 nm water absorptions (Beer-Lambert: multiply by exp(-m k(lambda))).

The satellite view of these spectra is `data_prep.satellite_view`.

Randomness is numpy `Generator`s seeded from (seed, stream, names), so results
depend only on the seed, the sample order and, for region-level draws, the
region's name (adding a region does not change the others).
"""
import dataclasses
import zlib

import numpy as np

from deepsalt_spectral import resampling

# A feature is (centre nm, FWHM nm, depth): a Gaussian in optical depth.
Feature = tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Salt:
  """A salt mineral: continuum knots, absorptions and hygroscopicity."""
  name: str
  continuum: tuple[tuple[float, float], ...]  # (nm, reflectance) knots.
  features: tuple[Feature, ...]
  hygroscopicity: float  # Water held per unit salt, relative to halite.


SALTS = (
    Salt("halite", ((400, 0.82), (1000, 0.9), (2450, 0.86)),
         ((1450, 80, 0.04), (1940, 100, 0.06)), 1.0),
    Salt("gypsum", ((400, 0.8), (1000, 0.9), (2450, 0.65)),
         ((1000, 40, 0.05), (1205, 60, 0.12), (1490, 100, 0.45),
          (1750, 40, 0.3), (1940, 90, 0.9), (2215, 40, 0.18),
          (2265, 40, 0.15)), 0.2),
    Salt("sodium_sulfate", ((400, 0.8), (1000, 0.88), (2450, 0.78)),
         ((1030, 40, 0.04), (1240, 50, 0.07), (1480, 90, 0.35),
          (1780, 40, 0.08), (1970, 100, 0.5)), 0.5),
)
SALT_NAMES = tuple(s.name for s in SALTS)


@dataclasses.dataclass(frozen=True)
class Params:
  """Every number of the forward model (defaults = the shipped benchmark)."""
  # EC body per region: median log-uniform in this range (dS/m), log spread.
  ec_median_range: tuple[float, float] = (0.6, 3.0)
  ec_sigma_range: tuple[float, float] = (0.6, 1.0)
  # Saline tail: fraction per region, log-normal median and spread (dS/m).
  tail_fraction_range: tuple[float, float] = (0.02, 0.08)
  tail_median: float = 22.0
  tail_sigma: float = 0.35
  ec_clip: tuple[float, float] = (0.05, 100.0)
  # Correlation of log EC with the soil's standardised VIS brightness.
  brightness_correlation: float = 0.3
  # Salt composition: region mean ~ Dirichlet(region_concentration * 1);
  # samples ~ Dirichlet(sample_concentration * region mean).
  region_concentration: float = 0.8
  sample_concentration: float = 15.0
  # Crust: cover = max_crust_cover * EC / (EC + crust_half_ec) * LogNormal.
  max_crust_cover: float = 0.6
  crust_half_ec: float = 10.0
  crust_noise_sigma: float = 0.25
  # Fraction of the clay Al-OH feature filled in at full salt index.
  clay_fill: float = 0.6
  clay_window: tuple[float, float] = (2120.0, 2270.0)
  # Moisture: base ~ U(0, base_moisture); salt adds moisture_per_salt * index *
  # hygroscopicity. Broad optical depth per unit moisture from VIS to 2450 nm.
  base_moisture: float = 0.02
  moisture_per_salt: float = 0.12
  moisture_broad: tuple[float, float] = (1.0, 3.0)
  water_features: tuple[Feature, ...] = (
      (970, 40, 0.5), (1200, 60, 1.0), (1450, 90, 4.0), (1940, 110, 6.0))


DEFAULT = Params()


def seeded_rng(seed: int, *keys) -> np.random.Generator:
  """Generator for a stream named by keys (ints or strings, hashed stably)."""
  ints = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
  return np.random.default_rng([seed, *ints])


def gaussian_bands(wavelength: np.ndarray, features) -> np.ndarray:
  """Sum of Gaussian optical depths [..., n_wavelength] for (c, fwhm, d)."""
  centre, fwhm, depth = (np.asarray(v, np.float64)[..., None]
                         for v in zip(*features))
  sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
  return np.sum(depth * np.exp(-0.5 * ((wavelength - centre) / sigma)**2),
                axis=0)


def salt_spectra(wavelength: np.ndarray) -> np.ndarray:
  """Reflectance [n_salts, n_wavelength] of the pure salts (SALTS order)."""
  return np.stack([
      np.interp(wavelength, *zip(*salt.continuum)) *
      np.exp(-gaussian_bands(wavelength, salt.features)) for salt in SALTS])


def salt_index(ec, params: Params = DEFAULT) -> np.ndarray:
  """Saturating salt amount in [0, 1): EC / (EC + crust_half_ec)."""
  ec = np.asarray(ec, np.float64)
  return ec / (ec + params.crust_half_ec)


def _fill_clay_feature(soil: np.ndarray, amount: np.ndarray,
                       window: tuple[float, float]) -> np.ndarray:
  """Fills the fraction `amount` [n, 1] of the absorption inside `window`.

  Salt coatings mask the clay's Al-OH feature: reflectance below the straight
  continuum between the window's end bands moves towards that continuum.
  """
  wavelength = resampling.lab_wavelengths()
  lo, hi = (int(np.argmin(np.abs(wavelength - w))) for w in window)
  inside = slice(lo, hi + 1)
  frac = (wavelength[inside] - wavelength[lo]) / (wavelength[hi] -
                                                  wavelength[lo])
  continuum = soil[:, lo:lo + 1] + (soil[:, hi:hi + 1] -
                                    soil[:, lo:lo + 1]) * frac
  out = soil.copy()
  out[:, inside] += amount * np.maximum(continuum - soil[:, inside], 0.0)
  return out


def add_salt(soil: np.ndarray, ec: np.ndarray, composition: np.ndarray,
             crust_noise=1.0, base_moisture=0.0,
             params: Params = DEFAULT) -> np.ndarray:
  """Lab spectra [n, 180] of salt-affected soils (deterministic).

  Args:
    soil: salt-free lab reflectance [n, 180] on `resampling.lab_wavelengths()`.
    ec: EC [n] in dS/m.
    composition: salt fractions [n, len(SALTS)], rows summing to 1.
    crust_noise: multiplicative factor on the crust cover ([n] or scalar).
    base_moisture: moisture the soil holds regardless of salt ([n] or scalar).
    params: forward-model numbers.
  """
  wavelength = resampling.lab_wavelengths()
  composition = np.asarray(composition, np.float64)
  index = salt_index(ec, params)[:, None]
  soil = _fill_clay_feature(np.asarray(soil, np.float64),
                            params.clay_fill * index, params.clay_window)
  # Areal mixing with the salt crust.
  cover = np.clip(params.max_crust_cover * index *
                  np.asarray(crust_noise)[..., None], 0.0, 0.95)
  crust = composition @ salt_spectra(wavelength)
  mixed = (1.0 - cover) * soil + cover * crust
  # Moisture held by hygroscopic salts: Beer-Lambert darkening and water bands.
  hygroscopicity = composition @ np.array([s.hygroscopicity for s in SALTS])
  moisture = (np.asarray(base_moisture) + params.moisture_per_salt *
              index[:, 0] * hygroscopicity)
  return mixed * moisture_transmittance(wavelength, moisture, params)


def moisture_transmittance(wavelength: np.ndarray, moisture,
                           params: Params = DEFAULT) -> np.ndarray:
  """exp(-moisture k(lambda)) [n, n_wavelength]: the darkening and water
  bands of soil moisture (g/g), broad from VIS to SWIR plus absorptions."""
  broad = np.interp(wavelength, (400.0, 2450.0), params.moisture_broad)
  depth = broad + gaussian_bands(wavelength, params.water_features)
  return np.exp(-np.asarray(moisture, np.float64)[..., None] * depth)


@dataclasses.dataclass(frozen=True)
class RegionSalinity:
  """Region-level draws: EC distribution and mean salt composition."""
  ec_median: float
  ec_sigma: float
  tail_fraction: float
  composition: np.ndarray  # [len(SALTS)], sums to 1.


def region_salinity(region: str, seed: int,
                    params: Params = DEFAULT) -> RegionSalinity:
  """The region's salinity regime; depends only on (seed, region name)."""
  rng = seeded_rng(seed, "region_salinity", region)
  lo, hi = np.log(params.ec_median_range)
  return RegionSalinity(
      ec_median=float(np.exp(rng.uniform(lo, hi))),
      ec_sigma=float(rng.uniform(*params.ec_sigma_range)),
      tail_fraction=float(rng.uniform(*params.tail_fraction_range)),
      composition=rng.dirichlet(np.full(len(SALTS),
                                        params.region_concentration)))


def simulate_salinity(soil: np.ndarray, region: np.ndarray,
                      region_names, seed: int, params: Params = DEFAULT):
  """Draws EC and salt-affected lab spectra for real salt-free soil spectra.

  Args:
    soil: [n, 180] measured lab reflectance.
    region: [n] int index into region_names.
    region_names: names of the regions (keys of the region-level draws).
    seed: the simulation seed.
    params: forward-model numbers.

  Returns:
    (ec [n] dS/m, lab [n, 180] reflectance, composition [n, len(SALTS)]).
  """
  soil = np.asarray(soil, np.float64)
  region = np.asarray(region)
  n = len(soil)
  rng = seeded_rng(seed, "salinity")
  z = rng.standard_normal(n)
  tail_u, tail_z = rng.uniform(size=n), rng.standard_normal(n)
  crust_noise = np.exp(params.crust_noise_sigma * rng.standard_normal(n) -
                       0.5 * params.crust_noise_sigma**2)
  base_moisture = rng.uniform(0.0, params.base_moisture, n)
  rho = params.brightness_correlation
  wavelength = resampling.lab_wavelengths()
  vis = soil[:, (wavelength >= 500) & (wavelength <= 700)].mean(axis=1)
  ec = np.empty(n)
  composition = np.empty((n, len(SALTS)))
  for r in np.unique(region):
    rows = np.flatnonzero(region == r)
    regime = region_salinity(region_names[r], seed, params)
    bright = (vis[rows] - vis[rows].mean()) / (vis[rows].std() + 1e-12)
    body = rho * bright + np.sqrt(1.0 - rho**2) * z[rows]
    ec[rows] = np.where(
        tail_u[rows] < regime.tail_fraction,
        params.tail_median * np.exp(params.tail_sigma * tail_z[rows]),
        regime.ec_median * np.exp(regime.ec_sigma * body))
    # + 1e-3 keeps every Dirichlet parameter positive.
    composition[rows] = rng.dirichlet(
        params.sample_concentration * regime.composition + 1e-3, len(rows))
  ec = np.clip(ec, *params.ec_clip)
  return ec, add_salt(soil, ec, composition, crust_noise, base_moisture,
                      params), composition
