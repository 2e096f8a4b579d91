"""The training loop end to end on the tiny configs (CPU)."""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, tiny_config
from deepsalt_jax import input_pipeline
from deepsalt_jax import train


def _leaves_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_teacher_runs_and_writes_logs(prepared_data_dir, tmp_path):
  config = tiny_config("teacher", prepared_data_dir)
  results = train.train_and_evaluate(config, tmp_path)
  assert set(results) == {"teacher", "teacher (resampled)"}
  assert np.isfinite(results["teacher"]["overall"]["rmse"])
  assert json.loads((tmp_path / "config.json").read_text())["stage"] == (
      "teacher")
  lines = (tmp_path / "teacher" / "metrics.jsonl").read_text().splitlines()
  steps = [json.loads(l)["step"] for l in lines]
  assert steps == list(range(2, config.train.steps + 1, 2))
  assert {"loss", "regression"} <= set(json.loads(lines[0]))
  assert list((tmp_path / "teacher" / "tensorboard").iterdir())
  assert (tmp_path / "parity.png").stat().st_size > 0
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["models"]["teacher"]["overall"]["n"] == len(
      results["teacher"]["target"])


def test_distill_train_resume_eval(prepared_data_dir, tmp_path, monkeypatch):
  """train -> SIGTERM mid-run -> resume -> same params; eval restores them."""
  config = tiny_config("distill", prepared_data_dir)
  config.model.dropout = config.teacher.model.dropout = 0.0
  full = train.train_and_evaluate(config, tmp_path / "full")
  assert set(full) == {"teacher", "teacher (resampled)", "student", "plain"}
  terms = json.loads((tmp_path / "full" / "student" / "metrics.jsonl")
                     .read_text().splitlines()[-1])
  assert {"regression", "distillation", "reconstruction", "alignment"} <= set(
      terms)

  # Interrupt the student at step 4 with SIGTERM, as a preemption would.
  batch_fn = input_pipeline.global_batch

  def preempting(streams, step, sharding):
    if step == 3 and "paired" in streams:
      os.kill(os.getpid(), signal.SIGTERM)
    return batch_fn(streams, step, sharding)

  monkeypatch.setattr(input_pipeline, "global_batch", preempting)
  with pytest.raises(train.Preempted, match="saved step 4"):
    train.train_and_evaluate(config, tmp_path / "resumed")
  monkeypatch.setattr(input_pipeline, "global_batch", batch_fn)
  resumed = train.train_and_evaluate(config, tmp_path / "resumed")
  for name in full:
    np.testing.assert_array_equal(full[name]["pred"], resumed[name]["pred"])

  evaluated = train.evaluate_checkpoints(config, tmp_path / "resumed")
  for name in full:
    np.testing.assert_allclose(full[name]["pred"], evaluated[name]["pred"],
                               rtol=1e-6)


def test_non_finite_loss_stops_naming_step_and_term(prepared_data_dir,
                                                    tmp_path):
  config = tiny_config("teacher", prepared_data_dir)
  config.train.learning_rate = float("nan")
  with pytest.raises(FloatingPointError, match="'loss' is not finite at step"):
    train.train_and_evaluate(config, tmp_path)


def test_sharded_step_equals_single_device_step(prepared_data_dir):
  """Student steps on 8 fake CPU devices == the same steps on 1 device."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = subprocess.run(
      [sys.executable, str(REPO / "tests" / "multidevice.py"),
       str(prepared_data_dir)], env=env, cwd=REPO, capture_output=True,
      text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  diffs = json.loads(out.stdout.strip().splitlines()[-1])
  assert diffs["devices"] == 8
  for case in ("mmd", "coral", "adversarial", "mmd_only"):
    # Relative; MMD's V-statistic cancels (k_ss + k_tt - 2 k_st), so float32
    # summation order shows at ~1e-4 there, ~1e-7 elsewhere.
    assert diffs[case]["loss"] < 1e-3, diffs
    assert diffs[case]["update"] < 1e-3, diffs
