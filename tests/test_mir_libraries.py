"""MIR lab libraries on their instrument's grid: OPUS folders, OSSL MIR
tables and CSVs in wavenumbers (LimeSoDa's real MIR spectra)."""
import numpy as np
import pandas as pd
import pytest

import opus_files
from projects import limesoda_mir
from data_prep.libraries import formats
from data_prep.libraries import tables
from deepsalt_spectral import lab_grid


def _metadata(path, ids, ec=None):
  n = len(ids)
  pd.DataFrame({"sample_id": ids,
                "ec": np.linspace(0.5, 9.0, n) if ec is None else ec,
                "lat": np.linspace(34.0, 35.0, n),
                "lon": np.linspace(8.0, 9.0, n)}).to_csv(path, index=False)
  return path


def test_opus_folder_round_trip(tmp_path):
  wn = np.linspace(3999.6, 600.0, 1764)  # Stored decreasing, as OPUS does.
  spectra = {"S1": 0.2 + 0.8 * np.exp(-((wn - 1000) / 300) ** 2),
             "S2": np.linspace(0.3, 1.4, wn.size)}
  for name, y in spectra.items():
    opus_files.write_opus(tmp_path / f"{name}.0", wn, y)
  # A replicate scan of S2, 0.1 higher: averaged with the first.
  opus_files.write_opus(tmp_path / "S2.1", wn, spectra["S2"] + 0.1)
  table, targets = formats.read_opus_library(
      tmp_path, _metadata(tmp_path / "meta.csv", ["S1", "S2"], [1.5, 4.0]))
  assert table.grid == lab_grid.LabGrid(wn[::-1], "cm-1", "absorbance")
  assert table.ids.tolist() == ["S1", "S2"]
  np.testing.assert_allclose(table.spectra[0], spectra["S1"][::-1],
                             rtol=1e-6)
  np.testing.assert_allclose(table.spectra[1], spectra["S2"][::-1] + 0.05,
                             rtol=1e-6)
  assert targets.loc["S2", "target"] == 4.0
  assert targets.loc["S1", "lon"] == 8.0


def test_opus_files_on_other_wavenumbers(tmp_path):
  wn = np.linspace(4000.0, 600.0, 1701)
  opus_files.write_opus(tmp_path / "A.0", wn, np.linspace(0.2, 1.0, wn.size))
  # Wider and finer: interpolated onto A's wavenumbers (linear, so exact).
  wide = np.linspace(4100.0, 500.0, 3601)
  opus_files.write_opus(tmp_path / "B.0", wide, 2e-4 * wide)
  meta = _metadata(tmp_path / "meta.csv", ["A", "B"])
  table, _ = formats.read_opus_library(tmp_path, meta)
  assert table.grid.size == 1701
  np.testing.assert_allclose(table.spectra[1], 2e-4 * wn[::-1], rtol=1e-5)
  opus_files.write_opus(tmp_path / "C.0", wn[:900], np.ones(900))
  with pytest.raises(ValueError, match=r"C.0: its wavenumbers \(2202-4000 "
                     r"cm-1\) do not cover those of A.0 \(600-4000 cm-1\)"):
    formats.read_opus_library(tmp_path, meta)


def test_opus_without_absorbance_or_signature(tmp_path):
  meta = _metadata(tmp_path / "meta.csv", ["T"])
  wn = np.linspace(4000.0, 600.0, 50)
  opus_files.write_opus(tmp_path / "T.0", wn, np.ones(50), kind=5)
  with pytest.raises(ValueError, match=r"T.0: no absorbance \(AB\) block; "
                     r"it holds \['t'\]"):
    formats.read_opus_library(tmp_path, meta)
  (tmp_path / "T.0").write_text("sample,0.1\n")
  with pytest.raises(ValueError, match="T.0: not an OPUS file"):
    formats.read_opus_library(tmp_path, meta)
  (tmp_path / "T.0").unlink()
  with pytest.raises(ValueError, match="No OPUS files"):
    formats.read_opus_library(tmp_path, meta)


