"""TFDS builders of lab soil spectral libraries the user downloads by hand.

Each builder reads its files from TFDS `manual_dir` and writes array_record
records {'lab', 'target', 'sample_id', 'region', 'lat', 'lon'}: 'lab' is
reflectance (fraction) on the lab grid
(`deepsalt_spectral.resampling.lab_wavelengths()`), resampled
from the library's own grid; 'target' is EC in dS/m.

- `LucasTopsoil`: LUCAS topsoil spectra (absorbance, one column per
  wavelength plus PointID) joined with the topsoil table (Point_ID, EC mS/m).
- `OsslVisnir`: OSSL vis-NIR scans (`scan_visnir.<nm>_ref`) joined on
  `id.layer_uuid_txt` with the soil lab table (`ec_usda.a364_ds.m`, dS/m).
- `CsvLibrary`: any CSV with one column per wavelength, configured with a
  `CsvLibraryConfig` (target, id, optional region/lat/lon columns, units).
"""
import abc
import dataclasses
import pathlib
import re
from typing import Optional

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from data_prep import array_record_builder
from data_prep.libraries import tables
from deepsalt_spectral import errors
from deepsalt_spectral import resampling

def _find(manual_dir: pathlib.Path, pattern: str, what: str,
          many: bool = False):
  """Files under manual_dir whose name matches regex `pattern` (any case)."""
  regex = re.compile(pattern, re.IGNORECASE)
  hits = sorted(p for p in manual_dir.rglob("*")
                if p.is_file() and regex.search(p.name))
  if not hits:
    raise errors.UserError(f"No {what} in {manual_dir} (file names matching "
                           f"{pattern!r}); see MANUAL_DOWNLOAD_INSTRUCTIONS.")
  if not many and len(hits) > 1:
    raise errors.UserError(f"Several {what} files in {manual_dir}: "
                           f"{[p.name for p in hits]}; keep one.")
  return hits if many else hits[0]


class _LabLibrary(array_record_builder.ArrayRecordBuilder, abc.ABC):
  """Shared record schema and generation; subclasses read their files."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "lab": tfds.features.Tensor(
                shape=(resampling.lab_wavelengths().size,), dtype=np.float32),
            "target": tfds.features.Scalar(dtype=np.float32,
                                           doc="EC in dS/m"),
            "sample_id": tfds.features.Text(),
            "region": tfds.features.Text(),
            "lat": tfds.features.Scalar(dtype=np.float32),
            "lon": tfds.features.Scalar(dtype=np.float32),
        }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(pathlib.Path(
        dl_manager.manual_dir))}

  def _generate_examples(self, manual_dir: pathlib.Path):
    yield from tables.lab_examples(*self._read(manual_dir))

  @abc.abstractmethod
  def _read(self, manual_dir: pathlib.Path
            ) -> tuple[tables.SpectralTable, pd.DataFrame]:
    """Returns the library's spectra and its targets table."""


_ID_ALIASES = ("PointID", "Point_ID", "POINTID", "POINT_ID")


class LucasTopsoil(_LabLibrary):
  """LUCAS topsoil vis-NIR spectra (ESDAC) with EC, lab grid, EC in dS/m."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Request the LUCAS topsoil data from ESDAC
  (https://esdac.jrc.ec.europa.eu/projects/lucas) and put into manual_dir:
  - the spectra CSV file(s): a file name containing 'spectra', columns
    'PointID' (or 'Point_ID') and one column per wavelength in nm ('400',
    '400.5', ..., '2499.5') holding absorbance log10(1/R) as ESDAC ships it;
  - the topsoil table, e.g. LUCAS_Topsoil_2015_20200323.csv, with 'Point_ID'
    and 'EC' (mS/m; converted to dS/m), optional 'NUTS_0' (region) and
    coordinates ('GPS_LAT'/'TH_LAT', 'GPS_LONG'/'TH_LONG').
  """

  def _read(self, manual_dir):
    table = tables.read_spectral_table(
        _find(manual_dir, r"spectra.*\.csv(\.gz)?$", "LUCAS spectra", True),
        id_column=_ID_ALIASES, quantity="absorbance",
        wavelength_range=tables.LAB_READ_RANGE_NM)
    targets = tables.read_targets(
        _find(manual_dir, r"topsoil.*\.csv(\.gz)?$", "LUCAS topsoil table"),
        id_column=_ID_ALIASES, target_column="EC", target_units="mS/m",
        region_column="NUTS_0", lat_column=("GPS_LAT", "TH_LAT", "Lat"),
        lon_column=("GPS_LONG", "TH_LONG", "Long", "Lon"),
        default_region="LUCAS")
    return table, targets


