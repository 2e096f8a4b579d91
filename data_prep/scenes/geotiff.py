"""GeoTIFF scenes (EnMAP L2A and other band-tagged GeoTIFFs) via rasterio."""
import pathlib
import re
from typing import Optional, Union
from xml.etree import ElementTree

import affine
import numpy as np
import rasterio
import rasterio.errors
import rasterio.windows

from data_prep.scenes import scene as scene_lib
from deepsalt_spectral import errors

PathLike = Union[str, pathlib.Path]

# "band 1 (418.24 Nanometers)": the wavelength GDAL writes into descriptions.
_DESCRIPTION = re.compile(r"\(\s*([-+]?\d+(?:\.\d*)?)\s*([A-Za-zµ]*)\s*\)\s*$")
# EnMAP L2A's fill value.
_INT16_NODATA = -32768


def _open(path: pathlib.Path):
  """rasterio.open, with a clear error for a missing or unreadable file."""
  if not path.is_file():
    raise errors.UserError(f"Scene file {path} does not exist.")
  try:
    return rasterio.open(path)
  except rasterio.errors.RasterioIOError as e:
    raise errors.UserError(
        f"{path} is not a readable GeoTIFF ({e}); check the file (was the "
        "download complete?).") from e


def _read(ds, path: pathlib.Path, *args, **kwargs) -> np.ndarray:
  """ds.read, with a clear error for a truncated or damaged file."""
  try:
    return ds.read(*args, **kwargs)
  except rasterio.errors.RasterioIOError as e:
    raise errors.UserError(
        f"{path}: reading the pixels failed ({e}); the file is truncated or "
        "damaged: download it again.") from e


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
    raise errors.UserError(
        f"{name}: {xml.name} describes {len(bands)} bands, the "
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
    raise errors.UserError(
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
  with _open(path) as ds:
    wavelength, fwhm, bad = _band_table(ds, path)
    raw = _read(ds, path)
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
                            bad=bad, scale=scale, crs=crs, transform=transform,
                            in_place=True)


class GeoTiffRows:
  """A band-first GeoTIFF scene read one block of rows at a time.

  For scenes too large to hold at once (a full EnMAP L2A scene is about
  1000 x 1000 px x 224 bands). Band table, scale and nodata follow
  `read_geotiff`, decided once for the whole file on a decimated preview (at
  most `preview` px a side, nearest neighbour): bands without data there are
  bad, files without SCALE/OFFSET tags get their scale detected there, and
  implausible values stop there. Use as a context manager, or `close()`.

  Attributes:
    name, wavelength, fwhm, bad, crs, transform: as in `Scene`.
    shape: (rows, cols) of the whole scene.
  """

  def __init__(self, path: PathLike, scale: Optional[float] = None,
               nodata: Optional[float] = None, preview: int = 256):
    path = pathlib.Path(path)
    self.name = path.stem
    self._path = path
    self._ds = _open(path)
    try:
      self._describe(path, scale, nodata, preview)
    except BaseException:
      self._ds.close()
      raise

  def _describe(self, path: pathlib.Path, scale: Optional[float],
                nodata: Optional[float], preview: int) -> None:
    """Band table, georeference, scale and bad bands; checks the preview."""
    ds = self._ds
    wavelength, fwhm, bad = _band_table(ds, path)
    # Read bands straight into wavelength order (EnMAP: VNIR, then SWIR).
    order = np.argsort(wavelength, kind="stable")
    self._indexes = [int(i) + 1 for i in order]
    self._nodata = ds.nodata if nodata is None else nodata
    self._scale = np.float32(1.0) if scale is None else np.float32(scale)
    self._offset = np.float32(0.0)
    file_scale = np.array(ds.scales, np.float64)[order]
    file_offset = np.array(ds.offsets, np.float64)[order]
    if scale is None and (np.any(file_scale != 1) or np.any(file_offset != 0)):
      self._scale = file_scale[:, None, None].astype(np.float32)
      self._offset = file_offset[:, None, None].astype(np.float32)
      scale = 1.0
    self.shape = (ds.height, ds.width)
    self.crs = ds.crs
    self.transform = None if ds.transform.is_identity and ds.crs is None else (
        ds.transform)
    out_shape = (len(order), min(ds.height, preview), min(ds.width, preview))
    values, fill = self._read(out_shape=out_shape)
    if scale is None and not fill.all():
      # The same rule as read_geotiff, on the preview's values. (Without any,
      # from_raw below stops: every pixel is nodata.)
      detect = scene_lib._detect_scale  # pylint: disable=protected-access
      self._scale = np.float32(detect(values[~fill], self.name))
      values *= self._scale
    # from_raw marks flagged, bad-window and empty bands and checks values.
    sample = scene_lib.from_raw(
        values, wavelength[order], fwhm[order], name=self.name, fill=fill,
        bad=None if bad is None else bad[order], scale=1.0, in_place=True)
    self.wavelength, self.fwhm, self.bad = (
        sample.wavelength, sample.fwhm, sample.bad)

  def _read(self, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(scaled float32 values, fill mask), bands in wavelength order."""
    raw = _read(self._ds, self._path, self._indexes, **kwargs)
    if self._nodata is None:
      fill = np.zeros(raw.shape, bool)
    else:
      fill = np.isnan(raw) if np.isnan(self._nodata) else raw == self._nodata
    # In place: a full EnMAP block is 57 MB of float32 per temporary.
    values = raw.astype(np.float32)
    values *= self._scale
    if np.any(self._offset):
      values += self._offset
    return values, fill

  def read(self, start: int, stop: int) -> Optional[scene_lib.Scene]:
    """Rows [start, stop) as a Scene; None where all of them are nodata.

    A pixel missing any good band is nodata, and one with NaN/Inf in a good
    band is nodata and `non_finite`, as in `read_geotiff`.
    """
    if not 0 <= start < stop <= self.shape[0]:
      raise errors.UserError(f"{self.name}: rows [{start}, {stop}) are not "
                             f"within the scene's {self.shape[0]} rows.")
    window = rasterio.windows.Window(0, start, self.shape[1], stop - start)
    values, fill = self._read(window=window)
    good = ~self.bad[:, None, None]
    nodata = np.any(fill, axis=0, where=good)
    non_finite = scene_lib.non_finite_pixels(
        values, self.bad, nodata, f"{self.name} rows {start}-{stop}")
    nodata |= non_finite
    if nodata.all() and not non_finite.any():
      return None
    np.copyto(values, np.nan, where=fill | nodata)
    transform = (None if self.transform is None else
                 self.transform @ affine.Affine.translation(0, start))
    return scene_lib.Scene(
        reflectance=values, wavelength=self.wavelength, fwhm=self.fwhm,
        bad=self.bad, nodata=nodata, crs=self.crs, transform=transform,
        name=self.name, non_finite=non_finite)

  def close(self) -> None:
    self._ds.close()

  def __enter__(self) -> "GeoTiffRows":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def write_geotiff(path: PathLike, reflectance: np.ndarray, sensor, crs,
                  transform: affine.Affine) -> None:
  """Writes a scene the way EnMAP L2A GeoTIFFs come.

  Every band of `sensor` as int16 reflectance x 10000 with GDAL SCALE
  0.0001, -32768 for no data and for the bad bands, and per-band
  `wavelength`, `fwhm` (nm) and `bbl` tags.

  Args:
    path: the file to write.
    reflectance: [n_good, rows, cols] fractions at the sensor's good bands;
      NaN where there is no data.
    sensor: a `deepsalt_spectral.sensors.Sensor`.
    crs: the map CRS (anything rasterio takes).
    transform: pixel-to-map affine transform.
  """
  _, rows, cols = reflectance.shape
  values = np.full((sensor.n_bands, rows, cols), _INT16_NODATA, np.int16)
  scaled = np.round(np.nan_to_num(reflectance, nan=0.0) * 1e4)
  values[sensor.good] = np.where(np.isnan(reflectance), _INT16_NODATA,
                                 np.clip(scaled, -32767, 32767))
  profile = dict(driver="GTiff", width=cols, height=rows, count=sensor.n_bands,
                 dtype="int16", nodata=_INT16_NODATA, crs=crs,
                 transform=transform, interleave="band", compress="deflate")
  with rasterio.open(path, "w", **profile) as dst:
    for b in range(sensor.n_bands):
      dst.update_tags(b + 1, wavelength=f"{sensor.wavelength[b]:.3f}",
                      fwhm=f"{sensor.fwhm[b]:.3f}",
                      bbl=str(int(not sensor.bad[b])),
                      wavelength_units="Nanometers")
    dst.scales = [1e-4] * sensor.n_bands
    dst.offsets = [0.0] * sensor.n_bands
    dst.write(values)
