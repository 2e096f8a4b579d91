"""Lab library builders on small files written in each documented schema."""
import logging

import numpy as np
import pandas as pd
import pytest
import tensorflow_datasets as tfds

import library_builders
from data_prep import libraries
from deepsalt_spectral import lab_grid
from deepsalt_spectral import resampling

LAB = resampling.lab_wavelengths()
# Interior lab bands: their SRFs lie fully inside every test library.
INTERIOR = (LAB >= 420) & (LAB <= 2430)


def _reflectance(nm):
  """A smooth soil-like reflectance; linear, so SRF centres reproduce it."""
  return 0.1 + 0.2 * (np.asarray(nm) - 400.0) / 2100.0


def _build(builder_cls, tmp_path, manual, **kwargs):
  builder = builder_cls(data_dir=str(tmp_path / "data"),
                        file_format="array_record", **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  source = builder.as_data_source(split="train")
  records = [source[i] for i in range(len(source))]
  return {r["sample_id"].decode(): r for r in records}


def _lucas_files(folder):
  """LUCAS 2015 layout: absorbance at 0.5 nm, EC in mS/m, replicate scans."""
  nm = np.arange(400.0, 2500.0, 0.5)
  names = [f"{w:g}" for w in nm]
  absorbance = np.log10(1.0 / _reflectance(nm))
  rows = []
  for point, shift in (("101", 0.0), ("101", 0.02), ("102", 0.0),
                       ("103", 0.0), ("104", 0.0)):
    rows.append([point, *(absorbance + shift)])
  rows[3][10] = np.nan  # Point 103 loses its only scan.
  pd.DataFrame(rows, columns=["PointID", *names]).to_csv(
      folder / "LUCAS2015_spectra_EU.csv", index=False)
  pd.DataFrame({"Point_ID": ["101", "102", "103", "104"],
                "EC": [25.0, 410.0, 13.0, None],
                "NUTS_0": ["DE", "ES", "FR", "IT"],
                "TH_LAT": [52.4, 40.1, 45.0, 41.9],
                "TH_LONG": [13.0, -3.7, 2.0, 12.5]}).to_csv(
                    folder / "LUCAS_Topsoil_2015_20200323.csv", index=False)


def test_lucas_round_trip(tmp_path, caplog):
  manual = tmp_path / "manual"
  manual.mkdir()
  _lucas_files(manual)
  with caplog.at_level(logging.INFO):
    records = _build(library_builders.LucasTopsoil, tmp_path, manual)
  assert sorted(records) == ["101", "102"]
  assert "dropped 1 of 5 spectra" in caplog.text
  assert "dropped 1 of 4 rows" in caplog.text
  first, second = records["101"], records["102"]
  assert first["lab"].shape == (180,) and first["lab"].dtype == np.float32
  np.testing.assert_allclose(second["lab"][INTERIOR],
                             _reflectance(LAB[INTERIOR]), rtol=1e-4)
  # Replicate scans are averaged as stored (absorbance A and A + 0.02).
  np.testing.assert_allclose(first["lab"][INTERIOR],
                             _reflectance(LAB[INTERIOR]) * 10**-0.01,
                             rtol=1e-4)
  assert second["target"] == pytest.approx(4.10)  # 410 mS/m = 4.1 dS/m.
  assert first["region"] == b"DE" and first["lat"] == pytest.approx(52.4)
  assert first["lon"] == pytest.approx(13.0)


def _ossl_files(folder, percent=True):
  nm = np.arange(350, 2501, 2)
  ids = ["u1", "u2", "u3"]
  values = np.stack([_reflectance(nm) * k for k in (1.0, 1.2, 0.8)])
  values = values * (100 if percent else 1)
  visnir = pd.DataFrame(values, columns=[f"scan_visnir.{w}_ref" for w in nm])
  visnir.insert(0, "id.layer_uuid_txt", ids)
  visnir.insert(1, "scan.visnir.model.name_utf8_txt", "ASD")
  visnir.to_csv(folder / "ossl_visnir_L0_v1.2.csv.gz", index=False)
  pd.DataFrame({"id.layer_uuid_txt": ids, "ec_usda.a364_ds.m": [0.4, 8.5, 22.0],
                "oc_usda.c729_w.pct": [1.0, 2.0, 3.0]}).to_csv(
                    folder / "ossl_soillab_L1_v1.2.csv.gz", index=False)
  site = pd.DataFrame({"id.layer_uuid_txt": ids,
                       "latitude.point_wgs84_dd": [1.0, 2.0, 3.0],
                       "longitude.point_wgs84_dd": [10.0, 20.0, 30.0],
                       "dataset.code_ascii_txt": ["KSSL.SSL", "KSSL.SSL",
                                                  "AFSIS1.SSL"]})
  site.to_csv(folder / "ossl_soilsite_L0_v1.2.csv", index=False)


def test_ossl_round_trip_with_percent(tmp_path, caplog):
  manual = tmp_path / "manual"
  manual.mkdir()
  _ossl_files(manual)
  with caplog.at_level(logging.WARNING):
    records = _build(library_builders.OsslVisnir, tmp_path, manual)
  assert "percent" in caplog.text
  assert sorted(records) == ["u1", "u2", "u3"]
  np.testing.assert_allclose(records["u2"]["lab"][INTERIOR],
                             1.2 * _reflectance(LAB[INTERIOR]), rtol=1e-4)
  assert records["u3"]["target"] == pytest.approx(22.0)
  assert records["u3"]["region"] == b"AFSIS1.SSL"
  assert records["u1"]["lat"] == 1.0 and records["u1"]["lon"] == 10.0


def test_csv_library_config_and_units(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  nm = np.arange(350, 2501, 10)
  frame = pd.DataFrame(np.stack([_reflectance(nm), _reflectance(nm) * 0.5]),
                       columns=[str(w) for w in nm])
  frame.insert(0, "sample", ["a", "b"])
  frame["EC_uScm"] = [1500.0, 250.0]
  frame["site"] = ["north", "south"]
  frame.to_csv(manual / "mylib.csv", index=False)
  config = library_builders.CsvLibraryConfig(
      name="mylib", spectra_file="mylib.csv", id_column="sample",
      target_column="EC_uScm", target_units="uS/cm", region_column="site")
  records = _build(library_builders.CsvLibrary, tmp_path, manual, config=config)
  assert records["a"]["target"] == pytest.approx(1.5)
  assert records["b"]["region"] == b"south"
  assert np.isnan(records["b"]["lat"]) and np.isnan(records["b"]["lon"])
  np.testing.assert_allclose(records["b"]["lab"][INTERIOR],
                             0.5 * _reflectance(LAB[INTERIOR]), rtol=1e-4)


def test_missing_manual_file_is_named(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  _ossl_files(manual)
  (manual / "ossl_soillab_L1_v1.2.csv.gz").unlink()
  with pytest.raises(ValueError, match="No OSSL soil lab table in"):
    _build(library_builders.OsslVisnir, tmp_path, manual)


# Errors, on the shared readers.
def _write(path, header, rows):
  path.write_text("\n".join([",".join(header)] +
                            [",".join(map(str, r)) for r in rows]) + "\n")
  return path


def test_missing_id_column_lists_found_and_expected(tmp_path):
  path = _write(tmp_path / "s.csv", ["ID", "400", "410"], [["a", 0.1, 0.2]])
  with pytest.raises(ValueError, match=r"expected one of \['PointID', "
                     r"'Point_ID'\], found: ID, 400, 410"):
    libraries.read_spectral_table(path, id_column=("PointID", "Point_ID"))


def test_misnamed_target_column(tmp_path):
  path = _write(tmp_path / "t.csv", ["Point_ID", "EC_dSm"], [["a", 1.0]])
  with pytest.raises(ValueError, match=r"no EC target column.*\['EC'\].*"
                     "found: Point_ID, EC_dSm"):
    libraries.read_targets(path, id_column="Point_ID", target_column="EC",
                           target_units="mS/m")


@pytest.mark.parametrize("columns,message", [
    (["410", "400", "420"], "not sorted"),
    (["400", "410", "410"], "duplicated spectral columns"),
    (["a", "b", "c"], "no spectral columns"),
])
def test_bad_wavelength_columns(tmp_path, columns, message):
  path = _write(tmp_path / "s.csv", ["id", *columns], [["x", 0.1, 0.2, 0.3]])
  with pytest.raises(ValueError, match=message):
    libraries.read_spectral_table(path, id_column="id")


def test_percent_detected_and_nan_rows_counted(tmp_path, caplog):
  path = _write(tmp_path / "s.csv", ["id", "400", "410"],
                [["a", 10.0, 20.0], ["b", "", 30.0], ["c", 30.0, "n/a"],
                 ["d", 40.0, 50.0]])
  with caplog.at_level(logging.WARNING):
    table = libraries.read_spectral_table(path, id_column="id")
  assert "dropped 2 of 4 spectra" in caplog.text and "percent" in caplog.text
  np.testing.assert_allclose(table.spectra, [[0.1, 0.2], [0.4, 0.5]])
  assert table.ids.tolist() == ["a", "d"]


def test_absorbance_that_is_percent_is_refused(tmp_path):
  path = _write(tmp_path / "s.csv", ["id", "400", "410"], [["a", 30.0, 40.0]])
  with pytest.raises(ValueError, match="not absorbance"):
    libraries.read_spectral_table(path, id_column="id", quantity="absorbance")


def test_ec_units_checked(tmp_path):
  path = _write(tmp_path / "t.csv", ["id", "EC"],
                [["a", 1200.0], ["b", 3400.0]])
  with pytest.raises(ValueError, match="median EC 2300 dS/m.*units"):
    libraries.read_targets(path, id_column="id", target_column="EC",
                           target_units="dS/m")
  out = libraries.read_targets(path, id_column="id", target_column="EC",
                               target_units="uS/cm")
  np.testing.assert_allclose(out["target"], [1.2, 3.4])
  with pytest.raises(ValueError, match="Unknown EC units"):
    libraries.read_targets(path, id_column="id", target_column="EC",
                           target_units="ppm")
  negative = _write(tmp_path / "n.csv", ["id", "EC"], [["a", -1.0]])
  with pytest.raises(ValueError, match="negative EC"):
    libraries.read_targets(negative, id_column="id", target_column="EC",
                           target_units="dS/m")


def test_library_must_cover_lab_grid_and_share_ids(tmp_path):
  nm = np.arange(400, 1001, 10)
  short = libraries.SpectralTable(ids=np.array(["a"]),
                                  grid=lab_grid.LabGrid(nm * 1.0),
                                  spectra=_reflectance(nm)[None])
  targets = pd.DataFrame({"target": [1.0], "region": ["r"], "lat": [np.nan],
                          "lon": [np.nan]}, index=["a"])
  with pytest.raises(ValueError, match="lab grid needs 400.0-2450.0 nm"):
    libraries.on_lab_grid(short)
  nm = np.arange(350, 2501, 10)
  full = libraries.on_lab_grid(libraries.SpectralTable(
      ids=np.array(["a"]), grid=lab_grid.LabGrid(nm * 1.0),
      spectra=_reflectance(nm)[None]))
  assert full.grid == lab_grid.visnir()
  with pytest.raises(ValueError, match="No sample id is shared"):
    list(libraries.lab_examples(full, targets.rename(index={"a": "z"})))
