"""Clear messages for what users get wrong, and nothing written on error."""
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

import ml_collections
import pytest

from conftest import REPO, delete_checkpoint_data, tiny_config
from data_prep import datasets
from deepsalt_jax import evaluate
from deepsalt_jax import input_pipeline
from deepsalt_jax import mapping
from deepsalt_jax import run_config
from deepsalt_jax import samples
from deepsalt_jax import train

TILE = "enmap_potsdam/enmap_potsdam_tile_192_96.tif"


def _launch(*args, env=None, timeout=300):
  return subprocess.run([sys.executable, "launch.py", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, **(env or {})))


def _one_clear_line(result, message):
  """Exit status 2, one 'error: ...' message naming the problem, no
  traceback."""
  assert result.returncode == 2, result.stderr[-2000:]
  stderr = "\n" + result.stderr
  errors = stderr[stderr.find("\nerror: "):]
  assert errors.count("\nerror: ") == 1 and message in errors, (
      result.stderr[-2000:])
  assert "Traceback" not in result.stderr


def test_unknown_dataset_and_sensor():
  with pytest.raises(ValueError, match="valid names: salinity, soc"):
    datasets.builder("salt", "enmap")
  with pytest.raises(ValueError, match="valid sensors: enmap, prisma, emit"):
    datasets.builder("salinity", "landsat")


@pytest.mark.slow
def test_unknown_test_region_leaves_no_workdir(prepared_data_dir, tmp_path):
  config = tiny_config("teacher", prepared_data_dir)
  config.data.test_regions = "Atlantis"
  with pytest.raises(ValueError, match=r"unknown regions \['Atlantis'\].*"
                     "ICRAF Africa"):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_holding_out_every_region_is_refused(prepared_data_dir):
  config = tiny_config("teacher", prepared_data_dir)
  _, info = datasets.load("salinity", "enmap", prepared_data_dir)
  config.data.test_regions = ",".join(info.features["region"].names)
  with pytest.raises(ValueError, match="nothing is left to train on"):
    samples.load_data(config.data)


def test_no_labelled_samples_is_refused(prepared_data_dir):
  config = tiny_config("distill", prepared_data_dir)
  config.data.labelled_fraction = 0.0
  data = samples.load_data(config.data)
  with pytest.raises(ValueError, match="'labelled' stream is empty"):
    input_pipeline.student_streams(data, 8, 0, True, {"labelled"})


def test_a_workdir_of_another_run_is_refused(tiny_run, tmp_path):
  config, workdir = tiny_run
  other = tiny_config("distill", config.data.data_dir,
                      "compare=none,candidates=none")
  other.data.labelled_fraction = 0.1
  with pytest.raises(ValueError, match=r"(?s)holds a run of another config.*"
                     r"data.labelled_fraction: given 0.1, the run's 0.05"):
    train.train_and_evaluate(other, workdir)


def test_eval_and_map_refuse_a_config_that_differs_from_the_run(tiny_run):
  """--config.<field>=... with --mode=eval/map may change only evaluation
  options of the run's config (launch.py checks the overrides)."""
  _, workdir = tiny_run
  run = run_config.load(workdir)
  held_out = ml_collections.ConfigDict(run)
  held_out.data.test_regions = "SSP.460"
  with pytest.raises(ValueError, match=r"(?s)--mode=eval uses the run .*"
                     r"data.test_regions: given 'SSP.460', the run's "
                     r"'SC.93,ICRAF South America'"):
    run_config.check_eval(held_out, run, "eval")
  transform = ml_collections.ConfigDict(run)
  transform.data.target_transform = "identity"
  with pytest.raises(ValueError, match=r"(?s)--mode=map .*data."
                     r"target_transform: given 'identity', the run's 'log1p'"):
    run_config.check_eval(transform, run, "map")


@pytest.mark.parametrize("field,value,message", [
    ("train.steps", -5, "--config.train.steps=-5: use at least 1 step"),
    ("train.batch_size", 0,
     "--config.train.batch_size=0: use at least 1 sample"),
    ("teacher.batch_size", 0,
     "--config.teacher.batch_size=0: use at least 1 sample"),
    ("train.average_decay", 1.0, r"--config.train.average_decay=1.0: use 0 "
     r"\(no average\) or a decay in \(0, 1\)"),
    ("loss.distill_pred_fade", 2.0, r"--config.loss.distill_pred_fade=2.0: "
     r"use a share of the steps in \[0, 1\]"),
    ("calibration_regions", -1, r"--config.calibration_regions=-1: use 0 "
     r"\(the validation blocks\) or a number of groups"),
])
def test_config_numbers_are_checked_before_any_work(field, value, message,
                                                     tmp_path):
  config = tiny_config("distill", tmp_path / "tfds",
                       "compare=none,candidates=none")
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists() and not (tmp_path / "tfds").exists()


