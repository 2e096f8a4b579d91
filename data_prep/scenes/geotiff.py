"""GeoTIFF scenes (EnMAP L2A and other band-tagged GeoTIFFs) via rasterio."""
import pathlib
import re
from typing import Optional, Union
from xml.etree import ElementTree

import numpy as np
import rasterio

from data_prep.scenes import scene as scene_lib

PathLike = Union[str, pathlib.Path]

# "band 1 (418.24 Nanometers)": the wavelength GDAL writes into descriptions.
_DESCRIPTION = re.compile(r"\(\s*([-+]?\d+(?:\.\d*)?)\s*([A-Za-zµ]*)\s*\)\s*$")


def _band_tags(ds) -> list[dict[str, str]]:
  """Per-band GDAL metadata with lower-case keys."""
  return [{k.lower(): v for k, v in ds.tags(b).items()}
          for b in range(1, ds.count + 1)]


def _metadata_xml(path: pathlib.Path) -> Optional[pathlib.Path]:
  """The DLR EnMAP product's METADATA.XML beside the image, if any."""
  found = [p for p in path.parent.iterdir()
           if p.name.upper().endswith("METADATA.XML")]
  if len(found) > 1:
    prefix = path.name.upper().split("SPECTRAL_IMAGE")[0]
    found = [p for p in found if p.name.upper().startswith(prefix)]
  return found[0] if len(found) == 1 else None


def _xml_band_table(xml: pathlib.Path, n: int, name: str):
  """(wavelength, fwhm) in file band order from EnMAP METADATA.XML."""
  bands = ElementTree.parse(xml).getroot().findall(
      ".//bandCharacterisation/bandID")
  bands = sorted(bands, key=lambda b: int(b.get("number", 0)))
  if len(bands) != n:
    raise ValueError(f"{name}: {xml.name} describes {len(bands)} bands, the "
                     f"image has {n}.")
  def column(tag):
    return np.array([float(b.findtext(tag)) for b in bands])
  return column("wavelengthCenterOfBand"), column("FWHMOfBand")


def _band_table(ds, path: pathlib.Path):
  """(wavelength nm, fwhm nm, bad or None) of the bands in file order."""
  name = path.stem
  tags = _band_tags(ds)
  if all("wavelength" in t for t in tags):
    raw = np.array([float(t["wavelength"]) for t in tags])
    units = tags[0].get("wavelength_units", tags[0].get("units"))
    factor = scene_lib.nm_per_unit(raw, units, name)
    fwhm = (np.array([float(t["fwhm"]) for t in tags]) * factor
            if all("fwhm" in t for t in tags) else None)
    bad = (np.array([float(t["bbl"]) == 0 for t in tags])
           if all("bbl" in t for t in tags) else None)
    wavelength = raw * factor
  elif all(d and _DESCRIPTION.search(d) for d in ds.descriptions):
    found = [_DESCRIPTION.search(d) for d in ds.descriptions]
    raw = np.array([float(m.group(1)) for m in found])
    wavelength = raw * scene_lib.nm_per_unit(raw, found[0].group(2), name)
    fwhm, bad = None, None
  elif (xml := _metadata_xml(path)) is not None:
    (wavelength, fwhm), bad = _xml_band_table(xml, ds.count, name), None
  else:
    raise ValueError(
        f"{name}: no per-band 'wavelength' metadata (GDAL band tags), no "
        "wavelengths in the band descriptions and no EnMAP METADATA.XML "
        "beside the file. Add the tags (e.g. gdal_edit.py -mo "
        "wavelength=... per band) or keep the product's METADATA.XML next "
        "to the image.")
  if fwhm is None:
    fwhm = scene_lib.fwhm_from_spacing(wavelength, name)
  return wavelength, fwhm, bad


def read_geotiff(path: PathLike, scale: Optional[float] = None,
                 nodata: Optional[float] = None) -> scene_lib.Scene:
  """Reads a band-first reflectance GeoTIFF (e.g. EnMAP L2A) into a Scene.

  Band centres, FWHM and the bad-band list come from the per-band GDAL
  metadata items `wavelength`, `fwhm`, `bbl` and `wavelength_units` (how
  GDAL/rasterio expose an EnMAP-Box GeoTIFF), else from band descriptions
  like "band 1 (418.24 Nanometers)", else from the DLR product's
  METADATA.XML beside the image (bandCharacterisation/bandID). Bands are
  sorted by wavelength (EnMAP stores the VNIR then the SWIR detector).

  Args:
    path: the GeoTIFF.
    scale: fraction = raw * scale. Default: the file's per-band scale and
      offset (GDAL SCALE/OFFSET, 0.0001 for EnMAP L2A); files without them
      get percent/x10000 detection with a warning.
    nodata: fill value; default the file's nodata (-32768 for EnMAP L2A).

  Returns:
    The Scene; bands that are all fill (EnMAP's water-vapour bands) are bad.
  """
  path = pathlib.Path(path)
  name = path.stem
  with rasterio.open(path) as ds:
    wavelength, fwhm, bad = _band_table(ds, path)
    raw = ds.read()
    nodata = ds.nodata if nodata is None else nodata
    file_scale = np.array(ds.scales, dtype=np.float64)
    file_offset = np.array(ds.offsets, dtype=np.float64)
    crs = ds.crs
    transform = None if ds.transform.is_identity and crs is None else (
        ds.transform)
  fill = None
  if nodata is not None:
    fill = np.isnan(raw) if np.isnan(nodata) else raw == nodata
  values = raw.astype(np.float32)
  if scale is None and (np.any(file_scale != 1) or np.any(file_offset != 0)):
    values = (values * file_scale[:, None, None].astype(np.float32)
              + file_offset[:, None, None].astype(np.float32))
    scale = 1.0
  return scene_lib.from_raw(values, wavelength, fwhm, name=name, fill=fill,
                            bad=bad, scale=scale, crs=crs, transform=transform)
