"""The training loop end to end on the tiny configs (CPU)."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
from typing import Any

from flax.training import train_state
import jax
import numpy as np
import optax
import pytest

from conftest import REPO, cpu_devices_env, delete_checkpoint_data, tiny_config
from data_prep import roles
from deepsalt_jax import applicability
from deepsalt_jax import checkpoint
from deepsalt_jax import evaluate
from deepsalt_jax import input_pipeline
from deepsalt_jax import losses
from deepsalt_jax import metrics
from deepsalt_jax import reporting
from deepsalt_jax import samples
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import train
from deepsalt_jax.models import from_config
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid


def test_teacher_runs_and_writes_logs(prepared_data_dir, tmp_path):
  config = tiny_config("teacher", prepared_data_dir)
  results = train.train_and_evaluate(config, tmp_path)
  assert set(results) == {"teacher", "teacher (pixels)"}
  assert np.isfinite(results["teacher"]["overall"]["rmse"])
  assert json.loads((tmp_path / "config.json").read_text())["job"] == (
      "teacher")
  lines = (tmp_path / "teacher" / "metrics.jsonl").read_text().splitlines()
  steps = [json.loads(l)["step"] for l in lines]
  every = config.train.log_every
  assert steps == list(range(every, config.train.steps + 1, every))
  assert {"loss", "regression"} <= set(json.loads(lines[0]))
  assert list((tmp_path / "teacher" / "tensorboard").iterdir())
  assert (tmp_path / "parity.png").stat().st_size > 0
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["models"]["teacher"]["overall"]["n"] == len(
      results["teacher"]["target"])
  assert saved["setting"].startswith("transductive")
  # The area of applicability of the labelled training pixels, each region
  # a fold, for the mapper.
  data = samples.load_data(config.data)
  labelled = (data.role == roles.LABELLED) & ~data.test
  domain = applicability.load(tmp_path)
  expected = applicability.fit(data.satellite[labelled], data.region[labelled])
  np.testing.assert_array_equal(domain.points, expected.points)
  assert domain.threshold == expected.threshold
  assert domain.threshold != applicability.fit(
      data.satellite[labelled], np.zeros(labelled.sum())).threshold


@pytest.mark.slow
def test_transformer_with_layer_distillation_and_bounded_head_trains(
    prepared_data_dir, tmp_path):
  config = tiny_config("distill", prepared_data_dir,
                       "compare=none,candidates=none,"
                       "encoder=transformer,distill=layers,head=bounded")
  results = train.train_and_evaluate(config, tmp_path)
  for name in ("teacher", "student"):
    pred = results[name]["pred"]
    assert np.isfinite(results[name]["overall"]["rmse"])
    # The bounded head keeps EC within (0.05, 77) dS/m.
    assert 0.05 - 1e-3 <= pred.min() and pred.max() <= 77.0 + 1e-2, name
  terms = json.loads((tmp_path / "student" / "metrics.jsonl")
                     .read_text().splitlines()[-1])
  assert np.isfinite(terms["distillation"]) and terms["distillation"] > 0


def test_averaged_params_follow_the_decay_from_a_forgotten_start():
  """The running average after each SGD step, by hand: the decay at update
  t is min(decay, (1 + t) / (10 + t)), so the first update weighs the new
  parameters 0.9 and the start 0.1."""
  decay = 0.5
  tx = optax.chain(optax.sgd(1.0), train.average_params(decay))
  params = {"w": np.zeros(2, np.float32)}
  state = tx.init(params)
  grads = {"w": -np.ones(2, np.float32)}  # Each step adds 1.
  expected = 0.0
  for t in range(4):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    d = min(decay, (1 + t) / (10 + t))
    expected = d * expected + (1 - d) * (t + 1)
    averaged = train.trained_params(train_state.TrainState(
        step=t + 1, apply_fn=None, params=params, tx=tx, opt_state=state))
    np.testing.assert_allclose(averaged["w"], [expected] * 2, rtol=1e-6)
    np.testing.assert_array_equal(params["w"], [t + 1.0] * 2)  # Untouched.
  # Without averaging, what training made is the parameters themselves.
  plain = train_state.TrainState.create(apply_fn=None, params=params,
                                        tx=optax.sgd(1.0))
  assert train.trained_params(plain) is plain.params


@pytest.mark.slow
def test_training_learns(prepared_data_dir, tmp_path):
  """Loss falls and the student beats predicting the labelled mean.

  A zero learning rate or a flipped gradient sign fails this test.
  """
  config = tiny_config("distill", prepared_data_dir,
                       "compare=none,candidates=none")
  config.train.update(steps=150, log_every=25, warmup_steps=10,
                      checkpoint_every=150)
  config.teacher.steps = 150
  results = train.train_and_evaluate(config, tmp_path)
  # Means over 25 steps; the student starts from the trained teacher, so
  # its loss has less to fall.
  for stage, factor in (("teacher", 0.6), ("student", 0.85)):
    logged = [json.loads(l) for l in (tmp_path / stage / "metrics.jsonl")
              .read_text().splitlines()]
    assert logged[-1]["regression"] < factor * logged[0]["regression"], stage
  data = samples.load_data(config.data)
  labelled = ~data.test & (data.role == roles.LABELLED)
  target = results["student"]["target"]
  mean_rmse = metrics.regression_metrics(
      target, np.full_like(target, data.target[labelled].mean()))["rmse"]
  assert results["student"]["overall"]["rmse"] < 0.9 * mean_rmse


def _poisoned(config):
  """The data with held-out targets and lab spectra (and, inductive, their
  pixels) set to NaN, and everything of the validation samples."""
  data = samples.load_data(config.data)
  assert data.validation.any()
  poisoned = {"target": data.target.copy(), "lab": data.lab.copy(),
              "satellite": data.satellite.copy(),
              "pair_satellite": data.pair_satellite.copy()}
  for name in ("target", "lab", "pair_satellite") + (
      () if config.data.transductive else ("satellite",)):
    poisoned[name][data.test] = np.nan
  for values in poisoned.values():
    values[data.validation] = np.nan
  return dataclasses.replace(data, **poisoned)


@pytest.mark.parametrize("transductive", [True, False])
def test_held_out_labels_and_lab_spectra_never_enter_any_stream(
    prepared_data_dir, transductive):
  """Every batch of every stage's streams is finite on the poisoned data."""
  config = tiny_config("distill", prepared_data_dir)
  config.data.transductive = transductive
  data = _poisoned(config)
  plan = stages.plan(config, lab_grid.visnir())
  for stage in plan.stages:
    streams = stage.streams(data)
    for step in range(stage.config.train.steps):
      for name, stream in streams.items():
        for values in stream[step].values():
          assert np.isfinite(values).all(), (stage.name, name)
  unlabelled = plan.students[0].streams(data)["unlabelled"]
  expected = (~data.test & (data.role == roles.UNLABELLED)).sum() + (
      data.test.sum() if transductive else 0)
  assert len(unlabelled.arrays["satellite"]) == expected


