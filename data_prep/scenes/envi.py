"""ENVI images (.hdr + BSQ/BIL/BIP raw data) read with numpy."""
import pathlib
import re
from typing import Optional, Union

from absl import logging
import affine
import numpy as np

from data_prep.scenes import scene as scene_lib
from deepsalt_spectral import errors

PathLike = Union[str, pathlib.Path]

# ENVI 'data type' codes (complex types are not reflectance).
_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4",
           14: "i8", 15: "u8"}
# Axis order of each interleave, as named axes of the stored array.
_LAYOUT = {"bsq": ("bands", "lines", "samples"),
           "bil": ("lines", "bands", "samples"),
           "bip": ("lines", "samples", "bands")}
_DATA_SUFFIXES = ("", ".img", ".dat", ".bsq", ".bil", ".bip", ".raw")
# The last parenthesised number of a band name, e.g. "Band 1 (426.82)".
_NAME_WAVELENGTH = re.compile(r"\(\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"
                              r"[^()]*\)\s*$")


def parse_header(path: PathLike) -> dict[str, Union[str, list[str]]]:
  """Parses an ENVI header: lower-case keys; `{a, b}` values become lists."""
  text = pathlib.Path(path).read_text(errors="replace")
  if not text.lstrip().startswith("ENVI"):
    raise errors.UserError(f"{path} is not an ENVI header (first line must be "
                           "'ENVI').")
  header = {}
  for match in re.finditer(r"^\s*([^=\n{}]+?)\s*=\s*(\{[^}]*\}|[^\n]*)", text,
                           flags=re.MULTILINE):
    key, value = match.group(1).strip().lower(), match.group(2).strip()
    if value.startswith("{"):
      inner = value[1:-1].strip()
      header[key] = [v.strip() for v in inner.split(",")] if inner else []
    else:
      header[key] = value
  return header


def _paths(path: PathLike) -> tuple[pathlib.Path, pathlib.Path]:
  """(header, data) paths from either the header or the data file path."""
  path = pathlib.Path(path)
  if path.suffix.lower() == ".hdr":
    header = path
    stem = path.with_suffix("")
    candidates = [pathlib.Path(str(stem) + s) for s in _DATA_SUFFIXES]
  else:
    header = next((h for h in (pathlib.Path(str(path) + ".hdr"),
                               path.with_suffix(".hdr")) if h.is_file()),
                  path.with_suffix(".hdr"))
    candidates = [path]
  if not header.is_file():
    raise errors.UserError(f"No ENVI header for {path}: expected {header}.")
  data = next((c for c in candidates if c.is_file()), None)
  if data is None:
    raise errors.UserError(f"No ENVI data file for header {header}; looked for "
                           f"{', '.join(c.name for c in candidates)}.")
  return header, data


def _number(header, key, default=None, cast=float):
  if key not in header:
    if default is None:
      raise errors.UserError(f"ENVI header lacks the required key '{key}'.")
    return default
  return cast(header[key])


def _band_table(header, n_bands: int, name: str):
  """(wavelength, fwhm) in nm from the header or its band names."""
  raw = None
  if "wavelength" in header:
    raw = np.array(header["wavelength"], dtype=np.float64)
  elif "band names" in header:
    found = [_NAME_WAVELENGTH.search(b) for b in header["band names"]]
    if all(found):
      raw = np.array([float(m.group(1)) for m in found])
      logging.info("%s: band wavelengths parsed from the band names.", name)
  if raw is None:
    raise errors.UserError(
        f"{name}: the header has no 'wavelength' key and its band names "
        "carry no wavelengths; add 'wavelength = {...}' (nm) to the header.")
  if raw.size != n_bands:
    raise errors.UserError(f"{name}: header lists {raw.size} wavelengths for "
                           f"{n_bands} bands.")
  factor = scene_lib.nm_per_unit(raw, header.get("wavelength units"), name)
  wavelength = raw * factor
  if "fwhm" not in header:
    return wavelength, scene_lib.fwhm_from_spacing(wavelength, name)
  fwhm = np.array(header["fwhm"], dtype=np.float64)
  if fwhm.size != n_bands:
    raise errors.UserError(f"{name}: header lists {fwhm.size} FWHM values for "
                           f"{n_bands} bands.")
  return wavelength, fwhm * factor  # FWHM shares the wavelength units.


