"""Mapping speed: today's method and the new one on a full-size EnMAP scene.

  python -m benchmarks.mapping_speed [--rows=1000 --cols=1000 \
      --soil_fraction=0.25]

Writes a synthetic EnMAP L2A GeoTIFF (int16 reflectance x 10000, the real
band table, wavelength/fwhm/bbl tags and -32768 nodata, as DLR delivers it)
into a temporary folder, saves an untrained student of the default model size
(configs/distill.py; speed does not depend on training) and maps the scene
with `mapping.map_scene` twice, side by side in one run:
  new    the default options: encoder once, MC dropout x10 of the head,
         64-spectrum chunks per device, batches of 1024, reading and writing
         overlapped with compute;
  today  the method before: MC dropout x10 of the whole network (an
         interval calibrated on that spread, 'full_mc'), whole batches of
         512 per call (chunk_size=512), the rest as `new`;
  plsr   validation's choice of PLSR, as an own-data CV saves it
         (deepsalt_jax/final_model.py; fitted on the scene's soil spectra
         with made-up EC): a matrix product per block, a constant interval;
  stack  a stack of that PLSR (0.8) and the student (0.2): one student pass
         per pixel, no MC passes (a constant interval);
  ensemble  the mean of the default student and its candidates
         (configs/distill.py DEFAULT_CANDIDATES; --mapping.model=ensemble):
         a network pass per member and pixel, an interval scaled by their
         spread.
`new` and `today` map with --mapping.model=student.
Spectra are real pixels of the EnMAP Potsdam tiles (../shared/data/
enmap_potsdam) with 1 % multiplicative noise: pixels that pass the default
soil masks for `soil_fraction` of the pixels, the others for the rest; a
20-pixel nodata frame stands for the tilted swath's empty corners. Only soil
pixels are predicted, so the scene's pixels/s scales with the soil fraction;
the predicted pixels/s does not.

Each run prints its wall time and the process's CPU time (all threads: on
a shared machine the wall time says more about the neighbours; peak RSS is
the process's so far, so a later run's includes the earlier ones'). Then the
profile: FLOPs per spectrum of one network pass (XLA's cost analysis)
against the CPU's peak, the GFLOP/s each run reached while predicting,
where its time went, and the student in bfloat16 (speed and EC difference
on the scene's soil spectra). `--method=new` times the new one alone.
Prints figures; it is not a test. Run time: about 45 s on 2 CPU cores
(today's method takes half of it).
"""
import functools
import os
import pathlib
import resource
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import rasterio
import rasterio.windows

from configs import common
from configs import distill
from data_prep import scenes
from deepsalt_jax import calibration
from deepsalt_jax import checkpoint
from deepsalt_jax import final_model
from deepsalt_jax import mapping
from deepsalt_jax import model_choice
from deepsalt_jax import predict
from deepsalt_jax import reporting
from deepsalt_jax import run_config
from deepsalt_jax import selection
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import targets
from deepsalt_jax import train
from deepsalt_spectral import indices
from deepsalt_spectral import lab_grid

_ROWS = flags.DEFINE_integer("rows", 1000, "Scene rows.")
_COLS = flags.DEFINE_integer("cols", 1000, "Scene columns.")
_SOIL = flags.DEFINE_float("soil_fraction", 0.25,
                           "Share of soil pixels; the rest is masked.")
_METHODS = flags.DEFINE_multi_enum("method", ["new", "today"],
                                   ["new", "today", "plsr", "stack",
                                    "ensemble"],
                                   "Methods to time.")
_WINDOW = flags.DEFINE_integer(
    "window", 1, "Each pixel read as the mean of the soil pixels in this "
    "window (own data's data.window, 3 by default; 1: the pixel alone).")
_TILES = common.reference_data_dir() / "enmap_potsdam"
_FRAME = 20  # Nodata pixels around the scene.
_WRITE_ROWS = 16
# FP32 FLOPs per cycle and core: two 256-bit FMA pipes (AVX2, or AVX-512
# double-pumped as on AMD Zen 4), 8 lanes x 2 FLOPs each.
_FLOPS_PER_CYCLE = 32
TODAY = {"batch_size": 512, "chunk_size": 512}
# Validation's choices timed: the final model's stack weights.
CHOSEN = {"plsr": {"PLSR": 1.0}, "stack": {"PLSR": 0.8, "student": 0.2}}


