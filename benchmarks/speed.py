r"""Speed: training and inference throughput and memory, by batch and bands.

  python -m benchmarks.speed [--sensors=prisma,enmap,emit] \
      [--batch_sizes=1024,4096,16384,65536] [--train_batch_sizes=32,64,128] \
      [--train_steps=10] [--loop_steps=600] [--json=speed.json]

Models have the default size (configs/distill.py); inputs are synthetic
(throughput does not depend on the values). All devices of this process
form the ('data',) mesh, as in training.
  training   spectra/s of the jitted data-parallel step of each stage
             (train.make_train_step with the real losses). The teacher step
             reads one batch of lab spectra (180 bands); the student step
             reads four (labelled, paired, unlabelled pixels and library lab
             spectra), counted as 4 x batch spectra. Per sensor (good band
             counts: PRISMA 197, EnMAP 216, EMIT 237) and batch size.
  options    teacher and student train-step time (ms/step, spectra/s) of
             each of OPTIONS (configs/distill.py `:arg` choices: sau,
             encoder, distill, head) beside the defaults, on the first sensor at
             --option_batch_size.
  inference  student 'pred' (train=False) spectra/s per sensor and batch.
  loop       the whole training loop (train.train_stage: batches, logging,
             validation, checkpoints) of the default student on the
             default dataset (built if missing) beside its jitted step on
             the same shapes: the loop's marginal steps/s, from runs of
             --loop_steps and twice as many steps, each timed less its
             compilation (compilation.CompileClock), so that what a stage
             pays once (setup, compiling, the last checkpoint) cancels.
  memory     XLA's compiled memory analysis of each program (arguments +
             outputs + temporaries: what one call needs, whatever else runs
             on the machine); the process's peak RSS after each measurement
             (monotone); on GPU/TPU the device's peak bytes in use.
Prints Markdown tables. Run time: about 3-4 min on 2 CPU cores before the
options table; with it, --sensors=enmap --batch_sizes=4096
--train_batch_sizes=64 took 9.5 min on 2 cores shared at load 6-11.
"""
from __future__ import annotations

import json
import pathlib
import resource
import tempfile
import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from configs import distill
from deepsalt_jax import compilation
from deepsalt_jax import samples
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import train
from deepsalt_spectral import lab_grid

MIB = 2.0**20

_SENSORS = flags.DEFINE_list("sensors", ["prisma", "enmap", "emit"],
                             "Sensors (band counts) to measure.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["1024", "4096", "16384", "65536"],
                             "Inference batch sizes.")
_TRAIN_BATCHES = flags.DEFINE_list("train_batch_sizes", ["32", "64", "128"],
                                   "Training batch sizes (per stream).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 10,
                                    "Timed steps per training measurement.")
_ENCODERS = flags.DEFINE_list("encoders", ["mlp", "conv"],
                              "Encoders to measure (the first: inference).")
_OPTION_BATCH = flags.DEFINE_integer(
    "option_batch_size", 64, "Training batch size (per stream) of the "
    "options table.")
_LOOP_STEPS = flags.DEFINE_integer(
    "loop_steps", 600, "Steps of the timed training loop (0: none).")
_JSON = flags.DEFINE_string("json", None, "Optional JSON output file.")


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB.


def device_peak_mib() -> float | None:
  stats = jax.devices()[0].memory_stats()  # None on CPU.
  return stats["peak_bytes_in_use"] / MIB if stats else None


