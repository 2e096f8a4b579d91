"""A run's saved config is the truth: what was trained, on which split.

`save` writes <workdir>/config.json and the dataset's lab grid
(<workdir>/lab_grid.json: it sizes the networks) when a run starts and
refuses a workdir that holds another run. Evaluation and mapping `load` it
(`with_defaults` makes it a config again) and let the command line change
only how they run (batch sizes, where the data lives), never what was
trained or which samples are held out (`check_eval`). A map's own options
are not part of the run's config (deepsalt_jax/mapping/options.py).
"""
from __future__ import annotations

import json
from typing import Any, Callable

from etils import epath
import ml_collections

from deepsalt_jax import paths
from deepsalt_jax import sharding
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid as lab_grid_lib

CONFIG_FILE = "config.json"
LAB_GRID_FILE = "lab_grid.json"
# Fields (dotted prefixes) that say how a run is carried out, not what it
# learns: a re-run, an evaluation or a map may change them.
RUN_OPTIONS = ("data.data_dir", "train.eval_batch_size",
               "train.log_every", "train.checkpoint_every",
               "train.keep_checkpoints",
               # Variants, candidates, the label curve's runs and the
               # region calibration's train in folders of their own: a
               # re-run may add some.
               "compare", "candidates", "label_curve", "calibration_regions")
# What evaluation and mapping may change: RUN_OPTIONS less those that only
# matter while training.
EVAL_OPTIONS = ("data.data_dir", "train.eval_batch_size")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def _allowed(path: str, options: tuple[str, ...]) -> bool:
  """Whether `path` lies under one of `options`."""
  return any(path == o or path.startswith(o + ".") for o in options)


