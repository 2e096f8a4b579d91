r"""Writes the offline example project of README's walkthrough.

    python -m data_prep.example_project --out=example [--size=default|tiny]
        [--library=visnir|mir]

Nothing is downloaded: the lab spectra come with earthlib (vis-NIR) or
LimeSoDa (MIR). The folder holds what a user brings (configs/own_data.py
reads these names; the MIR library needs
--config.data.library=library/mir.csv):

  README.md                       what is real and what is simulated
  library/library.sli + .hdr      vis-NIR: ENVI spectral library (lab grid)
  library/mir.csv                 MIR: sample_id and absorbance per cm-1
  library/library.csv             sample_id, ec, ec_method, lat, lon
  points.csv                      sample_id, lon, lat, ec, date, depth
  scenes/enmap_example_*.tif      EnMAP L2A-style GeoTIFFs (UTM 32N)

See `example_landscape` for the simulation.
"""
import pathlib
from typing import Any, NamedTuple, Sequence

from absl import app
from absl import flags
import numpy as np
import pandas as pd
import rasterio.transform
import rasterio.warp
import scipy.stats

from data_prep import example_landscape as landscape
from data_prep import sources
from data_prep.scenes import geotiff
from deepsalt_spectral import errors
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors

# Field points on vegetation, as in real campaigns (and one between the
# scenes, placed in `write`).
POINTS_ON_VEGETATION = 3
# Sampling error of EC: a soil core or a field measurement is not the 30 m
# pixel's mean (log-normal sigma).
LIBRARY_EC_SIGMA, POINT_EC_SIGMA = 0.15, 0.1
LIBRARIES = ("visnir", "mir")
# LimeSoDa's MIR sets measured on one grid (549.6-3799 cm-1, 219 spectra).
MIR_SETS = ("NRW.115", "NRW.62", "NRW.42")
# A MIR sample goes where EC ranks as its measured clay's normal score plus
# this much noise ranks: EC follows clay loosely (rank correlation 0.89 ±
# 0.01 over seeds), and MIR spectra measure clay well.
MIR_CLAY_NOISE = 0.5

README = """# Example DeepSalt project (simulated salinity on real lab spectra)

Written by `python -m data_prep.example_project` (size {size}, library
{library}, seed {seed}).

{library_files}
- `library/library.csv`: per sample its EC ({method}, dS/m), the
  method and WGS84 lat/lon ({n_located} samples have coordinates);
- `points.csv`: {n_points} field points with sample id, lon/lat (WGS84),
  EC ({method}, dS/m), date and depth;
- `scenes/`: {n_scenes} EnMAP L2A-style GeoTIFFs of {pixels} x {pixels}
  pixels of 30 m in UTM 32N (EPSG:32632).

**Real**: {real}
the vegetation spectra mixed into pixels (earthlib), the EnMAP band table
(centres, FWHM, bad bands) and the file format (int16 reflectance x 10000,
SCALE 0.0001, -32768 nodata, per-band wavelength, fwhm and bbl tags).

**Simulated** (`data_prep/example_landscape.py`): EC itself (a smooth
log-normal field with a salt pan near Chott el Djerid, Tunisia, as its
saline core), the salt effects on the pixels' soil spectra (ICRAF-ISRIC
lab spectra; `data_prep/forward_model.py`: crusts, salt absorptions,
moisture) and the satellite view (`data_prep/satellite_view.py`: field
darkening, mixing, the sensor as flown and its calibration, atmosphere per
scene, noise), the landscape (soil patches, irrigated fields, a lake, a
nodata frame), every coordinate, and the sampling error between a sample
and its pixel. The numbers a run gives show that the pipeline works, not
field accuracy.
{simulated}
{n_points_off} points are off soil or outside every scene, and some library
samples lie on vegetation: the run drops them and says so. Half the points
on soil share their sample id with a library spectrum (paired points).

Run it (from the deepsalt_jax folder):

    python launch.py --config=configs/own_data.py \\
        --config.data.project={out}{library_flag} --workdir=runs/example
    python launch.py --mode=map --workdir=runs/example \\
        --scene={out}/scenes
"""
# What differs by library (README above; formatted with the counts first).
README_LIBRARY = {
    "visnir": dict(
        library_files=(
            "- `library/library.sli` + `.hdr`: ENVI spectral library, "
            "{n_library} lab\n  spectra on the 10 nm lab grid, salty as "
            "the pixels are;"),
        real=("the soil spectra under the salt effects (ICRAF-ISRIC lab "
              "spectra\nshipped with earthlib),"),
        simulated="", library_flag=""),
    "mir": dict(
        library_files=(
            "- `library/mir.csv`: {n_library} MIR lab spectra, absorbance "
            "log10(1/R) per\n  wavenumber column (cm-1, 3799 down to 549.6, "
            "as FTIR exports list them);"),
        real=("the MIR spectra (LimeSoDa's sets NRW.115, NRW.62 and NRW.42, "
              "one\ninstrument; shipped as percent reflectance R, written "
              "as log10(1/R)) and\ntheir measured clay; the pixels' soil "
              "spectra under the salt effects\n(ICRAF-ISRIC lab spectra "
              "shipped with earthlib);"),
        simulated=(
            "\n**The MIR samples' EC**: a MIR sample is not its pixel's "
            "soil. Each lies\nwhere the simulated EC ranks as its measured "
            "clay ranks (with noise; rank\ncorrelation about 0.9), so its "
            "EC is a loose function of its clay, which\nMIR measures well, "
            "and its pixel carries the salt effects of that EC.\n"),
        library_flag=" \\\n        --config.data.library=library/mir.csv"),
}


