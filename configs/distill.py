"""DeepSalt student: SAU + encoder (from the teacher) + head on satellite data.

Command (the main job): python launch.py --config=configs/distill.py
Trains the teacher first (into <workdir>/teacher) when no teacher checkpoint
exists, then the student (<workdir>/student) with the combined loss, the
candidate students of `candidates` (the run ships their ensemble; where
validation shows one of them clearly better, that one hedged with it:
`selection.choose`, `choice.json`), then the peers named in `compare`
(default: plain, finetune and dann_labels, the strongest things a user
would train instead, same network and steps), and prints metrics on the
held-out regions.
Variants (`:arg`, comma-separated): dataset=salinity|soc,
sensor=enmap|prisma|emit, alignment=mmd|coral|adversarial,
space=auto|sensor|lab, encoder=mlp|conv|transformer, head=linear|bounded,
distill=final|layers, sau=auto|physics|latent, no_sau, no_distill,
no_distill_pred, fade_distill_pred, no_align, sau_prior, layers, latent,
latent_pretrain, plain, finetune, dann, dann_labels, library,
latent_library, pooled, pair_labels,
compare=<variant>[+<variant>...]|none (peers scored beside the student),
candidates=<variant>[+<variant>...]|none (students validation
chooses among with the default one; default
latent+library+latent_library+pooled), target=potsdam (real EnMAP L2A soil
pixels over Potsdam from $DEEPSALT_REFERENCE_DATA/enmap_potsdam as the
unlabelled domain; EnMAP only), tiny.
Run time: 316 s wall, 439 s CPU on 2 CPU cores with the data built
(measured 2026-12-06: the teacher and candidates train again without each
of three groups of training regions, `calibration_regions=3`, which
choose and calibrate what ships; 111 s and 150 s with
--config.calibration_regions=0, which chooses and calibrates on the
validation blocks).
Expected result on the held-out regions SC.93 + ICRAF South America (703
samples, 5 % of the training pixels labelled), R^2 / RMSE in dS/m, on an
AMD EPYC (the figures depend on the processor; README): teacher on lab
0.858 / 2.09, teacher on pixels 0.515 / 3.85, selected (the regions held
out choose the candidates' ensemble) 0.783 / 2.58 (the blocks choose
latent hedged with it: 0.806 / 2.44), student 0.767 / 2.67, finetune
0.578 / 3.60, plain 0.512 / 3.87, dann_labels 0.525 / 3.82.
"""
from __future__ import annotations

import ml_collections

from configs import common
from deepsalt_jax import choices
from deepsalt_spectral import errors
from deepsalt_spectral import sensors

_NO_TEACHER_TERMS = {"w_reconstruction": 0.0, "w_distill_feature": 0.0,
                     "w_distill_pred": 0.0}
