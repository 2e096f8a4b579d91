"""A region's map: a VRT mosaic over the scenes' COGs and a region report.

GDAL VRTs index the per-scene Cloud-Optimized GeoTIFFs without copying a
pixel: `mosaic_ec.vrt` (EC, its interval, P(EC > threshold)) and `mosaic_class.vrt`
(FAO classes) open in QGIS or rasterio as one raster. A VRT has one CRS:
scenes in different CRSs get one pair of VRTs per CRS
(`mosaic_ec_EPSG_32633.vrt`, ...), nothing is reprojected (that would
resample EC); scenes without a north-up georeference are left out and
named in the report. Each VRT has the finest pixel size of its scenes; where
scenes overlap, the later one in the scene list wins where it has data.

`region_report.json` and `.md` gather the scenes' reports: per scene soil
fraction, EC distribution, class areas (ha), the interval's median width
and the area likely saline (P(EC > threshold) > 0.8), time, and the
totals.
"""
from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree
import zlib

import affine
from etils import epath
import rasterio
import rasterio.crs

from deepsalt_jax import metrics
from deepsalt_jax import paths
from deepsalt_jax.mapping import files
from deepsalt_jax.mapping import quicklook

REPORT = "region_report"


def _source(parent: ElementTree.Element, name: str, band: int,
            scene: dict[str, Any], dst: tuple[float, ...], dtype: str,
            nodata: float) -> None:
  source = ElementTree.SubElement(parent, "ComplexSource")
  ElementTree.SubElement(source, "SourceFilename",
                         relativeToVRT="1").text = name
  ElementTree.SubElement(source, "SourceBand").text = str(band)
  rows, cols = scene["shape"]
  ElementTree.SubElement(source, "SourceProperties", RasterXSize=str(cols),
                         RasterYSize=str(rows), DataType=dtype,
                         BlockXSize=str(files.COG_BLOCK),
                         BlockYSize=str(files.COG_BLOCK))
  ElementTree.SubElement(source, "SrcRect", xOff="0", yOff="0",
                         xSize=str(cols), ySize=str(rows))
  ElementTree.SubElement(source, "DstRect", **{
      k: repr(v) for k, v in zip(("xOff", "yOff", "xSize", "ySize"), dst)})
  ElementTree.SubElement(source, "NODATA").text = repr(nodata)


def _vrt(scenes: list[dict[str, Any]], kind: str, crs: str) -> str:
  """The VRT XML of `kind` ('ec' or 'class') over same-CRS scenes."""
  grids = [affine.Affine(*s["transform"]) for s in scenes]
  res_x = min(g.a for g in grids)
  res_y = min(-g.e for g in grids)
  left = min(g.c for g in grids)
  top = max(g.f for g in grids)
  right = max(g.c + g.a * s["shape"][1] for g, s in zip(grids, scenes))
  bottom = min(g.f + g.e * s["shape"][0] for g, s in zip(grids, scenes))
  width = round((right - left) / res_x)
  height = round((top - bottom) / res_y)
  root = ElementTree.Element("VRTDataset", rasterXSize=str(width),
                             rasterYSize=str(height))
  ElementTree.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = (
      rasterio.crs.CRS.from_user_input(crs).to_wkt())
  ElementTree.SubElement(root, "GeoTransform").text = ", ".join(
      repr(v) for v in (left, res_x, 0.0, top, 0.0, -res_y))
  if kind == "ec":
    bands = [("Float32", files.EC_NODATA, text) for text in (
        "EC (dS/m)", "lower bound of the calibrated 90% interval (dS/m)",
        "upper bound of the calibrated 90% interval (dS/m)",
        "probability that EC exceeds the threshold")]
  else:
    bands = [("Byte", files.CLASS_NODATA, "FAO salinity class")]
  for number, (dtype, nodata, text) in enumerate(bands, start=1):
    band = ElementTree.SubElement(root, "VRTRasterBand", dataType=dtype,
                                  band=str(number))
    ElementTree.SubElement(band, "Description").text = text
    ElementTree.SubElement(band, "NoDataValue").text = repr(nodata)
    if kind == "class":
      _colour_table(band)
    for g, scene in zip(grids, scenes):
      dst = ((g.c - left) / res_x, (top - g.f) / res_y,
             scene["shape"][1] * g.a / res_x,
             scene["shape"][0] * -g.e / res_y)
      name = epath.Path(scene["outputs"][kind]).name
      _source(band, name, number, scene, dst, dtype, nodata)
  ElementTree.indent(root)
  return ElementTree.tostring(root, encoding="unicode") + "\n"


