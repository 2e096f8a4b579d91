"""PRISMA L2 (HDF-EOS5 .he5) and EMIT L2A (NetCDF4 = HDF5) scenes via h5py.

PRISMA L2D: cubes `HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/{VNIR,SWIR}_Cube`,
uint16 [rows, bands, cols]; reflectance = Min + DN (Max - Min) / 65535 with
the global attributes L2Scale{Vnir,Swir}{Min,Max}; band centres and widths in
the global attributes List_Cw_{Vnir,Swir} and List_Fwhm_{Vnir,Swir} (listed
from long to short wavelength; List_Cw_*_Flags 0 = band not delivered, centre
0); map grid from Epsg_Code and Product_ULcorner_{easting,northing}, 30 m.

EMIT L2A RFL: `reflectance` float32 [downtrack, crosstrack, bands] (fill
-9999), `sensor_band_parameters/{wavelengths,fwhm,good_wavelengths}`,
`location/{glt_x,glt_y}` (1-based swath column/row of each pixel of a
north-up grid, 0 = none) with the grid's GDAL `geotransform` and WKT
`spatial_ref` as global attributes.
"""
import pathlib
from typing import Union

import affine
import h5py
import numpy as np

from data_prep.scenes import scene as scene_lib
from deepsalt_spectral import errors

PathLike = Union[str, pathlib.Path]

_PRISMA_SWATHS = "HDFEOS/SWATHS"
_PRISMA_PIXEL_M = 30.0
_PRISMA_DN_MAX = 65535.0
_EMIT_FILL = -9999.0


def _attr(f: h5py.File, key: str, path: pathlib.Path):
  if key not in f.attrs:
    raise errors.UserError(
        f"{path}: global attribute {key!r} missing; not a PRISMA "
        "L2 product or an unsupported processor version.")
  value = f.attrs[key]
  return value.decode() if isinstance(value, bytes) else value


def _prisma_swath(f: h5py.File, path: pathlib.Path) -> str:
  """The hyperspectral swath group (PRS_L2D_HCO, else another L2 HCO)."""
  names = list(f.get(_PRISMA_SWATHS, {}).keys())
  for preferred in ("PRS_L2D_HCO", "PRS_L2C_HCO", "PRS_L2B_HCO"):
    if preferred in names:
      return preferred
  raise errors.UserError(
      f"{path}: no PRISMA L2 hyperspectral swath under "
      f"{_PRISMA_SWATHS} (found {names}); expected PRS_L2D_HCO.")


def read_prisma(path: PathLike) -> scene_lib.Scene:
  """Reads a PRISMA L2 .he5 product (VNIR + SWIR merged, sorted) into a Scene.

  Bands the product does not deliver (centre 0) are left out. A pixel whose
  DN is 0 in every band is nodata. Only L2D is map-projected; L2B/L2C
  scenes get no transform.
  """
  path = pathlib.Path(path)
  with h5py.File(path, "r") as f:
    swath = _prisma_swath(f, path)
    fields = f[f"{_PRISMA_SWATHS}/{swath}/Data Fields"]
    cubes, centres, widths = [], [], []
    for det in ("Vnir", "Swir"):
      dn = fields[f"{det.upper()}_Cube"][()]
      lo = float(_attr(f, f"L2Scale{det}Min", path))
      hi = float(_attr(f, f"L2Scale{det}Max", path))
      cw = np.asarray(_attr(f, f"List_Cw_{det}", path), np.float64).ravel()
      fwhm = np.asarray(_attr(f, f"List_Fwhm_{det}", path), np.float64).ravel()
      flags = (np.asarray(f.attrs[f"List_Cw_{det}_Flags"]).ravel() != 0
               if f"List_Cw_{det}_Flags" in f.attrs else np.ones(cw.size, bool))
      if dn.ndim != 3 or dn.shape[1] != cw.size:
        raise errors.UserError(
            f"{path}: {det.upper()}_Cube has shape {dn.shape}; "
            f"expected [rows, {cw.size} bands, cols].")
      keep = flags & (cw > 0)
      cube = dn[:, keep, :].transpose(1, 0, 2)
      cubes.append((cube, lo, hi))
      centres.append(cw[keep])
      widths.append(fwhm[keep])
    epsg = f.attrs.get("Epsg_Code")
    ul = (f.attrs.get("Product_ULcorner_easting"),
          f.attrs.get("Product_ULcorner_northing"))
  outside = np.all(np.concatenate([c for c, _, _ in cubes]) == 0, axis=0)
  values = np.concatenate([
      lo + c.astype(np.float32) * np.float32((hi - lo) / _PRISMA_DN_MAX)
      for c, lo, hi in cubes]).astype(np.float32)
  wavelength = np.concatenate(centres)
  fwhm = np.concatenate(widths)
  crs = transform = None
  if swath == "PRS_L2D_HCO" and epsg is not None and None not in ul:
    crs = f"EPSG:{int(np.ravel(epsg)[0])}"
    # The UL corner coordinates are taken as the outer corner of pixel (0, 0).
    transform = affine.Affine(_PRISMA_PIXEL_M, 0.0, float(np.ravel(ul[0])[0]),
                              0.0, -_PRISMA_PIXEL_M, float(np.ravel(ul[1])[0]))
  return scene_lib.from_raw(values, wavelength, fwhm, name=path.stem,
                            fill=outside[None], scale=1.0, crs=crs,
                            transform=transform)


