"""Hyperspectral satellite scenes as reflectance fractions.

Readers for EnMAP L2A GeoTIFF, ENVI, PRISMA L2 and EMIT L2A files, all giving
a `Scene` (or, for the mapper, blocks of rows: `open_rows`); spectra at
field points (`extract_pixels`) and bare-soil pixels of the target domain
(`soil_pixels`, `seeded_subset`).
"""
from data_prep.scenes.envi import read_envi
from data_prep.scenes.geotiff import read_geotiff
from data_prep.scenes.hdf5 import read_emit
from data_prep.scenes.hdf5 import read_prisma
from data_prep.scenes.pixels import extract_pixels
from data_prep.scenes.pixels import seeded_subset
from data_prep.scenes.pixels import soil_pixels
from data_prep.scenes.read import read_scene
from data_prep.scenes.read import SCENE_SUFFIXES
from data_prep.scenes.rows import open_rows
from data_prep.scenes.scene import Scene