def write_scene(path: pathlib.Path, rows: int, cols: int,
                soil_fraction: float) -> np.ndarray:
  """The synthetic scene, written in blocks of rows to keep memory low.

  Returns:
    The soil spectra it draws from, at their good bands ([n, n_good]).
  """
  tiles = sorted(_TILES.glob("*.tif"))
  if not tiles:
    raise SystemExit(f"No EnMAP tiles in {_TILES}: the benchmark needs the "
                     "shared reference data.")
  spectra, good = {True: [], False: []}, []  # Soil or not.
  for tile in tiles:
    scene = scenes.read_scene(tile)
    soil = scenes.soil_pixels(scene, indices.MaskThresholds())
    for kind in spectra:
      spectra[kind].append(scene.reflectance[:, soil == kind].T)
    good.append(scene.reflectance[scene.good][:, soil].T)
  with rasterio.open(tiles[0]) as src:
    profile = dict(driver="GTiff", count=src.count, crs=src.crs,
                   transform=src.transform, interleave="band")
    tags = [src.tags(b) for b in range(1, src.count + 1)]
    descriptions = src.descriptions
    bad_in_file = np.array([float(t["bbl"]) == 0 for t in tags])
  # Back to the file's band order (VNIR, then SWIR).
  file_order = np.argsort(np.argsort([float(t["wavelength"]) for t in tags],
                                     kind="stable"))
  soil, other = (np.concatenate(spectra[k])[:, file_order]
                 for k in (True, False))
  profile.update(height=rows, width=cols, dtype="int16", nodata=-32768)
  rng = np.random.default_rng(0)
  with rasterio.open(path, "w", **profile) as dst:
    for b, (band_tags, text) in enumerate(zip(tags, descriptions), start=1):
      dst.update_tags(b, **band_tags)
      dst.set_band_description(b, text)
    dst.scales = [1e-4] * profile["count"]
    dst.offsets = [0.0] * profile["count"]
    for start in range(0, rows, _WRITE_ROWS):
      n = min(_WRITE_ROWS, rows - start)
      block = np.where(rng.random((n, cols, 1)) < soil_fraction,
                       soil[rng.integers(0, len(soil), (n, cols))],
                       other[rng.integers(0, len(other), (n, cols))])
      block *= 1.0 + 0.01 * rng.standard_normal((n, cols, 1), np.float32)
      block = np.round(np.nan_to_num(block) * 1e4).astype(np.int16)
      block = block.transpose(2, 0, 1)
      block[bad_in_file] = -32768
      row = np.arange(start, start + n)[:, None]
      col = np.arange(cols)[None, :]
      frame = ((row < _FRAME) | (row >= rows - _FRAME) | (col < _FRAME)
               | (col >= cols - _FRAME))
      block[:, frame] = -32768
      dst.write(block, window=rasterio.windows.Window(0, start, cols, n))
  return np.concatenate(good)


def save_student(config, workdir: pathlib.Path, difficulty: str = "head_mc"):
  """An untrained run of the students of `config`, saved the way train.fit
  saves them, its interval scaled by `difficulty`; the first student's
  model and parameters."""
  plan = stages.plan(config, lab_grid.visnir())
  teacher = plan.teacher.init_params(config.data.sensor)
  params = {s.name: s.init_params(config.data.sensor, teacher)
            for s in plan.students}
  for stage in plan.students:
    state = train.create_train_state(params[stage.name], stage.config,
                                     sharding.make_mesh())
    ckpt = checkpoint.Checkpointer(workdir / stage.name / "checkpoints")
    ckpt.save(config.train.steps, state, force=True)
    ckpt.close()
  student = plan.students[0]
  run_config.save(config, workdir, lab_grid.visnir())
  # By default the slower of the usual kinds: an interval scaled by the
  # head's MC spread (MC passes, bounds and exceedance per pixel).
  calibration.save(_made_up_calibration(config.data.target_transform,
                                        difficulty), workdir / student.name)
  return student.model(config.data.sensor), params[student.name]


