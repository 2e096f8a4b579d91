"""DeepSalt entry point.

  python launch.py --config=configs/distill.py
  python launch.py --config=configs/distill.py:sensor=prisma \\
      --config.train.steps=4000
  python launch.py --config=configs/own_data.py \\
      --config.data.project=<folder>      (spatial cross-validation)
  python launch.py --mode=eval --workdir=runs/distill
  python launch.py --mode=map --workdir=runs/distill --scene=SCENES \\
      [--output=maps/] [--mapping.mc_samples=0]

--scene is a scene file, a folder of scene files or a text file listing
scenes (paths or gs:// URIs, one a line). With several processes each maps
its share of the scenes.

--mode=eval and --mode=map use the run's own config (<workdir>/config.json);
--config.<field>=... may change only its evaluation options there. The map's
options are --mapping.* (deepsalt_jax/mapping/options.py).

A bad config value, input file or option prints one line and exits with
status 2; --verbose (or DEEPSALT_VERBOSE=1) shows the traceback too.

On a multi-process cluster job (one process per host) the JAX coordinator
environment (e.g. SLURM, or JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES +
JAX_PROCESS_ID) makes this call `jax.distributed.initialize()` first.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, NamedTuple

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import ml_collections
from ml_collections import config_flags

from configs import distill
from configs import own_data
from configs import teacher
from deepsalt_jax import choices
from deepsalt_jax import cross_validation
from deepsalt_jax import evaluate
from deepsalt_jax import mapping
from deepsalt_jax import reporting
from deepsalt_jax import run_config
from deepsalt_jax import train
from deepsalt_spectral import errors


class _Job(NamedTuple):
  """What a config's `job` names."""
  config: Callable[[], ml_collections.ConfigDict]  # Today's defaults.
  train: Callable[[ml_collections.ConfigDict, epath.Path], Any]


_JOBS = {"teacher": _Job(teacher.get_config, train.train_and_evaluate),
         "distill": _Job(distill.get_config, train.train_and_evaluate),
         "cross_validation": _Job(own_data.get_config,
                                  cross_validation.train_and_validate)}
assert tuple(_JOBS) == choices.JOBS


def _job(name: str) -> _Job:
  if name not in _JOBS:
    raise errors.UserError(f"config.job={name!r}: use one of "
                           f"{', '.join(_JOBS)}.")
  return _JOBS[name]


_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, logs, results; a local path "
    "or gs://...); default runs/<config name>[_<arg>] for training. "
    "Re-running with the same workdir resumes.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "map"],
                          "train: train (or resume) then evaluate; eval: "
                          "restore the latest checkpoints and evaluate; map: "
                          "map EC over --scene with the model validation chose "
                          "(own data) or the student (--mapping.model).")
_SCENE = flags.DEFINE_string(
    "scene", None, "--mode=map: a scene file (EnMAP L2A GeoTIFF, ENVI, "
    "PRISMA .he5, EMIT .nc), a folder of them, or a text file (.txt) "
    "listing them, one path or gs:// URI a line.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "--mode=map: output folder; default <workdir>/maps.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "yes", "no"],
    "Call jax.distributed.initialize() (one process per host): auto = when "
    "the environment names a cluster (JAX_COORDINATOR_ADDRESS, SLURM, TPU "
    "pod).")
_VERBOSE = flags.DEFINE_bool(
    "verbose", os.environ.get("DEEPSALT_VERBOSE", "") not in ("", "0"),
    "Show the traceback of input errors too (or set DEEPSALT_VERBOSE=1).")

def _default_workdir() -> epath.Path:
  spec = flags.FLAGS["config"].config_filename  # 'configs/x.py[:arg]'
  path, _, arg = spec.partition(":")
  name = epath.Path(path).stem + (f"_{arg}" if arg else "")
  return epath.Path("runs") / name.replace(",", "_").replace("=", "-")


def _multiprocess_requested() -> bool:
  if _DISTRIBUTED.value != "auto":
    return _DISTRIBUTED.value == "yes"
  return any(k in os.environ for k in (
      "JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES"))