# Each variant is a set of overrides of the full method; it trains as a
# student of its own beside the student (`compare=...`), with the same
# network, steps and data.
VARIANTS = {
    # Ablations of DeepSalt.
    "no_sau": {"model": {"use_sau": False}, "loss": {"w_reconstruction": 0.0}},
    "no_distill": {"loss": {"w_distill_feature": 0.0, "w_distill_pred": 0.0}},
    # The teacher's features distilled, not its predictions: where the
    # teacher's predictions of the pairs are compressed (a saline tail it
    # never saw), the student's head is free to follow the labelled pixels.
    "no_distill_pred": {"loss": {"w_distill_pred": 0.0}},
    # Between the two: the teacher's predictions guide the first half of
    # training and fade out, so the labelled pixels set the tail.
    "fade_distill_pred": {"loss": {"distill_pred_fade": 0.5}},
    "no_align": {"loss": {"w_alignment": 0.0}},
    "sau_prior": {"loss": {"w_sau_prior": 1.0}},
    # Distillation layer by layer, as the DeepSalt authors do.
    "layers": {"loss": {"distill": "layers"}},
    # The latent SAU where physics exists too (what the prior is worth),
    # and with its encoder pretrained as an autoencoder on the pixels.
    "latent": {"model": {"sau": "latent"}},
    "latent_pretrain": {"model": {"sau": "latent"},
                        "loss": {"w_autoencoder": 0.1,
                                 "sau_pretrain_steps": 300}},
    # The library's lab spectra, resampled to the bands, kept in the
    # student's regression beside the labelled pixels.
    "library": {"loss": {"w_source": 1.0}},
    "latent_library": {"model": {"sau": "latent"}, "loss": {"w_source": 1.0}},
    # The teacher kept on the library while it learns the labelled pixels:
    # both pooled, each sample one vote, as the pooled MLP peer does
    # (spiking); no SAU, distillation or alignment. It holds where the
    # library fits a new region better than the pixels of other regions do.
    "pooled": {"model": {"use_sau": False},
               "loss": {**_NO_TEACHER_TERMS, "w_alignment": 0.0,
                        "w_source": 1.0, "source_per_sample": True}},
    # The paired pixels regressed on their lab samples' measured EC too
    # (a neighbour's in the field), beside the teacher's distillation.
    "pair_labels": {"loss": {"w_pair_regression": 1.0}},
    # What a user would pick instead. The network on the labelled pixels
    # alone, from scratch:
    "plain": {"model": {"use_sau": False, "init_from_teacher": False},
              "loss": {**_NO_TEACHER_TERMS, "w_alignment": 0.0}},
    # Pretrained on the lab spectra (the teacher), then fine-tuned on the
    # labelled pixels (validation picks the step):
    "finetune": {"model": {"use_sau": False},
                 "loss": {**_NO_TEACHER_TERMS, "w_alignment": 0.0}},
    # DANN (Ganin et al. 2016): regression on the lab spectra resampled to
    # the bands, gradient reversal against the unlabelled pixels; without
    # and with the labelled pixels.
    "dann": {"model": {"use_sau": False, "init_from_teacher": False},
             "loss": {**_NO_TEACHER_TERMS, "w_regression": 0.0,
                      "w_source": 1.0, "alignment": "adversarial",
                      "align_to": "self"}},
    "dann_labels": {"model": {"use_sau": False, "init_from_teacher": False},
                    "loss": {**_NO_TEACHER_TERMS, "w_source": 1.0,
                             "alignment": "adversarial", "align_to": "self"}},
}


# Layer weights of loss.distill='layers' (DeepSalt's, first block first).
DISTILL_LAYER_WEIGHTS = (1.35, 1.05, 0.65)

# Trained and scored beside the student by the main command: what a user
# would pick instead (the teacher on pixels is the source-only network).
DEFAULT_COMPARE = "plain+finetune+dann_labels"
# Students trained beside the default one; validation picks among their
# ensemble and them all (selection.choose: the "selected (validation)" row,
# and what maps come from).
DEFAULT_CANDIDATES = "latent+library+latent_library+pooled"


