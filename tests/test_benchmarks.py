"""benchmarks/: the comparison harness end to end (tiny) and its parts."""
import dataclasses
import json

import ml_collections
import numpy as np
import pytest

from benchmarks import compare
from benchmarks import descriptions
from benchmarks import speed
from configs import distill
from data_prep import roles
from deepsalt_jax import input_pipeline
from deepsalt_jax import metrics
from deepsalt_jax import samples
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax.models import from_config
from deepsalt_spectral import lab_grid
from deepsalt_spectral import sensors

SALINITY_METHODS = ["plsr", "rf", "plsr_lab", "coral_ridge", "pooled_mlp",
                    "epo", "ds", "source_only",
                    "student", "plain", "finetune", "dann", "dann_labels",
                    "teacher_lab"]


@pytest.mark.slow
def test_regions_protocol_writes_every_output(prepared_data_dir, tmp_path):
  result = compare.run_benchmark(
      "salinity", tmp_path, regions=["SC.93"], seeds=1, tiny=True,
      methods=SALINITY_METHODS, label_fractions=[1.0, 0.05],
      label_methods=["student", "plsr"], data_dir=str(prepared_data_dir))
  for name in ("results.json", "results.md", "label_efficiency.png",
               "parity_baselines.png", "parity_deep.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["summary"] == result["summary"]
  for method in SALINITY_METHODS:
    stat = saved["summary"][method]
    assert stat["units"] == 1, method  # One region x one seed.
    assert np.isfinite(stat["r2"]["mean"]) and stat["rmse"]["mean"] > 0
    region = saved["per_region"][method]["SC.93"]
    assert region["rmse"] == pytest.approx(stat["rmse"]["mean"])
    # RPD = sd / RMSE with the same held-out targets for every method.
    assert region["rpd"] * region["rmse"] == pytest.approx(
        saved["per_region"]["plsr"]["SC.93"]["rpd"]
        * saved["per_region"]["plsr"]["SC.93"]["rmse"])
  fractions = [row["labelled_fraction"] for row in saved["label_efficiency"]]
  assert fractions == [1.0, 0.05]
  assert saved["paired_fractions"] == [0.0, 0.4]
  for row in saved["label_efficiency"]:
    assert set(row["r2"]) == {"student", "plsr"}
    assert row["best_baseline"] == "plsr"
  # Both label runs reuse the main run's teacher; lf=0.05 is the main run.
  runs = tmp_path / "runs" / "SC.93" / "seed0"
  assert sorted(p.name for p in runs.iterdir()) == ["lf0.05", "lf1"]
  lf1 = json.loads((runs / "lf1" / "config.json").read_text())
  assert lf1["loss"]["w_distill_pred"] == 0.0
  assert lf1["data"]["paired_fraction"] == 0.0
  text = (tmp_path / "results.md").read_text()
  for expected in ("Measured:", "Simulated:", "| student |",
                   "teacher_lab (reference)", "Label efficiency",
                   "student: calibrated 90 % intervals per held-out split"):
    assert expected in text
  # The student's calibrated interval on the held-out region.
  interval = saved["intervals"]["student"]
  assert list(interval["per_split"]) == ["SC.93 seed 0"]
  assert 0 <= interval["pooled_coverage"] <= 1
  assert interval["per_split"]["SC.93 seed 0"]["n"] == (
      saved["runs"][0]["n_test"])


@pytest.mark.slow
def test_folds_protocol_scores_each_set(prepared_data_dir, tmp_path):
  result = compare.run_benchmark(
      "soc", tmp_path, folds=["1", "2"], seeds=1, tiny=True,
      methods=["plsr", "rf", "plsr_lab"], label_fractions=[],
      data_dir=str(prepared_data_dir))
  sets = {"CV.98", "SL.125", "UL.120", "SC.93", "SSP.460"}
  assert result["protocol"] == "folds"
  for method in ("plsr", "rf", "plsr_lab"):
    assert set(result["per_region"][method]) == sets
    assert result["summary"][method]["units"] == 5
  config = distill.get_config("dataset=soc")
  config.data.update(data_dir=str(prepared_data_dir), test_regions="")
  data = samples.load_data(config.data)
  assert sum(r["n_test"] for r in result["runs"]) == np.isin(
      data.fold, [1, 2]).sum()
  with pytest.raises(ValueError, match="other settings"):
    compare.run_benchmark("soc", tmp_path, folds=["1"], steps_scale=0.5,
                          tiny=True, methods=["plsr"],
                          data_dir=str(prepared_data_dir))


def test_test_folds_hold_out_a_fold_of_every_set(prepared_data_dir):
  config = distill.get_config("dataset=soc")
  config.data.update(data_dir=str(prepared_data_dir), test_regions="",
                     test_folds="3")
  data = samples.load_data(config.data)
  np.testing.assert_array_equal(data.test, data.fold == 3)
  assert len(np.unique(data.region[data.test])) == 5
  config.data.test_folds = "11"
  with pytest.raises(ValueError, match="matches no sample"):
    samples.load_data(config.data)


def _synthetic_data(n: int = 600, seed: int = 0) -> samples.Data:
  """Rank-5 satellite spectra; log1p(EC) linear in them, per region."""
  rng = np.random.default_rng(seed)
  n_sat = from_config.forward_matrix("enmap", lab_grid.visnir()).shape[0]
  z = rng.normal(size=(n, 5))
  satellite = (0.3 + 0.02 * z @ rng.normal(size=(5, n_sat))).astype(
      np.float32)
  region = np.repeat([0, 1], n // 2).astype(np.int32)
  slopes = rng.normal(size=(2, 5)) * 0.3
  target = np.expm1(1.5 + np.sum(z * slopes[region], axis=1))
  role = np.where(rng.random(n) < 0.6, roles.LABELLED, roles.UNLABELLED)
  test = rng.random(n) < 0.2
  # Unlabelled training targets are garbage: a baseline using them is off.
  target = np.where((role == roles.UNLABELLED) & ~test, 1e3, target)
  return samples.Data(
      lab=np.full((n, 180), 0.3, np.float32), satellite=satellite,
      pair_satellite=satellite, target=target.astype(np.float32),
      region=region, fold=np.zeros(n, np.int32), role=role,
      region_names=("a", "b"), test=test, validation=np.zeros(n, bool),
      blocks=np.full(n, "b0"), sensor="enmap")


def test_baselines_fit_labelled_pixels_per_region():
  data = _synthetic_data()
  config = distill.get_config()
  truth = data.target[data.test]
  per_set = compare.fit_baselines(data, ["plsr"], True, config, tiny=False)
  np.testing.assert_allclose(per_set["plsr"], truth, rtol=1e-3)
  pooled = compare.fit_baselines(data, ["plsr"], False, config, tiny=False)
  assert metrics.regression_metrics(truth, pooled["plsr"])["r2"] < 0.99
  # Region 'b' keeps four labelled samples: too few, so no predictions.
  labelled_b = np.flatnonzero((data.region == 1) & ~data.test
                              & (data.role == roles.LABELLED))
  role = data.role.copy()
  role[labelled_b[4:]] = roles.UNLABELLED
  sparse = compare.fit_baselines(
      dataclasses.replace(data, role=role), ["plsr"], True, config,
      tiny=False)["plsr"]
  in_b = data.region[data.test] == 1
  assert np.isnan(sparse[in_b]).all() and np.isfinite(sparse[~in_b]).all()


@pytest.mark.slow
def test_pooled_mlp_learns_from_the_library_and_the_pixels_together():
  """The library (lab spectra that resample to the pixels) holds the law over
  the whole range; the few labelled pixels cover its lower half. Pooled,
  the MLP predicts the test pixels over the whole range."""
  rng = np.random.default_rng(0)
  n = 600
  forward = from_config.forward_matrix("enmap", lab_grid.visnir())
  z = rng.normal(size=(n, 5))
  satellite = 0.3 + 0.02 * z @ rng.normal(size=(5, forward.shape[0]))
  log_ec = 1.5 + z @ (0.3 * rng.normal(size=5))
  test = rng.random(n) < 0.2
  labelled = (rng.random(n) < 0.1) & (log_ec < np.median(log_ec))
  data = samples.Data(
      lab=(satellite @ np.linalg.pinv(forward).T).astype(np.float32),
      satellite=satellite.astype(np.float32),
      pair_satellite=satellite.astype(np.float32),
      target=np.expm1(log_ec).astype(np.float32),
      region=np.zeros(n, np.int32), fold=np.zeros(n, np.int32),
      role=np.where(labelled, roles.LABELLED, roles.UNLABELLED),
      region_names=("a",), test=test, validation=np.zeros(n, bool),
      blocks=np.full(n, "b0"), sensor="enmap")
  pred = compare.fit_baselines(data, ["pooled_mlp", "rf"], False,
                               distill.get_config(), tiny=False)
  r2 = {m: metrics.regression_metrics(log_ec[test], np.log1p(p))["r2"]
        for m, p in pred.items()}
  # The forest on the labelled pixels alone stays in their range.
  assert r2["pooled_mlp"] > 0.5 and r2["pooled_mlp"] > r2["rf"] + 0.2, r2


def _settings(**overrides):
  return {**dict(dataset="salinity", sensor="enmap", protocol="regions",
                 steps_scale=1.0, tiny=False, data_dir="", space="sensor",
                 encoder="mlp", covariates="", transductive=True,
                 paired_fraction=0.4,
                 pair_view="same"), **overrides}


@pytest.mark.parametrize("fraction", [1.0, 0.7, 0.5, 0.1, 0.02])
def test_label_protocol_fractions_are_valid(fraction):
  split = compare.Split("SC.93", test_regions="SC.93")
  config = compare.make_config(_settings(steps_scale=0.5), split, 3,
                               fraction)
  paired = config.data.paired_fraction
  assert paired == pytest.approx(min(0.4, 1 - fraction), abs=1e-6)
  roles.assign_roles(np.linspace(0, 0.999, 50), fraction, paired)  # Valid.
  assert (config.loss.w_distill_pred == 0) == (paired == 0)
  assert config.seed == stages.teacher_config(config).seed == 3
  default = distill.get_config()
  assert config.train.steps == round(default.train.steps * 0.5)
  assert config.teacher.steps == round(default.teacher.steps * 0.5)


def test_variants_switch_what_they_name():
  split = compare.Split("fold1", test_folds="1")
  config = compare.make_config(
      _settings(dataset="soc", tiny=True, transductive=False,
                pair_view="date"), split, 0, 0.1)
  config.compare = ml_collections.ConfigDict(compare.VARIANTS)
  built = {stage.name: stage.config
           for stage in stages.plan(config, lab_grid.visnir()).students}
  assert all(not c.data.transductive and c.data.pair_view == "date"
             for c in built.values())
  assert built["dann"].loss.align_to == "self" and (
      built["dann"].loss.w_regression == 0 and built["dann"].loss.w_source)
  assert built["dann_labels"].loss.w_regression == 1
  assert built["finetune"].model.init_from_teacher and not built[
      "plain"].model.init_from_teacher
  assert built["coral"].loss.alignment == "coral"
  assert built["adversarial"].loss.alignment == "adversarial"
  assert not built["no_sau"].model.use_sau
  assert built["no_align"].loss.w_alignment == 0
  assert built["fade_distill_pred"].loss.distill_pred_fade == 0.5
  assert built["student"].data.test_folds == "1"
  # Every method the report can name is described.
  assert set(compare.METHODS) <= set(descriptions.DESCRIPTIONS)
  with pytest.raises(ValueError, match="unknown regions"):
    compare.make_splits("regions", ["Atlantis"], [], ("SC.93",))
  with pytest.raises(ValueError, match="folds 1..10"):
    compare.make_splits("folds", [], ["0"], ())


@pytest.mark.slow
def test_speed_measures_positive_throughput():
  config = distill.get_config("compare=none,candidates=none,tiny")
  mesh = sharding.make_mesh()
  bands = sensors.builtin("prisma").good.size
  row = speed.measure_inference(config, "prisma", 64, mesh)
  assert row["bands"] == bands and row["spectra_per_s"] > 0
  assert row["compiled_mib"] > 64 * bands * 4 / 2**20  # At least the input.
  row = speed.measure_training(config, "enmap", "teacher", 8, 2, mesh)
  assert row["bands"] == 180 and row["spectra_per_s"] > 0
  # XLA counts the dense layers' FLOPs: at least 2 x in x out per spectrum.
  encoder = config.model.encoder
  assert row["flops_per_spectrum"] > 2 * sensors.builtin(
      "enmap").good.size * encoder.features
  profile = speed.stream_profile(config, "enmap", 8, 2, mesh)
  assert [r["streams"] for r in profile] == [
      name for name, _ in speed.STREAM_TERMS]
  # Each stream adds work.
  flops = [r["flops_per_spectrum"] for r in profile]
  assert flops[0] < flops[1] < flops[2]
  option = "encoder=transformer,distill=layers,head=bounded"
  options = speed.option_costs("enmap", 8, 1, mesh, ("", option), tiny=True)
  assert [r["option"] for r in options] == ["defaults", option]
  assert all(r["student_ms_per_step"] > 0 for r in options)
  text = speed.markdown({"device": "cpu", "backend": "cpu",
                         "training": [row], "streams": {"mlp": profile},
                         "options": options, "inference": [],
                         "inference_encoder": "mlp"})
  assert "| mlp | teacher | 180 | 8 |" in text and "+ paired" in text
  loop = {"sensor": "enmap", "batch_size": 64, "loop_steps_per_s": 90.0,
          "jitted_steps_per_s": 100.0, "ratio": 0.9}
  assert "| 90.0 | 100.0 | 90% |" in speed.markdown(
      {"device": "cpu", "backend": "cpu", "training": [], "streams": {},
       "options": [], "inference": [], "inference_encoder": "mlp",
       "loop": loop})
  assert f"| {option} | student |" in text
  # The transformer costs more FLOPs than the tiny mlp.
  assert (options[1]["student_flops_per_spectrum"] >
          options[0]["student_flops_per_spectrum"])


def test_coral_ridge_learns_the_source_law_when_domains_agree():
  """Target drawn like the source: CORAL has nothing to move, so CORAL +
  ridge recovers the linear law as ridge does."""
  from deepsalt_jax import baselines
  rng = np.random.default_rng(0)
  mixing, weights = rng.normal(size=(5, 20)), rng.normal(size=5)
  z_source, z_target = rng.normal(size=(400, 5)), rng.normal(size=(300, 5))
  noise = lambda n: 0.01 * rng.normal(size=(n, 20))
  x_source, x_target = z_source @ mixing + noise(400), (z_target @ mixing +
                                                        noise(300))
  y_target = z_target @ weights
  pred = baselines.coral_ridge(x_source, z_source @ weights,
                               x_target)(x_target)
  assert metrics.regression_metrics(y_target, pred)["r2"] > 0.95


def _two_domains(rng, n: int, bands: int = 30):
  """Lab spectra of rank 5 plus a little noise; y linear in the latents."""
  mixing, weights = rng.normal(size=(5, bands)), rng.normal(size=5)
  z = rng.normal(size=(n, 5))
  return z @ mixing + 0.01 * rng.normal(size=(n, bands)), z @ weights


def test_ds_undoes_a_known_affine_map_between_the_domains():
  """Pixels are an affine image of the lab spectra: DS maps them back, so
  PLSR on the lab library predicts them; applied as they are, it does not."""
  from deepsalt_jax import baselines
  rng = np.random.default_rng(0)
  lab, y = _two_domains(rng, 700)
  affine = rng.normal(size=(30, 30)) / np.sqrt(30)
  pixels = lab @ affine + rng.normal(size=30)
  library, pairs, test = slice(0, 300), slice(300, 500), slice(500, 700)
  pred = baselines.ds(lab[library], y[library], pixels[pairs],
                      lab[pairs])(pixels[test])
  assert metrics.regression_metrics(y[test], pred)["r2"] > 0.99
  plain = baselines.plsr(lab[library], y[library])(pixels[test])
  assert metrics.regression_metrics(y[test], plain)["r2"] < 0.5


def test_epo_projects_out_a_known_interference_subspace():
  """Pixels = lab spectra + a strong random mix of two interfering spectra.
  EPO finds and removes their span from the pairs, so PLSR on the clean
  library predicts the interfered pixels; plain PLSR does not."""
  from deepsalt_jax import baselines
  rng = np.random.default_rng(0)
  lab, y = _two_domains(rng, 700)
  interference = rng.normal(size=(2, 30))
  pixels = lab + rng.normal(size=(700, 2)) * 10 @ interference
  projection = baselines.epo_projection(pixels[300:500] - lab[300:500], 2)
  np.testing.assert_allclose(interference @ projection, 0, atol=0.05)
  # The library, then 60 labelled pixels of 4 groups to choose by.
  x = np.concatenate([lab[:300], pixels[640:]])
  pixel = np.arange(360) >= 300
  groups = np.concatenate([np.arange(300) % 4, np.arange(60) % 4])
  model = baselines.epo(x, np.concatenate([y[:300], y[640:]]), pixel, groups,
                        pixels[300:500], lab[300:500], max_dims=4)
  test = slice(500, 640)
  assert metrics.regression_metrics(y[test], model(pixels[test]))["r2"] > 0.95
  plain = baselines.plsr(lab[:300], y[:300])(pixels[test])
  assert metrics.regression_metrics(y[test], plain)["r2"] < 0.5


def test_plsr_path_errors_match_refitted_plsr():
  """The components' inner CV from one kernel-PLS pass per fold gives the
  errors of a PLSR refitted with each number of components."""
  from sklearn.cross_decomposition import PLSRegression
  from sklearn.model_selection import KFold
  from deepsalt_jax import baselines
  rng = np.random.default_rng(0)
  x, y = _two_domains(rng, 80)
  splits = list(KFold(4, shuffle=True, random_state=0).split(x))
  errors = baselines._path_errors(x, y, splits, 6)  # pylint: disable=protected-access
  for k in (1, 3, 6):
    refit = sum(np.sum((PLSRegression(k, scale=False).fit(x[fit], y[fit])
                        .predict(x[held]).ravel() - y[held]) ** 2)
                for fit, held in splits)
    assert errors[k - 1] == pytest.approx(refit, rel=1e-9)


@pytest.mark.slow
def test_realism_statistics_known_answers():
  from benchmarks import realism
  wavelength = np.array([500.0, 600.0, 700.0, 860.0, 900.0, 1000.0])
  flat = np.full((3, 6), 0.2)
  stats = realism.statistics(flat, wavelength)
  assert stats == {"n": 3, "median_860nm": 0.2, "p95_860nm": 0.2,
                   "median_roughness": 0.0}
  zigzag = np.array([[0.2, 0.3, 0.2, 0.3, 0.2, 0.3]])  # 500-900 nm: 5 bands.
  # |0.2 - 0.6 + 0.2| = 0.2 and |0.3 - 0.4 + 0.3| = 0.2; mean(x) = 0.24.
  assert realism.statistics(zigzag, wavelength)["median_roughness"] == (
      pytest.approx(0.2 / 0.24))
  rng = np.random.default_rng(0)
  same = rng.uniform(0.1, 0.3, (400, 6))
  assert 0.35 < realism.separability(same[:200], same[200:]) < 0.65
  assert realism.separability(same[:200], same[200:] * [1, 1, 3, 1, 1, 1]
                              ) > 0.95


def test_seed_ensembles_average_each_networks_seeds_per_split():
  from benchmarks import report
  target, region = np.array([1.0, 2.0, 3.0]), np.zeros(3, int)
  runs = [report.Run("a", seed, 0.05, target, region,
                     {"student": target + offset, "plsr": target}, 1.0)
          for seed, offset in ((0, 1.0), (1, -1.0))]
  ensemble_runs, names = report.seed_ensembles(runs, ["student", "plsr"])
  assert names == ["student (seed ensemble)"]
  np.testing.assert_array_equal(
      ensemble_runs[0].preds["student (seed ensemble)"], target)
  assert report.seed_ensembles(runs[:1], ["student"]) == ([], [])


def test_mapping_speeds_calibrations_are_of_the_difficulty_it_times():
  from benchmarks import mapping_speed
  from deepsalt_jax import calibration
  from deepsalt_jax import predict
  pred, spread = np.array([1.0, 5.0]), np.array([0.05, 0.5])
  for difficulty in ("constant", "head_mc", "full_mc", "members"):
    fitted = mapping_speed._made_up_calibration("log1p", difficulty)
    assert fitted["difficulty"] == difficulty
    assert fitted["mc_mode"] == {"head_mc": "head", "full_mc": "full"}.get(
        difficulty, "")
    assert calibration.for_spread(fitted, predict.MC_SAMPLES)[0] is fitted
    lower, upper = calibration.interval(fitted, pred, spread)
    assert (lower < pred).all() and (upper > pred).all()
    # A scaled interval is wider in log space where the spread is larger.
    widths = np.log1p(upper) - np.log1p(lower)
    assert (widths[1] > widths[0] + 1e-3) == (difficulty != "constant")


def test_the_soc_ceiling_refits_without_each_fold():
  from benchmarks import soc_ceiling
  from deepsalt_jax import baselines
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 8))
  y = x @ rng.normal(size=8)
  folds = np.arange(60) % 5
  seen = []

  def fit(x_train, y_train):
    seen.append(len(x_train))
    return baselines.plsr(x_train, y_train)

  assert soc_ceiling.cross_validated_r2(x, y, folds, fit) > 0.99
  assert seen == [48] * 5  # Each fit without its fold's 12 rows.
  # A target the spectra do not hold: no skill out of fold.
  assert soc_ceiling.cross_validated_r2(
      x, rng.normal(size=60), folds, baselines.plsr) < 0.1


