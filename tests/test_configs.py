"""Every config file loads, with every variant, and bad args are refused."""
import importlib
import pathlib

import pytest

from configs import distill

CONFIG_FILES = sorted(p.stem for p in pathlib.Path("configs").glob("*.py")
                      if p.stem not in ("__init__", "common"))
VARIANTS = ["", "tiny", "dataset=soc", "sensor=prisma", "sensor=emit",
            "alignment=coral", "alignment=adversarial", "no_sau",
            "no_distill", "no_align", "plain", "compare=none",
            "compare=no_sau+no_align+plain"]


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