def test_an_unwritable_workdir_is_refused_before_any_work(tmp_path,
                                                         monkeypatch):
  config = tiny_config("teacher", tmp_path / "tfds")
  blocker = tmp_path / "file"
  blocker.write_text("")
  for workdir, message in (
      (blocker, "is a file, not a folder"),
      (blocker / "run", f"{blocker} is a file, so no folder can be made"),
  ):
    with pytest.raises(ValueError, match=message):
      train.train_and_evaluate(config, workdir)
  # A read-only folder (simulated: tests may run as root, who writes anyway).
  locked = tmp_path / "locked"
  locked.mkdir()
  monkeypatch.setattr(os, "access", lambda p, mode: pathlib.Path(p) != locked)
  with pytest.raises(ValueError, match=f"{locked} is not writable"):
    train.train_and_evaluate(config, locked / "runs" / "run")
  assert not list(locked.iterdir()) and not (tmp_path / "tfds").exists()


def test_map_output_that_is_a_file_is_refused(tiny_run, reference_data,
                                              tmp_path):
  config, workdir = tiny_run
  taken = tmp_path / "taken"
  taken.write_text("mine")
  for output, message in ((taken, "is a file, not a folder"),
                          (taken / "maps", "is a file, so no folder")):
    with pytest.raises(ValueError, match=message):
      mapping.map_scene(config, workdir, reference_data / TILE, output)
  assert taken.read_text() == "mine"


def test_eval_falls_back_past_a_damaged_best(tiny_run, tmp_path, caplog):
  """A damaged student/best: eval restores the newest regular checkpoint,
  with a warning, instead of stopping."""
  config, workdir = tiny_run
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  (best,) = (run / "student" / "best").iterdir()
  delete_checkpoint_data(best)
  with caplog.at_level(logging.WARNING):
    evaluate.evaluate_checkpoints(config, run)
  assert (f"Every step in {run / 'student' / 'best'} is damaged; restoring "
          f"from {run / 'student' / 'checkpoints'}") in caplog.text
  steps = json.loads((run / f"eval-{config.train.steps}.json").read_text())[
      "checkpoint_steps"]
  assert steps["student"] == config.train.steps


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--config=configs/distill.py:sensor=landsat", "--workdir=W"],
     "not one of"),
    (["--config=configs/distill.py", "--config.train.stepz=3",
      "--workdir=W"], "stepz"),
    (["--config=configs/distill.py", "--mode=dance", "--workdir=W"],
     "dance"),
    (["--mode=eval"], "--mode=eval needs --workdir"),
    (["--mode=map", "--workdir=W"], "W/config.json not found"),
    (["--config=configs/own_data.py", "--config.train.steps=-5",
      "--workdir=W"], "error: --config.train.steps=-5: use at least 1 step"),
    (["--config=configs/teacher.py:tiny", "--workdir=W/run"],
     "W is a file, so no folder can be made under it"),
])
def test_cli_errors_name_the_problem(args, message, tmp_path):
  blocker = "--workdir=W/run" in args  # A workdir under a file.
  if blocker:
    (tmp_path / "W").write_text("")
  args = [a.replace("=W", f"={tmp_path / 'W'}") for a in args]
  out = _launch(*args)
  assert out.returncode != 0
  assert message in out.stderr
  assert "Traceback" not in out.stderr
  assert (tmp_path / "W").is_file() if blocker else not (
      tmp_path / "W").exists()


def _truncated(reference_data, path):
  data = (reference_data / TILE).read_bytes()
  path.write_bytes(data[:len(data) // 2])
  return path


@pytest.mark.slow
def test_cli_user_errors_are_one_line_and_leave_nothing(tiny_run,
                                                        reference_data,
                                                        tmp_path):
  _, workdir = tiny_run
  maps = tmp_path / "maps"
  cases = [
      (["--mapping.batch_size=0", f"--scene={reference_data / TILE}"],
       "--mapping.batch_size=0: use at least 1 pixel"),
      ([f"--scene={tmp_path / 'missing.tif'}"], "missing.tif does not exist"),
      ([f"--scene={_truncated(reference_data, tmp_path / 'cut.tif')}"],
       "truncated or damaged"),
  ]
  for extra, message in cases:
    result = _launch("--mode=map", f"--workdir={workdir}",
                     f"--output={maps}", *extra)
    _one_clear_line(result, message)
    assert not maps.exists(), message
  # An --output that is a file: one line, the file untouched.
  taken = tmp_path / "taken"
  taken.write_text("mine")
  result = _launch("--mode=map", f"--workdir={workdir}", f"--output={taken}",
                   f"--scene={reference_data / TILE}")
  _one_clear_line(result, f"--output={taken} is a file, not a folder")
  assert taken.read_text() == "mine"
  # The saved config is the one to match; the command line may not differ.
  result = _launch("--mode=eval", f"--workdir={workdir}",
                   "--config.data.test_regions=SSP.460")
  _one_clear_line(result, "data.test_regions: given 'SSP.460'")
  assert not list(workdir.glob("eval-*"))
  # --verbose shows the traceback.
  result = _launch("--mode=map", f"--workdir={workdir}", "--verbose",
                   f"--scene={tmp_path / 'missing.tif'}")
  assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.slow
def test_unwritable_data_dir_names_the_fix(tmp_path):
  """A data dir that cannot be written (here: a path under a file)."""
  blocker = tmp_path / "file"
  blocker.write_text("")
  result = _launch("--config=configs/teacher.py:tiny",
                   f"--workdir={tmp_path / 'run'}",
                   env={"DEEPSALT_DATA_DIR": str(blocker / "tfds")})
  _one_clear_line(result, "DEEPSALT_DATA_DIR")
  assert not (tmp_path / "run").exists()