def _made_up_calibration(transform: str, difficulty: str = "constant"):
  """A calibration scaled by `difficulty`, fitted on made-up predictions
  (speed does not depend on its numbers)."""
  rng = np.random.default_rng(0)
  spread = None if difficulty == "constant" else rng.uniform(0.01, 0.1, 50)
  fitted = calibration.fit(
      np.full(50, 3.0), rng.uniform(1.0, 6.0, 50), np.arange(50) % 5,
      transform, {difficulty: spread}, predict.MC_SAMPLES)
  # Kept whatever the made-up numbers prefer.
  mc = difficulty in calibration.MC_MODES
  return dict(fitted, difficulty=difficulty,
              difficulty_scale=1.0 if spread is None else float(
                  np.median(spread)),
              mc_samples=predict.MC_SAMPLES if mc else 0,
              mc_mode=calibration.MC_MODES.get(difficulty, ""))


def save_ensemble_calibration(workdir: pathlib.Path) -> None:
  """An interval scaled by the spread of the candidates (as it usually is:
  docs/uncertainty.md) for their mean."""
  (workdir / selection.ENSEMBLE).mkdir()
  calibration.save(_made_up_calibration("log1p", "members"),
                   workdir / selection.ENSEMBLE)


def save_choice(workdir: pathlib.Path, soil: np.ndarray,
                weights: dict[str, float]) -> None:
  """Validation's final model, saved as an own-data CV saves it: PLSR fitted
  on 200 of the scene's soil spectra with made-up EC (speed does not depend
  on the fit), alone or in a stack; its constant interval."""
  rng = np.random.default_rng(0)
  x = soil[rng.choice(len(soil), 200, replace=False)]
  y = rng.uniform(0.2, 2.5, len(x))
  fitted = calibration.fit(np.expm1(y + rng.normal(0, 0.3, len(x))),
                           np.expm1(y), np.arange(len(x)) % 5, "log1p")
  choice = model_choice.Choice(
      {}, "PLSR" if len(weights) == 1 else model_choice.STACKED, weights)
  final_model.save(workdir / final_model.FOLDER, choice, "log1p", 0,
                   {"PLSR": (x, y)},
                   dict(fitted, model=final_model.describe(choice)))


def _cpu_seconds() -> float:
  """User + system CPU time of this process, all threads."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB.


def _cpu_peak_gflops() -> float | None:
  """Cores x FMA FLOPs/cycle x the clock /proc/cpuinfo states (Linux)."""
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    return None
  mhz = [float(l.split(":")[1]) for l in lines if l.startswith("cpu MHz")]
  return (len(os.sched_getaffinity(0)) * _FLOPS_PER_CYCLE * mhz[0] / 1e3
          if mhz else None)


def _profile(model, params, x: np.ndarray, config) -> dict[str, float]:
  """One pass's FLOPs per spectrum; f32 vs bf16 speed and EC difference."""
  _, inverse = targets.TRANSFORMS[config.data.target_transform]

  def chunk(p, xi):
    out = model.apply({"params": p}, xi, train=False)["pred"]
    return inverse(out.astype(jnp.float32))

  def forward(p, x):
    return jax.lax.map(functools.partial(chunk, p),
                       x.reshape(-1, 64, x.shape[1])).reshape(-1)

  # XLA counts a loop body once: the FLOPs of one 64-spectrum chunk.
  cost = jax.jit(chunk).lower(params, x[:64]).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  out = {"flops_per_spectrum": cost["flops"] / 64}
  for name, dtype in (("f32", jnp.float32), ("bf16", jnp.bfloat16)):
    p = jax.tree.map(lambda a: a.astype(dtype), params)
    xd = jnp.asarray(x, dtype)
    fn = jax.jit(forward).lower(p, xd).compile()
    times = []
    for _ in range(3):
      start = time.perf_counter()
      ec = np.asarray(fn(p, xd))
      times.append(time.perf_counter() - start)
    out[f"{name}_spectra_per_s"] = len(x) / min(times)
    out[f"{name}_ec"] = ec
  diff = np.abs(out.pop("bf16_ec") - out["f32_ec"])
  out["bf16_mean_abs_dS_per_m"] = float(diff.mean())
  out["bf16_max_abs_dS_per_m"] = float(diff.max())
  out["ec_mean_dS_per_m"] = float(out.pop("f32_ec").mean())
  return out


