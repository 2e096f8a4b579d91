"""The simulated satellite view of lab spectra: field, sensor, processing.

What a satellite sees of a soil is not its lab spectrum resampled. Every
number below is in `ViewParams`; published figures are cited where they set
a range. Applied in this order:

* Lab to field: surface roughness and shadow darken a field soil compared with
  the sieved, flattened lab sample (a flat multiplicative factor, 0.6-0.95:
  rough and crusted surfaces reflect 5-40 % less; Cierniewski 1987, Remote
  Sens. Environ. 23:97), and field moisture darkens it further, more in the
  SWIR, with the water bands (exponential in moisture; Lobell and Asner 2002,
  Soil Sci. Soc. Am. J. 66:722).
* Sub-pixel linear mixing with real endmembers from earthlib: green canopy and
  dry vegetation (litter, bark, wood), Beta-distributed, mostly small.
* Illumination scaling (topography, BRDF).
* The sensor as flown, not as tabulated: each region is one scene whose band
  centres are shifted (spectral calibration accuracy about 0.5 nm in the VNIR
  and 1 nm in the SWIR; Guanter et al. 2015, Remote Sens. 7:8830), whose
  centres bend across track (smile: a parabola in the across-track position,
  a few nm at the swath edges) and whose FWHM are off by a few percent. The
  methods only ever see the nominal band table (no inverse crime).
* Radiometric calibration of the scene: gain 0.947-1.031, offset -0.012 to
  +0.020 reflectance, the range of EnMAP against Landsat 8 OLI (USGS Open-File
  Report 2021-1030-S).
* Atmospheric-correction residuals: smooth gain and offset (Legendre
  polynomials of degree 2 in wavelength) per scene and per pixel, water-vapour
  (940, 1130 nm) and oxygen-A (762 nm) residual absorptions, and a
  band-to-band residual pattern of the scene (imperfect gas and calibration
  correction) plus a smaller per-pixel one.
* Detector: across-track striping (a relative gain per column and band) and
  noise with a band-dependent SNR (lower in the SWIR and at the detector
  edges), half of it correlated between neighbouring bands.

Randomness is numpy `Generator`s seeded from (seed, stream, names): scene
draws depend only on the seed, the sensor and the region's name.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data_prep import forward_model
from deepsalt_spectral import errors
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors as sensors_lib


@dataclasses.dataclass(frozen=True)
class ViewParams:
  """Every number of the satellite view (defaults = the shipped benchmark)."""
  # Lab to field.
  field_darkening_range: tuple[float, float] = (0.6, 0.95)
  field_moisture_range: tuple[float, float] = (0.0, 0.08)
  # Sub-pixel fractions ~ Beta(a, b) (means 0.08, 0.12), scaled down where
  # they add up to more than max_vegetation.
  green_fraction: tuple[float, float] = (1.2, 14.0)
  dry_fraction: tuple[float, float] = (1.2, 9.0)
  max_vegetation: float = 0.8
  illumination_range: tuple[float, float] = (0.85, 1.1)
  # Spectral response as flown: centre shift sd (nm) below / above the
  # VNIR-SWIR split, smile amplitude range (nm at the swath edge), FWHM
  # relative error sd, and the across-track positions simulated.
  centre_shift_sigma_nm: tuple[float, float] = (0.5, 1.0)
  vnir_swir_split_nm: float = 1000.0
  smile_range_nm: tuple[float, float] = (1.0, 3.0)
  fwhm_error_sigma: float = 0.03
  across_track_positions: int = 9
  # Radiometric calibration of a scene.
  calibration_gain_range: tuple[float, float] = (0.947, 1.031)
  calibration_offset_range: tuple[float, float] = (-0.012, 0.020)
  # Atmospheric residuals, std of Legendre coefficients P0..P2.
  gain_sigma_region: tuple[float, ...] = (0.04, 0.03, 0.02)
  gain_sigma_pixel: tuple[float, ...] = (0.01, 0.005, 0.005)
  offset_sigma_region: tuple[float, ...] = (0.006, 0.004, 0.003)
  offset_sigma_pixel: tuple[float, ...] = (0.002, 0.001, 0.001)
  # Residual gas absorptions (optical depth std; region and pixel parts).
  gas_features: tuple[forward_model.Feature, ...] = (
      (762, 12, 1.0), (940, 50, 1.0), (1130, 60, 1.2))
  gas_sigma_region: float = 0.03
  gas_sigma_pixel: float = 0.02
  # Band-to-band relative residual pattern (std; region and pixel parts).
  pattern_sigma_region: float = 0.006
  pattern_sigma_pixel: float = 0.003
  # Striping: relative gain per across-track position and band.
  stripe_sigma: float = 0.004
  # SNR at reference reflectance snr_reference (EnMAP-like knots, nm -> SNR),
  # times a per-sensor factor (1 for sensors not listed); a fraction of the
  # noise variance is correlated between neighbouring bands.
  snr_knots: tuple[tuple[float, float], ...] = (
      (400, 150), (500, 400), (900, 300), (1000, 150), (1050, 220),
      (1600, 220), (2200, 180), (2450, 80))
  snr_reference: float = 0.3
  sensor_snr_factor: tuple[tuple[str, float], ...] = (
      ("enmap", 1.0), ("prisma", 0.5), ("emit", 1.3))
  correlated_noise_fraction: float = 0.5
  noise_band_correlation: float = 0.7
  reflectance_clip: tuple[float, float] = (0.0, 1.5)


DEFAULT = ViewParams()


def snr(wavelength: np.ndarray, sensor_name: str,
        params: ViewParams = DEFAULT) -> np.ndarray:
  """Band SNR at the reference reflectance for a sensor."""
  factor = dict(params.sensor_snr_factor).get(sensor_name, 1.0)
  return factor * np.interp(wavelength, *zip(*params.snr_knots))


def _field(lab: np.ndarray, rng: np.random.Generator,
           params: ViewParams) -> np.ndarray:
  """Lab spectra [n, n_lab] as field surfaces: darker and moister."""
  n = len(lab)
  wavelength = resampling.lab_wavelengths()
  darkening = rng.uniform(*params.field_darkening_range, n)
  moisture = rng.uniform(*params.field_moisture_range, n)
  return (lab * darkening[:, None] *
          forward_model.moisture_transmittance(wavelength, moisture))


def _mix(soil: np.ndarray, endmembers: dict[str, np.ndarray],
         rng: np.random.Generator, params: ViewParams) -> np.ndarray:
  """Sub-pixel mixing with vegetation, then illumination."""
  n = len(soil)
  green = rng.beta(*params.green_fraction, n)
  dry = rng.beta(*params.dry_fraction, n)
  total = green + dry
  cap = params.max_vegetation
  scale = np.where(total > cap, cap / np.maximum(total, 1e-12), 1.0)
  green, dry = green * scale, dry * scale
  pixel = ((1.0 - green - dry)[:, None] * soil +
           green[:, None] * endmembers["green"][rng.integers(
               len(endmembers["green"]), size=n)] +
           dry[:, None] * endmembers["dry"][rng.integers(
               len(endmembers["dry"]), size=n)])
  return pixel * rng.uniform(*params.illumination_range, n)[:, None]


@dataclasses.dataclass(frozen=True)
class _Scene:
  """The draws of one scene (region): how its sensor differs from nominal."""
  shift: np.ndarray  # [n_good] nm.
  smile: float  # nm at the swath edge.
  fwhm_scale: float
  gain: float
  offset: float
  legendre_gain: np.ndarray  # [3]
  legendre_offset: np.ndarray  # [3]
  gas: float
  pattern: np.ndarray  # [n_good] relative.
  stripes: np.ndarray  # [positions, n_good] relative.


def _scene(sensor: sensors_lib.Sensor, region: str, seed: int,
           params: ViewParams) -> _Scene:
  rng = forward_model.seeded_rng(seed, "scene", sensor.name, region)
  wavelength = sensor.good_wavelength
  vnir, swir = rng.standard_normal(2) * params.centre_shift_sigma_nm
  n = wavelength.size
  return _Scene(
      shift=np.where(wavelength < params.vnir_swir_split_nm, vnir, swir),
      smile=float(rng.uniform(*params.smile_range_nm)),
      fwhm_scale=float(1.0 + params.fwhm_error_sigma * rng.standard_normal()),
      gain=float(rng.uniform(*params.calibration_gain_range)),
      offset=float(rng.uniform(*params.calibration_offset_range)),
      legendre_gain=rng.standard_normal(3) * params.gain_sigma_region,
      legendre_offset=rng.standard_normal(3) * params.offset_sigma_region,
      gas=float(rng.standard_normal() * params.gas_sigma_region),
      pattern=rng.standard_normal(n) * params.pattern_sigma_region,
      stripes=rng.standard_normal((params.across_track_positions, n)) *
      params.stripe_sigma)


def _flown_matrix(sensor: sensors_lib.Sensor, scene: _Scene,
                  position: float) -> np.ndarray:
  """Resampling matrix of the scene's bands at an across-track position."""
  centre = sensor.good_wavelength + scene.shift + scene.smile * position**2
  return resampling.resampling_matrix(resampling.lab_wavelengths(), centre,
                                      sensor.good_fwhm * scene.fwhm_scale)


