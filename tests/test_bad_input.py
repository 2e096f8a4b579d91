"""Clear messages for what users get wrong, and nothing written on error."""
import os
import subprocess
import sys

import pytest

from conftest import REPO, tiny_config
from data_prep import datasets
from deepsalt_jax import evaluate
from deepsalt_jax import input_pipeline
from deepsalt_jax import mapping
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
    input_pipeline.load_data(config.data)


def test_no_labelled_samples_is_refused(prepared_data_dir):
  config = tiny_config("distill", prepared_data_dir)
  config.data.labelled_fraction = 0.0
  data = input_pipeline.load_data(config.data)
  with pytest.raises(ValueError, match="'labelled' stream is empty"):
    input_pipeline.student_streams(data, 8, 0, True, {"labelled"})


def test_a_workdir_of_another_run_is_refused(tiny_run, tmp_path):
  config, workdir = tiny_run
  other = tiny_config("distill", config.data.data_dir, "compare=none")
  other.data.labelled_fraction = 0.1
  with pytest.raises(ValueError, match=r"(?s)holds a run of another config.*"
                     r"data.labelled_fraction: given 0.1, the run's 0.05"):
    train.train_and_evaluate(other, workdir)


def test_eval_and_map_refuse_a_config_that_differs_from_the_run(
    tiny_run, reference_data, tmp_path):
  config, workdir = tiny_run
  held_out = tiny_config("distill", config.data.data_dir, "compare=none")
  held_out.data.test_regions = "SSP.460"
  with pytest.raises(ValueError, match=r"(?s)--mode=eval uses the run .*"
                     r"data.test_regions: given 'SSP.460', the run's "
                     r"'SC.93,ICRAF South America'"):
    evaluate.evaluate_checkpoints(held_out, workdir)
  transform = tiny_config("distill", config.data.data_dir, "compare=none")
  transform.data.target_transform = "identity"
  with pytest.raises(ValueError, match=r"(?s)--mode=map .*data."
                     r"target_transform: given 'identity', the run's 'log1p'"):
    mapping.map_scene(transform, workdir, reference_data / TILE, tmp_path)
  assert not list(tmp_path.iterdir())


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
])
def test_cli_errors_name_the_problem(args, message, tmp_path):
  args = [a.replace("=W", f"={tmp_path / 'W'}") for a in args]
  out = _launch(*args)
  assert out.returncode != 0
  assert message in out.stderr
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "W").exists()


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
  # The saved config is the one to match; the command line may not differ.
  result = _launch("--mode=eval", f"--workdir={workdir}",
                   "--config=configs/distill.py:tiny,compare=none",
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
