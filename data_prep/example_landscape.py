"""The simulated landscape of the example project (`example_project`).

Real lab soil spectra (ICRAF-ISRIC, from earthlib) are laid out over a few
EnMAP-sized scenes in UTM 32N around Chott el Djerid (Tunisia), a salt pan:
soil patches of similar spectra, irrigated fields of vegetation, a water
body and a nodata frame. Salinity is a smooth spatial field (log-normal,
with the pan as its saline core); each pixel's soil gets the forward
model's salt effects at its EC (`forward_model.add_salt`) and the
benchmark's satellite view (`satellite_view.satellite_view`: each scene one
sensor state and atmosphere). Library samples and field points are taken at pixels: their lab
spectrum is the pixel's soil with its own salt-effect draws, their EC the
pixel's EC times a small sampling error.
"""
import dataclasses

import numpy as np

from data_prep import forward_model
from data_prep import satellite_view
from data_prep import sources
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors

CRS = "EPSG:32632"  # UTM zone 32N.
PIXEL_M = 30.0
# Upper-left corners (easting, northing) of the scenes, metres.
ORIGINS = ((430700.0, 3756900.0), (434300.0, 3756300.0),
           (431900.0, 3752700.0))
# The salt pan's centre and radius (metres) and its EC (dS/m).
PAN = ((434000.0, 3754400.0), 900.0, 30.0)
EC_MEDIAN, EC_SIGMA, EC_RANGE = 3.0, 0.9, (0.2, 60.0)
FIELD_SCALE_M = 900.0  # Length scale of the salinity field's bumps.
FRAME_PX = 3  # Nodata border of each scene.
# Clear water reflectance on the lab grid (simulated): (nm, reflectance).
WATER = ((400, 0.06), (500, 0.055), (600, 0.035), (700, 0.015), (800, 0.006),
         (1000, 0.002), (2450, 0.001))
NODATA, SOIL, VEGETATION, WATER_BODY = 0, 1, 2, 3
# Open water: no sub-pixel vegetation (Beta(a, b) near 0) and none of a
# field soil's darkening or moisture.
WATER_VIEW = dataclasses.replace(satellite_view.DEFAULT,
                                 green_fraction=(1e-3, 1e3),
                                 dry_fraction=(1e-3, 1e3),
                                 field_darkening_range=(1.0, 1.0),
                                 field_moisture_range=(0.0, 0.0))


@dataclasses.dataclass(frozen=True)
class Size:
  scenes: int = 3
  pixels: int = 100  # Rows = columns of a scene.
  points: int = 60  # Field points on soil (plus a few off soil).
  library_placed: int = 300  # Library samples taken inside the scenes.
  library_elsewhere: int = 1200  # Library samples without coordinates.
  patches: int = 12  # Soil patches per scene.
  soils_per_patch: int = 60  # Distinct real soil spectra per patch.


SIZES = {"default": Size(),
         "tiny": Size(scenes=2, pixels=40, points=24, library_placed=60,
                      library_elsewhere=150, patches=6, soils_per_patch=20)}


