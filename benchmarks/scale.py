r"""Scale: how time and memory grow with the library, the points, the scenes.

  python -m benchmarks.scale [--quick] [--work=/tmp/scale] [--steps=100] \
      [--axes=library,points,scenes] [--json=scale.json] [--figure=scale.png] \
      [--previous=docs/scale.json]

Each measurement runs in its own child process, so its peak RSS is its own
(os.wait4's rusage of that child): wall time, CPU time (user + system, all
threads) and peak RSS of
  library  the example project (data_prep.example_project) whose library
           holds N spectra: the example's real lab spectra and replicas of
           them with 1 % multiplicative noise (no coordinates, so the pairs
           stay the example's), written, then (a) built by the project
           builder, then (b) its teacher and student trained on all of it
           (configs/own_data.py, `--steps` steps each);
  points   the example project with P field points written, (a) built and
           (c) cross-validated (5 spatial folds, `--steps` steps per
           training);
  scenes   (d) mapping S full-size EnMAP scenes (benchmarks/mapping_speed's
           synthetic L2A GeoTIFF, one file linked under S names) with an
           untrained default student.
Grid: library 1k, 10k, 100k; points 50, 500, 5,000; scenes 1, 8, 32 of
1000 x 1000 pixels. --quick: library 1k, 3k, 10k; points 50, 150, 500;
scenes 1, 2, 4 of 300 x 300 pixels; --points and --scenes choose other
counts. Prints a Markdown table with the log-log slope of each quantity
(least squares over the sizes): 1 is linear; and CPU's over the last two
sizes. --previous adds an earlier run's rows of
the axes not measured now (docs/scale.json holds the docs' rows).
Training steps are fixed, so (b) and (c) measure what grows with the data
besides the steps. The rows so far are kept in <work>/rows.json. Needs the
shared reference data (EnMAP tiles) for the scenes axis. Not a test; the
figures depend on the machine's load (CPU time depends on it least).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags
import numpy as np
import pandas as pd

_QUICK = flags.DEFINE_bool("quick", False, "The small grid.")
_WORK = flags.DEFINE_string("work", "/tmp/deepsalt_scale",
                            "Scratch folder (projects, runs, scenes).")
_AXES = flags.DEFINE_list("axes", ["library", "points", "scenes"],
                          "Axes to measure.")
_STEPS = flags.DEFINE_integer("steps", 100, "Training steps per stage.")
_JSON = flags.DEFINE_string("json", None, "Optional JSON output file.")
_FIGURE = flags.DEFINE_string("figure", None, "Optional log-log figure.")
_POINTS = flags.DEFINE_list("points", None, "Point counts instead of the "
                            "grid's.")
_SCENES = flags.DEFINE_list("scenes", None, "Scene counts instead of the "
                            "grid's.")
_SCENE_PIXELS = flags.DEFINE_integer("scene_pixels", None, "Scene rows = "
                                     "columns instead of the grid's.")
_PREVIOUS = flags.DEFINE_list(
    "previous", [], "JSON files of earlier runs (--json): their rows of the "
    "axes not measured now join the table, the slopes and the figure.")
_CHILD = flags.DEFINE_string("child", None, "Internal: the task to run.")
_SIZE = flags.DEFINE_integer("size", 0, "Internal: the task's size.")

GRIDS = {False: {"library": [1000, 10000, 100000],
                 "points": [50, 500, 5000], "scenes": [1, 8, 32]},
         True: {"library": [1000, 3000, 10000], "points": [50, 150, 500],
                "scenes": [1, 2, 4]}}
SCENE_PIXELS = {False: 1000, True: 300}
# Stages measured along each axis: (child task, what it measures).
STAGES = {"library": (("library_write", "write example"),
                      ("library_build", "build project"),
                      ("train", "train teacher + student")),
          "points": (("points_write", "write example"),
                     ("points_build", "build project"),
                     ("cv", "spatial CV (5 folds)")),
          "scenes": (("map", "map scenes"),)}
# Example scenes large enough for 5,000 points on soil.
POINT_SCENE_PIXELS = 250
# The library axis starts from the example with fewer spectra without
# coordinates (830 in all), grown to each size by replicas.
BASE_ELSEWHERE = 500
NOISE = 0.01


# --- Children: one task each, timed by the parent --------------------------


def _project_config(project: pathlib.Path, data_dir: pathlib.Path,
                    steps: int):
  from configs import common
  from configs import own_data
  config = own_data.get_config()
  config.data.update(project=str(project), data_dir=str(data_dir))
  common.scale_steps(config, steps / config.train.steps)
  return config


def _replicate_library(folder: pathlib.Path, total: int, seed: int) -> None:
  """Grows the ENVI library in `folder` to `total` spectra with noisy
  replicas of its spectra (no coordinates)."""
  header = (folder / "library.hdr").read_text()
  bands = int(re.search(r"samples = (\d+)", header).group(1))
  spectra = np.fromfile(folder / "library.sli", "<f4").reshape(-1, bands)
  table = pd.read_csv(folder / "library.csv")
  extra = total - len(table)
  if extra <= 0:
    raise ValueError(f"The example library has {len(table)} spectra; ask "
                     "for more.")
  rng = np.random.default_rng(seed)
  source = rng.integers(0, len(table), extra)
  copies = spectra[source] * (1 + NOISE * rng.standard_normal(
      (extra, bands))).astype(np.float32)
  names = [f"R{i:06d}" for i in range(extra)]
  np.concatenate([spectra, copies]).astype("<f4").tofile(folder /
                                                         "library.sli")
  replicas = table.iloc[source].assign(sample_id=names, lat=np.nan,
                                       lon=np.nan)
  pd.concat([table, replicas]).to_csv(folder / "library.csv", index=False)
  spectra_names = ", ".join(list(table["sample_id"]) + names)
  header = re.sub(r"lines = \d+", f"lines = {total}", header)
  header = re.sub(r"spectra names = \{.*\}",
                  f"spectra names = {{{spectra_names}}}", header,
                  flags=re.S)
  (folder / "library.hdr").write_text(header)


def _write(project: pathlib.Path, axis: str, size: int) -> dict[str, Any]:
  """The example project of one size of `axis`."""
  from data_prep import example_landscape
  from data_prep import example_project
  default = example_landscape.SIZES["default"]
  if axis == "library":
    counts = example_project.write(project, dataclasses.replace(
        default, library_elsewhere=BASE_ELSEWHERE))
    _replicate_library(project / "library", size, seed=1)
  else:
    counts = example_project.write(project, dataclasses.replace(
        default, points=size, pixels=POINT_SCENE_PIXELS))
  return {"points": counts["n_points"]}


def _build(project: pathlib.Path, data_dir: pathlib.Path) -> dict[str, Any]:
  from data_prep import datasets
  config = _project_config(project, data_dir, 1)
  source, info = datasets.load_project(config.data.to_dict(), str(data_dir))
  return {"records": len(source), **info.metadata["report"]["points"]}


def _map_prep(work: pathlib.Path, pixels: int, scenes: int) -> None:
  """One synthetic scene linked under `scenes` names, an untrained run."""
  from benchmarks import mapping_speed
  from configs import distill
  folder = work / f"scenes{scenes}"
  folder.mkdir(parents=True)
  scene = work / "ENMAP_SYNTHETIC.TIF"
  if not scene.exists():
    mapping_speed.write_scene(scene, pixels, pixels, 0.25)
  for i in range(scenes):
    (folder / f"ENMAP_{i:03d}_SPECTRAL_IMAGE.TIF").symlink_to(scene)
  if not (work / "run").exists():
    mapping_speed.save_student(distill.get_config("compare=none"),
                               work / "run")


def child(task: str, size: int, work: pathlib.Path, quick: bool,
          steps: int) -> dict[str, Any]:
  """Runs one task; returns what it reports beside the parent's timing."""
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  data_dir = work / "tfds"
  axis, _, what = task.partition("_")
  if what == "write":
    return _write(work / f"{axis}{size}", axis, size)
  if what == "build":
    return _build(work / f"{axis}{size}", data_dir)
  if task == "train":
    from deepsalt_jax import samples
    from deepsalt_jax import sharding
    from deepsalt_jax import stages
    from deepsalt_jax import train
    config = _project_config(work / f"library{size}", data_dir, steps)
    data = samples.load_data(config.data)
    plan = stages.plan(config, data.lab_grid)
    train.train_plan(plan, data, work / f"train{size}",
                     sharding.make_mesh())
    return {"library": int(data.has_lab.sum())}
  if task == "cv":
    from deepsalt_jax import cross_validation
    config = _project_config(work / f"points{size}", data_dir, steps)
    results = cross_validation.train_and_validate(config, work / f"cv{size}")
    return {"methods": sorted(results)}
  if task == "map_prep":
    _map_prep(work, _SCENE_PIXELS.value or SCENE_PIXELS[quick], size)
    return {}
  if task == "map":
    from configs import distill
    from deepsalt_jax import mapping
    out = mapping.map_scenes(distill.get_config("compare=none"),
                             work / "run", work / f"scenes{size}",
                             work / f"maps{size}")
    return {"mapped": len(out["mapped"])}
  raise ValueError(f"Unknown task {task!r}")