def test_intervals_pool_coverage_per_split_and_reliability_over_units():
  from benchmarks import interval_summary
  from benchmarks import report
  target, region = np.zeros(2), np.zeros(2, int)

  def unit(n, coverage, bins):
    return {"overall": {"n": n, "coverage": coverage, "interval_score": 1.0,
                        "reliability": [{"p": [0.8, 0.9], "n": b[0],
                                         "mean_p": b[1], "exceeded": b[2]}
                                        for b in bins]}}

  runs = [report.Run("a", 0, 0.05, target, region, {}, 1.0,
                     {"student": unit(10, 0.5, [(20, 0.85, 0.5)])}),
          report.Run("a", 1, 0.05, target, region, {}, 1.0,
                     {"student": unit(30, 1.0, [(20, 0.85, 1.0)])}),
          report.Run("b", 0, 0.05, target, region, {}, 1.0,
                     {"student": unit(40, 0.9, [])})]
  judged = interval_summary.per_method(runs)["student"]
  assert judged["coverage_by_split"] == pytest.approx({"a": 0.875, "b": 0.9})
  assert judged["pooled_coverage"] == pytest.approx(0.875 * 0.5 + 0.9 * 0.5)
  # Two bins of 20 (neither counts alone) pool into one of 40.
  [pooled] = judged["pooled_reliability"]
  assert pooled.pop("p") == [0.8, 0.9]
  assert pooled == pytest.approx({"n": 40, "mean_p": 0.85, "exceeded": 0.75})
  assert judged["pooled_reliability_gap"] == pytest.approx(0.1)