def _colour_table(band: ElementTree.Element) -> None:
  ElementTree.SubElement(band, "ColorInterp").text = "Palette"
  table = ElementTree.SubElement(band, "ColorTable")
  for r, g, b in quicklook.CLASS_COLOURS:
    ElementTree.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b),
                           c4="255")


def _georeferenced(scene: dict[str, Any]) -> bool:
  t = scene.get("transform")
  return bool(scene.get("crs")) and t is not None and t[1] == t[3] == 0


def _crs_label(crs: str) -> str:
  crs = rasterio.crs.CRS.from_user_input(crs)
  epsg = crs.to_epsg()
  return f"EPSG_{epsg}" if epsg else f"CRS_{zlib.crc32(crs.to_wkt().encode())}"


def write_vrts(directory: epath.PathLike,
               scenes: list[dict[str, Any]]) -> dict[str, Any]:
  """Writes the mosaic VRTs; returns {'files': {...}, 'left_out': [...]}."""
  directory = epath.Path(directory)
  groups: dict[str, list[dict[str, Any]]] = {}
  left_out = []
  for scene in scenes:
    if _georeferenced(scene):
      key = rasterio.crs.CRS.from_user_input(scene["crs"]).to_wkt()
      groups.setdefault(key, []).append(scene)
    else:
      left_out.append(scene["name"])
  staging = paths.Staging(directory)
  written = {}
  for crs, group in groups.items():
    suffix = "" if len(groups) == 1 else f"_{_crs_label(crs)}"
    for kind in ("ec", "class"):
      name = f"mosaic_{kind}{suffix}.vrt"
      (staging.local / name).write_text(_vrt(group, kind, crs))
      written[name] = {"crs": group[0]["crs"],
                       "scenes": [s["name"] for s in group]}
  staging.publish(*written)
  staging.close()
  return {"files": written, "left_out": left_out}


_LIKELY = "p>0.8"  # The exceedance area the table shows.


def _row(scene: dict[str, Any]) -> str:
  ec = scene.get("ec_dS_per_m") or {}
  fmt = lambda v, f="{:.2f}": "" if v is None else f.format(v)
  areas = [fmt(c["area_ha"], "{:.1f}") for c in scene["classes"].values()]
  interval = scene.get("interval") or {}
  likely = interval.get("likely_exceeding", {}).get(_LIKELY, {})
  return (f"| {scene['name']} | {fmt(scene['soil_fraction_of_valid'])} | "
          f"{fmt(scene['soil_area_ha'], '{:.1f}')} | {fmt(ec.get('mean'))} | "
          f"{fmt(ec.get('p5'))} | {fmt(ec.get('p50'))} | {fmt(ec.get('p95'))} "
          f"| {' | '.join(areas)} | "
          f"{fmt(interval.get('median_width_dS_per_m'))} | "
          f"{fmt(interval.get('median_relative_width'))} | "
          f"{fmt(likely.get('area_ha'), '{:.1f}')} | "
          f"{fmt(scene.get('outside_applicability_ha'), '{:.1f}')} | "
          f"{scene['seconds']:.1f} |")


def _likely_area(scenes: list[dict[str, Any]], with_area: bool
                 ) -> dict[str, float] | None:
  intervals = [s.get("interval") for s in scenes]
  if not with_area or not all(i and i.get("likely_exceeding")
                              for i in intervals):
    return None
  return {level: sum(i["likely_exceeding"][level]["area_ha"]
                     for i in intervals)
          for level in intervals[0]["likely_exceeding"]}


