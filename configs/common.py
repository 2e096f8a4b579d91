"""Pieces shared by the experiment configs: the base config and `:arg` parsing.

A config file is `get_config(arg)`; `arg` is a comma-separated list of
`key=value` settings and bare flags, e.g.
`--config=configs/distill.py:sensor=prisma,alignment=coral,no_sau`.
"""
from __future__ import annotations

import os
import pathlib

import ml_collections

from data_prep import roles
from deepsalt_jax import choices
from deepsalt_spectral import errors

# Held-out regions per dataset: one LimeSoDa set and one ICRAF continent for
# the salinity benchmark, so the headline metrics are on regions whose labels
# and lab spectra no model trains on (leave-region-out; their unlabelled
# pixels join alignment when data.transductive). benchmarks/ rotates over all
# regions.
TEST_REGIONS = {
    "salinity": ("SC.93", "ICRAF South America"),
    "soc": ("SC.93",),
}


def reference_data_dir() -> pathlib.Path:
  """Real reference files (../shared/data beside the repository)."""
  return pathlib.Path(os.environ.get(
      "DEEPSALT_REFERENCE_DATA",
      pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"))


def parse_arg(arg: str | None, flags: tuple[str, ...],
              keys: dict[str, tuple[str, ...] | None]
              ) -> dict[str, str | bool]:
  """Parses `a=b,flag` into a dict; unknown names are an error, not ignored.

  `keys` maps each key to its valid values (None: any value).
  """
  out: dict[str, str | bool] = {}
  for item in filter(None, (arg or "").split(",")):
    name, sep, value = item.partition("=")
    name = name.strip()
    if not sep:
      if name not in flags:
        raise errors.UserError(
            f"Unknown config flag {name!r}; valid flags: "
            f"{', '.join(flags)} and keys {', '.join(keys)}.")
      out[name] = True
      continue
    if name not in keys:
      raise errors.UserError(f"Unknown config key {name!r}; valid keys: "
                             f"{', '.join(keys)}.")
    if keys[name] is not None and value not in keys[name]:
      raise errors.UserError(f"{name}={value!r} is not one of "
                             f"{', '.join(keys[name])}.")
    out[name] = value
  return out


def data_config(name: str = "salinity", sensor: str = "enmap"
                ) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name=name,
      sensor=sensor,
      data_dir="",  # '' = $DEEPSALT_DATA_DIR or ~/.cache/deepsalt_jax/tfds.
      test_regions=",".join(TEST_REGIONS[name]),
      # LimeSoDa folds (1..10) held out in every set, e.g. '3'; '' = none.
      test_folds="",
      # Of satellite samples in training regions: 5 % for salinity; 20 % for
      # SOC, whose LimeSoDa sets are small (5 % of a 93-sample set is 4
      # samples, too few for any per-set baseline).
      labelled_fraction=(roles.LABELLED_FRACTION if name == "salinity"
                         else 0.2),
      # Samples with both a lab spectrum and a pixel (default 40 %).
      paired_fraction=roles.PAIRED_FRACTION,
      # What a pair's pixel is: 'same' (the sample's own), 'neighbour' (a
      # pixel 1-2 away) or 'date' (another acquisition); see
      # data_prep/satellite_view.pair_views.
      pair_view="same",
      # Of the labelled samples: held out of training, in whole spatial
      # blocks, to pick each network's best step (and calibrate its
      # uncertainty). 0 = none: the last step is kept.
      validation_fraction=0.2,
      validation_seed=0,
      # Unlabelled pixels of the held-out regions join the alignment stream
      # (their labels and lab spectra are never used): a user mapping a new
      # region always has its scene.
      transductive=True,
      # A folder of real scenes of `sensor`: their bare-soil pixels become
      # the unlabelled stream instead of simulated pixels ('' = none).
      target_scenes="",
      target_transform="log1p" if name == "salinity" else "identity",
      # Ancillary covariates fed beside the spectra, comma-separated ('' =
      # none): of the dataset's (salinity: clay,soc; soc: clay), measured
      # for LimeSoDa, missing for ICRAF (imputed; models/covariate_branch.py).
      covariates="",
  ))


# Encoder settings by kind (docs/results.md measures them); the
# transformer's are the DeepSalt authors' (64 wide, 3 blocks, 4 heads).
_ENCODER_SIZES = {"mlp": dict(features=256, num_blocks=2),
                  "conv": dict(features=64, num_blocks=3),
                  "transformer": dict(features=64, num_blocks=3)}
# The bounded head's range by dataset, in target units: EC as the DeepSalt
# authors bound it (0.05 + 76.95 sigmoid, dS/m); none known for SOC. Lists:
# a run's config.json reads them back as lists.
HEAD_BOUNDS = {"salinity": [0.05, 77.0], "soc": []}