def compiled_mib(compiled) -> float | None:
  """Argument + output + temporary buffers of one call, from XLA."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          + stats.temp_size_in_bytes - stats.alias_size_in_bytes) / MIB


def timed(fn: Callable[[], Any], min_calls: int, min_seconds: float
          ) -> tuple[float, int]:
  """Seconds per call of `fn` (already compiled), over enough calls."""
  calls, start = 0, time.perf_counter()
  while calls < min_calls or time.perf_counter() - start < min_seconds:
    jax.block_until_ready(fn())
    calls += 1
  return (time.perf_counter() - start) / calls, calls


def _models(config: ml_collections.ConfigDict, sensor: str):
  plan = stages.plan(config, lab_grid.visnir())
  teacher, student = plan.teacher, plan.students[0]
  teacher_params = teacher.init_params(sensor)
  params = student.init_params(sensor, teacher_params)
  return (teacher, teacher_params, student, params,
          student.input_size(sensor), teacher.input_size(sensor))


def _spectra(rows: int, bands: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.uniform(0.05, 0.6, (rows, bands)).astype(np.float32)


def measure_training(config: ml_collections.ConfigDict, sensor: str,
                     stage: str, batch_size: int, steps: int,
                     mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """spectra/s and memory of one stage's train step."""
  teacher, teacher_params, student, params, n_sat, n_lab = _models(config,
                                                                   sensor)
  target = np.ones(batch_size, np.float32)
  if stage == "teacher":
    loss_fn = teacher.loss_fn(sensor, None)
    batch = {"lab": {"lab": _spectra(batch_size, n_lab, 0),
                     "target": target}}
    params, teacher_params, rows = teacher_params, None, batch_size
  else:
    loss_fn = student.loss_fn(sensor, teacher)
    sat = lambda seed: _spectra(batch_size, n_sat, seed)
    batch = {"labelled": {"satellite": sat(1), "target": target},
             "paired": {"satellite": sat(2),
                        "lab": _spectra(batch_size, n_lab, 3)},
             "unlabelled": {"satellite": sat(4)},
             "library": {"lab": _spectra(batch_size, n_lab, 5),
                         "target": target}}
    rows = 4 * batch_size
  replicated = sharding.replicated(mesh)
  batch = jax.device_put(batch, sharding.batch_sharding(mesh))
  state = train.create_train_state(params, config, mesh)
  key = jax.device_put(jax.random.key_data(jax.random.key(0)), replicated)
  step = train.make_train_step(loss_fn, mesh)
  compiled = step.lower(state, batch, teacher_params, key).compile()
  holder = [state]

  def one_step():
    holder[0], terms = compiled(holder[0], batch, teacher_params, key)
    return terms

  jax.block_until_ready(one_step())  # Warm-up.
  seconds, calls = timed(one_step, steps, 0.0)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return {"stage": stage, "sensor": sensor,
          "encoder": config.model.encoder.kind,
          "bands": n_lab if stage == "teacher" else n_sat,
          "batch_size": batch_size, "steps_per_s": 1.0 / seconds,
          "spectra_per_s": rows / seconds, "steps_timed": calls,
          "flops_per_spectrum": (cost or {}).get("flops", float("nan")) / rows,
          "compiled_mib": compiled_mib(compiled),
          "peak_rss_mib": peak_rss_mib(), "device_peak_mib": device_peak_mib()}


# The student's loss terms, added stream by stream (time per stream).
STREAM_TERMS = (
    ("labelled", {"w_distill_feature": 0.0, "w_distill_pred": 0.0,
                  "w_reconstruction": 0.0, "w_alignment": 0.0}),
    ("+ paired", {"w_alignment": 0.0}),
    ("+ unlabelled, library", {}),
)


def stream_profile(config: ml_collections.ConfigDict, sensor: str,
                   batch_size: int, steps: int, mesh: jax.sharding.Mesh
                   ) -> list[dict[str, Any]]:
  """Student step time with its streams added one by one."""
  rows = []
  for name, weights in STREAM_TERMS:
    variant = ml_collections.ConfigDict(config.to_dict())
    variant.loss.update(weights)
    row = measure_training(variant, sensor, "student", batch_size, steps,
                           mesh)
    rows.append({"streams": name, "ms_per_step": 1e3 / row["steps_per_s"],
                 "flops_per_spectrum": row["flops_per_spectrum"]})
  return rows


# Network and loss choices timed against the defaults (physics SAU, mlp,
# final, linear).
OPTIONS = ("", "sau=latent", "latent_pretrain", "distill=layers",
           "head=bounded", "encoder=conv",
           "encoder=conv,distill=layers", "encoder=transformer",
           "encoder=transformer,distill=layers",
           "encoder=transformer,distill=layers,head=bounded")


