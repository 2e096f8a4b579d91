"""A teacher that starts as PLSR: its start is PLSR, and a later step
replaces it on validation only beyond one standard error."""
import json

import jax
import ml_collections
import numpy as np
import pytest

from benchmarks import mir_teacher
from data_prep import sources
from deepsalt_jax import baselines
from deepsalt_jax import selection
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax.models import from_config
from deepsalt_spectral import errors


@pytest.fixture(scope="module")
def mir_fold():
  """(config, data) of a tiny MIR teacher on fold 1 of LimeSoDa O.32."""
  config = mir_teacher.make_config("mlp", 1.0, tiny=True,
                                   teacher_start="plsr")
  mir = sources.limesoda_mir("O.32")
  return config, mir_teacher.fold_data(mir, "SOC", 1, config)


def test_the_start_is_checked():
  model = ml_collections.ConfigDict(dict(teacher_start="plsr",
                                         linear_path=True))
  assert from_config.plsr_start(model)
  model.teacher_start = "network"
  assert not from_config.plsr_start(model)
  model.update(teacher_start="plsr", linear_path=False)
  with pytest.raises(errors.UserError, match="linear_path is off"):
    from_config.plsr_start(model)
  model.teacher_start = "ridge"
  with pytest.raises(errors.UserError, match="teacher_start='ridge'"):
    from_config.plsr_start(model)


def test_the_start_predicts_as_plsr_of_the_training_rows(mir_fold):
  """Before any step the teacher's prediction is PLSR's, fitted on its
  training rows (not the validation or test rows), to float32."""
  config, data = mir_fold
  teacher = stages.plan(config, data.lab_grid).teacher
  assert teacher.starts_as_plsr()
  params = teacher.with_input_statistics(
      teacher.init_params(data.sensor), data)
  model = teacher.model(data.sensor)
  pred = model.apply({"params": params}, data.lab, train=False)["pred"]
  pls = baselines.plsr(data.lab[data.train].astype(np.float64),
                       data.target[data.train].astype(np.float64),
                       seed=config.seed)
  np.testing.assert_allclose(pred, pls(data.lab), rtol=1e-4, atol=1e-4)
  # Kept by validation, it is the PLSR of the validation rows too.
  kept = teacher.kept_start(params, data)
  rows = data.train | data.validation
  assert data.validation.any() and not (rows & data.test).any()
  pls = baselines.plsr(data.lab[rows].astype(np.float64),
                       data.target[rows].astype(np.float64),
                       seed=config.seed)
  pred = model.apply({"params": kept}, data.lab, train=False)["pred"]
  np.testing.assert_allclose(pred, pls(data.lab), rtol=1e-4, atol=1e-4)


def test_a_step_kept_over_the_start_predicts_the_mean_of_the_two(mir_fold):
  """A trained step (its head's output and linear path moved from the
  start) kept over the PLSR start predicts the mean of its prediction and
  the kept start's, with one set of parameters."""
  config, data = mir_fold
  teacher = stages.plan(config, data.lab_grid).teacher
  params = teacher.with_input_statistics(teacher.init_params(data.sensor),
                                         data)
  rng = np.random.default_rng(0)
  moved = lambda a: a + rng.normal(0.0, 0.05, a.shape).astype(a.dtype)
  step = dict(params,
              head=dict(params["head"], out=jax.tree.map(
                  moved, params["head"]["out"])),
              linear=dict(params["linear"], out=jax.tree.map(
                  moved, params["linear"]["out"])))
  start = teacher.kept_start(params, data)
  model = teacher.model(data.sensor)
  pred = lambda p: np.asarray(model.apply({"params": p}, data.lab,
                                          train=False)["pred"])
  assert np.abs(pred(step) - pred(start)).mean() > 0.1
  np.testing.assert_allclose(pred(teacher.kept_step(step, lambda: start)),
                             (pred(step) + pred(start)) / 2,
                             rtol=1e-4, atol=1e-4)


def test_a_later_step_replaces_the_start_only_beyond_the_noise(
    mir_fold, tmp_path, monkeypatch):
  """Scored at step 0 (its errors in start.json, read back by a resumed
  run): a step whose validation MSE is lower within one standard error of
  the paired differences is not kept; one lower beyond it is."""
  config, data = mir_fold
  teacher = stages.plan(config, data.lab_grid).teacher
  params = teacher.with_input_statistics(teacher.init_params(data.sensor),
                                         data)
  y = selection._transformed(teacher, data.target[data.validation])
  e = np.random.default_rng(0).normal(0.0, 1.0, y.size)
  # Step 1: other errors, 1 % smaller in MSE; step 2: a tenth of the start's.
  made = {0: y + e, 1: y + 0.99 * e[::-1], 2: y + 0.1 * e}
  at = [0]
  monkeypatch.setattr(selection, "_transformed_predictions",
                      lambda *args: made[at[0]])
  mesh = sharding.make_mesh()
  selector = selection.Selector(teacher, data, tmp_path, mesh)
  assert selector.enabled and selector.scores_start
  kept = teacher.kept_start(params, data)
  selector.update(0, params, kept)
  saved = json.loads((tmp_path / selection.START_FILE).read_text())
  np.testing.assert_allclose(saved["squared_errors"], e**2, rtol=1e-6)
  resumed = selection.Selector(teacher, data, tmp_path, mesh)
  bias = lambda tree: np.asarray(tree["linear"]["out"]["bias"])
  for step, best in ((1, 0), (2, 2)):
    at[0] = step
    diff = e**2 - (made[step] - y)**2  # Per sample: the units here.
    beyond = diff.mean() > diff.std(ddof=1) / np.sqrt(diff.size)
    assert beyond == (step == 2) and diff.mean() > 0
    resumed.update(step, params)
    assert resumed.best_step == best
    if best == 0:  # The start stands for what it is kept as.
      np.testing.assert_array_equal(bias(resumed.selected(params)),
                                    bias(kept))
      assert not np.array_equal(bias(kept), bias(params))


def test_a_network_start_is_not_scored(mir_fold, tmp_path):
  config, data = mir_fold
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.teacher_start = "network"
  teacher = stages.plan(config, data.lab_grid).teacher
  assert not teacher.starts_as_plsr()
  assert not selection.Selector(teacher, data, tmp_path,
                                sharding.make_mesh()).scores_start
