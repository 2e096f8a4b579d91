"""TFDS builder 'deepsalt_project': a user's lab library, points and scenes.

The builder's `manual_dir` is the user's project folder; its config carries
the data settings (configs/own_data.py), and its name is a hash of them and
of the input files' sizes and times, so a changed setting or file builds a
new dataset (`datasets.load_project`). One record per sample, every field
present (NaN where the sample lacks it), and a stored role
(`data_prep.roles`):

- LABELLED: a field point's pixel (window mean of soil pixels) and its EC;
- PAIRED: a library sample's lab spectrum and EC with the pixel at its
  coordinates (within data.pair_max_distance_m), or the pixel of the field
  point with its sample id;
- LIBRARY: a library sample without a pixel (lab spectrum and EC);
- UNLABELLED: a bare-soil pixel of a scene.

'lab' is on the library's stored grid (`tables.on_lab_grid`: the vis-NIR
grid for a library in nm, the instrument's own for MIR in cm-1); the
dataset's metadata states it ('lab_grid': `LabGrid.to_json()`).

With data.covariates, 'covariates' holds each sample's values of them (NaN
where missing): a point's from the points table (the mean of the points
merged on one pixel), a library sample's from the library's table (where
that has none, the values of the field point it pairs with by sample id);
unlabelled pixels have none.

'x'/'y' are metres in a local projection (`placement.local_crs`), NaN for
library samples without coordinates. What was dropped and why, the pairs
found and their distances are in the dataset's metadata ('report').

Reading the scenes and placing samples in them is most of a build's time:
a killed build, run again, reads only the scenes it had not placed
(`progress`).
"""
import dataclasses
import functools
import hashlib
import json
import pathlib
from typing import Any
import warnings

from absl import logging
import numpy as np
import rasterio.transform
import rasterio.warp
import tensorflow_datasets as tfds

from data_prep import array_record_builder
from data_prep import covariate_columns
from data_prep import roles
from data_prep.project import inputs
from data_prep.project import placement as placement_lib
from data_prep.project import progress as progress_lib
from deepsalt_spectral import errors
from deepsalt_spectral import indices
from deepsalt_spectral import lab_grid
from deepsalt_spectral import sensors

# Data settings that do not change the records (how they are split or
# transformed for training).
NOT_IN_RECORDS = ("name", "data_dir", "folds", "transductive",
                  "target_transform")


def settings_key(settings: dict[str, Any]) -> str:
  """A hash of the settings that shape the records and of the input files."""
  shaping = {k: v for k, v in settings.items() if k not in NOT_IN_RECORDS}
  files = [(str(p), p.stat().st_size, p.stat().st_mtime_ns)
           for p in inputs.input_files(settings) if p.is_file()]
  text = json.dumps([shaping, files], sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(eq=False)
class ProjectConfig(tfds.core.BuilderConfig):
  settings: str = "{}"  # JSON of the data config, project path absolute.


class DeepsaltProject(array_record_builder.ArrayRecordBuilder):
  """A user's own data: library, field points and scenes of one sensor."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Library, points and scenes with stored roles.",
      "1.1.0": "Unlabelled pixels are window means, as the mapper reads "
               "them."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "The project folder: a lab library, field points and a folder of "
      "scenes, named by the data settings (configs/own_data.py).")

  @property
  def settings(self) -> dict[str, Any]:
    return json.loads(self.builder_config.settings)

  @property
  def sensor(self) -> sensors.Sensor:
    return sensors.builtin(self.settings["sensor"])

  @functools.cached_property
  def library(self) -> inputs.Library:
    return inputs.read_library(self.settings, self.sensor)

  @functools.cached_property
  def grid(self) -> lab_grid.LabGrid:
    """The stored grid of a prepared dataset, else the library's (read)."""
    stored = self.data_path / "metadata.json"
    if stored.exists():
      return lab_grid.LabGrid.from_json(
          json.loads(stored.read_text())["lab_grid"])
    return self.library.grid

  @property
  def covariates(self) -> tuple[str, ...]:
    return covariate_columns.names(self.settings["covariates"])

  def _info(self) -> tfds.core.DatasetInfo:
    scalar = lambda dtype: tfds.features.Scalar(dtype=dtype)
    covariates = {"covariates": tfds.features.Tensor(
        shape=(len(self.covariates),), dtype=np.float32)} if (
            self.covariates) else {}
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            **covariates,
            "lab": tfds.features.Tensor(shape=(self.grid.size,),
                                        dtype=np.float32),
            "satellite": tfds.features.Tensor(
                shape=(self.sensor.good.size,), dtype=np.float32),
            "target": scalar(np.float32),
            "role": scalar(np.int64),
            "x": scalar(np.float64),
            "y": scalar(np.float64),
            "distance": scalar(np.float32),
            "sample_id": tfds.features.Text(),
            "scene": tfds.features.Text(),
            "row": scalar(np.int64),
            "col": scalar(np.int64),
            "date": tfds.features.Text(),
            "depth": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(settings=self.settings,
                                        lab_grid=self.grid.to_json()))

  def _split_generators(self, dl_manager):
    del dl_manager  # The settings hold the project's absolute paths.
    return {"train": self._generate_examples()}

  @property
  def progress(self) -> progress_lib.Progress:
    """The scenes placed so far, beside the dataset's folders."""
    config_dir = pathlib.Path(self.data_dir).parent
    return progress_lib.Progress(
        config_dir.with_name(f"{config_dir.name}.placed"))

  def download_and_prepare(self, *args, **kwargs):
    try:
      super().download_and_prepare(*args, **kwargs)
    except errors.UserError:
      self.progress.remove()  # Refused: nothing to resume.
      raise
    # Anything else (killed, a crash) keeps it: a re-run resumes.
    self.progress.remove()

  def _generate_examples(self):
    records, report = build_records(self.settings, self.sensor, self.library,
                                    self.progress)
    self.info.metadata["report"] = report
    for key, record in records:
      yield key, record