def read_emit(path: PathLike, ortho: bool = True) -> scene_lib.Scene:
  """Reads an EMIT L2A reflectance NetCDF into a Scene.

  Args:
    path: the EMIT_L2A_RFL_*.nc file.
    ortho: place the swath on the product's north-up lon/lat grid with the
      geometry lookup table (GLT), giving a georeferenced Scene; grid cells
      without a swath pixel are nodata. False keeps the raw swath
      [bands, downtrack, crosstrack] without transform or CRS.

  Returns:
    The Scene; bands with good_wavelengths == 0 are bad.
  """
  path = pathlib.Path(path)
  with h5py.File(path, "r") as f:
    for key in ("reflectance", "sensor_band_parameters/wavelengths"):
      if key not in f:
        raise errors.UserError(
            f"{path}: dataset {key!r} missing; not an EMIT L2A "
            "reflectance file.")
    data = f["reflectance"]
    fill_value = float(np.ravel(data.attrs.get("_FillValue", _EMIT_FILL))[0])
    swath = data[()]  # [downtrack, crosstrack, bands]
    params = f["sensor_band_parameters"]
    wavelength = params["wavelengths"][()].astype(np.float64)
    fwhm = (params["fwhm"][()].astype(np.float64) if "fwhm" in params
            else scene_lib.fwhm_from_spacing(wavelength, path.stem))
    good = (params["good_wavelengths"][()] != 0 if "good_wavelengths" in params
            else np.ones(wavelength.size, bool))
    glt = None
    if ortho:
      if "location/glt_x" not in f or "geotransform" not in f.attrs:
        raise errors.UserError(
            f"{path}: no location/glt_x or geotransform to "
            "orthorectify with; pass ortho=False for the swath.")
      glt = (f["location/glt_x"][()], f["location/glt_y"][()])
      geotransform = [float(v) for v in np.ravel(f.attrs["geotransform"])]
      wkt = f.attrs.get("spatial_ref", "EPSG:4326")
      crs = wkt.decode() if isinstance(wkt, bytes) else str(wkt)
  if swath.shape[-1] != wavelength.size:
    raise errors.UserError(
        f"{path}: reflectance has {swath.shape[-1]} bands but "
        f"{wavelength.size} wavelengths.")
  if glt is None:
    cube = swath.transpose(2, 0, 1)
    return scene_lib.from_raw(cube, wavelength, fwhm, name=path.stem,
                              fill=cube == fill_value, bad=~good, scale=1.0)
  glt_x, glt_y = (np.asarray(g, np.int64) for g in glt)
  placed = (glt_x > 0) & (glt_y > 0)
  cube = np.full((wavelength.size,) + glt_x.shape, fill_value, np.float32)
  cube[:, placed] = swath[glt_y[placed] - 1, glt_x[placed] - 1, :].T
  return scene_lib.from_raw(cube, wavelength, fwhm, name=path.stem,
                            fill=cube == fill_value, bad=~good, scale=1.0,
                            crs=crs, transform=affine.Affine.from_gdal(
                                *geotransform))