def _correlated_normal(rng: np.random.Generator, shape: tuple[int, int],
                       rho: float) -> np.ndarray:
  """Unit-variance normals with correlation rho between neighbouring bands
  (AR(1) along the last axis)."""
  out = rng.standard_normal(shape)
  for band in range(1, shape[1]):
    out[:, band] = rho * out[:, band - 1] + np.sqrt(1 - rho**2) * out[:, band]
  return out


def satellite_view(lab: np.ndarray, region: np.ndarray, region_names,
                   sensor: sensors_lib.Sensor,
                   endmembers: dict[str, np.ndarray], seed: int,
                   params: ViewParams = DEFAULT) -> np.ndarray:
  """Simulated satellite reflectance [n, sensor.good.size] of lab spectra.

  Args:
    lab: [n, n_lab] lab reflectance on `resampling.lab_wavelengths()`.
    region: [n] int index into region_names (one scene per region).
    region_names: region names (keys of the scene draws).
    sensor: the sensor's nominal band table; only its good bands are
      simulated, each as flown in its scene (see the module docstring).
    endmembers: {'green': [k, n_lab], 'dry': [k, n_lab]} mixing spectra.
    seed: the simulation seed.
    params: the view's numbers.
  """
  lab = np.asarray(lab, np.float64)
  region = np.asarray(region)
  n = len(lab)
  wavelength = sensor.good_wavelength
  coverage = resampling.band_coverage(resampling.lab_wavelengths(), wavelength,
                                      sensor.good_fwhm)
  if np.any(coverage <= 0):
    raise errors.UserError(
        f"Sensor {sensor.name!r}: good bands at {wavelength[coverage <= 0]} nm "
        "lie outside the lab grid (400-2450 nm without water bands); mark "
        "them bad.")
  rng = forward_model.seeded_rng(seed, "satellite", sensor.name)
  pixel = _mix(_field(lab, rng, params), endmembers, rng, params)
  positions = np.linspace(-1.0, 1.0, params.across_track_positions)
  column = rng.integers(positions.size, size=n)
  x = np.empty((n, wavelength.size))
  gain = rng.standard_normal((n, 3)) * params.gain_sigma_pixel
  offset = rng.standard_normal((n, 3)) * params.offset_sigma_pixel
  gas = rng.standard_normal(n) * params.gas_sigma_pixel
  pattern = rng.standard_normal((n, wavelength.size)) * (
      params.pattern_sigma_pixel)
  calibration = np.empty((n, 2))
  for r in np.unique(region):
    scene = _scene(sensor, region_names[r], seed, params)
    for c, position in enumerate(positions):
      rows = (region == r) & (column == c)
      if rows.any():
        x[rows] = pixel[rows] @ _flown_matrix(sensor, scene, position).T
        pattern[rows] += scene.pattern + scene.stripes[c]
    rows = region == r
    gain[rows] += scene.legendre_gain
    offset[rows] += scene.legendre_offset
    gas[rows] += scene.gas
    calibration[rows] = scene.gain, scene.offset
  # Legendre polynomials of wavelength mapped from 400..2450 nm to -1..1.
  legendre = np.polynomial.legendre.legvander((wavelength - 1425.0) / 1025.0,
                                              2).T
  x = x * (1.0 + gain @ legendre) + offset @ legendre
  x *= np.exp(-gas[:, None] * forward_model.gaussian_bands(
      wavelength, params.gas_features))
  x = x * (1.0 + pattern)
  x = x * calibration[:, :1] + calibration[:, 1:]
  sigma = (np.sqrt(np.maximum(x, 0.0) * params.snr_reference) /
           snr(wavelength, sensor.name, params))
  share = params.correlated_noise_fraction
  noise = (np.sqrt(1 - share) * rng.standard_normal(x.shape) +
           np.sqrt(share) * _correlated_normal(
               rng, x.shape, params.noise_band_correlation))
  return np.clip(x + sigma * noise, *params.reflectance_clip)