@dataclasses.dataclass
class Scene:
  """One simulated scene (row-major arrays [rows, cols])."""
  name: str
  origin: tuple[float, float]
  cover: np.ndarray  # NODATA, SOIL, VEGETATION or WATER_BODY.
  soil: np.ndarray  # Index of the pixel's soil spectrum (-1 where none).
  ec: np.ndarray  # dS/m.
  lab: np.ndarray  # [rows, cols, 180] lab-equivalent spectrum.
  satellite: np.ndarray | None = None  # [n_good, rows, cols], NaN = nodata.

  def centre(self, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    """UTM coordinates of pixel centres."""
    return (self.origin[0] + (np.asarray(cols) + 0.5) * PIXEL_M,
            self.origin[1] - (np.asarray(rows) + 0.5) * PIXEL_M)


class SalinityField:
  """log EC = log(median) + sigma z(x, y), plus the pan; z a smooth field."""

  def __init__(self, rng: np.random.Generator):
    lo = np.min(ORIGINS, axis=0) - 5000.0
    hi = np.max(ORIGINS, axis=0) + 8000.0
    self._centres = rng.uniform(lo, hi, (80, 2))
    self._weights = rng.standard_normal(80)
    grid = np.stack(np.meshgrid(np.linspace(lo[0], hi[0], 60),
                                np.linspace(lo[1], hi[1], 60)), -1)
    z = self._raw(grid[..., 0].ravel(), grid[..., 1].ravel())
    self._mean, self._std = z.mean(), z.std()

  def _raw(self, x, y) -> np.ndarray:
    d2 = ((x[:, None] - self._centres[:, 0])**2 +
          (y[:, None] - self._centres[:, 1])**2)
    return np.exp(-0.5 * d2 / FIELD_SCALE_M**2) @ self._weights

  def __call__(self, x, y) -> np.ndarray:
    x, y = np.ravel(x), np.ravel(y)
    z = (self._raw(x, y) - self._mean) / self._std
    (px, py), radius, pan_ec = PAN
    pan = np.exp(-0.5 * ((x - px)**2 + (y - py)**2) / radius**2)
    log_ec = (1 - pan) * (np.log(EC_MEDIAN) + EC_SIGMA * z) + pan * np.log(
        pan_ec)
    return np.clip(np.exp(log_ec), *EC_RANGE)


def salty(soil: np.ndarray, ec: np.ndarray, rng: np.random.Generator,
          composition: np.ndarray) -> np.ndarray:
  """Lab spectra of soils at EC: the forward model's salt effects, with
  per-sample salt mix, crust and moisture draws (as simulate_salinity)."""
  params = forward_model.DEFAULT
  n = len(ec)
  mix = rng.dirichlet(params.sample_concentration * composition + 1e-3, n)
  sigma = params.crust_noise_sigma
  crust = np.exp(sigma * rng.standard_normal(n) - 0.5 * sigma**2)
  moisture = rng.uniform(0.0, params.base_moisture, n)
  return forward_model.add_salt(soil, ec, mix, crust, moisture, params)


def _cover(size: Size, rng: np.random.Generator, water: bool) -> np.ndarray:
  """Land cover: a nodata frame, 2-3 irrigated fields, maybe a lake."""
  n = size.pixels
  cover = np.full((n, n), SOIL)
  for _ in range(rng.integers(2, 4)):
    r, c = rng.integers(FRAME_PX, n - n // 5, 2)
    h, w = rng.integers(n // 10, n // 5, 2)
    cover[r:r + h, c:c + w] = VEGETATION
  if water:
    rows, cols = np.mgrid[:n, :n]
    r, c = rng.uniform(0.3 * n, 0.7 * n, 2)
    lake = ((rows - r) / (0.12 * n))**2 + ((cols - c) / (0.08 * n))**2 < 1
    cover[lake] = WATER_BODY
  cover[:FRAME_PX] = cover[-FRAME_PX:] = NODATA
  cover[:, :FRAME_PX] = cover[:, -FRAME_PX:] = NODATA
  return cover


def _patches(size: Size, rng: np.random.Generator) -> np.ndarray:
  """Voronoi soil patches: [rows, cols] patch index."""
  rows, cols = np.mgrid[:size.pixels, :size.pixels]
  seeds = rng.uniform(0, size.pixels, (size.patches, 2))
  d2 = ((rows[..., None] - seeds[:, 0])**2 + (cols[..., None] - seeds[:, 1])**2)
  return np.argmin(d2, axis=-1)


@dataclasses.dataclass
class Landscape:
  scenes: list[Scene]
  soils: np.ndarray  # [k, 180] salt-free soil spectra `Scene.soil` indexes.
  other_soils: np.ndarray  # [m, 180] soils not used in any scene.
  field: SalinityField
  composition: np.ndarray  # The area's mean salt composition.

  def soil_at(self, cells) -> np.ndarray:
    """Salt-free soil spectra [n, 180] of (scene, row, col) cells."""
    return self.soils[[self.scenes[s].soil[r, c] for s, r, c in cells]]

  def ec_at(self, cells) -> np.ndarray:
    return np.array([self.scenes[s].ec[r, c] for s, r, c in cells])


def simulate(size: Size, seed: int, sensor: sensors.Sensor) -> Landscape:
  """The scenes, with their satellite views at `sensor`'s good bands."""
  rng = np.random.default_rng(seed)
  pool = sources.icraf().reflectance
  pool = pool[rng.permutation(len(pool))]
  endmembers = sources.vegetation_endmembers()
  field = SalinityField(rng)
  composition = forward_model.region_salinity("example", seed).composition
  n_scene_soils = size.scenes * size.patches * size.soils_per_patch
  soils = pool[:n_scene_soils]
  # Patches hold soils of similar brightness (a soil unit each).
  vis = (resampling.lab_wavelengths() >= 500) & (
      resampling.lab_wavelengths() <= 700)
  units = np.argsort(soils[:, vis].mean(axis=1)).reshape(
      size.scenes * size.patches, size.soils_per_patch)
  unit_order = rng.permutation(len(units))
  water = np.interp(resampling.lab_wavelengths(), *zip(*WATER))
  scenes = []
  for s in range(size.scenes):
    name = f"enmap_example_{'ABC'[s]}"
    cover = _cover(size, rng, water=s == 1)
    patch = _patches(size, rng) + s * size.patches
    choice = rng.integers(0, size.soils_per_patch, cover.shape)
    soil = units[unit_order[patch], choice]
    scene = Scene(name, ORIGINS[s], cover, soil, np.zeros(cover.shape),
                  np.zeros(cover.shape + (water.size,)))
    rows, cols = np.mgrid[:size.pixels, :size.pixels]
    scene.ec = field(*scene.centre(rows, cols)).reshape(cover.shape)
    base = soils[soil.ravel()]
    lab = salty(base, scene.ec.ravel(), rng, composition)
    canopy = endmembers["green"][rng.integers(0, len(endmembers["green"]),
                                              lab.shape[0])]
    share = rng.uniform(0.6, 0.9, (lab.shape[0], 1))
    flat = cover.ravel()
    lab = np.where((flat == VEGETATION)[:, None],
                   share * canopy + (1 - share) * base, lab)
    lab = np.where((flat == WATER_BODY)[:, None], water, lab)
    scene.lab = lab.reshape(cover.shape + (-1,))
    scenes.append(scene)
  names = [s.name for s in scenes]
  lab = np.concatenate([s.lab.reshape(-1, s.lab.shape[-1]) for s in scenes])
  region = np.repeat(np.arange(size.scenes), size.pixels**2)
  view = satellite_view.satellite_view(lab, region, names, sensor,
                                       endmembers, seed)
  # Nothing grows on open water: the same scene, no mixing.
  lake = np.concatenate([s.cover.ravel() for s in scenes]) == WATER_BODY
  view[lake] = satellite_view.satellite_view(
      lab[lake], region[lake], names, sensor, endmembers, seed, WATER_VIEW)
  for s, scene in enumerate(scenes):
    cube = view[region == s].T.reshape(-1, size.pixels, size.pixels)
    scene.satellite = np.where(scene.cover == NODATA, np.nan,
                               cube).astype(np.float32)
  return Landscape(scenes, soils, pool[n_scene_soils:], field, composition)