@dataclasses.dataclass
class _StudentAtStart:
  """The default student of a config at its start and the first batch of
  each of its streams, for loss terms with known answers."""
  config: Any

  def __post_init__(self):
    self.data = samples.load_data(self.config.data)
    self.plan = stages.plan(self.config, lab_grid.visnir())
    self.streams = self.plan.students[0].streams(self.data)
    self.batch = {name: stream[0] for name, stream in self.streams.items()}
    self.teacher_params = self.plan.teacher.init_params(self.data.sensor)
    self.params = self.plan.students[0].init_params(self.data.sensor,
                                                    self.teacher_params)

  def loss(self, batch=None, step=0, sizes=None):
    """(total, terms) of the student as `config` now plans it."""
    student = stages.plan(self.config, lab_grid.visnir()).students[0]
    return student.loss_fn(self.data.sensor, self.plan.teacher, sizes)(
        self.params, self.batch if batch is None else batch,
        jax.random.key(0), self.teacher_params, step)


@pytest.mark.slow
def test_pair_regression_fits_the_paired_pixels_to_their_measured_target(
    prepared_data_dir):
  """The paired stream carries its lab samples' targets; the term is the
  regression loss on them: with the paired batch a copy of the labelled
  one (no dropout), it equals the labelled pixels' regression."""
  config = tiny_config("distill", prepared_data_dir, "pair_labels")
  # The two regressions alone (batch statistics would need the mesh).
  config.loss.update(w_alignment=0.0, w_distill_feature=0.0,
                     w_distill_pred=0.0, w_reconstruction=0.0)
  config.model.encoder.dropout = 0.0
  start = _StudentAtStart(config)
  paired = start.data.train & (start.data.role == roles.PAIRED)
  np.testing.assert_array_equal(start.streams["paired"].arrays["target"],
                                start.data.target[paired])
  batch = dict(start.batch)
  batch["paired"] = {**batch["paired"],
                     "satellite": batch["labelled"]["satellite"],
                     "target": batch["labelled"]["target"]}
  _, terms = start.loss(batch)
  assert terms["pair_regression"] == pytest.approx(float(terms["regression"]),
                                                   rel=1e-6)
  batch["paired"]["target"] = batch["paired"]["target"] + 5.0
  _, moved = start.loss(batch)
  assert moved["pair_regression"] > terms["pair_regression"]


