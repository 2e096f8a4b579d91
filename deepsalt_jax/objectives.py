"""What each network minimises: the loss terms of `losses` combined.

A loss is a pure function of (params, batch, key, teacher_params, step);
it returns (total, {'loss': total, <term>: value, ...}) so every term is
logged. The teacher regresses its target on lab spectra; the student adds
to its regression the terms with a non-zero weight in `config.loss` that
its SAU mode has (`student_terms`), each drawing on its streams
(`streams_for`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from deepsalt_jax import losses
from deepsalt_jax import sharding
from deepsalt_jax import targets

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def teacher_loss(params, batch, key, teacher_params, step, *, model, config):
  del teacher_params, step  # The teacher has no teacher and no schedule.
  forward, _ = targets.TRANSFORMS[config.data.target_transform]
  out = model.apply({"params": params}, batch["lab"]["lab"], train=True,
                    rngs={"dropout": key},
                    covariates=batch["lab"].get("covariates"))
  loss = losses.regression_loss(out["pred"], forward(batch["lab"]["target"]),
                                kind=config.loss.regression)
  return loss, {"loss": loss, "regression": loss}


def _weights(loss_config: ml_collections.ConfigDict) -> dict[str, float]:
  return {"regression": loss_config.w_regression,
          "source": loss_config.w_source,
          "distillation": (loss_config.w_distill_feature or
                           loss_config.w_distill_pred),
          "reconstruction": loss_config.w_reconstruction,
          "pair_regression": loss_config.w_pair_regression,
          "contrastive": loss_config.w_contrastive,
          "autoencoder": loss_config.w_autoencoder,
          "alignment": loss_config.w_alignment,
          "sau_prior": loss_config.w_sau_prior}


# Terms of one SAU mode only: a physics SAU has an input-space output to
# reconstruct and a physics start; a latent one a latent to contrast and
# decode.
_PHYSICS_ONLY = {"reconstruction", "sau_prior"}
_LATENT_ONLY = {"contrastive", "autoencoder"}


def student_terms(loss_config: ml_collections.ConfigDict,
                  latent: bool) -> set[str]:
  """The loss terms with a non-zero weight that apply to the SAU mode."""
  terms = {term for term, weight in _weights(loss_config).items() if weight}
  return terms - (_PHYSICS_ONLY if latent else _LATENT_ONLY)


def streams_for(terms: set[str]) -> set[str]:
  """The input streams the loss terms draw on."""
  need = {"labelled"}
  if terms & {"distillation", "reconstruction", "contrastive",
               "pair_regression"}:
    need.add("paired")
  if "alignment" in terms:
    need |= {"unlabelled", "library"}
  if "autoencoder" in terms:
    need.add("unlabelled")
  if "source" in terms:
    need.add("library")
  return need


# Batch-statistic terms see the global batch, not the device's share.
_gather = functools.partial(jax.lax.all_gather, axis_name=sharding.AXIS,
                            tiled=True)


@dataclasses.dataclass(frozen=True)
class _Networks:
  """The student (training) and the frozen teacher on one step's batch;
  each stream's covariates go with its spectra."""
  model: nn.Module
  params: Any
  teacher: nn.Module
  teacher_params: Any
  batch: dict

  def student(self, stream: str, x: jax.Array, key: jax.Array) -> dict:
    return self.model.apply({"params": self.params}, x, train=True,
                            rngs={"dropout": key},
                            covariates=self.batch[stream].get("covariates"))

  def taught(self, stream: str, lab: jax.Array) -> dict:
    return self.teacher.apply(
        {"params": self.teacher_params}, lab, train=False,
        covariates=self.batch[stream].get("covariates"))

  def teacher_input(self, lab: jax.Array) -> jax.Array:
    return self.teacher.apply({"params": self.teacher_params}, lab,
                              method=self.teacher.prepare)

  def decode(self, latent: jax.Array, size: int) -> jax.Array:
    return self.model.apply({"params": self.params}, latent, size,
                            method=self.model.reconstruct)

  def discriminate(self, features: jax.Array) -> jax.Array:
    return self.model.apply({"params": self.params}, features,
                            method=self.model.discriminate)


def distill_pred_weight(config: ml_collections.ConfigDict,
                        step: jax.Array) -> jax.Array:
  """The prediction distillation's weight at `step`: loss.w_distill_pred
  throughout, or fading linearly to 0 over the first `distill_pred_fade`
  of the training steps."""
  weight = jnp.asarray(config.loss.w_distill_pred, jnp.float32)
  if not config.loss.distill_pred_fade:
    return weight
  end = config.loss.distill_pred_fade * config.train.steps
  return weight * jnp.clip(1.0 - jnp.asarray(step, jnp.float32) / end,
                           0.0, 1.0)


def _distillation(config: ml_collections.ConfigDict, student: dict,
                  teacher: dict, step: jax.Array) -> jax.Array:
  """The final features ('final') or every block's ('layers')."""
  cfg = config.loss
  weights = dict(feature_weight=cfg.w_distill_feature,
                 pred_weight=distill_pred_weight(config, step))
  if cfg.distill == "layers":
    return losses.layer_distillation_loss(
        student["layers"], teacher["layers"], student["pred"],
        teacher["pred"], tuple(cfg.distill_layer_weights), **weights)
  return losses.distillation_loss(
      student["features"], teacher["features"], student["pred"],
      teacher["pred"], **weights)