class OsslVisnir(_LabLibrary):
  """Open Soil Spectral Library vis-NIR scans with EC (dS/m), lab grid."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download from https://soilspectroscopy.github.io/ossl-manual/ into
  manual_dir (plain or gzipped CSV):
  - ossl_visnir_L0_v1.2.csv.gz: 'id.layer_uuid_txt' and reflectance columns
    'scan_visnir.<nm>_ref';
  - ossl_soillab_L1_v1.2.csv.gz: 'id.layer_uuid_txt' and 'ec_usda.a364_ds.m'
    (dS/m);
  - optional ossl_soilsite_L0_v1.2.csv.gz: 'id.layer_uuid_txt',
    'latitude.point_wgs84_dd', 'longitude.point_wgs84_dd' and
    'dataset.code_ascii_txt' (used as region).
  """
  _ID = "id.layer_uuid_txt"

  def _read(self, manual_dir):
    table = tables.read_spectral_table(
        _find(manual_dir, r"ossl_visnir.*\.csv(\.gz)?$", "OSSL vis-NIR table"),
        id_column=self._ID, wavelength_pattern=r"^scan_visnir\.(\d+(?:\.\d+)?)"
        r"_ref$", wavelength_range=tables.LAB_READ_RANGE_NM)
    targets = tables.read_targets(
        _find(manual_dir, r"ossl_soillab.*\.csv(\.gz)?$",
              "OSSL soil lab table"),
        id_column=self._ID, target_column="ec_usda.a364_ds.m",
        target_units="dS/m", default_region="OSSL")
    try:
      sites = _find(manual_dir, r"ossl_soilsite.*\.csv(\.gz)?$", "site table")
    except ValueError:
      return table, targets
    site = pd.read_csv(sites, dtype={self._ID: str}).set_index(self._ID)
    for key, column in (("lat", "latitude.point_wgs84_dd"),
                        ("lon", "longitude.point_wgs84_dd"),
                        ("region", "dataset.code_ascii_txt")):
      if column in site:
        values = site[column].reindex(targets.index)
        targets[key] = values.where(values.notna(), targets[key])
    return table, targets


@dataclasses.dataclass(eq=False)
class CsvLibraryConfig(tfds.core.BuilderConfig):
  """A CSV spectral library: one row per sample, one column per wavelength.

  Spectra and targets may sit in one file (`targets_file` None) or two files
  joined on `id_column`.
  """
  spectra_file: str = "library.csv"
  targets_file: Optional[str] = None
  id_column: str = "sample_id"
  target_column: str = "ec"
  target_units: str = "dS/m"
  region_column: Optional[str] = None
  lat_column: Optional[str] = None
  lon_column: Optional[str] = None
  default_region: str = "csv"
  quantity: str = "reflectance"
  wavelength_pattern: str = tables.NUMBER_COLUMN


class CsvLibrary(_LabLibrary):
  """A generic CSV soil spectral library with EC, on the lab grid."""
  BUILDER_CONFIGS = [CsvLibraryConfig(name="default")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put the CSV file(s) named in the CsvLibraryConfig (default library.csv)
  into manual_dir: columns named by wavelength in nm ('400', '410', ...),
  the sample id column, the EC column (units in the config) and optional
  region/lat/lon columns.
  """

  def _read(self, manual_dir):
    config = self.builder_config
    spectra_path = manual_dir / config.spectra_file
    targets_path = manual_dir / (config.targets_file or config.spectra_file)
    for path in {spectra_path, targets_path}:
      if not path.is_file():
        raise errors.UserError(
            f"{path} not found; put it into manual_dir or fix "
            "CsvLibraryConfig.")
    table = tables.read_spectral_table(
        spectra_path, id_column=config.id_column, quantity=config.quantity,
        wavelength_pattern=config.wavelength_pattern,
        wavelength_range=tables.LAB_READ_RANGE_NM)
    targets = tables.read_targets(
        targets_path, id_column=config.id_column,
        target_column=config.target_column, target_units=config.target_units,
        region_column=config.region_column or (),
        lat_column=config.lat_column or (),
        lon_column=config.lon_column or (),
        default_region=config.default_region)
    return table, targets
