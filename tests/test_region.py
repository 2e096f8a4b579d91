"""Mapping a region: many scenes, re-runs, mosaic and report, 2 processes."""
import json
import shutil
import sys
import threading
import types

import numpy as np
import portpicker
import pytest
import rasterio
from rasterio.transform import from_origin

from conftest import cpu_devices_env, run_processes
from deepsalt_jax import mapping
from deepsalt_jax.mapping import blocks
from deepsalt_jax.mapping import files
from deepsalt_jax.mapping import mosaic
from deepsalt_jax.mapping import scenes
from deepsalt_jax.mapping import stats
from deepsalt_spectral import indices

TILES = ("enmap_potsdam_tile_192_96", "enmap_potsdam_tile_160_96",
         "enmap_potsdam_tile_128_96", "enmap_potsdam_tile_160_128")


def _scenes(reference_data, folder, n):
  folder.mkdir(exist_ok=True)
  for name in TILES[:n]:
    shutil.copyfile(reference_data / "enmap_potsdam" / f"{name}.tif",
                    folder / f"{name}.tif")
  return folder


def test_scene_lists(tmp_path):
  for name in ("a.tif", "b.hdr", "b", "c.TIF", "notes.md",
               "ENMAP01-X-QL_PIXELMASK.TIF", ".a.tif.partial"):
    (tmp_path / name).write_text("")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "d.tif").write_text("")
  found = scenes.list_scenes(tmp_path)
  assert [p.name for p in found] == ["a.tif", "b.hdr", "c.TIF"]
  listing = tmp_path / "scenes.txt"
  listing.write_text(f"# region\nsub/d.tif\n\n{tmp_path / 'a.tif'}  # abs\n")
  assert scenes.list_scenes(listing) == [tmp_path / "sub" / "d.tif",
                                              tmp_path / "a.tif"]
  assert scenes.list_scenes(tmp_path / "a.tif") == [tmp_path / "a.tif"]
  listing.write_text("a.tif\nmissing.tif\n")
  with pytest.raises(ValueError, match="1 scenes that do not exist: .*"
                     "missing.tif"):
    scenes.list_scenes(listing)
  listing.write_text("a.tif\nsub/../a.tif\n")
  with pytest.raises(ValueError, match="share the name 'a'"):
    scenes.list_scenes(listing)
  with pytest.raises(ValueError, match="nothing does not exist"):
    scenes.list_scenes(tmp_path / "nothing")
  # Every scene goes to exactly one of 3 processes, by position.
  names = [f"s{i}" for i in range(8)]
  shares = [scenes.share(names, p, 3) for p in range(3)]
  assert sorted(sum(shares, [])) == names and shares[1] == ["s1", "s4", "s7"]


def test_every_scene_streams_on_the_same_two_threads():
  """A run's scenes share one reader and one writer thread: a new pair per
  scene grew the mapper's memory by a malloc arena each (docs/scale.md)."""
  used = {"read": [], "write": []}

  class Rows:  # Three blocks of nodata rows.
    name, shape, crs, transform = "nodata", (6, 4), None, None

    def read(self, start, stop):
      del start, stop
      used["read"].append(threading.get_ident())

  def write(start, values, masks):
    del start, values, masks
    used["write"].append(threading.get_ident())

  match = types.SimpleNamespace(matrix=np.zeros((3, 3)))
  threads = blocks.Threads()
  try:
    for _ in range(3):  # Scenes.
      blocks.stream(Rows(), match, indices.MaskThresholds(), None, write, 2,
                    stats.Tally(files.CLASS_NODATA), "", threads)
  finally:
    threads.close()
  assert len(used["read"]) == len(used["write"]) == 9
  assert len(set(used["read"])) == len(set(used["write"])) == 1
  assert threading.get_ident() not in used["read"] + used["write"]