def _pair_terms(nets: _Networks, key: jax.Array, terms: set[str],
                config: ml_collections.ConfigDict,
                forward: Callable[[jax.Array], jax.Array], step: jax.Array
                ) -> dict[str, jax.Array]:
  """Paired pixels against the teacher on their lab spectra, or against
  their lab samples' measured target (`forward`: its transform)."""
  cfg = config.loss
  out = {}
  paired = nets.student("paired", nets.batch["paired"]["satellite"], key)
  if "pair_regression" in terms:
    out["pair_regression"] = losses.regression_loss(
        paired["pred"], forward(nets.batch["paired"]["target"]),
        kind=cfg.regression)
  lab = nets.batch["paired"]["lab"]
  if terms & {"distillation", "contrastive"}:  # One teacher pass for both.
    taught = nets.taught("paired", lab)
  if "distillation" in terms:
    out["distillation"] = _distillation(config, paired, taught, step)
  if "reconstruction" in terms:
    out["reconstruction"] = losses.reconstruction_loss(
        paired["adapted"], nets.teacher_input(lab))
  if "contrastive" in terms:
    out["contrastive"] = losses.info_nce(
        _gather(paired["features"]), _gather(taught["features"]),
        temperature=cfg.temperature)
  return out


def _unlabelled_terms(nets: _Networks, key: jax.Array, terms: set[str],
                      cfg: ml_collections.ConfigDict,
                      on_source: dict | None) -> dict[str, jax.Array]:
  """Unlabelled pixels decoded from their latent, and aligned with the
  reference features (the student's on the source spectra `on_source`, or
  the teacher's on the library)."""
  if not terms & {"alignment", "autoencoder"}:
    return {}
  out = {}
  pixels = nets.batch["unlabelled"]["satellite"]
  unlabelled = nets.student("unlabelled", pixels, key)
  if "autoencoder" in terms:
    out["autoencoder"] = losses.autoencoder_loss(
        nets.decode(unlabelled["latent"], pixels.shape[-1]), pixels)
  if "alignment" in terms:
    reference = (on_source["features"] if cfg.align_to == "self" else
                 nets.taught("library", nets.batch["library"]["lab"])[
                     "features"])
    out["alignment"] = losses.alignment_loss(
        cfg.alignment, _gather(unlabelled["features"]), _gather(reference),
        discriminator=nets.discriminate)
  return out


def _term_weights(cfg: ml_collections.ConfigDict, terms: set[str],
                  step: jax.Array,
                  stream_sizes: dict[str, int] | None) -> dict[str, Any]:
  """Each term's weight at `step` (distillation weighs its parts itself)."""
  weights = dict(_weights(cfg), distillation=1.0)
  if cfg.source_per_sample and "source" in terms:
    if not stream_sizes:
      raise ValueError("loss.source_per_sample needs the streams' sizes.")
    weights["source"] *= stream_sizes["library"] / stream_sizes["labelled"]
  if "autoencoder" in terms and cfg.sau_pretrain_steps:
    # Pretraining: the autoencoder alone, then everything.
    on = (step >= cfg.sau_pretrain_steps).astype(jnp.float32)
    weights = {k: w if k == "autoencoder" else w * on
               for k, w in weights.items()}
  return weights


def student_loss(params, batch, key, teacher_params, step, *, model, teacher,
                 source_matrix, config, stream_sizes=None):
  """The combined loss; each active term is also returned on its own.

  regression: labelled pixels. source: the library's lab spectra resampled
  to the nominal bands (`source_matrix`), as a DANN learns its source
  domain. distillation and reconstruction (physics SAU) or contrastive
  (latent SAU): paired pixels against the teacher on their lab spectra.
  pair_regression: paired pixels against their lab samples' measured
  target (a neighbour's in the field: noisier than a labelled pixel's).
  autoencoder (latent SAU): unlabelled pixels decoded from their latent;
  alone during the first `sau_pretrain_steps` steps (the SAU's pretraining).
  alignment: the student's features on unlabelled pixels against the
  teacher's on the library (align_to 'teacher') or its own on the source
  spectra ('self', DANN). sau_prior: the SAU's distance from its physics
  start. Each stream's covariates (when the data has them) go with its
  spectra, to networks that read them. `stream_sizes` ({stream: samples})
  weighs the source term per sample (`loss.source_per_sample`).
  """
  cfg = config.loss
  terms = student_terms(cfg, model.latent)
  forward, _ = targets.TRANSFORMS[config.data.target_transform]
  nets = _Networks(model, params, teacher, teacher_params, batch)
  keys = jax.random.split(key, 4)

  out = {}
  labelled = nets.student("labelled", batch["labelled"]["satellite"], keys[0])
  out["regression"] = losses.regression_loss(
      labelled["pred"], forward(batch["labelled"]["target"]),
      kind=cfg.regression)
  on_source = None
  if "source" in terms or ("alignment" in terms and cfg.align_to == "self"):
    library = batch["library"]["lab"]
    source = library @ jnp.asarray(source_matrix, library.dtype).T
    on_source = nets.student("library", source, keys[3])
  if "source" in terms:
    out["source"] = losses.regression_loss(
        on_source["pred"], forward(batch["library"]["target"]),
        kind=cfg.regression)
  if "paired" in batch:
    out.update(_pair_terms(nets, keys[1], terms, config, forward, step))
  out.update(_unlabelled_terms(nets, keys[2], terms, cfg, on_source))
  if "sau_prior" in terms:
    out["sau_prior"] = model.apply({"params": params}, method=model.sau_prior)
  weights = _term_weights(cfg, terms, step, stream_sizes)
  total = sum(weights[k] * v for k, v in out.items())
  return total, {"loss": total, **out}
