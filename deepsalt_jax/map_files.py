"""The files of a salinity map: GeoTIFFs, PNG quicklook and run report.

`MapWriter` writes blocks of rows as they are predicted, so a full scene is
never held in memory, under temporary names; `commit` renames them all at the
end (and copies them to a cloud output folder) and any error removes them,
so a failed run leaves no partial map.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from etils import epath
import numpy as np
import rasterio
import rasterio.enums
import rasterio.windows

from deepsalt_jax import metrics
from deepsalt_jax import paths
from deepsalt_spectral import indices

EC_NODATA = -9999.0
CLASS_NODATA = 255
CLASS_COLOURS = ((26, 152, 80), (166, 217, 106), (254, 224, 139),
                 (244, 109, 67), (165, 0, 38))
# The quicklook is drawn from a nearest-neighbour overview at most this wide.
_QUICKLOOK_PX = 1000


def salinity_class(ec: np.ndarray) -> np.ndarray:
  """uint8 class index (0..4, metrics.SALINITY_CLASS_NAMES) of EC;
  CLASS_NODATA at NaN."""
  ec = np.asarray(ec)
  classes = metrics.salinity_class(np.nan_to_num(ec, nan=0.0))
  return np.where(np.isnan(ec), CLASS_NODATA, classes).astype(np.uint8)


def output_names(stem: str) -> dict[str, str]:
  """File names of one scene's map, by kind."""
  return {"ec": f"{stem}_ec.tif", "class": f"{stem}_class.tif",
          "masks": f"{stem}_masks.tif", "quicklook": f"{stem}_quicklook.png",
          "report": f"{stem}_report.json"}


class MapWriter:
  """Writes a scene's map files block by block, committed all at once.

  Attributes:
    paths: final path of each output kind ('ec', 'class', 'masks',
      'quicklook', 'report').
  """

  def __init__(self, directory: epath.PathLike, stem: str,
               shape: tuple[int, int], crs: Any, transform: Any,
               uncertainty: str, target: str = "EC (dS/m)"):
    directory = epath.Path(directory)
    self._created = not directory.exists()
    self._staging = paths.Staging(directory)
    names = output_names(stem)
    self.paths = {k: directory / v for k, v in names.items()}
    self._local = {k: self._staging.local / v for k, v in names.items()}
    self._temp = {k: p.with_name(f".{p.name}.partial")
                  for k, p in self._local.items()}
    base = dict(driver="GTiff", height=shape[0], width=shape[1],
                compress="deflate", BIGTIFF="IF_SAFER")
    if transform is not None:
      base.update(crs=crs, transform=transform)
    self._files = {}
    try:
      ec = self._open("ec", base, count=2, dtype="float32", nodata=EC_NODATA,
                      predictor=3)
      ec.set_band_description(1, f"{target}, deterministic student "
                              "prediction")
      ec.set_band_description(2, uncertainty)
      ec.update_tags(1, units="dS/m")
      ec.update_tags(2, units="dS/m")
      classes = self._open("class", base, count=1, dtype="uint8",
                           nodata=CLASS_NODATA)
      classes.set_band_description(1, "salinity class")
      classes.update_tags(1, **{f"class_{i}": name
                                for i, name in enumerate(
                                    metrics.SALINITY_CLASS_NAMES)})
      classes.write_colormap(1, {i: c + (255,)
                                 for i, c in enumerate(CLASS_COLOURS)})
      masks = self._open("masks", base, count=len(indices.MASK_NAMES),
                         dtype="uint8")
      for i, name in enumerate(indices.MASK_NAMES, start=1):
        masks.set_band_description(i, name)
    except BaseException:
      self.abort()
      raise

  def _open(self, kind: str, base: dict, **profile):
    self._files[kind] = rasterio.open(self._temp[kind], "w",
                                      **base, **profile)
    return self._files[kind]

  def write(self, start: int, ec: np.ndarray, std: np.ndarray,
            masks: dict[str, np.ndarray]) -> None:
    """Writes rows from `start`: EC and its std (NaN = nodata), the masks."""
    rows, cols = ec.shape
    window = rasterio.windows.Window(0, start, cols, rows)
    bands = np.stack([ec, std]).astype(np.float32)
    self._files["ec"].write(np.where(np.isnan(bands), EC_NODATA, bands),
                            window=window)
    self._files["class"].write(salinity_class(ec)[None], window=window)
    self._files["masks"].write(
        np.stack([masks[n] for n in indices.MASK_NAMES]).astype(
            np.uint8),
        window=window)

  def commit(self, report: dict[str, Any], title: str) -> None:
    """Closes the rasters, draws the quicklook, writes the report, renames."""
    try:
      for f in self._files.values():
        f.close()
      quicklook(self._temp["quicklook"], self._temp["ec"],
                self._temp["class"], self._temp["masks"], title)
      report = dict(report, outputs={k: str(p) for k, p in self.paths.items()})
      self._temp["report"].write_text(json.dumps(report, indent=2) + "\n")
    except BaseException:
      self.abort()
      raise
    for kind, path in self._local.items():
      os.replace(self._temp[kind], path)
    self._staging.publish(*(p.name for p in self._local.values()))
    self._staging.close()

  def abort(self) -> None:
    """Closes and removes every temporary file (and a folder it made)."""
    for f in self._files.values():
      if not f.closed:
        f.close()
    for path in self._temp.values():
      path.unlink(missing_ok=True)
    self._staging.close()
    if (self._created and paths.is_local(self._staging.target)
        and not any(self._staging.local.iterdir())):
      self._staging.local.rmdir()