# Pairs as they come in the field (data.pair_view): the paired pixel is not
# always the pixel of the lab sample.
PAIR_VIEWS = ("same", "neighbour", "date")
# A neighbouring pixel's soil: this share of the sample's own soil, the rest
# another soil of the same region.
NEIGHBOUR_SHARE = 0.6


def pair_views(lab: np.ndarray, region: np.ndarray, region_names,
               sensor: sensors_lib.Sensor, endmembers: dict[str, np.ndarray],
               seed: int, params: ViewParams = DEFAULT
               ) -> dict[str, np.ndarray]:
  """The imperfect views a geographic pair may have instead of the pixel.

  'neighbour': the pixel 1-2 pixels away: a soil mixed from the sample's and
  another of its region (NEIGHBOUR_SHARE), in the same scene.
  'date': the same soil on another date: every draw of the view (field,
  mixing, illumination, atmosphere, calibration, noise) made anew.
  """
  rng = forward_model.seeded_rng(seed, "pair_views")
  other = np.empty(len(lab), np.int64)
  for r in np.unique(region):
    rows = np.flatnonzero(region == r)
    other[rows] = rows[rng.integers(rows.size, size=rows.size)]
  mixed = NEIGHBOUR_SHARE * lab + (1.0 - NEIGHBOUR_SHARE) * lab[other]
  return {
      "neighbour": satellite_view(mixed, region, region_names, sensor,
                                  endmembers, seed, params),
      "date": satellite_view(lab, region, region_names, sensor, endmembers,
                             seed + 1, params)}