def region_report(directory: epath.PathLike, scenes: list[dict[str, Any]],
                  mosaic: dict[str, Any], wall_seconds: float,
                  not_mapped: dict[str, str] | None = None
                  ) -> dict[str, Any]:
  """Writes region_report.json and .md from the scenes' reports;
  `not_mapped`: {scene name: why} of the scenes without maps."""
  not_mapped = not_mapped or {}
  directory = epath.Path(directory)
  soil = sum(s["pixels"]["soil"] for s in scenes)
  with_area = all(s["soil_area_ha"] is not None for s in scenes)
  classes = {name: sum(s["classes"][name]["area_ha"] or 0.0 for s in scenes)
             if with_area else None for name in metrics.SALINITY_CLASS_NAMES}
  report = {
      "scenes": len(scenes),
      "not_mapped": not_mapped,
      "mosaic": mosaic,
      "soil_pixels": soil,
      "soil_area_ha": (sum(s["soil_area_ha"] for s in scenes) if with_area
                       else None),
      "class_area_ha": classes,
      # Hectares where P(EC > threshold) > 0.5 and > 0.8.
      "likely_exceeding_area_ha": _likely_area(scenes, with_area),
      "outside_applicability_ha": (
          sum(s.get("outside_applicability_ha") or 0.0 for s in scenes)
          if with_area else None),
      "ec_mean_dS_per_m": (sum(s["ec_dS_per_m"]["mean"] * s["pixels"]["soil"]
                               for s in scenes if s["ec_dS_per_m"]) / soil
                           if soil else None),
      "seconds": {"wall": wall_seconds,
                  "scenes": sum(s["seconds"] for s in scenes)},
      "per_scene": {s["name"]: {k: s.get(k) for k in (
          "scene", "process", "seconds", "soil_fraction_of_valid",
          "soil_area_ha", "ec_dS_per_m", "classes", "pixels",
          "interval", "outside_applicability_ha")}
                    for s in scenes},
  }
  head = ("| scene | soil fraction | soil (ha) | EC mean | p5 | median | "
          "p95 | " + " | ".join(f"{n} (ha)"
                                for n in metrics.SALINITY_CLASS_NAMES)
          + " | interval width (median) | relative width (median) | "
          "P(saline) > 0.8 (ha) | outside applicability (ha) | time (s) |")
  threshold = scenes[0]["uncertainty"].get("exceedance_threshold")
  made_by = sorted({s["model"]["made_by"] for s in scenes})
  report["made_by"] = made_by
  lines = [f"# Region report: {len(scenes)} scenes", "",
           f"Maps made by {' and '.join(made_by)} (each scene's report: "
           "`model`).", "",
           f"EC in dS/m ({scenes[0].get('ec_method', metrics.EC_METHOD)}) "
           "over soil pixels; soil fraction of the pixels with data. "
           "Interval: the calibrated 90 % interval (upper - lower, dS/m; "
           "relative: / EC); P(saline) > 0.8: the area where the probability "
           f"that EC exceeds {threshold:g} dS/m is above 0.8; outside "
           "applicability: mapped soil farther from every labelled pixel "
           "than they lie from those of other folds or regions "
           "(docs/mapping.md).", "",
           head, "|" + "---|" * (head.count("|") - 1)]
  lines += [_row(s) for s in scenes]
  if not_mapped:
    lines += ["", f"Not mapped ({len(not_mapped)}):", ""]
    lines += [f"- {name}: {why}" for name, why in not_mapped.items()]
  lines += ["", "Mosaic: " + ", ".join(mosaic["files"]) + (
      f"; left out (no north-up georeference): {', '.join(mosaic['left_out'])}"
      if mosaic["left_out"] else "")]
  staging = paths.Staging(directory)
  (staging.local / f"{REPORT}.json").write_text(
      json.dumps(report, indent=2) + "\n")
  (staging.local / f"{REPORT}.md").write_text("\n".join(lines) + "\n")
  staging.publish(f"{REPORT}.json", f"{REPORT}.md")
  staging.close()
  return report
