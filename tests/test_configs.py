"""Every config file loads, with every variant, and bad args are refused;
a run's saved config reads back as a config."""
import importlib
import json
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from configs import distill
from configs import own_data
from configs import teacher
from deepsalt_jax import choices
from deepsalt_jax import run_config
from deepsalt_jax import stages
from deepsalt_spectral import lab_grid

CONFIG_FILES = sorted(p.stem for p in pathlib.Path("configs").glob("*.py")
                      if p.stem not in ("__init__", "common"))
# Today's config of each job, as launch.py fills a saved run's.
DEFAULTS = {"teacher": teacher.get_config, "distill": distill.get_config,
            "cross_validation": own_data.get_config}
VARIANTS = ["", "tiny", "dataset=soc", "sensor=prisma", "sensor=emit",
            "alignment=coral", "alignment=adversarial", "no_sau",
            "no_distill", "no_align", "plain", "compare=none",
            "compare=no_sau+no_align+plain", "candidates=none",
            "candidates=library",
            "encoder=transformer,distill=layers,head=bounded"]


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_loads_with_its_docstring(name):
  module = importlib.import_module(f"configs.{name}")
  assert "python launch.py --config=configs/" in module.__doc__
  config = module.get_config()
  assert config.job in choices.JOBS
  assert config.train.steps > 0


def test_configs_load_without_jax_or_tfds():
  code = ("import sys; from configs import distill, own_data, teacher; "
          "[m.get_config() for m in (distill, own_data, teacher)]; "
          "print([m for m in sys.modules if m.split('.')[0] in "
          "('jax', 'tensorflow_datasets', 'flax')])")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_a_students_teacher_is_the_student_network_on_the_same_data():
  config = own_data.get_config("sensor=prisma,encoder=conv")
  config.data.covariates = "clay"
  derived = stages.teacher_config(config)
  assert derived.data.to_dict() == config.data.to_dict()  # Reads clay too.
  assert derived.model.to_dict() == config.model.to_dict()
  assert derived.seed == config.seed
  assert (derived.train.steps, derived.train.batch_size) == (300, 128)
  assert derived.train.learning_rate == config.train.learning_rate
  assert derived.loss.regression == config.loss.regression
  assert stages.teacher_config(distill.get_config()).data.covariates == ""


@pytest.mark.parametrize("arg", VARIANTS)
def test_distill_variants(arg):
  config = distill.get_config(arg)
  if "sensor=prisma" in arg:
    assert config.data.sensor == stages.teacher_config(
        config).data.sensor == "prisma"
  if arg == "no_sau":
    assert not config.model.use_sau and config.loss.w_reconstruction == 0
  if arg == "plain":
    assert not config.model.init_from_teacher
  if arg == "tiny":
    assert config.train.steps < 20 and config.teacher.steps < 20
  if "encoder=transformer" in arg:
    for model in (config.model, stages.teacher_config(config).model):
      assert model.encoder.kind == "transformer" and model.head == "bounded"
    assert config.loss.distill == "layers"
    assert len(config.loss.distill_layer_weights) == 3
  for key, default in (("compare", distill.DEFAULT_COMPARE),
                       ("candidates", distill.DEFAULT_CANDIDATES)):
    value = arg[len(key) + 1:] if arg.startswith(f"{key}=") else default
    names = [] if value == "none" else value.split("+")
    assert set(config[key]) == set(names)
  # Regions held out choose and calibrate what the candidates ship; a run
  # without candidates ships no choice, a tiny one trains nothing extra.
  assert config.calibration_regions == (
      0 if arg in ("tiny", "candidates=none") else 3)


def test_own_data_holds_no_regions_out():
  assert own_data.get_config().calibration_regions == 0