def _ossl_mir(folder, visnir=False):
  wn = np.arange(600, 4001, 2)
  ids = ["m1", "m2", "m3"]
  absorbance = np.stack([0.3 + k * wn / 4000.0 for k in (0.5, 1.0, 1.5)])
  scans = pd.DataFrame(absorbance, columns=[f"scan_mir.{w}_abs" for w in wn])
  scans.insert(0, "id.layer_uuid_txt", ids)
  scans.insert(1, "scan.mir.model.name_utf8_txt", "Bruker Vertex 70")
  scans.to_csv(folder / "ossl_mir_L0_v1.2.csv.gz", index=False)
  if visnir:
    nm = np.arange(350, 2501, 2)
    frame = pd.DataFrame(np.full((3, nm.size), 0.3),
                         columns=[f"scan_visnir.{w}_ref" for w in nm])
    frame.insert(0, "id.layer_uuid_txt", ids)
    frame.to_csv(folder / "ossl_visnir_L0_v1.2.csv.gz", index=False)
  pd.DataFrame({"id.layer_uuid_txt": ids,
                "ec_usda.a364_ds.m": [0.2, 3.1, 40.0]}).to_csv(
                    folder / "ossl_soillab_L1_v1.2.csv.gz", index=False)
  pd.DataFrame({"id.layer_uuid_txt": ids,
                "latitude.point_wgs84_dd": [38.0, 39.0, 40.0],
                "longitude.point_wgs84_dd": [-98.0, -97.0, -96.0],
                "dataset.code_ascii_txt": ["KSSL.SSL"] * 3}).to_csv(
                    folder / "ossl_soilsite_L0_v1.2.csv.gz", index=False)
  return wn, absorbance


def test_ossl_mir_round_trip(tmp_path):
  wn, absorbance = _ossl_mir(tmp_path)
  table, targets = formats.read_ossl(tmp_path)
  assert table.grid == lab_grid.LabGrid(wn * 1.0, "cm-1", "absorbance")
  assert table.ids.tolist() == ["m1", "m2", "m3"]
  # Absorbance stays absorbance: the physics does not reach MIR anyway.
  np.testing.assert_allclose(table.spectra, absorbance, rtol=1e-6)
  assert tables.on_lab_grid(table) is table
  np.testing.assert_allclose(targets["target"], [0.2, 3.1, 40.0])
  assert targets.loc["m3", "lat"] == 40.0
  assert targets.loc["m3", "lon"] == -96.0
  assert targets.loc["m1", "region"] == "KSSL.SSL"


def test_ossl_with_both_scan_tables_needs_the_unit(tmp_path):
  _ossl_mir(tmp_path, visnir=True)
  with pytest.raises(ValueError, match="both an OSSL vis-NIR .* set "
                     "data.library_unit to 'nm' .* or 'cm-1'"):
    formats.read_ossl(tmp_path)
  assert formats.read_ossl(tmp_path, "cm-1")[0].grid.unit == "cm-1"
  visnir, _ = formats.read_ossl(tmp_path, "nm")
  assert tables.on_lab_grid(visnir).grid == lab_grid.visnir()


def test_csv_in_wavenumbers_limesoda(tmp_path):
  """LimeSoDa's MIR: decreasing wavenumber columns, percent reflectance."""
  wn, percent = limesoda_mir()
  frame = pd.DataFrame(percent[:5], columns=[f"{w:g}" for w in wn])
  frame.insert(0, "sample_id", [f"s{i}" for i in range(5)])
  frame.insert(1, "ec", np.arange(1.0, 6.0))
  path = tmp_path / "mir.csv"
  frame.to_csv(path, index=False)
  # Decreasing and beyond 2500: wavenumbers; MIR's usual quantity,
  # absorbance, does not fit percent reflectance.
  with pytest.raises(ValueError, match=r"mir.csv: median 1\d.\d+ is not "
                     r"absorbance .*data.library_quantity\) to 'reflectance'"):
    formats.read_csv_library(path)
  table, targets = formats.read_csv_library(path, quantity="reflectance")
  assert table.grid == lab_grid.LabGrid(wn[::-1], "cm-1", "reflectance")
  np.testing.assert_allclose(table.spectra, percent[:5, ::-1] / 100,
                             rtol=1e-6)
  assert targets.loc["s4", "target"] == 5.0
  # Increasing columns beyond 2500 could be either unit: the user says.
  frame[["sample_id", "ec", *frame.columns[2:][::-1]]].to_csv(path,
                                                             index=False)
  with pytest.raises(ValueError, match=r"mir.csv: spectral columns 549.6-3799 "
                     r"reach beyond 2500 in increasing order.*'cm-1'"):
    formats.read_csv_library(path, quantity="reflectance")
  table, _ = formats.read_csv_library(path, unit="cm-1",
                                      quantity="reflectance")
  assert table.grid.axis[0] == wn[-1]
  with pytest.raises(ValueError, match="Library unit 'um': use one of nm, "
                     "cm-1"):
    formats.read_csv_library(path, unit="um")
