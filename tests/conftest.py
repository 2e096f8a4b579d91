"""Test setup: JAX on CPU, reference data located through one helper.

Multi-device tests run in a subprocess with 8 fake CPU devices (the device
count must be fixed before JAX initialises; see tests/multidevice.py).

The tests train the same tiny networks many times, in this process and in
subprocesses: one persistent XLA cache (inherited through the environment)
compiles each step once, which is about two thirds of a tiny run's CPU
time. It is kept between sessions (~/.cache/deepsalt_jax/test_xla_cache,
a few MB; JAX keys each entry by the program, options and versions), so
the edit-test loop loads what the last run compiled: the "not slow" subset
takes about 30 s less than with an empty cache. JAX_COMPILATION_CACHE_DIR
chooses another folder.
LLVM's cheapest optimisation level compiles those programs with about a
quarter less CPU time; what the tests compare (sharded against one device,
a block against single steps, a restored run against the saved one) is
compiled alike on both sides. The product keeps XLA's defaults.

The README runs the suite on 2 workers (pytest-xdist): they share the
compilation cache, the prepared datasets (data_prep.datasets builds each
once under a lock) and the tiny run (the first worker to need it trains
it).
"""
import fcntl
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.expanduser("~"), ".cache", "deepsalt_jax", "test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      filter(None, [os.environ.get("XLA_FLAGS"), _FAST_COMPILE]))

import pathlib  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from configs import common  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def reference_data() -> pathlib.Path:
  """../shared/data; where it is missing tests skip, unless
  DEEPSALT_REQUIRE_REFERENCE_DATA=1 (CI) makes that a failure."""
  path = common.reference_data_dir()
  if not path.is_dir():
    message = (f"reference data not found at {path} "
               "(set DEEPSALT_REFERENCE_DATA)")
    if os.environ.get("DEEPSALT_REQUIRE_REFERENCE_DATA") == "1":
      pytest.fail(message + "; DEEPSALT_REQUIRE_REFERENCE_DATA=1 requires it")
    pytest.skip(message)
  return path


def _shared(tmp_path_factory, name: str) -> pathlib.Path:
  """A folder of this session shared by its xdist workers."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # Each worker's base temp is a child of the run's.
  path = root / name
  path.mkdir(exist_ok=True)
  return path


@pytest.fixture(scope="session")
def prepared_data_dir(tmp_path_factory) -> pathlib.Path:
  """One TFDS data_dir per test session: each dataset is built once, lazily."""
  return _shared(tmp_path_factory, "tfds")


@pytest.fixture(scope="session")
def tiny_run(prepared_data_dir, tmp_path_factory):
  """(config, workdir) of one tiny trained distill run, shared by tests that
  only read it (evaluate, map, refuse bad input)."""
  from deepsalt_jax import train
  config = tiny_config("distill", prepared_data_dir,
                       "compare=none,candidates=none")
  workdir = _shared(tmp_path_factory, "tiny_run")
  with open(workdir.with_suffix(".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
    if not workdir.with_suffix(".trained").exists():
      train.train_and_evaluate(config, workdir)
      workdir.with_suffix(".trained").touch()
  return config, workdir


def cpu_devices_env(count: int, **extra: str) -> dict[str, str]:
  """This environment for a subprocess with `count` fake CPU devices."""
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
      f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count="
      f"{count}"), **extra)


def delete_checkpoint_data(step_dir: pathlib.Path) -> None:
  """Damages a saved step: its arrays' data files are deleted."""
  for f in step_dir.rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.unlink()


def tiny_config(config_module: str, data_dir: pathlib.Path, arg: str = ""):
  """A config's tiny variant reading its data from `data_dir`."""
  import importlib
  module = importlib.import_module(f"configs.{config_module}")
  config = module.get_config(",".join(filter(None, ["tiny", arg])))
  config.data.data_dir = str(data_dir)
  return config


def run_processes(commands: list[list[str]], envs: list[dict],
                  log_dir: pathlib.Path, timeout: int = 300) -> list[str]:
  """Runs the commands in parallel from the repo root; their logs.

  Logs go to files: pipes read one process at a time fill up and block the
  other process inside a collective, a deadlock. Once a process fails, the
  others (waiting for it in a collective) are killed, as are all still
  running after `timeout` seconds (a hung pair must not outlive the test);
  any exit status but 0 (-9: killed) fails with the logs' tails.
  """
  log_dir.mkdir(parents=True, exist_ok=True)
  paths = [log_dir / f"process{i}.log" for i in range(len(commands))]
  procs = []
  for command, env, path in zip(commands, envs, paths):
    with path.open("w") as log:
      procs.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT))
  deadline = time.monotonic() + timeout
  try:
    while (any(p.poll() is None for p in procs)
           and not any(p.returncode for p in procs)
           and time.monotonic() < deadline):
      time.sleep(0.1)
  finally:
    for p in procs:
      p.kill()
      p.wait()
  logs = [path.read_text() for path in paths]
  codes = [p.returncode for p in procs]
  assert codes == [0] * len(procs), f"exit statuses {codes}:\n" + "\n".join(
      log[-3000:] for log in logs)
  return logs

