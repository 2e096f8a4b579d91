"""Workdirs and outputs through etils.epath: local paths and gs:// alike.

gs:// is exercised with an in-memory stand-in for gcsfs (fsspec's memory
file system under the 'gs' protocol): every file the writers produce must
arrive there, though rasterio and TensorBoard can only write local files.
Orbax checkpoints to gs:// go through tensorstore and are not covered.
"""
import importlib
import json
import threading

from etils import epath
from fsspec.implementations import memory
import numpy as np
import pytest

from configs import distill
from deepsalt_jax import evaluate
from deepsalt_jax import paths
from deepsalt_jax import reporting
from deepsalt_jax import run_config
from deepsalt_jax.mapping import files
from deepsalt_jax.mapping import stats
from deepsalt_spectral import lab_grid


class _FakeGcs(memory.MemoryFileSystem):
  protocol = ("gs", "gcs")

  def __init__(self, *args, finalize_on_close=True, **kwargs):
    del finalize_on_close  # A gcsfs option.
    super().__init__(*args, **kwargs)


@pytest.fixture
def bucket(monkeypatch):
  registry = importlib.import_module("fsspec.registry")
  for name in ("gs", "gcs"):
    monkeypatch.setitem(registry._registry, name, _FakeGcs)
  yield epath.Path("gs://bucket/run")
  _FakeGcs.store.clear()
  _FakeGcs.pseudo_dirs.clear()


def _write_outputs(root: epath.Path) -> None:
  """Config, metrics, a parity plot and a map, as a run writes them."""
  run_config.save(distill.get_config("tiny"), root, lab_grid.visnir())
  writer = reporting.MetricWriter(root / "student")
  writer.write(2, {"loss": 1.5})
  writer.write(4, {"loss": 0.5})
  writer.close()
  y = np.array([1.0, 2.0, 3.0])
  evaluate.parity_plot(root / "parity.png", {"student": {
      "target": y, "pred": y + 0.1,
      "overall": {"r2": 0.9, "rmse": 0.1}}}, "dS/m")
  maps = files.MapWriter(root / "maps", "scene", (4, 5), None, None,
                         dict.fromkeys(("lower", "upper", "exceedance"), "–"),
                         4.0)
  ec = np.full((4, 5), 3.0, np.float32)
  masks = {name: np.zeros((4, 5), bool) for name in stats.MASKS}
  masks["soil"][:] = True
  maps.write(0, np.stack([ec, ec / 2, ec * 2, ec / 10]), masks)
  maps.commit(lambda: {"scene": "test"}, "title")


@pytest.mark.parametrize("where", ["local", "gs"])
def test_writers_deliver_every_file(where, bucket, tmp_path):
  root = bucket if where == "gs" else epath.Path(tmp_path / "run")
  _write_outputs(root)
  assert paths.is_local(root) == (where == "local")
  saved = run_config.load(root)
  assert saved == json.loads(distill.get_config("tiny").to_json())
  lines = (root / "student" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["loss"] for l in lines] == [1.5, 0.5]
  assert list((root / "student" / "tensorboard").iterdir())
  assert (root / "parity.png").read_bytes()[:4] == b"\x89PNG"
  names = sorted(p.name for p in (root / "maps").iterdir())
  assert names == sorted(files.output_names("scene").values())
  report = json.loads((root / "maps" / "scene_report.json").read_text())
  assert report["outputs"]["ec"] == str(root / "maps" / "scene_ec.tif")


def test_a_cloud_workdir_keeps_its_scheme():
  """pathlib.Path('gs://b/r') is 'gs:/b/r'; epath keeps the URI."""
  root = epath.Path("gs://bucket/run")
  assert str(root / "teacher" / "checkpoints") == (
      "gs://bucket/run/teacher/checkpoints")
  assert not paths.is_local(root) and paths.is_local("runs/x")


def test_a_resuming_process_reads_the_saved_config_whole(tmp_path):
  """Process 0 writes config.json and lab_grid.json again on every resume
  while the other processes read them (run_config.save): each read sees a
  whole file (a cluster test's resume once read an empty one)."""
  config, grid = distill.get_config("tiny"), lab_grid.visnir()
  run_config.save(config, tmp_path, grid)
  stop = threading.Event()

  def resume_again_and_again():
    while not stop.is_set():
      run_config.save(config, tmp_path, grid)

  writer = threading.Thread(target=resume_again_and_again)
  writer.start()
  try:
    for _ in range(500):
      assert run_config.load(tmp_path)["job"] == "distill"
      assert run_config.lab_grid(tmp_path) == grid
  finally:
    stop.set()
    writer.join()
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      run_config.CONFIG_FILE, run_config.LAB_GRID_FILE]