def _line(name: str, report: dict, rss: float, cpu: float) -> str:
  soil = report["pixels"]["soil"]
  stages_ = ", ".join(f"{k} {v:.1f}" for k, v in
                      report["seconds_by_stage"].items())
  return (f"{name:5s} | {report['seconds']:6.1f} s | CPU {cpu:6.1f} s | "
          f"{report['pixels_per_second']:6.0f} px/s | "
          f"{soil / report['seconds']:6.0f} soil px/s | peak RSS {rss:.0f} "
          f"MiB | {report['uncertainty']['mode']} MC x"
          f"{report['uncertainty']['samples']} | stages (s): {stages_}")


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  reporting.quiet_library_logs()
  config = distill.get_config("compare=none,candidates=none")
  config.data.window = _WINDOW.value
  load = os.getloadavg()
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    scene = tmp / "ENMAP_SYNTHETIC_SPECTRAL_IMAGE.TIF"
    start = time.perf_counter()
    soil = write_scene(scene, _ROWS.value, _COLS.value, _SOIL.value)
    written = time.perf_counter() - start
    model, params = save_student(config, tmp / "run")
    with_candidates = distill.get_config("compare=none")
    with_candidates.data.window = _WINDOW.value
    if "today" in _METHODS.value:
      save_student(config, tmp / "today_run", "full_mc")
    if "ensemble" in _METHODS.value:
      save_student(with_candidates, tmp / "ensemble_run")
      save_ensemble_calibration(tmp / "ensemble_run")
    before = _peak_rss_mib()
    runs = {}
    for name in ("new", "today", "plsr", "stack", "ensemble"):
      if name not in _METHODS.value:
        continue
      options = mapping.options.defaults()
      run, run_config_ = tmp / "run", config
      if name in CHOSEN:
        save_choice(tmp / "run", soil, CHOSEN[name])
      elif name == "ensemble":
        options.model = "ensemble"
        run, run_config_ = tmp / "ensemble_run", with_candidates
      elif name == "today":
        options.update(TODAY, model="student")
        run = tmp / "today_run"
      else:
        options.model = "student"
      cpu = _cpu_seconds()
      report = mapping.map_scene(run_config_, run, scene,
                                 tmp / f"maps_{name}", options)
      runs[name] = report, _peak_rss_mib(), _cpu_seconds() - cpu
    size_mib = scene.stat().st_size / 2**20
  sample = np.resize(soil, (8192, soil.shape[1]))  # Repeated to 8192.
  profile = _profile(model, params, sample, config)
  new = next(iter(runs.values()))[0]
  print(f"scene: {_ROWS.value} x {_COLS.value} px x 224 bands, int16 "
        f"GeoTIFF {size_mib:.0f} MiB (written in {written:.0f} s); "
        f"{new['pixels']['soil']} soil pixels predicted")
  print(f"model: default student (features="
        f"{config.model.encoder.features}, blocks="
        f"{config.model.encoder.num_blocks}); devices: {jax.device_count()} "
        f"{jax.default_backend()}; load average at start "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} (1/5/15 min); RSS "
        f"before mapping {before:.0f} MiB")
  for name, (report, rss, cpu) in runs.items():
    print(_line(name, report, rss, cpu))
  if {"new", "today"} <= set(runs):
    print(f"speed-up: {runs['today'][0]['seconds'] / new['seconds']:.1f}x")
  flops = profile["flops_per_spectrum"]
  peak = _cpu_peak_gflops()
  print(f"profile: {flops / 1e6:.2f} MFLOP per spectrum and network pass; "
        f"CPU peak ~{peak:.0f} GFLOP/s (FMA, stated clock)" if peak else "")
  for name, (report, _, _) in runs.items():
    if "student" not in CHOSEN.get(name, {"student": 1.0}):
      continue  # No network pass.
    passes = (len(report["model"]["checkpoint_steps"]) if name == "ensemble"
              else 1 + (report["uncertainty"]["samples"]
                        if report["uncertainty"]["mode"] == "full" else 0))
    rate = report["pixels"]["soil"] * passes * flops / report[
        "seconds_by_stage"]["predict"] / 1e9
    print(f"  {name}: {passes} network pass(es) per soil pixel, "
          f"{rate:.1f} GFLOP/s while predicting")
  print(f"  forward pass alone, 64-spectrum chunks: f32 "
        f"{profile['f32_spectra_per_s']:.0f} spectra/s, bf16 "
        f"{profile['bf16_spectra_per_s']:.0f} spectra/s; bf16 changes EC by "
        f"{profile['bf16_mean_abs_dS_per_m']:.4f} dS/m on average (max "
        f"{profile['bf16_max_abs_dS_per_m']:.4f}; mean EC "
        f"{profile['ec_mean_dS_per_m']:.2f})")


if __name__ == "__main__":
  app.run(main)
