"""Every config file loads, with every variant, and bad args are refused."""
import importlib
import pathlib

import pytest

from configs import distill
from configs import own_data
from deepsalt_spectral import lab_grid

CONFIG_FILES = sorted(p.stem for p in pathlib.Path("configs").glob("*.py")
                      if p.stem not in ("__init__", "common", "saved"))
VARIANTS = ["", "tiny", "dataset=soc", "sensor=prisma", "sensor=emit",
            "alignment=coral", "alignment=adversarial", "no_sau",
            "no_distill", "no_align", "plain", "compare=none",
            "compare=no_sau+no_align+plain",
            "encoder=transformer,distill=layers,head=bounded"]


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_loads_with_its_docstring(name):
  module = importlib.import_module(f"configs.{name}")
  assert "python launch.py --config=configs/" in module.__doc__
  config = module.get_config()
  assert config.stage in ("teacher", "student")
  assert config.train.steps > 0


@pytest.mark.parametrize("arg", VARIANTS)
def test_distill_variants(arg):
  config = distill.get_config(arg)
  if "sensor=prisma" in arg:
    assert config.data.sensor == config.teacher.data.sensor == "prisma"
  if arg == "no_sau":
    assert not config.model.use_sau and config.loss.w_reconstruction == 0
  if arg == "plain":
    assert not config.model.init_from_teacher
  if arg == "tiny":
    assert config.train.steps < 20 and config.teacher.train.steps < 20
  if "encoder=transformer" in arg:
    for model in (config.model, config.teacher.model):
      assert model.encoder.kind == "transformer" and model.head == "bounded"
    assert config.loss.distill == "layers"
    assert len(config.loss.distill_layer_weights) == 3
  if arg.startswith("compare="):
    names = [] if arg == "compare=none" else arg[8:].split("+")
    assert set(config.compare) == set(names)


@pytest.mark.parametrize("arg,message", [
    ("sensor=landsat", "not one of"),
    ("colour=red", "Unknown config key"),
    ("fast", "Unknown config flag"),
    ("compare=everything", "not one of"),
])
def test_bad_args_are_refused(arg, message):
  with pytest.raises(ValueError, match=message):
    distill.get_config(arg)


def test_saved_config_reads_a_run_back_with_settable_placeholders(tmp_path):
  """configs/saved.py (eval/map without --config) gives the run's config;
  unset optional numbers stay settable from the command line."""
  from configs import saved
  from deepsalt_jax import run_config
  config = distill.get_config("tiny")
  run_config.save(config, tmp_path, lab_grid.visnir())
  loaded = saved.get_config(str(tmp_path))
  assert loaded.to_dict() == config.to_dict()
  assert not run_config.differences(loaded, config.to_dict(), ())
  own = own_data.get_config("tiny")
  run_config.save(own, tmp_path / "own", lab_grid.visnir())
  # A float placeholder, not a None.
  saved.get_config(str(tmp_path / "own")).data.masks.ncai_max = 0.1
  with pytest.raises(ValueError, match="not found"):
    saved.get_config(str(tmp_path / "elsewhere"))


def test_a_run_saved_before_todays_settings_still_evaluates(tmp_path):
  """A config.json without the SAU mode, covariates, head or distillation
  kind (runs of dataset 2.0.0) reads back with the defaults that trained as
  it did, and evaluation accepts it."""
  import json
  from configs import saved
  from deepsalt_jax import run_config
  config = distill.get_config("tiny")
  old = config.to_dict()
  for section, field in (("model", "sau"), ("model", "head"),
                         ("loss", "distill"), ("loss", "w_contrastive"),
                         ("data", "covariates")):
    del old[section][field]
    old["teacher"][section].pop(field, None)
  (tmp_path / run_config.CONFIG_FILE).write_text(json.dumps(old))
  loaded = saved.get_config(str(tmp_path))
  assert loaded.model.sau == "auto" and loaded.data.covariates == ""
  assert loaded.loss.distill == "final" and loaded.model.head == "linear"
  assert run_config.for_eval(loaded, tmp_path, "eval") is loaded
  config.model.encoder.features += 1  # What was trained still may not change.
  with pytest.raises(ValueError, match="model.encoder.features"):
    run_config.for_eval(config, tmp_path, "eval")


def test_every_optional_number_is_a_float_placeholder():
  """configs/saved.py restores null as a float placeholder; that holds only
  while every optional config value is a float."""
  import ml_collections

  def unset(tree, prefix=""):
    for key in tree:
      value = tree[key]
      if isinstance(value, ml_collections.ConfigDict):
        yield from unset(value, f"{prefix}{key}.")
      elif value is None:
        yield f"{prefix}{key}", tree.get_ref(key).get_type()

  for name, kind in unset(distill.get_config()):
    assert kind is float, name
