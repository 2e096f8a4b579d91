"""DeepSalt on your own data: a lab library, field points and scenes.

Commands (docs/own_data.md explains them and the fields below):
  python -m data_prep.example_project --out=example
  python launch.py --config=configs/own_data.py \\
      --config.data.project=example --workdir=runs/example
  python launch.py --mode=map --workdir=runs/example --scene=example/scenes
The second builds the project into a prepared dataset (once per settings
and files), runs spatial cross-validation (k-means folds of the points; per
fold the teacher, the student, PLSR, a random forest and the pooled MLP
retrained without the fold's area; per pair of folds the same, for
validation's choice of model nested in each fold: the row "selected
(validation)", docs/own_data.md), trains the final teacher and student on
everything and writes cv.md, cv.json and cv.png into the workdir.
With --config.label_curve=8,16,32 it also retrains the students and peers
on 8, 16 and 32 of each fold's training points (the label curve,
`label_curve`; cv_label_efficiency.png).
Variants (`:arg`): sensor=enmap|prisma|emit (the scenes' sensor),
alignment=mmd|coral|adversarial, and the networks' keys of
configs/distill.py: sau=auto|physics|latent, space=auto|lab|sensor,
encoder=mlp|conv|transformer, head=linear|bounded;
candidates=<variant>[+<variant>...]|none (students of configs/distill.py's
VARIANTS trained beside the default one in every run, for the nested folds
to choose among; default fade_distill_pred); tiny.
A MIR library (cm-1: OPUS files, OSSL MIR, a CSV in wavenumbers) has no
physics route to the sensor's bands: sau=auto takes the latent SAU and
space=auto the lab grid, and sau=physics is refused. The MIR example:
  python -m data_prep.example_project --out=example_mir --library=mir
  python launch.py --config=configs/own_data.py \\
      --config.data.project=example_mir \\
      --config.data.library=library/mir.csv --workdir=runs/example_mir
  (210 s wall on 2 CPU cores, 2026-12-07; pooled R² / RMSE student 0.937
  / 1.56, fade_distill_pred 0.893 / 2.02, PLSR 0.884 / 2.10, selected PLSR
  in every fold).
Run time (example project, 2 CPU cores, measured 2026-12-07): 218 s wall
with the candidate student. The label curve at 8,16,32 adds about 576 s
wall (2.2x the rest). Re-running restores every fold, pair of folds and curve
run.
Expected result (example project, pooled out-of-fold, 56 labelled pixels
of 64 points, ECe in dS/m; AMD EPYC, the students correcting PLSR),
R² / RMSE / class kappa: selected (validation: PLSR in every fold)
0.884 / 2.10 / 0.614, student 0.949 / 1.40 / 0.648, fade_distill_pred
0.940 / 1.51 / 0.641, teacher on resampled pixels 0.563 / 4.09 / 0.424,
PLSR 0.884 / 2.10 / 0.614, random forest 0.082 / 5.92 / 0.453, pooled
MLP 0.672 / 3.54 / 0.591 (docs/results.md says where PLSR still wins:
R² of log EC, 0.927 against the student's 0.922); validation prefers
PLSR for the final model, which makes the maps.
Label curve (8,16,32), R² / R² of log EC / kappa (mean of 3 draws): at 8
points per fold student 0.14 / 0.44 / 0.35, PLSR -0.05 / 0.15 / 0.17,
pooled MLP 0.59 / 0.76 / 0.44; from 16 points the student leads every
column.
"""
from __future__ import annotations

import ml_collections

from configs import common
from configs import distill
from deepsalt_jax import choices
from deepsalt_spectral import sensors


def _unset() -> ml_collections.FieldReference:
  """An unset optional number (one per field: a shared one links them)."""
  return ml_collections.config_dict.placeholder(float)


