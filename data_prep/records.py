"""The prepared-record schema and the TFDS builder both benchmarks share.

A record: 'lab' float32[180] on `resampling.lab_wavelengths()`, 'satellite'
float32[n_good] at the sensor's good bands, 'target' float32, 'region'
ClassLabel (names travel with the dataset), 'sample_id' str, 'lat'/'lon' float32
(nan if unknown), 'fold' int64 (LimeSoDa fold 1..10, 0 if none), 'u' float32,
from which the trainer's config draws each sample's role (`roles.assign_roles`),
and 'covariates' float32[k] (NaN where unknown), named by the metadata's
'covariate_names'.

Builders write array_record files (no TensorFlow needed); read them with
`tfds.data_source`. Configs are named by sensor; the same seed gives
identical records.
"""
import abc
import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data_prep import array_record_builder
from data_prep import roles
from data_prep import satellite_view
from data_prep import sources
from deepsalt_spectral import lab_grid
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors

SEED = 0  # Seed of the shipped benchmark datasets.


@dataclasses.dataclass(eq=False)
class SensorConfig(tfds.core.BuilderConfig):
  """A builder config: the sensor whose view is simulated and the seed.

  The config name names the stored dataset; give a config with another seed
  its own name (e.g. 'enmap_seed1').
  """
  sensor: str = "enmap"
  seed: int = SEED


def sensor_configs() -> list[SensorConfig]:
  return [SensorConfig(name=name, sensor=name,
                       description=f"Simulated {name} view, seed {SEED}.")
          for name in sensors.SENSORS]


# Release notes both benchmarks share (the satellite view and roles are
# made the same way for both).
SHARED_RELEASE_NOTES = {
    "1.1.0": "Stored roles with 5 % labelled (was 10 %).",
    "1.2.0": "No stored role (the trainer's config draws roles from 'u'); "
             "bands from 1325 nm on bad, as EnMAP L2A flags them.",
    "2.0.0": "Satellite view as flown (shifted centres, smile, FWHM and "
             "calibration errors per scene; methods see the nominal "
             "table), field darkening and moisture, gas and band-pattern "
             "residuals, striping, band-correlated noise "
             "(data_prep/satellite_view.py).",
}


class SpectraBuilder(array_record_builder.ArrayRecordBuilder, abc.ABC):
  """Lab spectra, their simulated satellite view and a target, one split.

  Subclasses set REGION_NAMES, TARGET, MEASURED, SIMULATED, COVARIATES and
  implement `_samples`. All samples go to split 'train': the trainer holds
  out regions.
  """
  BUILDER_CONFIGS = sensor_configs()
  REGION_NAMES: tuple[str, ...] = ()
  # `sources.LabSpectra` fields stored as 'covariates' (never the target).
  COVARIATES: tuple[str, ...] = ()
  TARGET = ""  # What 'target' holds, with its unit.
  MEASURED = ""  # Which parts of a record are measured ...
  SIMULATED = ""  # ... and which simulated.

  @property
  def sensor(self) -> sensors.Sensor:
    return sensors.builtin(self.builder_config.sensor)

  def _info(self) -> tfds.core.DatasetInfo:
    sensor = self.sensor
    n_lab = resampling.lab_wavelengths().size
    scalar = lambda dtype: tfds.features.Scalar(dtype=dtype)
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f"{self.__doc__}\nTarget: {self.TARGET}.\nMeasured: "
                     f"{self.MEASURED}\nSimulated: {self.SIMULATED}"),
        features=tfds.features.FeaturesDict({
            "lab": tfds.features.Tensor(shape=(n_lab,), dtype=np.float32),
            "satellite": tfds.features.Tensor(shape=(sensor.good.size,),
                                              dtype=np.float32),
            # What a geographic pair may see instead (satellite_view.
            # pair_views): a neighbouring pixel, another date.
            "satellite_neighbour": tfds.features.Tensor(
                shape=(sensor.good.size,), dtype=np.float32),
            "satellite_date": tfds.features.Tensor(
                shape=(sensor.good.size,), dtype=np.float32),
            "target": scalar(np.float32),
            "region": tfds.features.ClassLabel(names=self.REGION_NAMES),
            "sample_id": tfds.features.Text(),
            "lat": scalar(np.float32),
            "lon": scalar(np.float32),
            "fold": scalar(np.int64),
            "u": scalar(np.float32),
            "covariates": tfds.features.Tensor(
                shape=(len(self.COVARIATES),), dtype=np.float32),
        }),
        metadata=tfds.core.MetadataDict(
            target=self.TARGET,
            measured=self.MEASURED,
            simulated=self.SIMULATED,
            seed=self.builder_config.seed,
            sensor=sensor.name,
            lab_grid=lab_grid.visnir().to_json(),
            satellite_wavelength=sensor.good_wavelength.tolist(),
            satellite_fwhm=sensor.good_fwhm.tolist(),
            covariate_names=list(self.COVARIATES),
        ),
        citation=("LimeSoDa (Schmidinger et al.), PyPI LimeSoDa 0.1.5; "
                  "earthlib (C. Anderson), PyPI earthlib 1.1.0, holding the "
                  "ICRAF-ISRIC soil spectral library."),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Sources ship with pip packages: nothing to download.
    return {"train": self._generate_examples()}

  @abc.abstractmethod
  def _samples(self) -> tuple[sources.LabSpectra, np.ndarray, np.ndarray]:
    """Returns (sources with region indices into REGION_NAMES, lab, target)."""

  def _generate_examples(self):
    seed = self.builder_config.seed
    samples, lab, target = self._samples()
    endmembers = sources.vegetation_endmembers()
    satellite = satellite_view.satellite_view(
        lab, samples.region, self.REGION_NAMES, self.sensor, endmembers, seed)
    pairs = satellite_view.pair_views(lab, samples.region, self.REGION_NAMES,
                                      self.sensor, endmembers, seed)
    u = roles.uniform(samples.sample_id, seed)
    covariates = np.stack([getattr(samples, name) for name in
                           self.COVARIATES], axis=1).astype(np.float32)
    for i, sample_id in enumerate(samples.sample_id):
      record: dict[str, Any] = {
          "lab": lab[i].astype(np.float32),
          "satellite": satellite[i].astype(np.float32),
          "satellite_neighbour": pairs["neighbour"][i].astype(np.float32),
          "satellite_date": pairs["date"][i].astype(np.float32),
          "target": np.float32(target[i]),
          "region": int(samples.region[i]),
          "sample_id": sample_id,
          "lat": np.float32(samples.lat[i]),
          "lon": np.float32(samples.lon[i]),
          "fold": int(samples.fold[i]),
          "u": np.float32(u[i]),
          "covariates": covariates[i],
      }
      yield sample_id, record