def option_costs(sensor: str, batch_size: int, steps: int,
                 mesh: jax.sharding.Mesh, options: Sequence[str] = OPTIONS,
                 tiny: bool = False) -> list[dict[str, Any]]:
  """Teacher and student train-step cost of each `:arg` option."""
  rows = []
  for option in options:
    config = distill.get_config(",".join(filter(None, [
        "compare=none", option, "tiny" if tiny else ""])))
    row = {"option": option or "defaults"}
    for stage in ("teacher", "student"):
      measured = measure_training(config, sensor, stage, batch_size, steps,
                                  mesh)
      row[f"{stage}_ms_per_step"] = 1e3 / measured["steps_per_s"]
      row[f"{stage}_spectra_per_s"] = measured["spectra_per_s"]
      row[f"{stage}_flops_per_spectrum"] = measured["flops_per_spectrum"]
    rows.append(row)
  return rows


def measure_inference(config: ml_collections.ConfigDict, sensor: str,
                      batch_size: int, mesh: jax.sharding.Mesh
                      ) -> dict[str, Any]:
  """Student prediction spectra/s and memory at one batch size."""
  _, _, student, params, n_sat, _ = _models(config, sensor)
  batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
  x = jax.device_put(_spectra(batch_size, n_sat, 0),
                     sharding.batch_sharding(mesh))
  params = jax.device_put(params, sharding.replicated(mesh))
  model = student.model(sensor)
  fn = jax.jit(lambda p, b: model.apply({"params": p}, b,
                                          train=False)["pred"])
  compiled = fn.lower(params, x).compile()
  jax.block_until_ready(compiled(params, x))  # Warm-up.
  seconds, calls = timed(lambda: compiled(params, x), 2, 1.0)
  return {"sensor": sensor, "bands": n_sat, "batch_size": batch_size,
          "spectra_per_s": batch_size / seconds, "calls_timed": calls,
          "compiled_mib": compiled_mib(compiled),
          "peak_rss_mib": peak_rss_mib(), "device_peak_mib": device_peak_mib()}


