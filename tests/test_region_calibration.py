"""Calibration on regions no network saw (region_calibration.py)."""
import numpy as np
import pytest

from conftest import tiny_config
from data_prep import roles
from deepsalt_jax import region_calibration
from deepsalt_jax import samples
from deepsalt_jax import stages
from deepsalt_spectral import errors


def _run(data_dir, k, arg="compare=none,candidates=library"):
  config = tiny_config("distill", data_dir, arg)
  config.calibration_regions = k
  data = samples.load_data(config.data)
  return config, stages.plan(config, data.lab_grid), data


def test_groups_split_the_training_regions(prepared_data_dir):
  config, plan, data = _run(prepared_data_dir, 3)
  groups = region_calibration.groups(config, plan, data)
  assert len(groups) == 3
  merged = np.concatenate(groups)
  labelled = ~data.test & (data.role == roles.LABELLED)
  assert sorted(merged) == sorted(np.unique(data.region[labelled]))
  assert len(set(merged)) == merged.size  # Disjoint.
  assert not set(merged) & set(np.unique(data.region[data.test]))
  # Drawn with the run's seed: the same again.
  again = region_calibration.groups(config, plan, data)
  assert all(np.array_equal(a, b) for a, b in zip(groups, again))
  config.calibration_regions = 0
  assert region_calibration.groups(config, plan, data) == []


def test_more_groups_than_regions_or_no_candidates_is_refused(
    prepared_data_dir):
  config, plan, data = _run(prepared_data_dir, 100)
  with pytest.raises(errors.UserError, match="calibration_regions=100: the "
                     "training part has 9 regions with labelled pixels"):
    region_calibration.groups(config, plan, data)
  config, plan, data = _run(prepared_data_dir, 2,
                            "compare=none,candidates=none")
  with pytest.raises(errors.UserError, match="has none"):
    region_calibration.groups(config, plan, data)


def test_a_group_held_out_is_neither_trained_nor_validated_on(
    prepared_data_dir):
  config, plan, data = _run(prepared_data_dir, 2)
  group = region_calibration.groups(config, plan, data)[0]
  held = region_calibration.without(data, group)
  inside = np.isin(data.region, group)
  assert not (held.train & inside).any()
  assert not (held.validation & inside).any()
  # The rest of the run is what it was.
  np.testing.assert_array_equal(held.train, data.train & ~inside)
  np.testing.assert_array_equal(held.test, data.test | inside)
  # Its errors are measured on its labelled pixels, the run's training and
  # validation ones: samples a user has labels for.
  rows = region_calibration.calibration_rows(data, group)
  assert rows.any()
  np.testing.assert_array_equal(
      rows, inside & (data.role == roles.LABELLED) & ~data.test)
  assert (data.validation & inside & ~rows).sum() == 0
  # What a group trains: the teacher and the candidates, no peers.
  sub = region_calibration.candidates_only(
      stages.plan(tiny_config("distill", prepared_data_dir,
                              "candidates=library"), data.lab_grid))
  assert [s.name for s in sub.students] == ["student", "library"]