def test_margins_say_where_one_sample_decides_a_regions_r2():
  from benchmarks import report
  # Region 0: one saline sample among low ones; region 1: spread evenly.
  target = np.array([1.0, 1.0, 1.0, 1.0, 21.0, 1.0, 2.0, 3.0, 4.0, 5.0])
  region = np.array([0] * 5 + [1] * 5)
  runs = [report.Run("both", 0, 0.05, target, region, {}, 1.0)]
  shares = report.largest_shares(runs, ["salt", "even"])
  assert shares == pytest.approx({"salt": 0.8, "even": 0.4})
  scores = {"selected": {"salt": {"r2": 0.6, "r2_log": 0.7},
                         "even": {"r2": 0.8, "r2_log": 0.5}},
            "plsr_lab": {"salt": {"r2": 0.9, "r2_log": 0.3},
                         "even": {"r2": 0.5, "r2_log": 0.4}},
            "pooled_mlp": {"salt": {"r2": 0.2, "r2_log": 0.6},
                           "even": {"r2": 0.6, "r2_log": 0.6}}}
  margins = report.margins(scores, ["selected", "plsr_lab", "pooled_mlp"],
                           shares)
  assert margins["salt"] == pytest.approx(
      {"peer": "plsr_lab", "peer_r2": 0.9, "margin": -0.3,
       "largest_share": 0.8, "peer_log": "pooled_mlp", "margin_log": 0.1})
  assert margins["even"]["margin_log"] == pytest.approx(-0.1)
  lines = report.verdicts({}, ["selected"], scores, margins)
  assert any(line.startswith("one sample holds most of the sum of squares "
                             "in salt (80%)")
             for line in lines)
  assert not any("even (" in line for line in lines)


