"""The PNG quicklook of a salinity map: EC, its interval, P(saline), classes.

Four panels of the same size on map coordinates (from the scene's CRS, with
a scale bar): EC on a perceptual colour map (viridis) labelled with its
method and units, the width of the calibrated interval, the probability
that EC exceeds the threshold (0 to 1), and the salinity classes with the
FAO legend; the pixels outside the area of applicability outlined in
black on each. Drawn from the COGs' overviews, so a full scene reads fast.
"""
from __future__ import annotations

import math
import pathlib
import textwrap
from typing import Any

import numpy as np
import rasterio
import rasterio.crs
import rasterio.enums

from deepsalt_jax import applicability
from deepsalt_jax import metrics
from deepsalt_jax.mapping import stats

CLASS_COLOURS = ((26, 152, 80), (166, 217, 106), (254, 224, 139),
                 (244, 109, 67), (165, 0, 38))
_MASKED_RGB, _NODATA_RGB = (217, 217, 217), (255, 255, 255)
# Panels are drawn from an overview at most this many pixels wide.
_QUICKLOOK_PX = 1000
_METRES_PER_DEGREE = math.pi / 180 * 6_371_008.8
# Panel boxes (left, bottom, width, height) in figure fractions; colour bars
# and the legend sit below, so the three map boxes are the same size.
_PANELS = [(0.04 + 0.245 * i, 0.30, 0.2, 0.55) for i in range(4)]