# --- Parent: one child per measurement, slopes, table, figure ---------------


def measure(task: str, size: int, work: pathlib.Path, quick: bool,
            steps: int) -> dict[str, Any]:
  """Wall time, CPU time and peak RSS of one child task."""
  command = [sys.executable, "-m", "benchmarks.scale", f"--child={task}",
             f"--size={size}", f"--work={work}", f"--steps={steps}",
             f"--quick={quick}"] + ([f"--scene_pixels={_SCENE_PIXELS.value}"]
                                    if _SCENE_PIXELS.value else [])
  start = time.perf_counter()
  process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
  output = process.stdout.read()
  _, status, usage = os.wait4(process.pid, 0)
  wall = time.perf_counter() - start
  process.returncode = os.waitstatus_to_exitcode(status)
  if process.returncode:
    raise RuntimeError(f"{' '.join(command)} failed "
                       f"({process.returncode}):\n{output[-2000:]}")
  return {"task": task, "size": size, "wall_s": wall,
          "cpu_s": usage.ru_utime + usage.ru_stime,
          "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux.
          "child": json.loads(output.strip().splitlines()[-1])}


def slope(sizes: Sequence[float], values: Sequence[float]) -> float:
  """Least-squares slope of log(value) over log(size)."""
  return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


QUANTITIES = (("wall_s", "wall s"), ("cpu_s", "CPU s"),
              ("peak_rss_mib", "peak RSS MiB"))
