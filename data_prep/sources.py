"""Real lab soil spectra shipped by PyPI packages, on the lab grid.

Everything here is measured; nothing is simulated:

* LimeSoDa (Schmidinger et al.): five vis-NIR sets measured at 1 nm
  (CV.98, SL.125, UL.120, SC.93) or 1-5 nm (SSP.460), with lab SOC (or SOM),
  clay and pH and ten predefined cross-validation folds. Each set is a region.
  SOC and clay are kept (the benchmarks' covariates).
  Five more sets are MIR (H.138, NRW.115, NRW.62, NRW.42, O.32: `limesoda_mir`),
  read on their own wavenumber grids.
* earthlib (C. Anderson): the ICRAF-ISRIC soil spectral library, 4,168 lab
  spectra already on the 10 nm lab grid, with latitude and longitude; grouped
  into regions by continent (see `CONTINENT_BOXES`). earthlib ships no soil
  properties: their SOC and clay are unknown (NaN). Spectra without a
  location cannot be placed in a region and are dropped: 103 have no
  coordinates and 345 sit at exactly (0, 0), a missing-value placeholder in
  the Gulf of Guinea; 3,720 remain.
* earthlib endmembers for sub-pixel mixing: green canopy spectra (PROSAIL
  simulations in earthlib) and measured litter, bark and wood (dry vegetation).

Reflectance is returned as a fraction (LimeSoDa ships percent).
"""
import dataclasses
import importlib.util
import pathlib

import numpy as np
import pandas as pd

from data_prep.scenes import scene as scene_lib
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid
from deepsalt_spectral import resampling

LIMESODA_SETS = ("CV.98", "SL.125", "UL.120", "SC.93", "SSP.460")
LIMESODA_MIR_SETS = ("H.138", "NRW.115", "NRW.62", "NRW.42", "O.32")
# Target name -> LimeSoDa column: SOC and clay in %, pH as the set measured it.
LIMESODA_TARGETS = {"SOC": "SOC_target", "clay": "Clay_target",
                    "pH": "pH_target"}
# Van Bemmelen factor: SOM = 1.724 SOC (organic matter is ~58 % carbon). SL.125
# and UL.120 report SOM; their SOC is SOM / 1.724.
SOM_PER_SOC = 1.724

ICRAF_SOURCE = "icraf-isric-soil-database"
# Approximate continent boxes: (region, (lat_lo, lat_hi), (lon_lo, lon_hi)) in
# degrees; the first box that holds a point wins, so the small boxes that carve
# out borders (Panama / Colombia, the Maghreb coast, Bulgaria) come first.
CONTINENT_BOXES = (
    # Pacific islands (Hawaii, Samoa, Fiji east of 180), Australia, New Zealand,
    # New Guinea east of Indonesia.
    ("ICRAF Oceania", (-50.0, 30.0), (-180.0, -130.0)),
    ("ICRAF Oceania", (-50.0, -11.0), (112.0, 180.0)),
    ("ICRAF Oceania", (-11.0, 0.0), (141.0, 180.0)),
    # South America: east of the Panama-Colombia border, then the Pacific side.
    ("ICRAF South America", (-56.0, 12.6), (-77.2, -34.0)),
    ("ICRAF South America", (-56.0, 7.2), (-92.0, -77.2)),
    ("ICRAF North America", (7.2, 84.0), (-170.0, -50.0)),
    # Africa: south of the Horn, the Sahara and Maghreb west of Suez, the coast
    # of Algeria and Tunisia, the Red Sea coast of Sudan and Eritrea.
    ("ICRAF Africa", (-35.0, 12.0), (-26.0, 52.0)),
    ("ICRAF Africa", (-35.0, -5.0), (52.0, 60.0)),
    ("ICRAF Africa", (12.0, 35.95), (-26.0, 32.5)),
    ("ICRAF Africa", (35.95, 37.6), (0.0, 11.6)),
    ("ICRAF Africa", (12.0, 18.0), (32.5, 42.5)),
    ("ICRAF Europe", (35.0, 72.0), (-32.0, 26.5)),
    ("ICRAF Europe", (41.3, 44.0), (26.5, 29.7)),
    ("ICRAF Europe", (44.0, 72.0), (26.5, 60.0)),
    ("ICRAF Asia", (-11.0, 82.0), (25.0, 180.0)),
)
ICRAF_REGIONS = ("ICRAF Africa", "ICRAF Asia", "ICRAF Europe",
                 "ICRAF North America", "ICRAF Oceania", "ICRAF South America")