def _variants(args: dict[str, str | bool], key: str,
              default: str) -> ml_collections.ConfigDict:
  """The variants `key=<variant>[+<variant>...]|none` names, by name."""
  value = args.get(key, default)
  names = () if value == "none" else tuple(value.split("+"))
  for name in names:
    if name not in VARIANTS:
      raise errors.UserError(f"{key}={name!r} is not one of "
                             f"{', '.join(VARIANTS)}, none.")
  return ml_collections.ConfigDict({name: VARIANTS[name] for name in names})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(
      arg, flags=("tiny",) + tuple(VARIANTS),
      keys={"dataset": choices.DATASETS, "sensor": sensors.SENSORS,
            "alignment": choices.ALIGNMENTS, "compare": None,
            "candidates": None,
            "target": ("potsdam",), "distill": choices.DISTILLATIONS,
            "sau": choices.SAU_MODES, **common.model_args()})
  dataset = args.get("dataset", "salinity")
  sensor = args.get("sensor", "enmap")
  space, encoder = args.get("space", "auto"), args.get("encoder", "mlp")
  head = args.get("head", "linear")

  config = ml_collections.ConfigDict()
  config.job = "distill"
  config.seed = 0
  config.data = common.data_config(dataset, sensor)
  if args.get("target") == "potsdam":
    if sensor != "enmap":
      raise errors.UserError(
          "target=potsdam holds EnMAP scenes: use sensor=enmap.")
    config.data.target_scenes = str(common.reference_data_dir() /
                                    "enmap_potsdam")
  config.model = common.model_config(space, encoder, head, dataset)
  config.model.sau = args.get("sau", "auto")
  config.model.use_sau = True  # False: the physics SAU's fixed start alone.
  config.model.init_from_teacher = True
  config.train = common.train_config(steps=1200, batch_size=64)
  # Trained first, into <workdir>/teacher, unless it is there already.
  config.teacher = common.teacher_config(steps=1200, batch_size=128)
  config.loss = ml_collections.ConfigDict(dict(
      regression="huber",  # Labelled pixels, and the teacher's lab spectra.
      alignment=args.get("alignment", "mmd"),
      # Align the student's pixel features with the teacher's lab features
      # ('teacher'), or with its own on the resampled lab spectra ('self',
      # as a DANN does).
      align_to="teacher",
      w_regression=1.0,  # Labelled pixels.
      w_source=0.0,  # The library's lab spectra resampled to the bands.
      # w_source per labelled pixel: times the library's samples per
      # labelled pixel, so each sample weighs as much as each pixel.
      source_per_sample=False,
      w_alignment=0.5,
      # What distillation matches: 'final' (the features: MSE) or 'layers'
      # (each encoder block's embedding: SmoothL1, weighted by
      # distill_layer_weights, set below); both add the prediction MSE.
      distill=args.get("distill", "final"),
      w_distill_feature=1.0,
      w_distill_pred=1.0,
      # The fraction of the training steps over which the prediction term
      # fades linearly to 0 (0: it stays): the teacher guides first, the
      # labelled pixels finish.
      distill_pred_fade=0.0,
      w_reconstruction=1.0,  # Physics SAU: its output vs the lab spectrum.
      # Paired pixels vs their lab samples' measured target.
      w_pair_regression=0.0,
      w_sau_prior=0.0,  # Physics SAU: its distance from its start.
      # Latent SAU: InfoNCE of the student's features on paired pixels vs
      # the teacher's on their lab spectra (the authors' temperature).
      w_contrastive=1.0,
      temperature=0.07,
      # Latent SAU: pixels decoded from the encoder's latent (0 = off), and
      # the steps it trains alone first (the encoder's pretraining).
      w_autoencoder=0.0,
      sau_pretrain_steps=0,
  ))
  for name, overrides in VARIANTS.items():
    if args.get(name):
      config.update(overrides)
  config.compare = _variants(args, "compare", DEFAULT_COMPARE)
  config.candidates = _variants(args, "candidates", DEFAULT_CANDIDATES)
  # What ships is chosen and calibrated on the labelled pixels of this many
  # groups of training regions, each predicted by the candidates trained
  # again without it (region_calibration.py; that many more trainings of
  # the teacher and candidates: the main command takes 2.7 times as long),
  # or on the validation blocks (0). Regions no network saw rank and
  # calibrate transfer to a new one; the blocks inside the training
  # regions do not (docs/uncertainty.md, docs/results.md).
  config.calibration_regions = 3 if config.candidates else 0
  if args.get("tiny"):
    common.tiny(config)
    config.calibration_regions = 0  # Seconds: no extra trainings.
  # One weight per encoder block, first block first: the DeepSalt authors'
  # for their 3 blocks, cut to fewer (mlp: 2, tiny: 1).
  config.loss.distill_layer_weights = list(DISTILL_LAYER_WEIGHTS[
      :config.model.encoder.num_blocks])
  return config