def test_pooled_weighs_each_library_sample_as_each_labelled_pixel(
    prepared_data_dir):
  """`pooled`: the loss is regression + (library samples per labelled
  pixel) x the library's regression, the two pooled sample by sample."""
  start = _StudentAtStart(tiny_config("distill", prepared_data_dir,
                                      "pooled"))
  data = start.data
  sizes = {name: len(stream) for name, stream in start.streams.items()}
  assert sizes["library"] == (data.train & data.has_lab &
                              data.has_target).sum() > sizes["labelled"]
  total, terms = start.loss(sizes=sizes)
  assert set(terms) == {"loss", "regression", "source"}
  assert float(total) == pytest.approx(
      float(terms["regression"]) + sizes["library"] / sizes["labelled"] *
      float(terms["source"]), rel=1e-5)
  with pytest.raises(ValueError, match="sizes"):
    start.loss()


def test_faded_prediction_distillation_goes_from_full_weight_to_none(
    prepared_data_dir):
  """`fade_distill_pred`: the distillation term at step 0 is the full
  method's, after half the steps the features' alone, and linear between."""
  config = tiny_config("distill", prepared_data_dir, "fade_distill_pred")
  config.loss.w_alignment = 0.0  # Batch statistics would need the mesh.
  config.train.steps = 40
  start = _StudentAtStart(config)

  def distillation(step, **loss):
    config.loss.update(loss)
    return float(start.loss(step=step)[1]["distillation"])

  full = distillation(0, distill_pred_fade=0.0)
  features = distillation(0, distill_pred_fade=0.0, w_distill_pred=0.0)
  config.loss.w_distill_pred = 1.0
  assert full > features > 0
  assert distillation(0, distill_pred_fade=0.5) == pytest.approx(full)
  assert distillation(10) == pytest.approx((full + features) / 2, rel=1e-5)
  for step in (20, 39):
    assert distillation(step) == pytest.approx(features, rel=1e-6)


def test_validation_is_whole_spatial_blocks_of_labelled_samples():
  region = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
  lat = np.array([1.0, 1.0, 7.0, np.nan, np.nan, np.nan, np.nan, 40, 41, 47])
  lon = np.zeros(10)
  blocks = samples.spatial_blocks(region, lat, lon)
  assert list(blocks[[0, 2, 3, 7, 9]]) == ["0/0/0", "0/1/0", "1", "2/8/0",
                                           "2/9/0"]
  candidates = np.ones(10, bool)
  chosen = samples.validation_mask(blocks, candidates, 0.35, seed=0)
  assert 0.35 * 10 <= chosen.sum() < 10
  for block in set(blocks):  # All of a block or none of it.
    assert len(set(chosen[blocks == block])) == 1
  np.testing.assert_array_equal(
      chosen, samples.validation_mask(blocks, candidates, 0.35, seed=0))
  assert not samples.validation_mask(blocks, candidates, 0.0, 0).any()
  only = samples.validation_mask(blocks, region == 1, 0.5, seed=3)
  assert not (only & (region != 1)).any()


@pytest.mark.slow
def test_training_on_poisoned_held_out_samples_stays_finite(prepared_data_dir,
                                                           tmp_path):
  """Inductive: no loss term of teacher or student ever sees a NaN."""
  config = tiny_config("distill", prepared_data_dir,
                       "compare=none,candidates=none")
  config.data.transductive = False
  data = _poisoned(config)
  plan = stages.plan(config, lab_grid.visnir())
  mesh = sharding.make_mesh()
  teacher_params = train.train_stage(plan.teacher, data, None, None, tmp_path,
                                     mesh)
  train.train_stage(plan.students[0], data, plan.teacher, teacher_params,
                    tmp_path, mesh)