def _overview(path: pathlib.Path, bands: list[int]) -> np.ndarray:
  """Bands of a raster, nearest-neighbour decimated to the quicklook size."""
  with rasterio.open(path) as ds:
    step = max(1, -(-max(ds.height, ds.width) // _QUICKLOOK_PX))
    shape = (len(bands), -(-ds.height // step), -(-ds.width // step))
    return ds.read(bands, out_shape=shape,
                   resampling=rasterio.enums.Resampling.nearest)


def quicklook(path: pathlib.Path, ec_path: pathlib.Path,
              class_path: pathlib.Path, masks_path: pathlib.Path,
              title: str) -> None:
  """PNG: EC and its uncertainty with colour bars, classes with a legend."""
  import matplotlib  # Lazy: plotting is only needed here.
  matplotlib.use("Agg")
  from matplotlib import colors
  from matplotlib import patches
  import matplotlib.pyplot as plt

  ec, std = _overview(ec_path, [1, 2])
  ec, std = (np.where(v == EC_NODATA, np.nan, v) for v in (ec, std))
  classes = _overview(class_path, [1])[0]
  nodata_band = indices.MASK_NAMES.index("nodata") + 1
  nodata = _overview(masks_path, [nodata_band])[0] == 1
  fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
  panels = ((ec, "EC (dS/m)", "magma_r"),
            (std, "uncertainty: EC std (dS/m)", "viridis"))
  for ax, (values, label, cmap) in zip(axes, panels):
    # Masked pixels grey, nodata white (as in the class panel).
    cmap = plt.get_cmap(cmap).with_extremes(bad="0.85")
    finite = values[np.isfinite(values)]
    low, high = (np.percentile(finite, [2, 98]) if finite.size
                 else (0.0, 1.0))
    image = ax.imshow(values, cmap=cmap, vmin=low, vmax=max(high, low + 1e-6),
                      interpolation="nearest")
    ax.imshow(np.ma.masked_where(~nodata, nodata),
              cmap=colors.ListedColormap(["white"]), interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label=label, extend="both")
    ax.set_title(label)
  class_rgb = np.array(CLASS_COLOURS + ((217, 217, 217), (255, 255, 255)))
  index = np.where(classes == CLASS_NODATA, len(CLASS_COLOURS), classes)
  index = np.where(nodata, len(CLASS_COLOURS) + 1, index)
  axes[2].imshow(class_rgb[index].astype(np.uint8), interpolation="nearest")
  axes[2].set_title("salinity class")
  handles = [patches.Patch(facecolor=colors.to_hex(np.array(c) / 255),
                           edgecolor="0.5", label=name)
             for c, name in zip(class_rgb, metrics.SALINITY_CLASS_NAMES + (
                 "not soil (masked)", "no data"))]
  axes[2].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1),
                 fontsize=8, frameon=False)
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100, format="png")
  plt.close(fig)