# Region names, in the order of the salinity dataset's ClassLabel. LimeSoDa
# comes first, so its region indices are also valid for LIMESODA_SETS alone.
REGIONS = LIMESODA_SETS + ICRAF_REGIONS


@dataclasses.dataclass(frozen=True)
class LabSpectra:
  """Lab spectra on `resampling.lab_wavelengths()` with their metadata."""
  reflectance: np.ndarray  # [n, 180] float64 fraction.
  region: np.ndarray  # [n] int64 index into REGIONS.
  sample_id: np.ndarray  # [n] str, unique.
  lat: np.ndarray  # [n] float64 degrees, nan if unknown.
  lon: np.ndarray  # [n] float64 degrees, nan if unknown.
  fold: np.ndarray  # [n] int64 LimeSoDa fold 1..10, 0 if none.
  soc: np.ndarray  # [n] float64 measured SOC in %, nan if unknown.
  clay: np.ndarray  # [n] float64 measured clay in %, nan if unknown.

  def __len__(self) -> int:
    return len(self.sample_id)


def concatenate(*parts: LabSpectra) -> LabSpectra:
  return LabSpectra(**{
      f.name: np.concatenate([getattr(p, f.name) for p in parts])
      for f in dataclasses.fields(LabSpectra)})


def continent(lat, lon) -> np.ndarray:
  """Region name (from CONTINENT_BOXES) of each point; '' where none applies."""
  lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
  names = np.full(lat.shape, "", dtype=object)
  for name, (lat_lo, lat_hi), (lon_lo, lon_hi) in reversed(CONTINENT_BOXES):
    inside = (lat >= lat_lo) & (lat < lat_hi) & (lon >= lon_lo) & (lon < lon_hi)
    names[inside] = name  # Reversed, so earlier boxes overwrite later ones.
  return names


def to_lab_grid(reflectance: np.ndarray, wavelength: np.ndarray) -> np.ndarray:
  """Resamples fine spectra [n, k] at `wavelength` (nm) onto the lab grid.

  Each lab band is a 10 nm FWHM Gaussian response
  (`resampling.resampling_matrix`).
  Lab bands centred outside the measured range (400 and 410 nm for spectra
  starting at 420 nm) are extrapolated linearly from the two nearest bands.
  """
  lab = resampling.lab_wavelengths()
  out = resampling.resample(np.asarray(reflectance, np.float64),
                         resampling.resampling_matrix(wavelength, lab,
                                                   np.full(lab.size, 10.0)))
  inside = np.nonzero((lab >= wavelength[0]) & (lab <= wavelength[-1]))[0]
  first, last = inside[0], inside[-1]
  for i in range(first):
    out[:, i] = out[:, first] + (out[:, first + 1] - out[:, first]) * (
        (lab[i] - lab[first]) / (lab[first + 1] - lab[first]))
  for i in range(last + 1, lab.size):
    out[:, i] = out[:, last] + (out[:, last] - out[:, last - 1]) * (
        (lab[i] - lab[last]) / (lab[last] - lab[last - 1]))
  return out


def limesoda() -> LabSpectra:
  """LimeSoDa's five vis-NIR sets; SOC measured (SL.125, UL.120: SOM / 1.724).

  Coordinates are not kept: CV.98 and SSP.460 have none, SL.125 and UL.120
  ship dummy (displaced) ones, so lat/lon are nan except for SC.93 (UTM 22S,
  converted to degrees).
  """
  import LimeSoDa  # pylint: disable=g-import-not-at-top
  parts = []
  for region, name in enumerate(LIMESODA_SETS):
    data = LimeSoDa.load_dataset(name)
    table = data["Dataset"]
    bands = [c for c in table.columns if c.startswith("wl_")]
    wavelength = np.array([float(c[3:]) for c in bands])
    n = len(table)
    if "SOC_target" in table:
      soc = table["SOC_target"].to_numpy(np.float64)
    else:
      soc = table["SOM_target"].to_numpy(np.float64) / SOM_PER_SOC
    lat = lon = np.full(n, np.nan)
    coords = data["Coordinates"]
    if isinstance(coords, pd.DataFrame) and "x_32722" in coords:
      lon, lat = _utm_to_degrees(coords["x_32722"], coords["y_32722"], 32722)
    parts.append(LabSpectra(
        reflectance=to_lab_grid(table[bands].to_numpy(np.float64) / 100.0,
                                wavelength),
        region=np.full(n, region, np.int64),
        sample_id=np.array([f"{name}/{i}" for i in table.index], dtype=object),
        lat=lat, lon=lon,
        fold=np.asarray(data["Folds"], np.int64),
        soc=soc, clay=table["Clay_target"].to_numpy(np.float64)))
  return concatenate(*parts)


