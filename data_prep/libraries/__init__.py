"""Lab soil spectral libraries: readers (`formats`) and TFDS builders of
vis-NIR ones (LUCAS, OSSL, any CSV).

Builders read hand-downloaded files from TFDS `manual_dir`; all parsing goes
through `read_spectral_table` and `read_targets` (see `tables`).
"""
from data_prep.libraries.builders import CsvLibrary
from data_prep.libraries.builders import CsvLibraryConfig
from data_prep.libraries.builders import LucasTopsoil
from data_prep.libraries.builders import OsslVisnir
from data_prep.libraries.tables import EC_UNITS
from data_prep.libraries.tables import lab_examples
from data_prep.libraries.tables import LAB_FWHM_NM
from data_prep.libraries.tables import on_lab_grid
from data_prep.libraries.tables import read_spectral_table
from data_prep.libraries.tables import read_targets
from data_prep.libraries.tables import SpectralTable