# The least ratio a figure's y axis spans.
_MIN_SPAN = 4.0


def run(axes: Sequence[str], work: pathlib.Path, quick: bool,
        steps: int, log: pathlib.Path | None = None) -> dict[str, Any]:
  """Every measurement (the rows so far also in `log`), and the slopes."""
  grid = dict(GRIDS[quick])
  if _POINTS.value:
    grid["points"] = [int(n) for n in _POINTS.value]
  if _SCENES.value:
    grid["scenes"] = [int(n) for n in _SCENES.value]
  rows = []
  for axis in axes:
    for size in grid[axis]:
      if axis == "scenes":
        measure("map_prep", size, work, quick, steps)
      for task, what in STAGES[axis]:
        row = measure(task, size, work, quick, steps)
        row.update(axis=axis, stage=what)
        print(json.dumps(row), flush=True)
        rows.append(row)
        if log:
          log.write_text(json.dumps(rows, indent=1))
  return {"quick": quick, "steps": steps, "grid": {a: grid[a] for a in axes},
          "scene_pixels": _SCENE_PIXELS.value or SCENE_PIXELS[quick],
          "rows": rows, "slopes": slopes(rows, axes),
          "load_average": os.getloadavg()}


def slopes(rows: Sequence[dict[str, Any]],
           axes: Sequence[str]) -> list[dict[str, Any]]:
  """Each stage's slopes over all its sizes, and CPU's over the last two
  (the smallest size pays most of the compilation)."""
  out = []
  for axis in axes:
    for task, what in STAGES[axis]:
      mine = sorted((r for r in rows if r["task"] == task),
                    key=lambda r: r["size"])
      out.append({"axis": axis, "stage": what, **{
          key: slope([r["size"] for r in mine], [r[key] for r in mine])
          for key, _ in QUANTITIES}, "cpu_s_last_two": slope(
              [r["size"] for r in mine[-2:]],
              [r["cpu_s"] for r in mine[-2:]])})
  return out