def _to_lonlat(x, y) -> tuple[np.ndarray, np.ndarray]:
  lon, lat = rasterio.warp.transform(landscape.CRS, "EPSG:4326", list(x),
                                     list(y))
  return np.round(lon, 7), np.round(lat, 7)


def _sample_pixels(scenes, covers, n, rng, exclude=()) -> list[tuple]:
  """n distinct (scene, row, col) of the given cover classes."""
  cells = [(s, r, c) for s, scene in enumerate(scenes)
           for r, c in zip(*np.nonzero(np.isin(scene.cover, covers)))
           if (s, r, c) not in exclude]
  picked = rng.choice(len(cells), size=min(n, len(cells)), replace=False)
  return [cells[i] for i in picked]


def _located(scenes, cells, rng) -> tuple[np.ndarray, np.ndarray]:
  """WGS84 coordinates inside the cells' pixels (uniform jitter)."""
  x, y = zip(*(scenes[s].centre(r, c) for s, r, c in cells))
  jitter = rng.uniform(-0.4, 0.4, (2, len(cells))) * landscape.PIXEL_M
  return _to_lonlat(np.array(x) + jitter[0], np.array(y) + jitter[1])


class _Mir(NamedTuple):
  wavenumber: np.ndarray  # [k] cm-1, increasing.
  absorbance: np.ndarray  # [n, k] log10(1/R).
  clay: np.ndarray  # [n] measured, %.


def _mir_spectra() -> _Mir:
  """LimeSoDa's MIR sets of MIR_SETS as absorbance, with their clay."""
  sets = [sources.limesoda_mir(name) for name in MIR_SETS]
  # Same instrument grid (the sets would otherwise need resampling).
  assert all(s.grid == sets[0].grid for s in sets)
  reflectance = np.concatenate([s.spectra for s in sets])
  return _Mir(sets[0].grid.axis, np.log10(1.0 / reflectance),
              np.concatenate([s.targets["clay"] for s in sets]))


