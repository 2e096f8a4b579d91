"""TFDS builder 'deepsalt_salinity': the embedded soil-salinity benchmark.

Real lab soil spectra (LimeSoDa's five vis-NIR sets and the ICRAF-ISRIC
library from earthlib) with simulated salinity (EC, dS/m) and a simulated
satellite view (`forward_model`, `satellite_view`). Regions: each
LimeSoDa set and each ICRAF continent (`sources.REGIONS`). Configs are
named by sensor (enmap, prisma, emit); one split 'train' holds every
sample.
"""
import numpy as np
import tensorflow_datasets as tfds

from data_prep import forward_model
from data_prep import records
from data_prep import sources


class DeepsaltSalinity(records.SpectraBuilder):
  """Soil salinity (EC) from lab and simulated satellite spectra."""

  VERSION = tfds.core.Version("2.1.0")
  RELEASE_NOTES = {
      "1.0.0": "LimeSoDa (896) + located ICRAF-ISRIC (3,720) lab spectra; "
               "simulated EC and satellite view.",
      **records.SHARED_RELEASE_NOTES,
      "2.1.0": "'covariates': measured clay and SOC (%) for LimeSoDa, NaN "
               "for ICRAF (earthlib has neither).",
  }
  REGION_NAMES = sources.REGIONS
  COVARIATES = ("clay", "soc")
  TARGET = "EC of the saturated paste extract, dS/m (simulated)"
  MEASURED = ("'lab' before the salt effects: real lab soil reflectance "
              "(LimeSoDa, ICRAF-ISRIC); regions, coordinates, LimeSoDa "
              "folds and the covariates (LimeSoDa clay and SOC; the "
              "simulated EC does not depend on them).")
  SIMULATED = ("'target' (EC) and the salt effects in 'lab' "
               "(data_prep.forward_model), and all of 'satellite' "
               "(data_prep.satellite_view, with real vegetation endmembers "
               "from earthlib).")

  def _samples(self):
    samples = sources.concatenate(sources.limesoda(), sources.icraf())
    ec, lab, _ = forward_model.simulate_salinity(
        samples.reflectance, samples.region, self.REGION_NAMES,
        self.builder_config.seed)
    return samples, lab, ec.astype(np.float32)
