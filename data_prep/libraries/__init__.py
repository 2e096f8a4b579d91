"""Lab soil spectral libraries: readers (`formats`) of ENVI, CSV, LUCAS, OSSL
and OPUS files; all parsing goes through `read_spectral_table` and
`read_targets` (see `tables`).
"""
from data_prep.libraries.tables import EC_UNITS
from data_prep.libraries.tables import lab_examples
from data_prep.libraries.tables import LAB_FWHM_NM
from data_prep.libraries.tables import on_lab_grid
from data_prep.libraries.tables import read_spectral_table
from data_prep.libraries.tables import read_targets
from data_prep.libraries.tables import SpectralTable