@dataclasses.dataclass(frozen=True)
class MirSet:
  """One LimeSoDa MIR set on its instrument's grid, with its targets."""
  name: str
  spectra: np.ndarray  # [n, k] float64, in the order of grid.axis.
  grid: lab_grid.LabGrid  # Increasing wavenumbers (cm-1).
  targets: dict[str, np.ndarray]  # LIMESODA_TARGETS key -> [n] float64.
  fold: np.ndarray  # [n] int64 LimeSoDa fold 1..10.


def limesoda_mir(name: str) -> MirSet:
  """A LimeSoDa MIR set as measured, its columns put in increasing order.

  LimeSoDa ships MIR reflectance in percent (`wn_<cm-1>` columns, from high
  to low wavenumber): low at absorption bands (the kaolinite OH doublet at
  3620-3700 cm-1, Si-O near 1000 cm-1), near 100 where soils barely absorb
  (4000-5000 cm-1). It is kept as reflectance (a fraction, as
  `limesoda` returns), not converted to absorbance.
  """
  if name not in LIMESODA_MIR_SETS:
    raise errors.UserError(f"{name!r} is not a LimeSoDa MIR set; use one of "
                           f"{', '.join(LIMESODA_MIR_SETS)}.")
  import LimeSoDa  # pylint: disable=g-import-not-at-top
  data = LimeSoDa.load_dataset(name)
  table = data["Dataset"]
  bands = [c for c in table.columns if c.startswith("wn_")]
  wavenumber = np.array([float(c[3:]) for c in bands])
  order = np.argsort(wavenumber)
  return MirSet(
      name=name,
      spectra=table[bands].to_numpy(np.float64)[:, order] / 100.0,
      grid=lab_grid.LabGrid(wavenumber[order], "cm-1", "reflectance"),
      targets={key: table[column].to_numpy(np.float64)
               for key, column in LIMESODA_TARGETS.items()},
      fold=np.asarray(data["Folds"], np.int64))


def _utm_to_degrees(x, y, epsg: int) -> tuple[np.ndarray, np.ndarray]:
  import rasterio.warp  # pylint: disable=g-import-not-at-top
  lon, lat = rasterio.warp.transform(f"EPSG:{epsg}", "EPSG:4326",
                                     list(x), list(y))
  return np.asarray(lon), np.asarray(lat)


def _earthlib_data() -> pathlib.Path:
  # find_spec locates the package without importing it (its import is slow).
  spec = importlib.util.find_spec("earthlib")
  if spec is None or not spec.submodule_search_locations:
    raise errors.UserError(
        "earthlib is not installed; run pip install -r "
        "requirements.txt (earthlib ships the ICRAF-ISRIC and "
        "endmember spectra).")
  return pathlib.Path(spec.submodule_search_locations[0]) / "data"