def test_candidate_replay_scores_regions_over_their_seeds():
  from benchmarks import candidate_replay
  target = np.linspace(1.0, 10.0, 20)

  def unit(pred, peer):
    return {"test": {"target": target, "pred": pred, "finetune": peer}}

  # Region a: what ships exact in seed 0 (R² 1) and the targets' mean in
  # seed 1 (R² 0), so 0.5; the peer the mean in both (0). Region b the
  # other way round.
  mean = np.full(20, target.mean())
  units = {("a", "seed0"): unit(target, mean),
           ("a", "seed1"): unit(mean, mean),
           ("b", "seed0"): unit(mean, target)}
  scores = candidate_replay.region_scores(units, "finetune")
  assert list(scores) == ["a", "b"]
  np.testing.assert_allclose(scores["a"], (0.5, 0.0), atol=1e-12)
  np.testing.assert_allclose(scores["b"], (0.0, 1.0), atol=1e-12)


def test_the_calibration_bound_pools_other_regions_and_splits_by_class():
  from benchmarks import calibration_bound
  # Other regions' held-out samples: predicted 1 dS/m (FAO class 0) exactly
  # right, predicted 5 dS/m (class 2) off by ±0.5 in log1p, half each way.
  n = 40
  pred = np.r_[np.full(n, 1.0), np.full(n, 5.0)]
  target = np.expm1(np.log1p(pred) + np.r_[np.zeros(n),
                                           np.tile([-0.5, 0.5], n // 2)])

  def unit(region, seed):
    test = {"pred": pred, "target": target, "spread": np.ones(2 * n),
            "blocks": np.zeros(2 * n), "region": np.full(2 * n, region)}
    return {"test": test, "validation": test}

  units = {(r, s): unit(r, s) for r in ("a", "b", "c") for s in ("seed0",
                                                                 "seed1")}
  pool = calibration_bound._pool(units, ("a", "seed0"), per_region=30)
  assert sorted(set(pool["region"])) == ["b", "c"] and pool["pred"].size == 60
  pool = calibration_bound._pool(units, ("a", "seed0"), per_region=1000)
  held = {"test": {"pred": np.array([1.0, 5.0])}}
  split = calibration_bound.predictive("other regions, per class", held,
                                       pool, threshold=4.0)
  # Class 0 learns its own errors (none); class 2 its ±0.5; P(EC > 4) of
  # a 5 dS/m prediction: half its errors reach below log1p(4).
  np.testing.assert_allclose(split["lower"], [1.0, np.expm1(np.log1p(5) -
                                                            0.5)], rtol=1e-5)
  np.testing.assert_allclose(split["upper"], [1.0, np.expm1(np.log1p(5) +
                                                            0.5)], rtol=1e-5)
  np.testing.assert_allclose(split["p"], [0.0, 0.5])
  # Pooled, both predictions get the same interval in log1p.
  pooled = calibration_bound.predictive("other regions", held, pool, 4.0)
  np.testing.assert_allclose(np.log1p(pooled["upper"]) - np.log1p(held[
      "test"]["pred"]), 0.5, rtol=1e-5)


@pytest.mark.slow
def test_mir_teacher_folds_never_leak(tmp_path, monkeypatch):
  """One MIR set, two folds, a tiny teacher started as PLSR: the
  benchmark's PLSR (components by its inner CV), the teacher and its PLSR
  start see only the other folds; every output is written."""
  from benchmarks import mir_teacher
  from data_prep import sources
  from deepsalt_jax import baselines
  from deepsalt_jax import train
  plsr_inputs, teacher_data = [], []
  plsr, train_plan = baselines.plsr, train.train_plan
  monkeypatch.setattr(baselines, "plsr", lambda x, y, **kw: (
      plsr_inputs.append(x), plsr(x, y, **kw))[1])
  monkeypatch.setattr(train, "train_plan", lambda plan, data, *args: (
      teacher_data.append(data), train_plan(plan, data, *args))[1])
  result = mir_teacher.run_benchmark(tmp_path, sets=["O.32"],
                                     targets=["SOC"], folds=[1, 2],
                                     tiny=True, teacher_start="plsr")
  mir = sources.limesoda_mir("O.32")
  # Per fold the benchmark's PLSR, the teacher's PLSR start and that start
  # refitted with the validation rows (what a kept start stands for).
  assert len(plsr_inputs) == 3 * len(teacher_data) == 6
  same = lambda x, y: x.shape == y.shape and np.allclose(x, y)
  for k, data in zip((1, 2), teacher_data):
    held_out = mir.spectra[mir.fold == k]
    fitted = [x for x in plsr_inputs
              if same(x, mir.spectra[mir.fold != k])
              or same(x, data.lab[data.train])]
    assert len(fitted) == 3
    for x in fitted:
      assert not (x[:, None, :] == held_out[None]).all(-1).any()
    np.testing.assert_array_equal(data.test, mir.fold == k)
    assert data.validation.any() and not (data.validation & data.test).any()
    assert data.lab_grid == mir.grid
    lab = input_pipeline.teacher_streams(data, 8, 0)["lab"].arrays["lab"]
    assert len(lab) == (data.train).sum()
    assert not (lab[:, None, :] == held_out[None].astype(np.float32)).all(
        -1).any()
  (row,) = result["results"]
  assert row["n"] == np.isin(mir.fold, [1, 2]).sum()
  assert set(row["methods"]) == {"plsr", "teacher (mlp)"}
  for method in row["methods"].values():
    assert np.isfinite(method["pooled"]["rmse"])
    assert set(method["per_fold"]) == {"fold1", "fold2"}
  for name in ("results.json", "results.md", "settings.json"):
    assert (tmp_path / name).stat().st_size > 0, name
  assert "| O.32 | SOC |" in (tmp_path / "results.md").read_text()
  saved = tmp_path / "runs" / "O.32" / "SOC" / "mlp" / "fold1"
  assert (saved / "predictions.json").exists()
  assert not (saved / "teacher").exists()  # Checkpoints deleted.


def test_example_maps_judge_the_mapped_pixels_against_the_truth(tmp_path):
  import rasterio
  from benchmarks import example_maps
  from deepsalt_jax.mapping import files
  # Four pixels, the last not mapped; the second's interval misses.
  ec = np.array([[1.0, 2.0], [3.0, files.EC_NODATA]], np.float32)
  bands = np.stack([ec, ec / 2, ec * 2,
                    np.array([[0.0, 0.0], [1.0, files.EC_NODATA]])])
  bands[1:, 1, 1] = files.EC_NODATA
  truth = np.array([[1.0, 5.0], [3.0, 100.0]])
  path = tmp_path / "a_ec.tif"
  with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=4,
                     dtype="float32", nodata=files.EC_NODATA) as ds:
    ds.write(bands.astype(np.float32))
  row = example_maps.judge(str(path), truth,
                          np.array([[False, True], [False, True]]))
  assert row["pixels"] == 3 and row["max EC"] == 3.0
  assert row["outside"] == pytest.approx(1 / 3)
  assert (row["coverage inside"], row["coverage outside"]) == (1.0, 0.0)
  assert row["RMSE log1p inside"] == pytest.approx(0.0, abs=1e-6)
  assert row["RMSE log1p outside"] == pytest.approx(np.log(2))
  assert row["coverage"] == pytest.approx(2 / 3)
  assert row["RMSE"] == pytest.approx(np.sqrt(9 / 3))
  assert row["bias (log1p)"] == pytest.approx(np.log(3 / 6) / 3)
  # Widths 1.5, 3, 4.5 plus 2 / 0.1 x (5 - 4) for the miss.
  assert row["interval score"] == pytest.approx((1.5 + 3 + 4.5 + 20) / 3)
