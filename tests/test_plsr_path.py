"""A student's PLSR path (model.student_path='plsr'): PLSR's fit to the
labelled training pixels, fixed through training, plus the network's
correction, held once trained to the range it takes on those pixels."""
import dataclasses
import json

import jax
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
from configs import own_data
from data_prep import roles
from deepsalt_jax import baselines
from deepsalt_jax import predict
from deepsalt_jax import run_config
from deepsalt_jax import samples
from deepsalt_jax import selection
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import targets
from deepsalt_jax import train
from deepsalt_jax.models import encoder
from deepsalt_jax.models import from_config
from deepsalt_spectral import errors


def test_the_path_adds_a_correction_held_to_its_bounds():
  """PLSR's prediction w.(x - m)/s + b plus the correction clipped to
  [low, high]; unbounded before the bounds are set."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 5)).astype(np.float32)
  correction = np.array([-3.0, -0.2, 0.0, 0.1, 0.4, 9.0], np.float32)
  path = encoder.PlsrPath()
  params = path.init(jax.random.key(0), x, correction)["params"]
  big = np.finfo(np.float32).max  # Unbounded at the start.
  assert (params["low"], params["high"]) == (-big, big)
  np.testing.assert_array_equal(path.apply({"params": params}, x, correction),
                                correction)  # The path starts at zero.
  w = rng.normal(size=(5, 1)).astype(np.float32)
  mean, scale = x.mean(0), x.std(0)
  params = {"path": {"standardize": {"mean": mean, "scale": scale},
                     "out": {"kernel": w, "bias": np.array([0.5])}},
            "low": np.float32(-0.2), "high": np.float32(0.3)}
  expected = (((x - mean) / scale) @ w[:, 0] + 0.5
              + np.array([-0.2, -0.2, 0.0, 0.1, 0.3, 0.3]))
  np.testing.assert_allclose(path.apply({"params": params}, x, correction),
                             expected, rtol=1e-5, atol=1e-5)


def test_the_student_path_is_checked_and_old_runs_trained_theirs(tmp_path):
  model = ml_collections.ConfigDict(dict(student_path="plsr", head="linear"))
  assert from_config.student_path(model) == "plsr"
  model.student_path = "ridge"
  with pytest.raises(errors.UserError, match="student_path='ridge'"):
    from_config.student_path(model)
  model.update(student_path="plsr", head="bounded", head_bounds=[0.05, 77.0])
  with pytest.raises(errors.UserError, match="bounded head"):
    from_config.student_path(model)
  # An own-data run saved before the setting read back as it trained.
  saved = json.loads(own_data.get_config("tiny").to_json())
  assert saved["model"].pop("student_path") == "plsr"
  (tmp_path / run_config.CONFIG_FILE).write_text(json.dumps(saved))
  loaded = run_config.with_defaults(run_config.load(tmp_path),
                                    lambda job: own_data.get_config())
  assert loaded.model.student_path == "trained"


@pytest.fixture(scope="module")
def trained(prepared_data_dir, tmp_path_factory):
  """(student stage, data, its start, its trained params, mesh, workdir) of
  a tiny distill run whose student has a PLSR path."""
  config = tiny_config("distill", prepared_data_dir,
                       "compare=none,candidates=none")
  config.model.student_path = "plsr"
  data = samples.load_data(config.data)
  plan = stages.plan(config, data.lab_grid)
  mesh = sharding.make_mesh()
  workdir = tmp_path_factory.mktemp("plsr_path")
  teacher = train.train_stage(plan.teacher, data, None, None, workdir, mesh)
  student = plan.students[0]
  start = student.with_input_statistics(
      student.init_params(data.sensor, teacher), data)
  params = train.train_stage(student, data, plan.teacher, teacher, workdir,
                             mesh)
  return student, data, start, params, mesh, workdir


def _path(params, x):
  return np.asarray(encoder.LinearPath().apply({"params": params["plsr"][
      "path"]}, x))


@pytest.mark.slow
def test_the_path_is_plsr_of_the_labelled_training_pixels(trained):
  """Not of the validation, test or paired pixels; its standardisation
  does not change what it predicts."""
  student, data, start, _, _, _ = trained
  labelled = data.train & (data.role == roles.LABELLED)
  assert (data.validation & (data.role == roles.LABELLED)).any()
  pls = baselines.plsr(data.satellite[labelled].astype(np.float64),
                       np.log1p(data.target[labelled].astype(np.float64)),
                       seed=student.config.seed)
  np.testing.assert_allclose(_path(start, data.satellite),
                             pls(data.satellite), rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_training_leaves_the_path_and_bounds_the_correction(trained):
  """The path's numbers are the start's after training; the correction's
  bounds are the head's range on the labelled training pixels;
  the prediction is the path plus the correction held to them, as saved."""
  student, data, start, params, mesh, workdir = trained
  # The running average of a constant moves it by float32 rounding only.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               params["plsr"]["path"], start["plsr"]["path"])
  assert not all(jax.tree.leaves(jax.tree.map(
      np.array_equal, params["head"], start["head"])))  # The network trained.
  model = student.model(data.sensor)
  head = lambda x: np.asarray(model.apply(
      {"params": params}, model.apply({"params": params}, x, train=False)[
          "features"], train=False,
      method=lambda m, f, train: m.head(f, train=train)))
  trained_on = head(data.satellite[data.train &
                                   (data.role == roles.LABELLED)])
  low, high = float(params["plsr"]["low"]), float(params["plsr"]["high"])
  np.testing.assert_allclose([low, high],
                             [trained_on.min(), trained_on.max()], rtol=1e-5)
  x = data.satellite[data.test]
  pred = model.apply({"params": params}, x, train=False)["pred"]
  np.testing.assert_allclose(pred, _path(params, x) + np.clip(head(x), low,
                                                              high),
                             rtol=1e-5, atol=1e-5)
  restored, _ = student.restore(workdir, data.sensor, mesh)
  jax.tree.map(np.testing.assert_array_equal, restored["plsr"],
               params["plsr"])


@pytest.mark.slow
def test_validation_scores_a_step_as_it_is_kept(trained, tmp_path):
  """Its correction bounded: on validation pixels far from the training
  ones (here scaled), where the bounds bind."""
  student, data, _, params, mesh, _ = trained
  far = data.satellite.copy()
  far[data.validation] *= 3.0
  data = dataclasses.replace(data, satellite=far)
  big = np.finfo(np.float32).max
  unbounded = dict(params, plsr=dict(params["plsr"], low=np.float32(-big),
                                     high=np.float32(big)))

  def rmse(p):
    ec, _ = predict.predict(student.model(data.sensor), p,
                            far[data.validation], mesh, 256,
                            targets.TRANSFORMS["log1p"][1])
    return np.sqrt(np.mean((np.log1p(ec) - np.log1p(
        data.target[data.validation]))**2))

  score = selection.Selector(student, data, tmp_path, mesh).update(
      1, unbounded)
  np.testing.assert_allclose(score, rmse(student.finish(unbounded, data,
                                                        mesh)), rtol=1e-4)
  assert abs(score - rmse(unbounded)) > 0.01


@pytest.mark.slow
def test_the_optimizer_never_moves_the_path(trained):
  student, _, start, _, mesh, _ = trained
  state = train.create_train_state(start, student.config, mesh)
  grads = jax.tree.map(np.ones_like, start)
  for _ in range(3):  # The first step's learning rate is 0 (warm-up).
    state = state.apply_gradients(grads=grads)
  moved = state.params
  jax.tree.map(np.testing.assert_array_equal, moved["plsr"], start["plsr"])
  assert not np.array_equal(moved["head"]["out"]["kernel"],
                            start["head"]["out"]["kernel"])
