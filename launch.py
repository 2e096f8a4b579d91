"""DeepSalt entry point.

  python launch.py --config=configs/distill.py
  python launch.py --config=configs/distill.py --mode=eval --workdir=runs/x
  python launch.py --config=configs/distill.py:sensor=prisma \\
      --config.train.steps=4000
  python launch.py --config=configs/distill.py --mode=map --workdir=runs/x \\
      --scene=scene.tif [--output=maps/]

On a multi-process cluster job (one process per host) the JAX coordinator
environment (e.g. SLURM, or JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES +
JAX_PROCESS_ID) makes this call `jax.distributed.initialize()` first.
"""
from __future__ import annotations

import os
import pathlib
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from deepsalt_jax import mapping
from deepsalt_jax import reporting
from deepsalt_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/distill.py[:arg].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, logs, results); default "
    "runs/<config name>[_<arg>]. Re-running with the same workdir resumes.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "map"],
                          "train: train (or resume) then evaluate; eval: "
                          "restore the latest checkpoints and evaluate; map: "
                          "map EC over --scene with the trained student.")
_SCENE = flags.DEFINE_string(
    "scene", None, "--mode=map: the scene file (EnMAP L2A GeoTIFF, ENVI, "
    "PRISMA .he5, EMIT .nc).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "--mode=map: output folder; default <workdir>/maps.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "yes", "no"],
    "Call jax.distributed.initialize() (one process per host): auto = when "
    "the environment names a cluster (JAX_COORDINATOR_ADDRESS, SLURM, TPU "
    "pod).")


def _default_workdir() -> pathlib.Path:
  spec = flags.FLAGS["config"].config_filename  # 'configs/x.py[:arg]'
  path, _, arg = spec.partition(":")
  name = pathlib.Path(path).stem + (f"_{arg}" if arg else "")
  return pathlib.Path("runs") / name.replace(",", "_").replace("=", "-")


def _multiprocess_requested() -> bool:
  if _DISTRIBUTED.value != "auto":
    return _DISTRIBUTED.value == "yes"
  return any(k in os.environ for k in (
      "JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES"))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _multiprocess_requested():
    # CPU-only hosts need gloo for cross-process collectives; GPU/TPU ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize()
  logging.set_verbosity(logging.INFO)
  reporting.quiet_library_logs()
  workdir = pathlib.Path(_WORKDIR.value or _default_workdir())
  start = time.perf_counter()
  if _MODE.value == "train":
    train.train_and_evaluate(_CONFIG.value, workdir)
  elif _MODE.value == "map":
    if not _SCENE.value:
      raise app.UsageError("--mode=map needs --scene=<scene file>.")
    mapping.map_scene(_CONFIG.value, workdir, _SCENE.value, _OUTPUT.value)
  else:
    train.evaluate_checkpoints(_CONFIG.value, workdir)
  logging.info("Done in %.0f s; results in %s", time.perf_counter() - start,
               workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