def differences(config: ml_collections.ConfigDict, saved: dict[str, Any],
                options: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
  """(field, given value, run's value) where `config` differs from `saved`.

  Fields under `options` may differ; values compare as JSON does. Fields
  the run predates (absent from `saved`) are not differences: a run saved
  before a setting existed trained as its default does (`with_defaults`).
  """
  given = _flatten(json.loads(config.to_json()))
  saved = _flatten(saved)
  return [(path, given.get(path, "(absent)"), saved[path])
          for path in sorted(saved)
          if not _allowed(path, options) and given.get(path) != saved[path]]


def _describe(diff: list[tuple[str, Any, Any]]) -> str:
  return "\n".join(f"  {path}: given {given!r}, the run's {saved!r}"
                   for path, given, saved in diff[:12]) + (
                       f"\n  ... and {len(diff) - 12} more" if len(diff) > 12
                       else "")


def _todays_layout(saved: dict[str, Any]) -> dict[str, Any]:
  """A config.json of an older layout in today's: `job` for `stage`, and a
  student's `teacher` as what differs from the student (it was a full
  config whose data and model were the student's)."""
  if "job" in saved:
    return saved
  saved = dict(saved)
  saved.pop("mapping", None)  # Map options are --mapping's now.
  stage = saved.pop("stage")
  saved["job"] = ("teacher" if stage == "teacher" else
                  "cross_validation" if "project" in saved["data"] else
                  "distill")
  if "teacher" in saved:
    teacher = saved["teacher"]
    saved["teacher"] = dict(
        steps=teacher["train"]["steps"],
        batch_size=teacher["train"]["batch_size"],
        covariates=bool(teacher["data"].get("covariates")))
  return saved


def load(workdir: epath.PathLike) -> dict[str, Any]:
  """The run's config as saved in <workdir>/config.json (in today's layout)."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise errors.UserError(
        f"{path} not found: --workdir must be a trained run (its "
        "config.json says what was trained).")
  return _with_predated_defaults(_todays_layout(json.loads(path.read_text())))


# Fields whose default changed, by group: the value a run that predates
# them trained with.
_PREDATED = {
    "model": {"linear_path": False,  # Without the linear path.
              "teacher_start": "network",  # The teacher began a network.
              "student_path": "trained"},  # The student trained its path.
    "train": {"average_decay": 0.0},  # The last step's parameters.
}


def _with_predated_defaults(saved: dict[str, Any]) -> dict[str, Any]:
  """Fields whose default changed (`_PREDATED`), set as a run that predates
  them trained."""
  out = dict(saved)
  for group, predated in _PREDATED.items():
    if isinstance(saved.get(group), dict):
      out[group] = {**{k: v for k, v in predated.items()
                       if k not in saved[group]}, **saved[group]}
  return out


def _fill(saved: Any, defaults: Any) -> Any:
  """`saved` with the fields it lacks taken from `defaults` and those
  `defaults` lack dropped, recursively; `compare` and `candidates` (the
  variants trained, by name) as saved."""
  if not isinstance(saved, dict) or not isinstance(defaults, dict):
    return saved
  out = {k: _fill(saved[k], v) if k in saved else v
         for k, v in defaults.items()}
  for key in ("compare", "candidates"):
    if key in defaults:
      out[key] = saved.get(key, {})
  return out


def _config_dict(tree: Any) -> Any:
  """Nested dicts as ConfigDicts; null (an unset optional number) becomes a
  float placeholder, so the command line can still set it."""
  if isinstance(tree, dict):
    return ml_collections.ConfigDict(
        {k: _config_dict(v) for k, v in tree.items()})
  if tree is None:
    return ml_collections.config_dict.placeholder(float)
  return tree


def with_defaults(saved: dict[str, Any],
                  defaults: Callable[[str], ml_collections.ConfigDict]
                  ) -> ml_collections.ConfigDict:
  """A saved config (`load`) as a config: fields added since the run was
  trained take today's defaults for its job (`defaults(job)`), which train
  as runs of that time did; fields no config has any more are dropped."""
  return _config_dict(_fill(saved, defaults(saved["job"]).to_dict()))


def save(config: ml_collections.ConfigDict, workdir: epath.PathLike,
         grid: lab_grid_lib.LabGrid) -> None:
  """Writes config.json and lab_grid.json (process 0; the other processes
  may be reading them, so whole files only); a workdir of another run is
  refused."""
  path = epath.Path(workdir) / CONFIG_FILE
  if path.exists():
    diff = differences(config, load(workdir), RUN_OPTIONS)
    if diff:
      raise errors.UserError(
          f"{workdir} holds a run of another config; re-running resumes it, "
          "so these fields must match:\n" + _describe(diff) +
          "\nUse a new --workdir for a new run.")
    saved = lab_grid(workdir)
    if saved != grid:
      raise errors.UserError(
          f"{workdir} holds a run on another lab grid ({saved.describe()}; "
          f"the data now: {grid.describe()}). Use a new --workdir.")
  if sharding.is_main_process():
    path.parent.mkdir(parents=True, exist_ok=True)
    paths.write_atomically(path, config.to_json(indent=2))
    paths.write_atomically(path.parent / LAB_GRID_FILE,
                           json.dumps(grid.to_json()))


def lab_grid(workdir: epath.PathLike) -> lab_grid_lib.LabGrid:
  """The lab grid the run in `workdir` trained on (runs from before it was
  saved trained on the vis-NIR grid)."""
  path = epath.Path(workdir) / LAB_GRID_FILE
  if not path.exists():
    return lab_grid_lib.visnir()
  return lab_grid_lib.LabGrid.from_json(json.loads(path.read_text()))


def check_eval(config: ml_collections.ConfigDict, run: dict[str, Any],
               mode: str) -> None:
  """Refuses a config for --mode=`mode` that changes more of the run's
  config (`run`) than its evaluation options.

  Raises:
    UserError: `config` differs from the run's in a field that says what
      was trained or held out (model, data split, target transform, ...).
  """
  diff = differences(config, run, EVAL_OPTIONS)
  if diff:
    raise errors.UserError(
        f"--mode={mode} uses the run as it was trained: its model, data "
        "split and target transform come from its config.json. The command "
        "line changes:\n" + _describe(diff) + "\nOnly " +
        ", ".join(EVAL_OPTIONS) + " may be changed here; drop the other "
        "overrides, or train a new run.")