def _write_map(folder, name, transform, crs, value):
  """A 600 x 500 map of constant EC `value`, nodata on its first row."""
  writer = files.MapWriter(folder, name, (600, 500), crs, transform,
                           dict(lower="lower", upper="upper",
                                exceedance="P(EC > 4)"), 4.0)
  ec = np.full((600, 500), value, np.float32)
  ec[0] = np.nan
  masks = {n: np.zeros(ec.shape, bool) for n in stats.MASKS}
  masks["soil"][1:] = True
  masks["nodata"][0] = True
  writer.write(0, np.stack([ec, ec / 2, ec * 2, ec / 10]), masks)
  report = {"name": name, "shape": [600, 500], "crs": crs,
            "transform": list(transform)[:6] if transform else None}
  writer.commit(lambda: report, name)
  return json.loads(writer.paths["report"].read_text())


def test_cogs_and_mosaic_vrts(tmp_path):
  utm = "EPSG:32633"
  a = _write_map(tmp_path, "a", from_origin(300000, 5800000, 30, 30), utm, 1.0)
  # Overlaps a's lower right corner; the later scene wins there.
  b = _write_map(tmp_path, "b", from_origin(307500, 5790000, 30, 30), utm, 5.0)
  c = _write_map(tmp_path, "c", from_origin(500000, 5800000, 30, 30),
                 "EPSG:32634", 9.0)
  d = _write_map(tmp_path, "d", None, None, 2.0)
  with rasterio.open(tmp_path / "a_ec.tif") as ds:
    assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert ds.overviews(1) == [2, 4] and ds.block_shapes[0] == (256, 256)
  with rasterio.open(tmp_path / "a_class.tif") as ds:
    assert ds.colormap(1)[0][:3] == (26, 152, 80)
  result = mosaic.write_vrts(tmp_path, [a, b, c, d])
  assert sorted(result["files"]) == [
      "mosaic_class_EPSG_32633.vrt", "mosaic_class_EPSG_32634.vrt",
      "mosaic_ec_EPSG_32633.vrt", "mosaic_ec_EPSG_32634.vrt"]
  assert result["files"]["mosaic_ec_EPSG_32633.vrt"]["scenes"] == ["a", "b"]
  assert result["left_out"] == ["d"]
  with rasterio.open(tmp_path / "mosaic_ec_EPSG_32633.vrt") as ds:
    assert (ds.width, ds.height) == (750, 933)
    assert ds.crs.to_epsg() == 32633 and ds.transform.c == 300000
    ec = ds.read(1)
    upper = ds.read(3)
  assert ec[0, 0] == files.EC_NODATA  # a's nodata row.
  assert ec[1, 0] == 1.0 and ec[400, 300] == 5.0  # b wins the overlap.
  assert ec[333, 250] == 1.0  # b's nodata row leaves a's pixels.
  assert ec[700, 100] == files.EC_NODATA  # Neither scene.
  np.testing.assert_allclose(upper[ec != files.EC_NODATA],
                             ec[ec != files.EC_NODATA] * 2)
  with rasterio.open(tmp_path / "mosaic_class_EPSG_32633.vrt") as ds:
    assert ds.read(1)[400, 300] == 2  # 5 dS/m: moderately saline.
    assert ds.colormap(1)[2][:3] == (254, 224, 139)


def _files(folder):
  return {p.name: p.read_bytes() for p in folder.iterdir()
          if p.suffix == ".tif"}