def test_non_finite_term_is_named(prepared_data_dir, tmp_path, monkeypatch):
  """A NaN term is reported by its name, not as the total 'loss'."""
  config = tiny_config("teacher", prepared_data_dir)
  monkeypatch.setattr(losses, "regression_loss",
                      lambda pred, target, kind: pred.sum() * np.nan)
  with pytest.raises(FloatingPointError,
                     match="'regression' is not finite at step 1"):
    train.train_and_evaluate(config, tmp_path)


def test_first_non_finite_names_terms_before_their_sum():
  history = [(1, {"loss": 1.0, "alignment": 0.5}),
             (2, {"loss": np.nan, "alignment": 0.5, "reconstruction": np.inf}),
             (3, {"loss": np.nan, "regression": np.nan})]
  assert reporting.first_non_finite(history) == (2, "reconstruction")
  assert reporting.first_non_finite(history[:1]) is None


@pytest.mark.slow
def test_distill_train_resume_eval(prepared_data_dir, tmp_path, monkeypatch):
  """train -> SIGTERM mid-run -> resume -> same params; eval restores them.

  With the default dropout: each step's dropout masks come from the step
  number, so a resumed run draws what an uninterrupted one does.
  """
  config = tiny_config("distill", prepared_data_dir,
                       "compare=plain,candidates=none")
  config.train.log_every = 2
  assert config.model.encoder.dropout > 0
  full = train.train_and_evaluate(config, tmp_path / "full")
  assert set(full) == {"teacher", "teacher (pixels)", "student", "plain"}
  terms = json.loads((tmp_path / "full" / "student" / "metrics.jsonl")
                     .read_text().splitlines()[-1])
  assert {"regression", "distillation", "reconstruction", "alignment"} <= set(
      terms)

  # Interrupt the student at step 4 with SIGTERM, as a preemption would:
  # not a checkpoint step (logging every 2 steps ends a block there).
  indices_fn = input_pipeline.block_indices

  def preempting(streams, first, count, mesh):
    if first <= 3 < first + count and "paired" in streams:
      os.kill(os.getpid(), signal.SIGTERM)
    return indices_fn(streams, first, count, mesh)

  monkeypatch.setattr(input_pipeline, "block_indices", preempting)
  with pytest.raises(train.Preempted, match="saved step 4"):
    train.train_and_evaluate(config, tmp_path / "resumed")
  monkeypatch.setattr(input_pipeline, "block_indices", indices_fn)
  resumed = train.train_and_evaluate(config, tmp_path / "resumed")
  for name in full:
    np.testing.assert_array_equal(full[name]["pred"], resumed[name]["pred"])

  evaluated = evaluate.evaluate_checkpoints(config, tmp_path / "resumed")
  for name in full:
    np.testing.assert_allclose(full[name]["pred"], evaluated[name]["pred"],
                               rtol=1e-6)
  # Each stage restores the step validation picked (selection.BEST_FILE).
  best = {name: json.loads((tmp_path / "resumed" / name / "best.json")
                           .read_text())["step"]
          for name in ("teacher", "student", "plain")}
  saved = json.loads((tmp_path / "resumed" /
                      f"eval-{best['student']}.json").read_text())
  assert saved["checkpoint_steps"] == best
  # Evaluation writes its own files; the training run's results stay.
  assert (tmp_path / "resumed" / "results.md").read_text() == (
      tmp_path / "full" / "results.md").read_text()
  # A peer whose selected and last steps are damaged restores the one
  # before; the files keep the student's step in their name.
  assert best["plain"] == 6  # Its selected step is also its last.
  for step_dir in ("plain/best/6", "plain/checkpoints/6"):
    delete_checkpoint_data(tmp_path / "resumed" / step_dir)
  evaluate.evaluate_checkpoints(config, tmp_path / "resumed")
  saved = json.loads((tmp_path / "resumed" /
                      f"eval-{best['student']}.json").read_text())
  assert saved["checkpoint_steps"] == dict(best, plain=3)
  assert best["student"] == 3 or not (
      tmp_path / "resumed" / "eval-3.json").exists()


