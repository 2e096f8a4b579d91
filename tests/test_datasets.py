"""The prepared TFDS datasets: sources, schema, counts, roles, determinism."""
import concurrent.futures
import pathlib
import time

import LimeSoDa
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import common
from data_prep import array_record_builder
from data_prep import datasets
from data_prep import roles
from data_prep import sources
from deepsalt_jax import samples
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors

N_LIMESODA = 98 + 125 + 120 + 93 + 460
N_ICRAF = 3720  # 4,168 minus 103 without coordinates and 345 at (0, 0).


def _records(name: str, data_dir) -> dict[str, dict]:
  source, info = datasets.load(name, "enmap", data_dir)
  out = {}
  for i in range(len(source)):
    record = source[i]
    out[record["sample_id"].decode()] = record
  return out, info


@pytest.fixture(scope="session")
def salinity(prepared_data_dir):
  return _records("salinity", prepared_data_dir)


@pytest.fixture(scope="session")
def soc(prepared_data_dir):
  return _records("soc", prepared_data_dir)


def test_limesoda_is_on_the_lab_grid_as_fraction():
  data = sources.limesoda()
  assert data.reflectance.shape == (N_LIMESODA,
                                    resampling.lab_wavelengths().size)
  assert np.all(np.isfinite(data.reflectance))
  assert 0.0 < data.reflectance.min() and data.reflectance.max() < 1.0
  # CV.98 at 1 nm: the 10 nm band at 1000 nm is close to the 1000 nm sample.
  table = LimeSoDa.load_dataset("CV.98")["Dataset"]
  band = int(np.argmin(np.abs(resampling.lab_wavelengths() - 1000)))
  np.testing.assert_allclose(data.reflectance[:98, band],
                             table["wl_1000"] / 100.0, rtol=0.01)


def test_continent_boxes_place_known_cities():
  cities = {  # (lat, lon) -> region.
      (-1.29, 36.82): "ICRAF Africa",  # Nairobi
      (36.81, 10.18): "ICRAF Africa",  # Tunis
      (40.42, -3.70): "ICRAF Europe",  # Madrid
      (42.70, 27.70): "ICRAF Europe",  # Burgas, Bulgaria
      (39.93, 32.86): "ICRAF Asia",  # Ankara
      (-6.21, 106.85): "ICRAF Asia",  # Jakarta
      (8.98, -79.52): "ICRAF North America",  # Panama City
      (19.43, -99.13): "ICRAF North America",  # Mexico City
      (4.71, -74.07): "ICRAF South America",  # Bogota
      (-0.74, -90.31): "ICRAF South America",  # Galapagos
      (-33.87, 151.21): "ICRAF Oceania",  # Sydney
      (21.31, -157.86): "ICRAF Oceania",  # Honolulu
  }
  lat, lon = np.array(list(cities)).T
  assert list(sources.continent(lat, lon)) == list(cities.values())
  assert sources.continent(np.array([-80.0]), np.array([0.0]))[0] == ""


def test_envi_library_reader_round_trip(tmp_path: pathlib.Path):
  values = (np.arange(6).reshape(2, 3) / 10).astype(">f4")  # Big-endian.
  path = tmp_path / "lib.sli"
  values.tofile(path)
  path.with_suffix(".sli.hdr").write_text(
      "ENVI\nsamples = 3\nlines = 2\nbands = 1\nheader offset = 0\n"
      "data type = 4\nbyte order = 1\nwavelength units = Micrometers\n"
      "wavelength = { 0.4,\n 0.41, 0.42 }\n")
  read, wavelength = sources.read_envi_library(path)
  np.testing.assert_allclose(read, values)
  np.testing.assert_allclose(wavelength, [400.0, 410.0, 420.0])


def test_counts_regions_and_schema(salinity, soc):
  records, info = salinity
  assert len(records) == N_LIMESODA + N_ICRAF
  assert len(sources.icraf()) == N_ICRAF
  assert tuple(info.features["region"].names) == sources.REGIONS
  region = np.array([r["region"] for r in records.values()])
  counts = dict(zip(sources.REGIONS, np.bincount(region)))
  assert [counts[n] for n in sources.LIMESODA_SETS] == [98, 125, 120, 93, 460]
  assert min(counts.values()) >= 93
  n_good = sensors.builtin("enmap").good.size
  for r in list(records.values())[:50]:
    assert r["lab"].shape == (180,) and r["lab"].dtype == np.float32
    assert r["satellite"].shape == (n_good,)
    assert r["satellite"].dtype == np.float32
    assert np.all(np.isfinite(r["satellite"]))
  assert info.metadata["satellite_wavelength"] == (
      sensors.builtin("enmap").good_wavelength.tolist())
  soc_records, soc_info = soc
  assert len(soc_records) == N_LIMESODA
  assert tuple(soc_info.features["region"].names) == sources.LIMESODA_SETS


def test_roles_follow_u_with_the_configured_fractions(salinity):
  records, info = salinity
  u = np.array([r["u"] for r in records.values()])
  assert np.all((u >= 0) & (u < 1))
  np.testing.assert_array_equal(u, roles.uniform(list(records), 0))
  role = roles.assign_roles(u)
  fractions = np.bincount(role, minlength=3) / len(role)
  np.testing.assert_allclose(
      fractions, [roles.LABELLED_FRACTION, roles.PAIRED_FRACTION,
                  1 - roles.LABELLED_FRACTION - roles.PAIRED_FRACTION],
      atol=0.02)