def with_previous(result: dict[str, Any],
                  files: Sequence[str]) -> dict[str, Any]:
  """`result` with the rows of earlier runs' axes it did not measure."""
  rows, grid = list(result["rows"]), dict(result["grid"])
  for file in files:
    previous = json.loads(pathlib.Path(file).read_text())
    for axis, sizes in previous["grid"].items():
      if axis not in grid:
        grid[axis] = sizes
        rows += [r for r in previous["rows"] if r["axis"] == axis]
  grid = {axis: grid[axis] for axis in STAGES if axis in grid}
  return dict(result, rows=rows, grid=grid, slopes=slopes(rows, list(grid)))


def markdown(result: dict[str, Any]) -> str:
  lines = ["| axis | stage | size | wall s | CPU s | peak RSS MiB |",
           "|---|---|---|---|---|---|"]
  for r in result["rows"]:
    lines.append(f"| {r['axis']} | {r['stage']} | {r['size']:,} | "
                 f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                 f"{r['peak_rss_mib']:.0f} |")
  lines += ["", "Log-log slopes (1 = linear, 0 = flat):", "",
            "| axis | stage | wall | CPU | peak RSS | CPU, last two sizes |",
            "|---|---|---|---|---|---|"]
  for s in result["slopes"]:
    lines.append(f"| {s['axis']} | {s['stage']} | {s['wall_s']:.2f} | "
                 f"{s['cpu_s']:.2f} | {s['peak_rss_mib']:.2f} | "
                 f"{s['cpu_s_last_two']:.2f} |")
  return "\n".join(lines)


def figure(result: dict[str, Any], path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  axes = list(result["grid"])
  fig, grid = plt.subplots(len(QUANTITIES), len(axes), squeeze=False,
                           figsize=(4 * len(axes), 3 * len(QUANTITIES)))
  for j, axis in enumerate(axes):
    for i, (key, label) in enumerate(QUANTITIES):
      ax = grid[i][j]
      for task, what in STAGES[axis]:
        mine = [r for r in result["rows"] if r["task"] == task]
        ax.loglog([r["size"] for r in mine], [r[key] for r in mine], "o-",
                  label=what)
      low, high = ax.get_ylim()
      if high / low < _MIN_SPAN:  # Flat stays flat, not noise magnified.
        middle = np.sqrt(low * high)
        ax.set_ylim(middle / np.sqrt(_MIN_SPAN), middle * np.sqrt(_MIN_SPAN))
      ax.set_xlabel(axis)
      ax.set_ylabel(label)
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  work = pathlib.Path(_WORK.value)
  if _CHILD.value:
    print(json.dumps(child(_CHILD.value, _SIZE.value, work, _QUICK.value,
                           _STEPS.value), default=str))
    return
  if work.exists() and any(work.iterdir()):
    raise app.UsageError(f"--work={work} is not empty; choose a new one.")
  work.mkdir(parents=True, exist_ok=True)
  result = with_previous(run(_AXES.value, work, _QUICK.value, _STEPS.value,
                             work / "rows.json"), _PREVIOUS.value)
  print(markdown(result))
  if _JSON.value:
    pathlib.Path(_JSON.value).write_text(json.dumps(result, indent=2))
  if _FIGURE.value:
    figure(result, pathlib.Path(_FIGURE.value))


if __name__ == "__main__":
  app.run(main)