@pytest.mark.slow
def test_block_scanned_loop_equals_one_step_per_dispatch(
    prepared_data_dir, tmp_path, monkeypatch):
  """Steps scanned in blocks on the device train the same parameters as the
  same steps dispatched one at a time: same batches, same step RNG."""
  config = tiny_config("distill", prepared_data_dir,
                       "compare=none,candidates=none")
  config.train.update(steps=10, log_every=5, eval_every=0,
                      checkpoint_every=0)
  config.teacher.steps = 10  # The teacher's other settings are the student's.
  data = samples.load_data(config.data)
  plan = stages.plan(config, data.lab_grid)
  mesh = sharding.make_mesh()
  scanned = train.train_plan(plan, data, tmp_path / "scanned", mesh)
  monkeypatch.setattr(train, "STEPS_PER_DISPATCH", 1)
  stepped = train.train_plan(plan, data, tmp_path / "stepped", mesh)
  for name in scanned:
    for a, b in zip(jax.tree.leaves(scanned[name]),
                    jax.tree.leaves(stepped[name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Without validation a restore (eval, maps) gets what training returned,
  # the running average, not the last checkpoint's iterate.
  assert config.train.average_decay
  for stage in (plan.teacher, *plan.students):
    restored, _ = stage.restore(tmp_path / "scanned", data.sensor, mesh)
    iterate, _ = checkpoint.restore_params(
        [tmp_path / "scanned" / stage.name / "checkpoints"],
        stage.abstract_params(data.sensor, mesh))
    kernel = lambda p: np.asarray(p["head"]["out"]["kernel"])
    np.testing.assert_array_equal(kernel(restored),
                                  kernel(scanned[stage.name]))
    assert not np.array_equal(kernel(iterate), kernel(restored))


@pytest.mark.slow
def test_sharded_step_equals_single_device_step(prepared_data_dir):
  """Student steps on 8 fake CPU devices == the same steps on 1 device."""
  env = cpu_devices_env(8)
  out = subprocess.run(
      [sys.executable, str(REPO / "tests" / "multidevice.py"),
       str(prepared_data_dir)], env=env, cwd=REPO, capture_output=True,
      text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  diffs = json.loads(out.stdout.strip().splitlines()[-1])
  assert diffs["devices"] == 8
  # Relative; float32 summation order differs between 8 partial sums and
  # one. MMD's V-statistic cancels (k_ss + k_tt - 2 k_st), which amplifies
  # that to ~2e-5 (measured); elsewhere it stays at ~2e-7.
  for case in ("coral", "adversarial", "no_align"):
    assert diffs[case]["loss"] < 2e-6, diffs
    assert diffs[case]["update"] < 2e-6, diffs
  for case in ("mmd", "mmd_only"):
    assert diffs[case]["loss"] < 1e-4, diffs
    assert diffs[case]["update"] < 1e-4, diffs


@pytest.mark.slow
def test_linear_path_statistics_come_from_each_models_inputs(
    prepared_data_dir):
  """The teacher's path standardises its encoder's inputs; a physics student
  keeps the teacher's path, a latent one standardises its pixels."""
  config = tiny_config("distill", prepared_data_dir,
                       "compare=none,candidates=none")
  config.model.linear_path = True
  data = samples.load_data(config.data)
  plan = stages.plan(config, lab_grid.visnir())
  teacher = plan.teacher.with_input_statistics(
      plan.teacher.init_params(data.sensor), data)
  for key in ("mean", "scale"):
    np.testing.assert_array_equal(teacher["linear"]["standardize"][key],
                                  teacher["encoder"]["standardize"][key])
  prepared = data.lab[data.train & data.has_lab] @ from_config.forward_matrix(
      data.sensor, lab_grid.visnir()).T
  np.testing.assert_allclose(teacher["linear"]["standardize"]["mean"],
                             prepared.mean(0), rtol=1e-4, atol=1e-6)
  student = plan.students[0]
  params = student.with_input_statistics(
      student.init_params(data.sensor, teacher), data)
  np.testing.assert_array_equal(params["linear"]["standardize"]["mean"],
                                teacher["linear"]["standardize"]["mean"])
  config.model.sau = "latent"
  latent = stages.plan(config, lab_grid.visnir()).students[0]
  params = latent.with_input_statistics(
      latent.init_params(data.sensor, teacher), data)
  pixels = data.satellite[~data.test & data.has_pixel]
  np.testing.assert_allclose(params["linear"]["standardize"]["mean"],
                             pixels.mean(0), rtol=1e-4, atol=1e-6)
  config.model.head = "bounded"  # The path would escape its bounds.
  with pytest.raises(errors.UserError, match="linear_path"):
    stages.plan(config, lab_grid.visnir()).teacher.model(data.sensor)