def _by_clay(ec: np.ndarray, clay: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
  """The spectrum each sample gets: the k-th lowest EC takes the k-th
  lowest clay normal score + noise (MIR_CLAY_NOISE; scores of ranks, so
  clay's skew does not loosen the link); as many samples as spectra."""
  ranks = np.argsort(np.argsort(clay))
  score = scipy.stats.norm.ppf((ranks + 0.5) / clay.size) + (
      MIR_CLAY_NOISE * rng.standard_normal(clay.size))
  out = np.empty(ec.size, int)
  out[np.argsort(ec)] = np.argsort(score)
  return out


def _write_mir_library(folder: pathlib.Path, wavenumber: np.ndarray,
                       absorbance: np.ndarray, table: pd.DataFrame) -> None:
  """mir.csv (high to low wavenumber, as FTIR exports) and library.csv."""
  folder.mkdir(parents=True)
  spectra = pd.DataFrame(np.round(absorbance[:, ::-1], 5),
                         columns=[f"{w:g}" for w in wavenumber[::-1]])
  spectra.insert(0, "sample_id", table["sample_id"].to_numpy())
  spectra.to_csv(folder / "mir.csv", index=False)
  table.to_csv(folder / "library.csv", index=False)


def _write_envi_library(folder: pathlib.Path, lab: np.ndarray,
                        table: pd.DataFrame) -> None:
  folder.mkdir(parents=True)
  lab.astype("<f4").tofile(folder / "library.sli")
  nm = ", ".join(f"{w:g}" for w in resampling.lab_wavelengths())
  names = ", ".join(table["sample_id"])
  (folder / "library.hdr").write_text(
      "ENVI\ndescription = {DeepSalt example library (simulated EC)}\n"
      f"samples = {lab.shape[1]}\nlines = {lab.shape[0]}\nbands = 1\n"
      "header offset = 0\nfile type = ENVI Spectral Library\n"
      "data type = 4\ninterleave = bsq\nbyte order = 0\n"
      "wavelength units = Nanometers\n"
      f"wavelength = {{{nm}}}\nspectra names = {{{names}}}\n")
  table.to_csv(folder / "library.csv", index=False)


def write(out: str | pathlib.Path, size: str | landscape.Size = "default",
          seed: int = 0, library: str = "visnir") -> dict[str, Any]:
  """Writes the example project into `out` with a vis-NIR (ENVI) or MIR
  (CSV in cm-1) library; returns its counts. `size` names one of
  `landscape.SIZES` or is a Size (benchmarks/scale.py grows the points)."""
  out = pathlib.Path(out)
  if library not in LIBRARIES:
    raise errors.UserError(f"library={library!r}: use one of "
                           f"{', '.join(LIBRARIES)}.")
  if out.exists() and any(out.iterdir()):
    raise errors.UserError(f"{out} exists and is not empty; choose a new "
                           "--out.")
  dims = landscape.SIZES[size] if isinstance(size, str) else size
  sensor = sensors.builtin("enmap")
  rng = np.random.default_rng([seed, 1])
  land = landscape.simulate(dims, seed, sensor)
  scenes = land.scenes
  # Field points: on soil, a few on vegetation and one between scenes.
  on_soil = _sample_pixels(scenes, [landscape.SOIL], dims.points, rng)
  cells = on_soil + _sample_pixels(scenes, [landscape.VEGETATION],
                                   POINTS_ON_VEGETATION, rng)
  lon, lat = _located(scenes, cells, rng)
  gap = _to_lonlat([landscape.ORIGINS[1][0] - 150.0],
                   [landscape.ORIGINS[1][1] - 300.0])
  ec = land.ec_at(cells) * np.exp(
      POINT_EC_SIGMA * rng.standard_normal(len(cells)))
  points = pd.DataFrame({
      "sample_id": [f"P{i + 1:03d}" for i in range(len(cells) + 1)],
      "lon": np.concatenate([lon, gap[0]]),
      "lat": np.concatenate([lat, gap[1]]),
      "ec": np.round(np.concatenate([ec, [2.5]]), 3),
      "date": "2024-03-12", "depth": "0-10 cm"})
  # Library: every other soil point's own sample, samples taken at pixels
  # (some on vegetation) and samples without coordinates; a MIR library
  # uses each of its real spectra once.
  paired = np.arange(0, dims.points, 2)
  mir = _mir_spectra() if library == "mir" else None
  n_taken, n_elsewhere = dims.library_placed, dims.library_elsewhere
  if mir is not None:
    n_taken = min(n_taken, len(mir.clay) - paired.size)
    n_elsewhere = len(mir.clay) - paired.size - n_taken
  taken = _sample_pixels(scenes, [landscape.SOIL, landscape.VEGETATION],
                         n_taken, rng, exclude=set(on_soil))
  taken_lon, taken_lat = _located(scenes, taken, rng)
  far = rng.uniform(-6000, 6000, (2, n_elsewhere)) + np.array(
      landscape.ORIGINS[0])[:, None]
  library_ec = np.concatenate([
      ec[paired],
      land.ec_at(taken) * np.exp(LIBRARY_EC_SIGMA * rng.standard_normal(
          len(taken))),
      land.field(*far)])
  if mir is not None:
    lab = mir.absorbance[_by_clay(library_ec, mir.clay, rng)]
  else:
    base = np.concatenate([land.soil_at([on_soil[i] for i in paired]),
                           land.soil_at(taken),
                           land.other_soils[:n_elsewhere]])
    lab = landscape.salty(base, library_ec, rng, land.composition)
  nan = np.full(n_elsewhere, np.nan)
  library_table = pd.DataFrame({
      "sample_id": ([points["sample_id"][i] for i in paired]
                    + [f"L{i + 1:04d}" for i in range(len(taken) +
                                                      n_elsewhere)]),
      "ec": np.round(library_ec, 3), "ec_method": "ECe",
      "lat": np.concatenate([lat[paired], taken_lat, nan]),
      "lon": np.concatenate([lon[paired], taken_lon, nan])})
  order = rng.permutation(len(library_table))
  # Write only once everything is simulated.
  out.mkdir(parents=True, exist_ok=True)
  if mir is not None:
    _write_mir_library(out / "library", mir.wavenumber, lab[order],
                       library_table.iloc[order])
  else:
    _write_envi_library(out / "library", lab[order].astype(np.float32),
                        library_table.iloc[order])
  points.to_csv(out / "points.csv", index=False)
  (out / "scenes").mkdir()
  for scene in scenes:
    geotiff.write_geotiff(
        out / "scenes" / f"{scene.name}.tif", scene.satellite, sensor,
        landscape.CRS, rasterio.transform.from_origin(
            *scene.origin, landscape.PIXEL_M, landscape.PIXEL_M))
  counts = dict(size=size, seed=seed, library=library,
                n_library=len(library_table),
                n_located=int(np.isfinite(library_table["lat"]).sum()),
                n_points=len(points), n_points_off=len(points) - dims.points,
                n_scenes=len(scenes), pixels=dims.pixels, method="ECe",
                out=out)
  text = {k: v.format(**counts) for k, v in README_LIBRARY[library].items()}
  (out / "README.md").write_text(README.format(**counts, **text))
  return counts


def _define_flags() -> None:
  """The command's flags (defined only when run: benchmarks.compare, which
  tests import too, has an --out of its own)."""
  flags.DEFINE_string("out", None, "Folder to write (must not exist or be "
                      "empty).", required=True)
  flags.DEFINE_enum("size", "default", list(landscape.SIZES),
                    "default: the walkthrough; tiny: for tests.")
  flags.DEFINE_integer("seed", 0, "Simulation seed.")
  flags.DEFINE_enum("library", "visnir", list(LIBRARIES),
                    "visnir: an ENVI library of ICRAF-ISRIC spectra; mir: a "
                    "CSV of LimeSoDa's MIR spectra in cm-1.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    counts = write(flags.FLAGS.out, flags.FLAGS.size, flags.FLAGS.seed,
                   flags.FLAGS.library)
  except errors.UserError as e:
    raise app.UsageError(str(e)) from e
  print(f"Wrote {counts['out']}: {counts['n_library']} library spectra, "
        f"{counts['n_points']} field points, {counts['n_scenes']} scenes "
        f"({counts['out'] / 'README.md'} says what is real and simulated).")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