@dataclasses.dataclass
class _Placed:
  """Where the points, library samples and unlabelled pixels landed."""
  points: placement_lib.Placement
  points_xy: tuple[np.ndarray, np.ndarray]  # Local metres of every point.
  located: np.ndarray  # Indices of library samples with coordinates.
  pairs: placement_lib.Placement  # Of the located samples.
  pairs_xy: tuple[np.ndarray, np.ndarray]  # Their local metres.
  unlabelled: list[placement_lib.Placement]
  scenes: list[str]
  bounds: list[tuple[float, ...]]  # WGS84 (west, south, east, north).
  radius_m: float


def _place(settings: dict[str, Any], sensor: sensors.Sensor, points,
           library, progress: progress_lib.Progress) -> _Placed:
  """Points, library samples and unlabelled pixels placed in the scenes;
  the scenes `progress` holds are not read again."""
  local = placement_lib.local_crs(*placement_lib.transform(
      points.crs, "EPSG:4326", points.x, points.y))
  n_good = sensor.good.size
  located = np.flatnonzero(np.isfinite(library.lon)
                           & np.isfinite(library.lat))
  placed = _Placed(
      points=placement_lib.Placement.empty(len(points), n_good),
      points_xy=placement_lib.transform(points.crs, local, points.x,
                                        points.y),
      located=located,
      pairs=placement_lib.Placement.empty(located.size, n_good),
      pairs_xy=placement_lib.transform("EPSG:4326", local,
                                       library.lon[located],
                                       library.lat[located]),
      unlabelled=[], scenes=[], bounds=[], radius_m=np.nan)
  masks = settings["masks"]
  thresholds = indices.MaskThresholds(
      ndvi_max=masks["ndvi_max"], ndrbi_min=masks["ndrbi_min"],
      ncai_max=masks["ncai_max"])
  paths = inputs.scene_paths(settings)
  quota = -(-settings["unlabelled_pixels"] // len(paths))
  so_far, done = progress.load(paths)
  for state in done:
    placed.unlabelled.append(state["unlabelled"])
    placed.scenes.append(state["scene"])
    placed.bounds.append(state["bounds"])
  good = None  # The first scene's band centres, which the others match.
  if done:
    placed.points, placed.pairs = so_far["points"], so_far["pairs"]
    placed.radius_m, good = so_far["radius_m"], so_far["good"]
    logging.info("Resumed the build: %d of %d scenes placed before (%s); "
                 "reading the rest.", len(done), len(paths),
                 ", ".join(placed.scenes))
  for seed, scene in enumerate(inputs.read_scenes(
      paths[len(done):], settings["band_tolerance_nm"],
      None if good is None else (paths[0], good)), start=len(done)):
    context = placement_lib.SceneContext(
        scene, sensor, thresholds, settings["band_tolerance_nm"],
        settings["min_coverage"], local)
    # Default: half a pixel's diagonal, so a sample pairs with the soil
    # pixel it lies in.
    placed.radius_m = (context.pixel_m * np.sqrt(0.5)
                       if settings["pair_max_distance_m"] is None
                       else settings["pair_max_distance_m"])
    context.place_points(placed.points, points.crs, points.x, points.y,
                         settings["window"])
    context.pair(placed.pairs, library.lon[located], library.lat[located],
                 *placed.pairs_xy, placed.radius_m, settings["window"])
    placed.unlabelled.append(context.sample_soil(quota, seed,
                                                 settings["window"]))
    placed.scenes.append(scene.name)
    logging.info("Placed in scene %d of %d (%s): %d of %d points, %d of "
                 "%d located library samples, %d unlabelled pixels so far.",
                 seed + 1, len(paths), scene.name,
                 placed.points.placed.sum(), len(points),
                 placed.pairs.placed.sum(), located.size,
                 sum(len(w.scene) for w in placed.unlabelled))
    placed.bounds.append(rasterio.warp.transform_bounds(
        scene.crs, "EPSG:4326", *rasterio.transform.array_bounds(
            *scene.shape, scene.transform)))
    if good is None:
      good = scene.wavelength[scene.good]
    progress.save(seed, {"scene": scene.name, "bounds": placed.bounds[-1],
                         "unlabelled": placed.unlabelled[-1]},
                  {"paths": [str(p) for p in paths[:seed + 1]], "good": good,
                   "points": placed.points, "pairs": placed.pairs,
                   "radius_m": placed.radius_m})
  return placed


def _check_points(points, placed: _Placed, settings) -> None:
  """Refuses a project where no field point lands on a soil pixel."""
  reasons = placed.points.reason
  if (reasons == "").any():
    return
  counts = {r: int(np.sum(reasons == r)) for r in sorted(set(reasons))}
  if set(counts) != {placement_lib.OUTSIDE}:
    hint = ("The soil masks (data.masks: NDVI, NDRBI, nCAI thresholds) drop "
            "them: check that the points are on bare soil, or relax the "
            "thresholds.")
  elif _inside(placed.bounds, *placement_lib.transform(
      points.crs, "EPSG:4326", points.x, points.y)[::-1]).any():
    hint = ("With longitude and latitude swapped they would lie in the "
            "scenes: the lon/lat (or x/y) columns look swapped.")
  else:
    hint = (f"Check data.points_crs (now {settings['points_crs']}) and the "
            "coordinates; points in another CRS than the scenes are "
            "reprojected, so they must simply lie inside a scene.")
  raise errors.UserError(
      f"{points.path}: none of the {len(points)} field points lies on a "
      f"bare-soil pixel of the scenes in {inputs.path(settings, 'scenes')} "
      f"({', '.join(f'{n} {r}' for r, n in counts.items())}). {hint}")


def _inside(bounds, lon, lat) -> np.ndarray:
  """Which WGS84 positions lie inside any of the scenes' bounds."""
  inside = np.zeros(len(lon), bool)
  for west, south, east, north in bounds:
    inside |= (lon >= west) & (lon <= east) & (lat >= south) & (lat <= north)
  return inside


def _empty(sample_id: str, sensor: sensors.Sensor,
           n_lab: int, n_covariates: int) -> dict[str, Any]:
  """A record with nothing but its id (NaN, -1 and '' elsewhere)."""
  covariates = {"covariates": np.full(n_covariates, np.nan, np.float32)} if (
      n_covariates) else {}
  return {**covariates, "lab": np.full(n_lab, np.nan, np.float32),
          "satellite": np.full(sensor.good.size, np.nan, np.float32),
          "target": np.float32(np.nan), "role": -1, "x": np.nan, "y": np.nan,
          "distance": np.float32(np.nan), "sample_id": sample_id,
          "scene": "", "row": -1, "col": -1, "date": "", "depth": ""}


def _with_pixel(record: dict[str, Any], where: placement_lib.Placement,
                i: int, role: int) -> dict[str, Any]:
  record.update(satellite=where.satellite[i], scene=where.scene[i],
                row=int(where.row[i]), col=int(where.col[i]),
                x=float(where.x[i]), y=float(where.y[i]),
                distance=np.float32(where.distance[i]), role=role)
  return record


def _point_records(points, placed: _Placed, sensor: sensors.Sensor,
                   n_lab: int) -> tuple[list[tuple[str, dict]], int]:
  """LABELLED records; points on one pixel are merged (mean EC)."""
  groups = {}
  for i in np.flatnonzero(placed.points.placed):
    key = (placed.points.scene[i], placed.points.row[i], placed.points.col[i])
    groups.setdefault(key, []).append(i)
  merged = [g for g in groups.values() if len(g) > 1]
  if merged:
    logging.warning("%d pixels hold several field points; merged with their "
                    "mean EC: %s", len(merged), "; ".join(
                        "+".join(points.sample_id[g]) for g in merged))
  out = []
  for group in groups.values():
    record = _with_pixel(
        _empty("+".join(points.sample_id[group]), sensor, n_lab,
               points.covariates.shape[1]),
        placed.points, group[0], roles.LABELLED)
    record.update(target=np.float32(points.ec[group].mean()),
                  date=points.date[group[0]], depth=points.depth[group[0]])
    if points.covariates.shape[1]:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN: missing.
        record["covariates"] = np.nanmean(
            points.covariates[group], axis=0).astype(np.float32)
    out.append((f"point/{record['sample_id']}", record))
  return out, sum(len(g) - 1 for g in merged)


def _library_records(library, points, placed: _Placed, sensor: sensors.Sensor
                     ) -> tuple[list[tuple[str, dict]], dict[str, int]]:
  """PAIRED records (by sample id with a placed point, else by distance)
  and LIBRARY records."""
  point_index = {s: i for i, s in enumerate(points.sample_id)}
  pair_index = {j: k for k, j in enumerate(placed.located)}
  counts = {"paired by sample id": 0, "paired by distance": 0}
  out = []
  for j, sample_id in enumerate(library.sample_id):
    record = _empty(sample_id, sensor, library.grid.size,
                    library.covariates.shape[1])
    record.update(lab=library.lab[j], target=np.float32(library.ec[j]),
                  role=roles.LIBRARY)
    i, k = point_index.get(sample_id), pair_index.get(j)
    if library.covariates.shape[1]:
      own = library.covariates[j]
      record["covariates"] = (own if i is None else np.where(
          np.isnan(own), points.covariates[i], own)).astype(np.float32)
    if i is not None and placed.points.placed[i]:
      _with_pixel(record, placed.points, i, roles.PAIRED)
      counts["paired by sample id"] += 1
    elif k is not None and placed.pairs.placed[k]:
      _with_pixel(record, placed.pairs, k, roles.PAIRED)
      counts["paired by distance"] += 1
    elif i is not None:  # Located by its (dropped) field point.
      record.update(x=placed.points_xy[0][i], y=placed.points_xy[1][i])
    elif k is not None:
      record.update(x=placed.pairs_xy[0][k], y=placed.pairs_xy[1][k])
    out.append((f"library/{sample_id}", record))
  return out, counts


def _summary(values: np.ndarray) -> dict[str, float] | None:
  if values.size == 0:
    return None
  return {"min": float(values.min()), "median": float(np.median(values)),
          "max": float(values.max())}


def build_records(settings: dict[str, Any], sensor: sensors.Sensor,
                  library: inputs.Library, progress: progress_lib.Progress
                  ) -> tuple[list[tuple[str, dict]], dict[str, Any]]:
  """(key, record) pairs of the project and the report for its metadata;
  `progress`: the scenes placed so far (kept there scene by scene)."""
  points = inputs.read_points(settings)
  logging.info("Read %d library spectra and %d field points; placing them "
               "in the scenes.", len(library), len(points))
  placed = _place(settings, sensor, points, library, progress)
  _check_points(points, placed, settings)
  reasons = placed.points.reason
  dropped = {r: int(np.sum(reasons == r)) for r in sorted(set(reasons) - {""})}
  if dropped:
    logging.warning("%s: dropped %d of %d field points: %s.", points.path,
                    sum(dropped.values()), len(points), dropped)
  point_records, merged = _point_records(points, placed, sensor,
                                         library.grid.size)
  library_records, counts = _library_records(library, points, placed, sensor)
  records = point_records + library_records
  for where in placed.unlabelled:
    for i in range(len(where.scene)):
      record = _with_pixel(
          _empty(f"{where.scene[i]}/{where.row[i]}/{where.col[i]}", sensor,
                 library.grid.size,
                 len(covariate_columns.names(settings["covariates"]))),
          where, i, roles.UNLABELLED)
      records.append((f"pixel/{record['sample_id']}", record))
  pairs = placed.pairs
  distance = np.concatenate([np.zeros(counts["paired by sample id"]),
                             pairs.distance[pairs.placed]])
  report = {
      "sensor": sensor.name, "ec_method": settings["ec_method"],
      "ec_conversion": library.conversion, "scenes": placed.scenes,
      "points": {"read": len(points), "labelled pixels": len(point_records),
                 "dropped": dropped, "merged": merged},
      "library": {"samples": len(library), "grid": library.grid.describe(),
                  "with coordinates": int(placed.located.size), **counts,
                  "pair distance m": _summary(distance),
                  "pair_max_distance_m": float(placed.radius_m)},
      "unlabelled pixels": int(sum(len(w.scene) for w in placed.unlabelled)),
      "window": settings["window"],
  }
  logging.info("Project %s: %s", settings["project"], json.dumps(report))
  return records, report