def _georeference(header, name: str):
  """(crs, transform) from 'map info' / 'coordinate system string'."""
  info = header.get("map info")
  if not isinstance(info, list) or len(info) < 7:
    return None, None
  try:
    ref_x, ref_y, easting, northing, size_x, size_y = map(float, info[1:7])
  except ValueError:
    logging.warning("%s: unreadable map info %s; no georeference.", name, info)
    return None, None
  if any(item.strip().lower().startswith("rotation") for item in info):
    logging.warning("%s: rotated map info is not supported; no georeference.",
                    name)
    return None, None
  # ENVI reference pixels are 1-based, at the pixel's upper-left corner.
  transform = affine.Affine(size_x, 0.0, easting - (ref_x - 1.0) * size_x,
                            0.0, -size_y, northing + (ref_y - 1.0) * size_y)
  crs = header.get("coordinate system string")
  if isinstance(crs, list):  # WKT holds commas: the parser split it.
    crs = ", ".join(crs)
  projection = info[0].strip().lower()
  if crs:
    return crs, transform
  if projection == "utm" and len(info) >= 9 and "wgs" in ",".join(info).lower():
    zone, north = int(info[7]), info[8].strip().lower().startswith("n")
    return f"EPSG:{(32600 if north else 32700) + zone}", transform
  if projection.startswith("geographic"):
    return "EPSG:4326", transform
  logging.warning("%s: map projection %r not understood; CRS left None.", name,
                  info[0])
  return None, transform


def read_envi(path: PathLike, scale: Optional[float] = None,
              nodata: Optional[float] = None) -> scene_lib.Scene:
  """Reads an ENVI image (header path or data path) into a Scene.

  Args:
    path: the .hdr file or the raw data file next to it.
    scale: fraction = raw * scale. Default: 1 / 'reflectance scale factor'
      from the header, else detected (percent, x10000) with a warning.
    nodata: fill value; default the header's 'data ignore value'.

  Returns:
    The Scene.
  """
  header_path, data_path = _paths(path)
  header = parse_header(header_path)
  name = data_path.stem if data_path.suffix else data_path.name
  if "spectral library" in str(header.get("file type", "")).lower():
    raise errors.UserError(
        f"{header_path} is an ENVI spectral library, not an "
        "image; read library spectra with data_prep.libraries.")
  lines = _number(header, "lines", cast=int)
  samples = _number(header, "samples", cast=int)
  n_bands = _number(header, "bands", cast=int)
  code = _number(header, "data type", cast=int)
  if code not in _DTYPES:
    raise errors.UserError(
        f"{header_path}: ENVI data type {code} is not supported "
        f"(supported: {sorted(_DTYPES)}).")
  order = ">" if _number(header, "byte order", 0, int) == 1 else "<"
  interleave = str(header.get("interleave", "bsq")).lower()
  if interleave not in _LAYOUT:
    raise errors.UserError(f"{header_path}: unknown interleave {interleave!r} "
                           "(expected bsq, bil or bip).")
  offset = _number(header, "header offset", 0, int)
  dtype = np.dtype(order + _DTYPES[code])
  count = lines * samples * n_bands
  available = (data_path.stat().st_size - offset) // dtype.itemsize
  if available < count:
    raise errors.UserError(
        f"{data_path} holds {available} values after the {offset}-byte "
        f"offset but the header describes {lines} x {samples} x {n_bands} = "
        f"{count} ({dtype}); header and data do not match.")
  sizes = {"bands": n_bands, "lines": lines, "samples": samples}
  layout = _LAYOUT[interleave]
  raw = np.fromfile(data_path, dtype=dtype, count=count, offset=offset)
  raw = raw.reshape([sizes[a] for a in layout])
  raw = raw.transpose([layout.index(a) for a in ("bands", "lines", "samples")])

  wavelength, fwhm = _band_table(header, n_bands, name)
  bbl = header.get("bbl")
  bad = None if bbl is None else np.array([float(b) == 0 for b in bbl])
  if nodata is None and "data ignore value" in header:
    nodata = float(header["data ignore value"])
  fill = None
  if nodata is not None:
    fill = np.isnan(raw) if np.isnan(nodata) else raw == nodata
  if scale is None and "reflectance scale factor" in header:
    factor = float(header["reflectance scale factor"])
    if factor <= 0:
      raise errors.UserError(
          f"{header_path}: reflectance scale factor {factor} "
          "must be positive.")
    scale = 1.0 / factor
  crs, transform = _georeference(header, name)
  return scene_lib.from_raw(raw, wavelength, fwhm, name=name, fill=fill,
                            bad=bad, scale=scale, crs=crs, transform=transform)