@pytest.mark.slow
def test_region_run_maps_every_scene_and_a_rerun_finishes_the_rest(
    tiny_run, reference_data, tmp_path):
  config, workdir = tiny_run
  folder = _scenes(reference_data, tmp_path / "scenes", 3)
  out = tmp_path / "maps"
  first = mapping.map_scenes(config, workdir, folder, out)
  assert sorted(first["mapped"]) == sorted(TILES[:3]) and not first["skipped"]
  region = json.loads((out / "region_report.json").read_text())
  assert region == json.loads(json.dumps(first["region"]))
  assert sorted(region["per_scene"]) == sorted(TILES[:3])
  for name, scene in region["per_scene"].items():
    saved = json.loads((out / f"{name}_report.json").read_text())
    assert scene["classes"] == saved["classes"]
    assert scene["soil_area_ha"] == pytest.approx(
        0.09 * saved["pixels"]["soil"])
  assert sum(region["class_area_ha"].values()) == pytest.approx(
      region["soil_area_ha"])
  with rasterio.open(out / "mosaic_ec.vrt") as ds:
    mosaic_ec = ds.read(1)
    # Tiles <column>_96 for columns 128, 160, 192: side by side.
    assert ds.height == 32 and ds.width == 3 * 32
  with rasterio.open(out / f"{TILES[0]}_ec.tif") as ds:
    np.testing.assert_array_equal(mosaic_ec[:, 64:], ds.read(1))
  assert "| scene | soil fraction |" in (out / "region_report.md").read_text()
  before = _files(out)

  # A scene that fails is listed in the region report with its error.
  broken = tmp_path / "scenes" / "broken.tif"
  whole = (folder / f"{TILES[0]}.tif").read_bytes()
  broken.write_bytes(whole[:len(whole) // 2])
  with pytest.raises(ValueError, match="1 of 4 scenes failed"):
    mapping.map_scenes(config, workdir, folder, out)
  report = (out / "region_report.md").read_text()
  assert "Not mapped (1):" in report and "- broken: " in report
  assert "truncated or damaged" in json.loads(
      (out / "region_report.json").read_text())["not_mapped"]["broken"]
  broken.unlink()

  # A job killed while mapping the second scene: its report is gone and a
  # partial file is left. The re-run maps that scene alone, the same again.
  (out / f"{TILES[1]}_report.json").unlink()
  (out / f".{TILES[1]}_ec.tif.partial").write_bytes(b"half")
  second = mapping.map_scenes(config, workdir, folder, out)
  assert second["mapped"] == [TILES[1]]
  assert sorted(second["skipped"]) == sorted([TILES[0], TILES[2]])
  after = _files(out)
  for name in before:  # COG bytes hold no time stamp: the same files.
    assert after[name] == before[name], name
  assert not list(out.glob(".*"))  # No temporary file is left.
  # Maps made with other options (another signature) are not complete.
  signature = json.loads((out / f"{TILES[0]}_report.json").read_text())[
      "signature"]
  assert files.completed(out, TILES[0], signature)
  assert files.completed(out, TILES[0], "other options") is None


@pytest.mark.slow
def test_two_processes_map_each_scene_once_as_one_process_does(
    tiny_run, reference_data, tmp_path):
  """launch.py --mode=map in 2 localhost processes (jax.distributed, gloo)
  over a list of 4 scenes: each scene is mapped by exactly one process and
  equals the single-process map."""
  config, workdir = tiny_run
  folder = _scenes(reference_data, tmp_path / "scenes", 4)
  listing = tmp_path / "region.txt"
  listing.write_text("\n".join(f"scenes/{t}.tif" for t in TILES) + "\n")
  port = portpicker.pick_unused_port()
  envs = [cpu_devices_env(
      2, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
      JAX_PROCESS_ID=str(i)) for i in range(2)]
  command = [sys.executable, "launch.py", "--mode=map", f"--workdir={workdir}",
             f"--scene={listing}", f"--output={tmp_path / 'two'}"]
  logs = run_processes([command, command], envs, tmp_path / "logs")
  mapped = {t: [i for i, log in enumerate(logs) if f"Map of {t} in" in log]
            for t in TILES}
  assert mapped == {TILES[0]: [0], TILES[1]: [1], TILES[2]: [0],
                    TILES[3]: [1]}
  region = json.loads((tmp_path / "two" / "region_report.json").read_text())
  assert {n: s["process"] for n, s in region["per_scene"].items()} == {
      TILES[0]: 0, TILES[1]: 1, TILES[2]: 0, TILES[3]: 1}
  mapping.map_scenes(config, workdir, folder, tmp_path / "one")
  for name in TILES:
    for kind in ("ec", "class", "masks"):
      with rasterio.open(tmp_path / "two" / f"{name}_{kind}.tif") as two, \
          rasterio.open(tmp_path / "one" / f"{name}_{kind}.tif") as one:
        np.testing.assert_allclose(two.read(), one.read(), rtol=2e-5,
                                   atol=1e-6, err_msg=f"{name} {kind}")
    report = json.loads((tmp_path / "two" / f"{name}_report.json")
                        .read_text())
    assert report["devices"] == 2  # Each process's own devices.