def data_config(sensor: str) -> ml_collections.ConfigDict:
  """The project's files and how they become samples (paths relative to
  `project`)."""
  return ml_collections.ConfigDict(dict(
      name="own",
      project="",  # The project folder (required).
      sensor=sensor,  # Built-in sensor the scenes are brought to.
      data_dir="",  # '' = $DEEPSALT_DATA_DIR or ~/.cache/deepsalt_jax/tfds.
      # Lab spectra with EC: an ENVI library (.sli + .hdr) with a metadata
      # CSV keyed by spectrum name, a CSV with one column per wavelength (nm)
      # or wavenumber (cm-1), a folder of LUCAS topsoil / OSSL (vis-NIR or
      # MIR) tables, or a folder of Bruker OPUS files (their absorbance, AB)
      # with a metadata CSV keyed by file name less its number ('S12.0' ->
      # 'S12'). A vis-NIR library (nm) is resampled to the benchmark's
      # 180-band grid and must cover the sensor; a MIR one (cm-1) keeps its
      # instrument's grid and quantity. The dataset's metadata 'lab_grid'
      # states which.
      library="library/library.sli",
      # auto (from the name: .sli, .csv), envi, csv, lucas, ossl, opus.
      library_format="auto",
      # CSV: the spectral columns' unit, nm or cm-1; '' = nm up to 2500,
      # cm-1 when beyond and in decreasing order (as FTIR exports are),
      # else asked for. OSSL: which scan table, nm (vis-NIR) or cm-1 (MIR);
      # '' = the one in the folder.
      library_unit="",
      # CSV: reflectance (fraction or percent) or absorbance (log10(1/R));
      # '' = reflectance in nm, absorbance in cm-1.
      library_quantity="",
      # ENVI, OPUS: the metadata CSV; CSV: EC in another file ('' = same).
      library_metadata="library/library.csv",
      # Column names ('' = sample_id/name/id, ec/ECe, lat, lon): ENVI, CSV,
      # OPUS.
      library_columns=dict(sample_id="", ec="", lat="", lon=""),
      library_ec_units="dS/m",
      library_ec_method="",  # '' = ec_method.
      # Library EC x factor = ec_method EC, required when the methods
      # differ, with the publication or calibration it comes from.
      ec_conversion=dict(factor=_unset(), source=""),
      # Field points: CSV (lon/lat, or x/y in points_crs) or GeoJSON.
      points="points.csv",
      points_crs="EPSG:4326",
      points_columns=dict(lon="", lat="", x="", y="", ec="", sample_id=""),
      points_ec_units="dS/m",
      # ECe (saturated paste), EC1:5, EC1:2.5 or EC1:2; every output names
      # it. FAO salinity classes are reported for ECe only.
      ec_method="ECe",
      max_ec=200.0,  # EC (dS/m) above this is refused as wrong units.
      scenes="scenes",  # A folder of scenes of one sensor (or one file).
      # A point's pixel, and every pixel a map predicts: the mean of the
      # soil pixels in window x window around it.
      window=3,
      # A library sample pairs with the nearest soil pixel centre within
      # this distance; unset = half a pixel's diagonal (the pixel it is in).
      pair_max_distance_m=_unset(),
      unlabelled_pixels=3000,  # Bare-soil pixels sampled over all scenes.
      # Soil masks of points and unlabelled pixels: water below NDRBI -0.2
      # (white salt crusts sit near 0), green vegetation above NDVI 0.3.
      # Maps take --mapping.* (deepsalt_jax/mapping/options.py).
      masks=dict(ndvi_max=0.3, ndrbi_min=-0.2, ncai_max=_unset()),
      band_tolerance_nm=2.0,  # A scene band this close is the sensor's.
      min_coverage=0.9,  # SRF support needed to resample the others.
      folds=5,  # Spatial cross-validation folds (k-means of the points).
      # Points held out (another fold's area) to pick each network's step
      # and calibrate its uncertainty; 0: the last step, and every point
      # trains the final student (its interval is calibrated on the
      # cross-validation's out-of-fold predictions instead).
      validation_fraction=0.0,
      validation_seed=0,
      transductive=True,  # A held-out fold's unlabelled pixels feed alignment.
      target_transform="log1p",
      # Ancillary covariates (comma-separated column names, '' = none):
      # numeric columns of the points table and of the library's table (the
      # metadata CSV, or the library CSV itself), read by the student and
      # the teacher; empty cells are imputed with the training mean. Maps
      # read them from rasters (--mapping.covariate_rasters).
      covariates="",
  ))


# Students trained beside the default one in every fold and pair of folds;
# the nested folds choose among them, the local models and their stack
# (deepsalt_jax/model_choice.py). Each adds a student's training to every
# run. On the example the teacher's predictions of the pairs are compressed
# (4-15 dS/m on the salt pan's pixels, 8-37 measured), which the default
# student distils; whether a project prefers a student that follows them
# only at first is the nested folds' question, not a default's (on two
# other generated projects it is worse; docs/results.md). It scored above
# no_distill_pred in kappa on 5 of 6 projects and seeds, in R² on 4.
DEFAULT_CANDIDATES = "fade_distill_pred"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, flags=("tiny",),
                          keys={"sensor": sensors.SENSORS,
                                "alignment": choices.ALIGNMENTS,
                                "sau": choices.SAU_MODES, "candidates": None,
                                **common.model_args()})
  sensor = args.get("sensor", "enmap")
  # The networks' keys and the candidates go to the distill config as given.
  networks = [f"{key}={args[key]}" for key in ("sau", *common.model_args())
              if key in args]
  config = distill.get_config(",".join(
      [f"sensor={sensor}", f"alignment={args.get('alignment', 'mmd')}",
       "compare=none",
       f"candidates={args.get('candidates', DEFAULT_CANDIDATES)}", *networks]
      + (["tiny"] if args.get("tiny") else [])))
  config.job = "cross_validation"
  config.data = data_config(sensor)
  # The spatial folds choose and calibrate (model_choice.py), not regions.
  config.calibration_regions = 0
  # How many field points: the label-efficiency curve, opt-in (on the
  # example it costs 2.2x the rest of the command). Comma-separated numbers
  # of field points, e.g. '8,16,32'; '' = no curve. Each outer fold's
  # training points are subsampled to each size (3 seeded, nested draws; a
  # size not below every fold's training points is skipped) and the
  # student, PLSR, the random forest and the pooled MLP retrained on them;
  # cv.md, cv.json and cv_label_efficiency.png show them beside every
  # point's row. A re-run that adds it to a finished workdir trains only
  # the curve's runs.
  config.label_curve = ""
  config.teacher.covariates = True
  # Within one area PLSR on the labelled pixels extrapolates in log EC where
  # the teacher's predictions, distilled, saturate (the example's salt
  # pan): the students correct PLSR (docs/results.md, "The students correct
  # PLSR"). A bounded head (head=bounded) bounds the network alone.
  config.model.student_path = ("plsr" if config.model.head == "linear"
                               else "trained")
  if args.get("tiny"):
    config.data.update(unlabelled_pixels=200, folds=2)
  else:
    # Six trainings (five folds and the final one) within the time budget.
    # On the example, the benchmark's 1200 steps each with the step picked
    # on 20 % of each fold's points scored lower (pooled R² 0.31 vs 0.52).
    config.train = common.train_config(steps=300, batch_size=64)
    config.teacher.update(steps=300, batch_size=128)
  return config