def measure_loop(config: ml_collections.ConfigDict, steps: int,
                 mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """steps/s of the student's training loop and of its jitted step."""
  data = samples.load_data(config.data)
  teacher = stages.plan(config, data.lab_grid).teacher
  teacher_params = teacher.init_params(data.sensor)  # Speed only.
  seconds = {}
  for n in (steps, 2 * steps):
    run_config = ml_collections.ConfigDict(config.to_dict())
    run_config.train.steps = n
    student = stages.plan(run_config, data.lab_grid).students[0]
    with tempfile.TemporaryDirectory() as tmp, \
         compilation.CompileClock() as clock:
      start = time.perf_counter()
      train.train_stage(student, data, teacher, teacher_params,
                        pathlib.Path(tmp), mesh)
      seconds[n] = time.perf_counter() - start - clock.seconds
  batch = config.train.batch_size
  jitted = measure_training(config, data.sensor, "student", batch, 50, mesh)
  loop = steps / (seconds[2 * steps] - seconds[steps])
  return {"sensor": data.sensor, "batch_size": batch, "steps": steps,
          "seconds_less_compilation": list(seconds.values()),
          "loop_steps_per_s": loop,
          "jitted_steps_per_s": jitted["steps_per_s"],
          "ratio": loop / jitted["steps_per_s"]}


def run(sensors: Sequence[str], batch_sizes: Sequence[int],
        train_batch_sizes: Sequence[int], train_steps: int,
        encoders: Sequence[str] = ("mlp", "conv"), tiny: bool = False,
        option_batch_size: int = 64, loop_steps: int = 0) -> dict[str, Any]:
  """All measurements, per encoder (configs/distill.py:encoder=...)."""
  mesh = sharding.make_mesh()
  loop = (measure_loop(distill.get_config("compare=none"), loop_steps, mesh)
          if loop_steps else None)
  training, profiles = [], {}
  for encoder in encoders:
    config = distill.get_config(f"compare=none,encoder={encoder}" +
                                (",tiny" if tiny else ""))
    training += [measure_training(config, sensors[0], "teacher", b,
                                  train_steps, mesh)
                 for b in train_batch_sizes]
    training += [measure_training(config, s, "student", b, train_steps, mesh)
                 for s in sensors for b in train_batch_sizes]
    profiles[encoder] = stream_profile(config, sensors[0],
                                       train_batch_sizes[0], train_steps, mesh)
  config = distill.get_config(f"compare=none,encoder={encoders[0]}" +
                              (",tiny" if tiny else ""))
  inference = [measure_inference(config, s, b, mesh)
               for s in sensors for b in batch_sizes]
  options = option_costs(sensors[0], option_batch_size, train_steps, mesh,
                         tiny=tiny)
  return {"device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
          "backend": jax.default_backend(), "training": training,
          "streams": profiles, "options": options, "inference": inference,
          "inference_encoder": encoders[0], "loop": loop}


def _mib(value: float | None) -> str:
  return "n/a" if value is None else f"{value:.0f}"


def markdown(result: dict[str, Any]) -> str:
  lines = [f"Device: {result['device']} ({result['backend']})", ""]
  loop = result.get("loop")
  if loop:
    lines += ["Training loop vs its jitted step (default student, "
              f"{loop['sensor']}, batch {loop['batch_size']})", "",
              "| loop steps/s | jitted step steps/s | loop / jitted |",
              "|---|---|---|",
              f"| {loop['loop_steps_per_s']:.1f} | "
              f"{loop['jitted_steps_per_s']:.1f} | {loop['ratio']:.0%} |", ""]
  lines += ["Training (train step, spectra/s = rows of all streams; FLOPs "
            "from XLA's cost analysis)", "",
            "| encoder | stage | bands | batch | steps/s | spectra/s | "
            "MFLOP/spectrum | XLA MiB | peak RSS MiB | device peak MiB |",
            "|---|---|---|---|---|---|---|---|---|---|"]
  for r in result["training"]:
    lines.append(f"| {r['encoder']} | {r['stage']} | {r['bands']} | "
                 f"{r['batch_size']} | {r['steps_per_s']:.1f} | "
                 f"{r['spectra_per_s']:.0f} | "
                 f"{r['flops_per_spectrum'] / 1e6:.2f} | "
                 f"{_mib(r['compiled_mib'])} | {_mib(r['peak_rss_mib'])} | "
                 f"{_mib(r['device_peak_mib'])} |")
  lines += ["", "Student step time as its streams are added", "",
            "| encoder | streams | ms/step | MFLOP/spectrum |",
            "|---|---|---|---|"]
  for encoder, rows in result["streams"].items():
    for r in rows:
      lines.append(f"| {encoder} | {r['streams']} | {r['ms_per_step']:.1f} | "
                   f"{r['flops_per_spectrum'] / 1e6:.2f} |")
  lines += ["", "Train step by option (teacher: lab spectra; student: 4 "
            "streams)", "",
            "| option | stage | ms/step | spectra/s | MFLOP/spectrum |",
            "|---|---|---|---|---|"]
  for r in result["options"]:
    for stage in ("teacher", "student"):
      lines.append(f"| {r['option']} | {stage} | "
                   f"{r[f'{stage}_ms_per_step']:.1f} | "
                   f"{r[f'{stage}_spectra_per_s']:.0f} | "
                   f"{r[f'{stage}_flops_per_spectrum'] / 1e6:.2f} |")
  lines += ["", f"Student inference ({result['inference_encoder']} encoder)",
            "",
            "| sensor | bands | batch | spectra/s | XLA MiB | peak RSS MiB | "
            "device peak MiB |", "|---|---|---|---|---|---|---|"]
  for r in result["inference"]:
    lines.append(f"| {r['sensor']} | {r['bands']} | {r['batch_size']} | "
                 f"{r['spectra_per_s']:.0f} | {_mib(r['compiled_mib'])} | "
                 f"{_mib(r['peak_rss_mib'])} | {_mib(r['device_peak_mib'])} |")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  result = run(_SENSORS.value, [int(b) for b in _BATCHES.value],
               [int(b) for b in _TRAIN_BATCHES.value], _TRAIN_STEPS.value,
               _ENCODERS.value, option_batch_size=_OPTION_BATCH.value,
               loop_steps=_LOOP_STEPS.value)
  print(markdown(result))
  if _JSON.value:
    pathlib.Path(_JSON.value).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