@pytest.mark.parametrize("arg,message", [
    ("sensor=landsat", "not one of"),
    ("colour=red", "Unknown config key"),
    ("fast", "Unknown config flag"),
    ("compare=everything", "not one of"),
    ("candidates=everything", "not one of"),
])
def test_bad_args_are_refused(arg, message):
  with pytest.raises(ValueError, match=message):
    distill.get_config(arg)


def _read_back(workdir):
  return run_config.with_defaults(run_config.load(workdir),
                                  lambda job: DEFAULTS[job]())


def test_saved_config_reads_a_run_back_with_settable_placeholders(tmp_path):
  """A run's config.json (eval/map read it) gives the run's config; unset
  optional numbers stay settable from the command line."""
  for config in (distill.get_config("tiny"), own_data.get_config("tiny")):
    run_config.save(config, tmp_path / config.job, lab_grid.visnir())
    loaded = _read_back(tmp_path / config.job)
    assert loaded.to_dict() == config.to_dict()
    assert not run_config.differences(loaded, config.to_dict(), ())
  loaded.data.masks.ncai_max = 0.1  # A float placeholder, not a None.
  with pytest.raises(ValueError, match="not found"):
    run_config.load(tmp_path / "elsewhere")


def test_a_run_saved_before_todays_settings_still_evaluates(tmp_path):
  """A config.json without the SAU mode, covariates, head or distillation
  kind (runs of dataset 2.0.0), with a full teacher config, `stage` and
  `mapping` (runs before config.job), reads back with the defaults that
  trained as it did (no linear path or parameter average, which today's
  defaults have), and evaluation accepts it; re-training it with today's config is refused."""
  config = distill.get_config("tiny")
  old = json.loads(config.to_json())
  del old["job"]
  full_teacher = json.loads(teacher.get_config("tiny").to_json())
  del full_teacher["job"]
  old.update(stage="student", mapping={"mc_samples": 10},
             teacher=dict(full_teacher, stage="teacher"))
  for section, field in (("model", "sau"), ("model", "head"),
                         ("model", "linear_path"), ("model", "teacher_start"),
                         ("train", "average_decay"), ("loss", "distill"), ("loss", "w_contrastive"),
                         ("data", "covariates")):
    del old[section][field]
    old["teacher"][section].pop(field, None)
  (tmp_path / run_config.CONFIG_FILE).write_text(json.dumps(old))
  loaded = _read_back(tmp_path)
  assert loaded.job == "distill" and "mapping" not in loaded
  assert loaded.teacher.to_dict() == config.teacher.to_dict()
  assert loaded.model.sau == "auto" and loaded.data.covariates == ""
  assert loaded.loss.distill == "final" and loaded.model.head == "linear"
  # Today's default has a linear path and averages the parameters; the run
  # was trained without either, and its teacher started as a network.
  assert config.model.linear_path and not loaded.model.linear_path
  assert loaded.model.teacher_start == "network"
  assert config.train.average_decay and not loaded.train.average_decay
  with pytest.raises(ValueError, match="model.linear_path"):
    run_config.save(config, tmp_path, lab_grid.visnir())  # A re-run.
  run = loaded.to_dict()
  run_config.check_eval(loaded, run, "eval")
  loaded.train.eval_batch_size = 8  # An evaluation option may change.
  run_config.check_eval(loaded, run, "eval")
  config.model.encoder.features += 1  # What was trained still may not change.
  with pytest.raises(ValueError, match="model.encoder.features"):
    run_config.check_eval(config, run, "eval")


def test_every_optional_number_is_a_float_placeholder():
  """run_config restores null as a float placeholder; that holds only
  while every optional config value is a float."""

  def unset(tree, prefix=""):
    for key in tree:
      value = tree[key]
      if isinstance(value, ml_collections.ConfigDict):
        yield from unset(value, f"{prefix}{key}.")
      elif value is None:
        yield f"{prefix}{key}", tree.get_ref(key).get_type()

  for config in (distill.get_config(), own_data.get_config()):
    for name, kind in unset(config):
      assert kind is float, name
