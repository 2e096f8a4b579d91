"""TFDS builders of vis-NIR lab libraries, for the tests: a round trip
through a dataset checks each reader (`data_prep.libraries.formats`) end to
end. (The product reads a library inside an own-data project,
`data_prep.project`.)

Each builder reads its files from TFDS `manual_dir` and writes array_record
records {'lab', 'target', 'sample_id', 'region', 'lat', 'lon'}: 'lab' is
reflectance (fraction) on the vis-NIR lab grid (`lab_grid.visnir()`),
resampled from the library's own grid; 'target' is EC in dS/m.

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
from typing import Optional

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from data_prep import array_record_builder
from data_prep.libraries import formats
from data_prep.libraries import tables
from deepsalt_spectral import resampling


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
    table, targets = self._read(manual_dir)
    yield from tables.lab_examples(tables.on_lab_grid(table), targets)

  @abc.abstractmethod
  def _read(self, manual_dir: pathlib.Path
            ) -> tuple[tables.SpectralTable, pd.DataFrame]:
    """Returns the library's spectra and its targets table."""


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
    return formats.read_lucas(manual_dir)


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

  def _read(self, manual_dir):
    return formats.read_ossl(manual_dir, unit="nm")


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
  axis_pattern: str = tables.NUMBER_COLUMN


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
    return formats.read_csv_library(
        manual_dir / config.spectra_file,
        manual_dir / (config.targets_file or config.spectra_file),
        id_column=config.id_column, target_column=config.target_column,
        target_units=config.target_units,
        region_column=config.region_column or (),
        lat_column=config.lat_column or (), lon_column=config.lon_column or (),
        default_region=config.default_region, unit="nm",
        quantity=config.quantity, axis_pattern=config.axis_pattern)
