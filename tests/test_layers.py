"""The house rules that keep the code changeable: one-way layers, small files.

Layers, each importing only those below it (docs/architecture.md):
  benchmarks -> launch, configs -> train / evaluate / mapping /
  cross_validation, cv_report -> the rest of deepsalt_jax -> data_prep ->
  deepsalt_spectral
"""
import ast
import pathlib

import pytest

from conftest import REPO

# Lower number = lower layer.
TOP = {"train", "evaluate", "mapping", "cross_validation", "cv_report"}
MAX_LINES = 500


def _rank(module: str) -> int | None:
  """Layer of a project module ('deepsalt_jax.train'), None if external."""
  parts = module.split(".")
  if parts[0] == "deepsalt_spectral":
    return 1
  if parts[0] == "data_prep":
    return 2
  if parts[0] == "deepsalt_jax":
    return 4 if len(parts) > 1 and parts[1] in TOP else 3
  if parts[0] in ("launch", "configs"):
    return 5
  if parts[0] == "benchmarks":
    return 6
  return None


def _modules():
  for path in sorted(REPO.glob("**/*.py")):
    relative = path.relative_to(REPO)
    if relative.parts[0] in (".venv", "tests") or _rank(
        relative.parts[0].removesuffix(".py")) is None:
      continue
    name = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
    yield name, path


def _imports(path: pathlib.Path) -> set[str]:
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # `from deepsalt_jax import train` imports deepsalt_jax.train.
      out |= {f"{node.module}.{alias.name}" for alias in node.names}
  return out


def test_no_import_goes_up_a_layer():
  upward = []
  for name, path in _modules():
    for imported in _imports(path):
      rank = _rank(imported)
      if rank is not None and rank > _rank(name):
        upward.append(f"{name} -> {imported}")
  assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_bottom_layer_imports_nothing_of_the_project():
  for name, path in _modules():
    if name.startswith("deepsalt_spectral"):
      assert all(_rank(i) in (None, 1) for i in _imports(path)), name


@pytest.mark.parametrize("name,path", list(_modules()))
def test_modules_stay_small(name, path):
  assert len(path.read_text().splitlines()) <= MAX_LINES, name