def _overview(path: pathlib.Path, bands: list[int]) -> np.ndarray:
  """Bands of a raster, nearest-neighbour decimated to the quicklook size."""
  with rasterio.open(path) as ds:
    step = max(1, -(-max(ds.height, ds.width) // _QUICKLOOK_PX))
    shape = (len(bands), -(-ds.height // step), -(-ds.width // step))
    return ds.read(bands, out_shape=shape,
                   resampling=rasterio.enums.Resampling.nearest,
                   masked=False), (ds.height, ds.width), ds.nodata


def _frame(crs: Any, transform: Any, shape: tuple[int, int]):
  """(extent, x label, y label, metres per x unit, y/x aspect) of the map.

  Pixel columns and rows where the scene has no (north-up) georeference.
  """
  height, width = shape
  if transform is None or transform.b or transform.d:
    return (0, width, height, 0), "column", "row", None, 1.0
  left, top = transform.c, transform.f
  extent = (left, left + transform.a * width, top + transform.e * height, top)
  if crs is None:
    return extent, "x", "y", None, 1.0
  crs = rasterio.crs.CRS.from_user_input(crs)
  name = crs.to_string()
  if crs.is_geographic:
    lat = math.radians((extent[2] + extent[3]) / 2)
    return (extent, f"longitude (°), {name}", "latitude (°)",
            _METRES_PER_DEGREE * math.cos(lat), 1 / math.cos(lat))
  return (extent, f"easting (m), {name}", "northing (m)",
          crs.linear_units_factor[1], 1.0)


def _scale_bar(ax, extent, metres_per_unit: float) -> None:
  """A bar of a round length (1, 2 or 5 x 10^k m) near a fifth of the width."""
  from mpl_toolkits.axes_grid1 import anchored_artists  # Lazy, with pyplot.
  width_m = abs(extent[1] - extent[0]) * metres_per_unit
  power = 10 ** math.floor(math.log10(width_m / 5))
  length = max(m * power for m in (1, 2, 5) if m * power <= width_m / 4)
  label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
  ax.add_artist(anchored_artists.AnchoredSizeBar(
      ax.transData, length / metres_per_unit, label, "lower left", pad=0.4,
      color="black", frameon=True, size_vertical=0,
      fontproperties={"size": 8}))


def _outline(ax, outside: np.ndarray, extent) -> None:
  """Black lines around the pixels outside the area of applicability."""
  if outside.any():
    ax.contour(outside.astype(np.float32), levels=[0.5], colors="black",
               linewidths=0.6, extent=extent, origin="upper")


def draw(path: pathlib.Path, ec_path: pathlib.Path,
         class_path: pathlib.Path, masks_path: pathlib.Path, title: str,
         crs: Any, transform: Any, threshold: float,
         ec_method: str = metrics.EC_METHOD) -> None:
  """Writes the PNG quicklook of a map's rasters to `path`; `threshold`:
  of the exceedance band."""
  import matplotlib  # Lazy: plotting is only needed here.
  matplotlib.use("Agg")
  from matplotlib import colors
  from matplotlib import patches
  import matplotlib.pyplot as plt

  (ec, lower, upper, p), shape, ec_nodata = _overview(ec_path, [1, 2, 3, 4])
  ec, lower, upper, p = (np.where(v == ec_nodata, np.nan, v)
                         for v in (ec, lower, upper, p))
  (classes,), _, class_nodata = _overview(class_path, [1])
  nodata, outside = _overview(masks_path, [
      stats.MASKS.index(n) + 1 for n in ("nodata", applicability.MASK)])[0] == 1
  extent, x_label, y_label, metres, aspect = _frame(crs, transform, shape)

  fig = plt.figure(figsize=(19, 6.4))
  axes = [fig.add_axes(box) for box in _PANELS]
  panels = ((ec, f"EC: {ec_method}", "dS/m", "viridis", None),
            (upper - lower, "width of the calibrated 90% interval", "dS/m",
             "magma", None),
            (p, f"P(EC > {threshold:g} dS/m)", "probability", "RdYlBu_r",
             (0.0, 1.0)))
  for ax, box, (values, name, unit, cmap, limits) in zip(axes, _PANELS,
                                                           panels):
    finite = values[np.isfinite(values)]
    low, high = limits or (np.percentile(finite, [2, 98]) if finite.size
                           else (0.0, 1.0))
    # Masked pixels grey, nodata white (as in the class panel).
    cmap = plt.get_cmap(cmap).with_extremes(bad=np.array(_MASKED_RGB) / 255)
    image = ax.imshow(np.where(nodata, np.nan, values), cmap=cmap, vmin=low,
                      vmax=max(high, low + 1e-6), extent=extent,
                      interpolation="nearest", aspect=aspect)
    ax.imshow(np.ma.masked_where(~nodata, nodata), extent=extent,
              cmap=colors.ListedColormap(["white"]), aspect=aspect,
              interpolation="nearest")
    _outline(ax, outside, extent)
    bar = fig.add_axes((box[0], 0.17, box[2], 0.025))
    fig.colorbar(image, cax=bar, orientation="horizontal", extend="both",
                 label=f"{name} ({unit})")
    ax.set_title(name, fontsize=10)
  rgb = np.array(CLASS_COLOURS + (_MASKED_RGB, _NODATA_RGB), np.uint8)
  index = np.where(classes == class_nodata, len(CLASS_COLOURS), classes)
  index = np.where(nodata, len(CLASS_COLOURS) + 1, index)
  axes[3].imshow(rgb[index], extent=extent, interpolation="nearest",
                 aspect=aspect)
  _outline(axes[3], outside, extent)
  axes[3].set_title(f"FAO salinity class of {ec_method}", fontsize=10)
  handles = [patches.Patch(facecolor=colors.to_hex(c / 255), edgecolor="0.5",
                           label=name)
             for c, name in zip(rgb, metrics.SALINITY_CLASS_NAMES + (
                 "not soil (masked)", "no data"))]
  if outside.any():
    handles.append(patches.Patch(facecolor="none", edgecolor="black",
                                 label="outside the area of applicability"))
  axes[3].legend(handles=handles, loc="upper center", ncol=2, fontsize=8,
                 frameon=False, bbox_to_anchor=(0.5, -0.12))
  for i, ax in enumerate(axes):
    ax.set_xlabel(x_label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.locator_params(nbins=4)
    if i == 0:
      ax.set_ylabel(y_label, fontsize=8)
    if metres is not None:
      _scale_bar(ax, extent, metres)
  # The title names the uncertainty band in a sentence: wrapped to fit.
  fig.suptitle("\n".join(textwrap.fill(line, 200) for line in
                         title.splitlines()), fontsize=9, y=0.99)
  fig.savefig(path, dpi=100, format="png")
  plt.close(fig)