def test_roles_reject_impossible_fractions():
  with pytest.raises(ValueError, match="labelled_fraction"):
    roles.assign_roles(np.array([0.5]), 0.7, 0.5)


def test_soc_is_measured_with_som_converted_and_folds_kept(soc):
  records, _ = soc
  for name in sources.LIMESODA_SETS:
    data = LimeSoDa.load_dataset(name)
    table = data["Dataset"]
    if name in ("SL.125", "UL.120"):
      expected = table["SOM_target"] / 1.724
    else:
      expected = table["SOC_target"]
    ids = [f"{name}/{i}" for i in table.index]
    np.testing.assert_allclose([records[i]["target"] for i in ids], expected,
                               rtol=1e-6)
    np.testing.assert_array_equal([records[i]["fold"] for i in ids],
                                  data["Folds"])


def test_salinity_targets_are_ec_with_icraf_unfolded(salinity):
  records, _ = salinity
  target = np.array([r["target"] for r in records.values()])
  assert np.all(target > 0) and np.sum(target > 16) > 20
  icraf = [r for k, r in records.items() if k.startswith("icraf/")]
  assert all(r["fold"] == 0 and np.isfinite(r["lat"]) for r in icraf)


def test_covariates_are_limesodas_measured_clay_and_soc(salinity, soc,
                                                        prepared_data_dir):
  records, info = salinity
  assert list(info.metadata["covariate_names"]) == ["clay", "soc"]
  soc_records, soc_info = soc
  assert list(soc_info.metadata["covariate_names"]) == ["clay"]  # SOC: target.
  for name in sources.LIMESODA_SETS:
    table = LimeSoDa.load_dataset(name)["Dataset"]
    ids = [f"{name}/{i}" for i in table.index]
    clay = np.array([records[i]["covariates"][0] for i in ids])
    np.testing.assert_allclose(clay, table["Clay_target"], rtol=1e-6)
    np.testing.assert_allclose([records[i]["covariates"][1] for i in ids],
                               [soc_records[i]["target"] for i in ids],
                               rtol=1e-6)
    np.testing.assert_array_equal(
        [soc_records[i]["covariates"][0] for i in ids], clay)
  icraf = [r for k, r in records.items() if k.startswith("icraf/")]
  assert all(np.isnan(r["covariates"]).all() for r in icraf)  # earthlib: none.
  # The trainer's data: the columns named, in the order named.
  config = common.data_config("salinity")
  config.update(data_dir=str(prepared_data_dir), covariates="soc,clay")
  data = samples.load_data(config)
  assert data.covariate_names == ("soc", "clay")
  assert data.covariates.shape == (N_LIMESODA + N_ICRAF, 2)
  config.covariates = "clay,ph"
  with pytest.raises(ValueError, match=r"\['ph'\].*its covariates: clay, "
                     "soc"):
    samples.load_data(config)


@pytest.mark.slow
def test_two_builds_give_identical_records(salinity, tmp_path):
  first, _ = salinity
  second, _ = _records("salinity", tmp_path)
  assert first.keys() == second.keys()
  for key, record in first.items():
    for field, value in record.items():
      np.testing.assert_array_equal(value, second[key][field], err_msg=key)


@pytest.mark.parametrize("name", ["salinity", "soc"])
def test_column_reader_equals_tfds_decoding(name, prepared_data_dir):
  """samples' column reader parses the stored examples itself: every
  feature, record by record, as TFDS decodes it."""
  source, info = datasets.load(name, "enmap", prepared_data_dir)
  column = samples._columns(source, info)
  records = [source[i] for i in range(len(source))]
  for key, feature in info.features.items():
    if feature.np_dtype == object:  # Text.
      assert list(column(key, object)) == [r[key] for r in records], key
    else:
      expected = np.stack([r[key] for r in records])
      got = column(key, expected.dtype)
      assert got.dtype == expected.dtype, key
      np.testing.assert_array_equal(got, expected, err_msg=key)


def test_load_rejects_unknown_names(tmp_path):
  with pytest.raises(ValueError, match="salinity, soc"):
    datasets.load("ph", "enmap", tmp_path)
  with pytest.raises(ValueError, match="enmap, prisma, emit"):
    datasets.load("salinity", "landsat", tmp_path)


class _Counted(array_record_builder.ArrayRecordBuilder):
  """A three-record dataset that counts its builds and takes its time."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="enmap")]
  builds = 0

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({"x": np.int64}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    type(self).builds += 1
    time.sleep(0.5)  # The other thread reaches the lock meanwhile.
    for i in range(3):
      yield i, {"x": i}


def test_processes_sharing_a_data_dir_build_a_dataset_once(tmp_path):
  """Two builders of one dataset at once (the hosts of a job): one builds,
  the other waits for it and reads what it built."""
  _Counted.builds = 0
  builders = [_Counted(data_dir=str(tmp_path)) for _ in range(2)]
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    prepared = list(pool.map(datasets._prepare, builders))
  assert _Counted.builds == 1
  assert [b.info.splits["train"].num_examples for b in prepared] == [3, 3]