def model_config(space: str = "auto", encoder: str = "mlp",
                 head: str = "linear", dataset: str = "salinity"
                 ) -> ml_collections.ConfigDict:
  """The student's network; the teacher is the same network (without the
  SAU), which the student starts from."""
  return ml_collections.ConfigDict(dict(
      # Where the teacher reads spectra: 'sensor' (lab spectra resampled
      # forward to the sensor's nominal bands; the SAU starts from the
      # identity), 'lab' (the lab grid; the SAU starts from the physics
      # inverse) or 'auto' (sensor where the lab grid resamples to the
      # sensor, as the built-in vis-NIR grid does; else lab: MIR).
      space=space,
      # The spectral encoder and regression head
      # (deepsalt_jax/models/encoder.py).
      encoder=dict(
          # 'mlp' (MLPEncoder), 'conv' (SpectralEncoder) or 'transformer'
          # (TransformerEncoder).
          kind=encoder,
          # Layer width (mlp), token width (conv, transformer); the
          # embedding size.
          features=_ENCODER_SIZES[encoder]["features"],
          # Dense layers (mlp), residual blocks (conv), transformer blocks;
          # one embedding each for loss.distill='layers'.
          num_blocks=_ENCODER_SIZES[encoder]["num_blocks"],
          kernel_size=7,  # Conv kernel in bands (stem) and tokens (blocks).
          # Bands per token (transformer: the fewest; more on long grids).
          stem_stride=4,
          # Attention-pooling heads, 0 = mean pooling (conv); self-attention
          # heads (transformer).
          num_heads=4,
          mlp_ratio=2,  # Token MLP width, in multiples of features.
          dropout=0.1,
          head_hidden=64,  # Width of the regression head.
      ),
      # How the student reaches the teacher
      # (deepsalt_jax/models/from_config.py): 'physics' (the SRF inverse,
      # or the identity in sensor space, plus learned gain/offset/residual;
      # needs a lab grid in nm reflectance covering the sensor), 'latent'
      # (an encoder on the pixel projected into the teacher's feature space,
      # aligned on pairs; any lab grid, MIR included) or 'auto' (physics
      # where the lab grid allows it).
      sau="auto",
      # The head's output: 'linear', or 'bounded' to head_bounds (low, high)
      # in target units (dS/m for EC) through a sigmoid, trained in the
      # target transform's space (encoder.RegressionHead).
      head=head,
      head_bounds=list(HEAD_BOUNDS[dataset]),
      # A linear path from the encoder's input to the output, beside the
      # network (encoder.LinearPath): a trend in the target transform's
      # space (log EC) that extrapolates beyond the labelled range, where
      # the network alone flattens (docs/results.md measures it). Linear
      # head only: a bounded head would no longer bound.
      linear_path=head == "linear",
      # Where the teacher starts: 'network' (the linear path at zero) or
      # 'plsr' (the path at PLSR's coefficients on its training spectra, the
      # head's output at zero, and a later step must beat that start on
      # validation beyond the noise; a start that is kept is refitted with
      # the validation spectra, a step that beats it is kept as the mean of
      # the two). 'plsr' holds a MIR teacher near PLSR where
      # a network alone fails (benchmarks/mir_teacher), but its students
      # scored lower on the MIR example and on SOC, and the salinity
      # teacher lower (docs/results.md): not the default.
      teacher_start="network",
      # The student's linear path: 'trained' (the teacher's path, trained
      # on with the network) or 'plsr' (PLSR's fit to the labelled training
      # pixels, fixed; the network learns a correction of it, held after
      # training to the range it takes on those pixels, so the prediction
      # follows PLSR's trend in log EC beyond them:
      # encoder.PlsrPath; docs/results.md). Own data's default.
      student_path="trained",
      # Curvature penalty of the SAU's physics start
      # (deepsalt_spectral.resampling.inverse_matrix).
      sau_ridge=1e-2,
  ))


def train_config(steps: int, batch_size: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      steps=steps,
      batch_size=batch_size,  # Global, per stream; divisible by devices.
      learning_rate=2e-3,
      warmup_steps=min(100, steps // 10),
      weight_decay=1e-4,
      grad_clip=1.0,
      # What training makes is the exponential moving average of the
      # parameters with this decay (0: the last step's): validation
      # scores it and runs restore it (train.average_params).
      average_decay=0.99,
      log_every=50,
      eval_every=50,  # Score on the validation samples, keep the best step.
      checkpoint_every=500,
      keep_checkpoints=2,
      eval_batch_size=1024,
  ))


def teacher_config(steps: int, batch_size: int,
                   covariates: bool = False) -> ml_collections.ConfigDict:
  """The teacher of a student job: what it does not share with the student.

  It learns from the lab spectra of the student's data, with the student's
  model, seed, optimizer settings and loss.regression.
  """
  return ml_collections.ConfigDict(dict(
      steps=steps,
      batch_size=batch_size,  # Lab spectra per step, global.
      # Whether it reads data.covariates too (else none): a teacher without
      # them serves students with and without them alike.
      covariates=covariates,
  ))


def scale_steps(config: ml_collections.ConfigDict, scale: float) -> None:
  """Multiplies the training steps (the teacher's too) by `scale` (at least
  2) in place, with the log, evaluation and warmup intervals kept within
  the run."""
  scaled = lambda steps: max(2, round(steps * scale))
  train = config.train
  steps = scaled(train.steps)
  train.update(steps=steps, log_every=min(train.log_every, steps),
               eval_every=min(train.eval_every, steps),
               warmup_steps=min(train.warmup_steps, max(1, steps // 10)))
  if "teacher" in config:
    config.teacher.steps = scaled(config.teacher.steps)


def model_args() -> dict[str, tuple[str, ...]]:
  """The `:arg` keys that pick the networks (teacher and student alike)."""
  return {"space": choices.SPACES, "encoder": choices.ENCODERS,
          "head": choices.HEADS}


def tiny(config: ml_collections.ConfigDict) -> None:
  """Shrinks a config in place to a seconds-long run for tests."""
  config.model.encoder.update(features=16, num_blocks=1, head_hidden=16)
  config.train.update(steps=6, batch_size=16, log_every=3, eval_every=3,
                      checkpoint_every=3, warmup_steps=1)
  if "teacher" in config:
    config.teacher.update(steps=6, batch_size=16)