def _define_config(argv: list[str]) -> dict[str, Any] | None:
  """Defines --config: a config file to train, the run's config.json to
  evaluate or map (returned as saved, to check the overrides against)."""
  if _MODE.value == "train":
    config_flags.DEFINE_config_file(
        "config", None, "Experiment config file, e.g. "
        "configs/distill.py[:arg].", lock_config=True)
    return None
  if not _WORKDIR.value:
    raise errors.UserError(f"--mode={_MODE.value} needs --workdir=<a trained "
                           "run>.")
  if any(a == "--config" or a.startswith("--config=") for a in argv):
    raise errors.UserError(
        f"--mode={_MODE.value} uses the run's own config "
        f"({_WORKDIR.value}/config.json): drop --config=...; change "
        "evaluation options with --config.<field>=....")
  config = run_config.with_defaults(run_config.load(_WORKDIR.value),
                                    lambda job: _job(job).config())
  run = config.to_dict()
  config_flags.DEFINE_config_dict(
      "config", config, "The run's config (<workdir>/config.json); "
      "--config.<field>=... changes an evaluation option.", sys_argv=argv)
  return run


def _run() -> None:
  if _MODE.value == "map" and not _SCENE.value:
    raise errors.UserError("--mode=map needs --scene=<a scene file, a folder "
                           "of scenes or a .txt list of them>.")
  config = flags.FLAGS.config
  if _MODE.value == "train" and config is None:
    raise errors.UserError("Training needs --config=<config file>, e.g. "
                           "--config=configs/distill.py.")
  workdir = epath.Path(_WORKDIR.value or _default_workdir())
  start = time.perf_counter()
  if _MODE.value == "train":
    _job(config.job).train(config, workdir)
    where = workdir
  elif _MODE.value == "eval":
    evaluate.evaluate_checkpoints(config, workdir)
    where = workdir
  else:
    where = epath.Path(_OUTPUT.value or workdir / "maps")
    mapping.map_scenes(config, workdir, _SCENE.value, where,
                       flags.FLAGS.mapping)
  logging.info("Done in %.0f s; outputs in %s", time.perf_counter() - start,
               where)


def _fail(error: BaseException, verbose: bool) -> None:
  """One line on stderr and exit status 2 (the traceback with --verbose)."""
  if verbose:
    raise error
  print(f"error: {error}" if isinstance(error, errors.UserError)
        else str(error), file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag reported as one line.

  --mode and --workdir are read first: they say what --config is. Eval and
  map overrides may change only evaluation options (run_config.check_eval).
  config_flags wraps an error of a config file's get_config in a traceback;
  the innermost UserError holds the message that matters.
  """
  try:
    flags.FLAGS(argv, known_only=True)
    run = _define_config(argv)
    # Defined here: config_flags applies a config dict's overrides (and
    # raises on a misspelt one) when the flag is defined.
    config_flags.DEFINE_config_dict(
        "mapping", mapping.options.defaults(), "--mode=map: the map's "
        "options, e.g. --mapping.mc_samples=0.", lock_config=True)
    argv = flags.FLAGS(argv)
    if run is not None:
      run_config.check_eval(flags.FLAGS.config, run, _MODE.value)
    return argv
  except (flags.Error, AttributeError, KeyError, errors.UserError) as e:
    if isinstance(e, (AttributeError, KeyError)):  # A misspelt override.
      text = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'")
      e = flags.Error(f"--config or --mapping override names no field: "
                      f"{text}")
    cause, error = errors.UserError(str(e).splitlines()[0]), e
    while error is not None:
      if isinstance(error, errors.UserError):
        cause = error
      error = error.__cause__ or error.__context__
    # Flags are not parsed: read --verbose from the command line itself.
    _fail(cause, _VERBOSE.default or "--verbose" in argv)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _multiprocess_requested():
    # CPU-only hosts need gloo for cross-process collectives; GPU/TPU ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX reads JAX_COORDINATOR_ADDRESS itself, but not these two (SLURM and
    # TPU pods are detected without them).
    jax.distributed.initialize(**{
        arg: int(os.environ[name]) for arg, name in (
            ("num_processes", "JAX_NUM_PROCESSES"),
            ("process_id", "JAX_PROCESS_ID")) if name in os.environ})
  logging.set_verbosity(logging.INFO)
  reporting.quiet_library_logs()
  try:
    _run()
  except (errors.UserError, train.Preempted) as e:
    _fail(e, _VERBOSE.value)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