def read_envi_library(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """Reads an ENVI spectral library: (spectra [lines, samples], nm)."""
  spectra, wavelength, _ = read_envi_library_with_names(path)
  return spectra, wavelength


def read_envi_library_with_names(path: pathlib.Path
                                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(spectra [lines, samples], nm, spectra names) of an ENVI library.

  The header is `<path>.hdr` (earthlib's `spectra.sli.hdr`) or the path
  with its suffix replaced by .hdr (EnMAP-Box's `library.hdr`). Names are
  the header's 'spectra names' ('' where it has none). Values are divided by
  the header's 'reflectance scale factor' when it gives one.
  """
  path = pathlib.Path(path)
  header_path = next((h for h in (pathlib.Path(str(path) + ".hdr"),
                                  path.with_suffix(".hdr")) if h.is_file()),
                     None)
  if not path.is_file() or header_path is None:
    raise errors.UserError(
        f"ENVI spectral library {path} needs its data file and a header "
        f"({path.name}.hdr or {path.stem}.hdr) beside it.")
  header = {}
  for key, value in _header_items(header_path.read_text(errors="replace")):
    header[key.strip().lower()] = value.strip()
  dtypes = {"2": "i2", "3": "i4", "4": "f4", "5": "f8", "12": "u2"}
  if header.get("data type") not in dtypes:
    raise errors.UserError(
        f"{path}: ENVI data type {header.get('data type')} is not "
        "supported (2, 3, 12 = integers, 4 = float32, 5 = float64 are).")
  if "wavelength" not in header:
    raise errors.UserError(f"{header_path}: no 'wavelength' list; a spectral "
                           "library needs the wavelength of every band.")
  order = ">" if header.get("byte order") == "1" else "<"
  rows, cols = int(header["lines"]), int(header["samples"])
  data = np.fromfile(path, dtype=order + dtypes[header["data type"]],
                     offset=int(header.get("header offset", 0)))
  if data.size != rows * cols:
    raise errors.UserError(f"{path}: holds {data.size} values, the header says "
                           f"{rows} x {cols}.")
  wavelength = np.array([float(v) for v in header["wavelength"].strip("{}")
                         .split(",")])
  # Units checked against the values as for a scene's header.
  wavelength = wavelength * scene_lib.nm_per_unit(
      wavelength, header.get("wavelength units"), header_path.name)
  names = [n.strip() for n in header.get("spectra names", "").strip("{}")
           .split(",")] if "spectra names" in header else [""] * rows
  if len(names) != rows:
    raise errors.UserError(f"{header_path}: {len(names)} spectra names for "
                           f"{rows} spectra.")
  spectra = data.reshape(rows, cols).astype(np.float64)
  scale = float(header.get("reflectance scale factor", 0) or 0)
  if scale > 0:
    spectra /= scale
  return spectra, np.round(wavelength, 6), names


def _header_items(text: str):
  """Yields (key, value) of an ENVI header; braced values may span lines."""
  key, value, depth = None, "", 0
  for line in text.splitlines():
    if key is None:
      if "=" not in line:
        continue
      key, value = line.split("=", 1)
    else:
      value += " " + line
    depth = value.count("{") - value.count("}")
    if depth <= 0:
      yield key, value
      key, value = None, ""


def _earthlib_library() -> tuple[pd.DataFrame, np.ndarray]:
  """earthlib's metadata table and its spectra, checked against the lab grid."""
  data = _earthlib_data()
  table = pd.read_csv(data / "spectra.csv")
  reflectance, wavelength = read_envi_library(data / "spectra.sli")
  lab = resampling.lab_wavelengths()
  if wavelength.shape != lab.shape or not np.allclose(wavelength, lab):
    raise errors.UserError(
        "earthlib's spectra.sli is not on the lab grid "
        "(400-2450 nm every 10 nm without water bands); "
        "check the installed earthlib version (1.1.0 expected).")
  if len(table) != len(reflectance):
    raise errors.UserError(f"earthlib: spectra.csv has {len(table)} rows but "
                           f"spectra.sli {len(reflectance)} spectra.")
  return table, reflectance


def icraf() -> LabSpectra:
  """ICRAF-ISRIC lab spectra grouped by continent; unlocated ones dropped."""
  table, reflectance = _earthlib_library()
  keep = (table["SOURCE"] == ICRAF_SOURCE).to_numpy().copy()
  keep &= table[["LAT", "LON"]].notna().all(axis=1).to_numpy()
  # (0, 0) is the library's placeholder for an unknown location.
  keep &= ~((table["LAT"] == 0) & (table["LON"] == 0)).to_numpy()
  table, reflectance = table[keep], reflectance[keep]
  lat, lon = table["LAT"].to_numpy(), table["LON"].to_numpy()
  names = continent(lat, lon)
  if np.any(names == ""):
    raise errors.UserError(
        f"{np.sum(names == '')} ICRAF spectra lie outside every "
        "box of CONTINENT_BOXES; extend the boxes.")
  n = len(table)
  return LabSpectra(
      reflectance=reflectance,
      region=np.array([REGIONS.index(r) for r in names], np.int64),
      sample_id=np.array([f"icraf/{s}" for s in table["NAME"]], dtype=object),
      lat=lat, lon=lon,
      fold=np.zeros(n, np.int64),
      soc=np.full(n, np.nan), clay=np.full(n, np.nan))


def vegetation_endmembers() -> dict[str, np.ndarray]:
  """Endmember spectra [k, 180] for sub-pixel mixing, from earthlib.

  'green': green canopies (earthlib's PROSAIL simulations); 'dry': measured
  litter, bark and wood (non-photosynthetic vegetation).
  """
  table, reflectance = _earthlib_library()
  level = table["LEVEL_2"].to_numpy()
  return {"green": reflectance[level == "vegetation"],
          "dry": reflectance[level == "npv"]}
