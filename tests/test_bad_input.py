"""Clear messages for what users get wrong, and nothing written on error."""
import subprocess
import sys

import pytest

from conftest import REPO, tiny_config
from data_prep import datasets
from deepsalt_jax import input_pipeline
from deepsalt_jax import train


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
  source, info = datasets.load("salinity", "enmap", prepared_data_dir)
  config.data.test_regions = ",".join(info.features["region"].names)
  with pytest.raises(ValueError, match="nothing is left to train on"):
    input_pipeline.load_data(config.data)


def test_no_labelled_samples_is_refused(prepared_data_dir):
  config = tiny_config("distill", prepared_data_dir)
  config.data.labelled_fraction = 0.0
  data = input_pipeline.load_data(config.data)
  with pytest.raises(ValueError, match="'labelled' stream is empty"):
    input_pipeline.student_streams(data, 8, 0, True, {"labelled"})


@pytest.mark.parametrize("args,message", [
    (["--config=configs/distill.py:sensor=landsat"], "not one of"),
    (["--config=configs/distill.py", "--config.train.stepz=3"], "stepz"),
    (["--config=configs/distill.py", "--mode=dance"], "dance"),
])
def test_cli_errors_name_the_problem(args, message, tmp_path):
  out = subprocess.run([sys.executable, "launch.py", *args,
                        f"--workdir={tmp_path / 'run'}"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert message in out.stderr
  assert not (tmp_path / "run").exists()
