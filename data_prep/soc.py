"""TFDS builder 'deepsalt_soc': measured SOC on LimeSoDa's five vis-NIR sets.

The real-label benchmark: lab spectra and SOC (%) are measured; only the
satellite view is simulated (`satellite_view.satellite_view`). SL.125 and
UL.120 report soil organic matter, converted with SOC = SOM / 1.724 (van
Bemmelen factor). Each set is a region; 'fold' keeps LimeSoDa's ten
cross-validation folds (1..10), the way the sets are meant to be evaluated.
"""
import tensorflow_datasets as tfds

from data_prep import records
from data_prep import sources


class DeepsaltSoc(records.SpectraBuilder):
  """Soil organic carbon from lab and simulated satellite spectra."""

  VERSION = tfds.core.Version("2.1.0")
  RELEASE_NOTES = {
      "1.0.0": "LimeSoDa CV.98, SL.125, UL.120, SC.93, SSP.460.",
      **records.SHARED_RELEASE_NOTES,
      "2.1.0": "'covariates': measured clay (%).",
  }
  REGION_NAMES = sources.LIMESODA_SETS
  COVARIATES = ("clay",)  # SOC is the target.
  TARGET = "SOC, % (measured; SOM / 1.724 for SL.125 and UL.120)"
  MEASURED = ("'lab', 'target' (SOC), regions, folds, SC.93 coordinates "
              "and the covariate clay.")
  SIMULATED = ("'satellite' (data_prep.satellite_view), from "
               "real vegetation endmembers (earthlib).")

  def _samples(self):
    samples = sources.limesoda()
    return samples, samples.reflectance, samples.soc
