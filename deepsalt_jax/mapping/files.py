"""The files of a salinity map: Cloud-Optimized GeoTIFFs, quicklook, report.

`MapWriter` writes blocks of rows as they are predicted into plain GeoTIFFs
under temporary names, so a full scene is never held in memory; `commit`
turns them into Cloud-Optimized GeoTIFFs (tiled, deflate, overviews;
GDAL's COG driver), draws the quicklook, writes the report, and renames
every file to its final name, the report last (then copies them to a cloud
output folder, the report again last). Any error removes the temporary
files, so a failed run leaves no partial map, and a scene whose report is
there is complete (`completed`): a re-run skips it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

from etils import epath
import numpy as np
import rasterio
import rasterio.shutil
import rasterio.windows

from data_prep import ec_methods
from deepsalt_jax import metrics
from deepsalt_jax import paths
from deepsalt_jax.mapping import quicklook
from deepsalt_jax.mapping import stats

EC_NODATA = -9999.0
CLASS_NODATA = 255
# COG tile size; overviews are added down to one tile.
COG_BLOCK = 256
# Overview resampling per raster: EC is averaged (nodata left out), classes
# and masks take the nearest pixel (an average of categories is none).
_RESAMPLING = {"ec": "AVERAGE", "class": "NEAREST", "masks": "NEAREST"}
RASTERS = tuple(_RESAMPLING)


def output_names(stem: str) -> dict[str, str]:
  """File names of one scene's map, by kind."""
  return {"ec": f"{stem}_ec.tif", "class": f"{stem}_class.tif",
          "masks": f"{stem}_masks.tif", "quicklook": f"{stem}_quicklook.png",
          "report": f"{stem}_report.json"}


def completed(directory: epath.PathLike, stem: str,
              signature: str) -> dict[str, Any] | None:
  """The report of a complete map of `stem` made with `signature`, if any.

  Complete: the report (written last) and every file it names are there.
  """
  directory = epath.Path(directory)
  path = directory / output_names(stem)["report"]
  if not path.exists():
    return None
  try:
    report = json.loads(path.read_text())
  except json.JSONDecodeError:
    return None
  if report.get("signature") != signature or not all(
      (directory / epath.Path(p).name).exists()
      for p in report.get("outputs", {}).values()):
    return None
  return report


class MapWriter:
  """Writes a scene's map files block by block, committed all at once.

  Attributes:
    paths: final path of each output kind ('ec', 'class', 'masks',
      'quicklook', 'report').
  """

  def __init__(self, directory: epath.PathLike, stem: str,
               shape: tuple[int, int], crs: Any, transform: Any,
               descriptions: dict[str, str], threshold: float,
               ec_method: str = metrics.EC_METHOD,
               prediction: str = "deterministic student prediction"):
    """`descriptions`: of the EC file's bands after the first
    ('lower', 'upper', 'exceedance'; `stats.BANDS`); `threshold`: of the
    exceedance band (dS/m); `prediction`: the first band's model."""
    directory = epath.Path(directory)
    self._created = not directory.exists()
    self._staging = paths.Staging(directory)
    names = output_names(stem)
    self.paths = {k: directory / v for k, v in names.items()}
    self._local = {k: self._staging.local / v for k, v in names.items()}
    self._temp = {k: p.with_name(f".{p.name}.partial")
                  for k, p in self._local.items()}
    self._raw = {k: self._local[k].with_name(f".{names[k]}.raw")
                 for k in RASTERS}
    self._crs, self._transform = crs, transform
    self._ec_method, self._threshold = ec_method, threshold
    base = dict(driver="GTiff", height=shape[0], width=shape[1],
                BIGTIFF="IF_SAFER")
    if transform is not None:
      base.update(crs=crs, transform=transform)
    self._files = {}
    try:
      ec = self._open("ec", base, count=len(stats.BANDS), dtype="float32",
                      nodata=EC_NODATA)
      ec.set_band_description(1, f"{ec_methods.label(ec_method)}, "
                              f"{prediction}")
      ec.update_tags(1, units="dS/m", ec_method=ec_method)
      for i, band in enumerate(stats.BANDS[1:], start=2):
        ec.set_band_description(i, descriptions[band])
        ec.update_tags(i, units="probability" if band == "exceedance"
                       else "dS/m")
      classes = self._open("class", base, count=1, dtype="uint8",
                           nodata=CLASS_NODATA)
      classes.set_band_description(1, f"FAO salinity class of {ec_method}")
      classes.update_tags(1, **{f"class_{i}": name for i, name in
                                enumerate(metrics.SALINITY_CLASS_NAMES)})
      classes.write_colormap(1, {i: c + (255,) for i, c in
                                 enumerate(quicklook.CLASS_COLOURS)})
      masks = self._open("masks", base, count=len(stats.MASKS),
                         dtype="uint8")
      for i, name in enumerate(stats.MASKS, start=1):
        masks.set_band_description(i, name)
    except BaseException:
      self.abort()
      raise

  def _open(self, kind: str, base: dict, **profile):
    self._files[kind] = rasterio.open(self._raw[kind], "w", **base, **profile)
    return self._files[kind]

  def write(self, start: int, values: np.ndarray,
            masks: dict[str, np.ndarray]) -> None:
    """Writes rows from `start`: `values` [stats.BANDS, rows, cols] (NaN =
    nodata), the masks."""
    rows, cols = values.shape[1:]
    window = rasterio.windows.Window(0, start, cols, rows)
    self._files["ec"].write(
        np.where(np.isnan(values), EC_NODATA, values).astype(np.float32),
        window=window)
    self._files["class"].write(
        stats.salinity_class(values[0], CLASS_NODATA)[None], window=window)
    self._files["masks"].write(
        np.stack([masks[n] for n in stats.MASKS]).astype(np.uint8),
        window=window)

  def commit(self, report: Callable[[], dict[str, Any]], title: str) -> None:
    """COGs, quicklook and report under temporary names, then renamed.

    `report()` is called after the COGs and the quicklook are made, so it
    can time them.
    """
    try:
      for f in self._files.values():
        f.close()
      for kind in RASTERS:
        rasterio.shutil.copy(
            self._raw[kind], self._temp[kind], driver="COG",
            COMPRESS="DEFLATE", BLOCKSIZE=COG_BLOCK, OVERVIEWS="AUTO",
            RESAMPLING=_RESAMPLING[kind], BIGTIFF="IF_SAFER")
        self._raw[kind].unlink()
      quicklook.draw(self._temp["quicklook"], self._temp["ec"],
                     self._temp["class"], self._temp["masks"], title,
                     self._crs, self._transform, self._threshold,
                     self._ec_method)
      report = dict(report(),
                    outputs={k: str(p) for k, p in self.paths.items()})
      self._temp["report"].write_text(json.dumps(report, indent=2) + "\n")
    except BaseException:
      self.abort()
      raise
    for kind, path in self._local.items():  # The report last.
      os.replace(self._temp[kind], path)
    self._staging.publish(*(p.name for p in self._local.values()))
    self._staging.close()

  def abort(self) -> None:
    """Closes and removes every temporary file (and a folder it made)."""
    for f in self._files.values():
      if not f.closed:
        f.close()
    for path in list(self._temp.values()) + list(self._raw.values()):
      path.unlink(missing_ok=True)
    self._staging.close()
    if (self._created and paths.is_local(self._staging.target)
        and not any(self._staging.local.iterdir())):
      self._staging.local.rmdir()
