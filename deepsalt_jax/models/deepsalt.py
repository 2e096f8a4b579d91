"""DeepSalt models: the lab-spectrum teacher and the satellite student.

The teacher reads lab spectra in its input space: the lab grid itself, or
(space 'sensor') the lab spectrum resampled forward to the sensor's nominal
bands by a fixed matrix (`Teacher.resample`). The student carries a pixel
into that space with its SAU and reads it with the same encoder and head.

A latent student (`latent=True`, for lab grids the physics cannot reach,
MIR for one) has no lab-space input: its encoder reads the pixel itself and a
projection carries the result into the teacher's feature space, where the
teacher's head reads it (the DeepSalt authors' latent SAU).

Parameter trees (the `params` collection):
  Teacher: {'encoder', 'head', 'covariates' (with covariates only),
            'linear' (with a linear path only)}
  Student: {'sau' (physics with learn_sau=True only), 'encoder', 'head',
            'discriminator', 'covariates', 'linear' (as the teacher's)};
            latent: {'encoder', 'project', 'decoder', 'head',
            'discriminator', 'covariates', 'linear'}.
Covariates (`models.covariate_branch`): a network built with a covariate branch
reads covariates=[B, k] beside the spectrum; one without ignores them.
The student's 'encoder' and 'head' have exactly the teacher's structure when
both are built with the same encoder settings, so the student starts from the
teacher with `init_student_from_teacher` (the subtrees `Student.shared`:
'encoder' and 'head', or the head alone for a latent student, whose encoder
reads other inputs).

The domain discriminator lives in the student for adversarial alignment:
  logits = student.apply({'params': p}, features, method=student.discriminate)
"""
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from deepsalt_jax.models import covariate_branch
from deepsalt_jax.models import sau as sau_lib

# The subtrees the student takes over from the teacher (and 'covariates'
# when both have the same).
SHARED = ('encoder', 'head')


class DomainDiscriminator(nn.Module):
  """Features [B, D] -> logit [B]: lab/teacher side vs satellite side."""
  hidden: int = 64

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    y = nn.gelu(nn.Dense(self.hidden, name='hidden0')(features))
    y = nn.gelu(nn.Dense(self.hidden, name='hidden1')(y))
    return nn.Dense(1, name='out')(y)[..., 0]


class Teacher(nn.Module):
  """Lab spectrum [B, n_lab] -> {'pred': [B], 'features': [B, D],
  'layers': the encoder's per-block embeddings, each [B, D]}.

  Attributes:
    encoder: spectrum -> features, e.g. `encoder.SpectralEncoder`.
    head: features -> prediction, e.g. `encoder.RegressionHead`.
    resample: None (the encoder reads the lab grid) or the (n_sat, n_lab)
      forward SRF resampling to the sensor's nominal good bands.
    covariates: a `covariate_branch.CovariateBranch`, or None (no covariates).
    linear: an `encoder.LinearPath` on the encoder's input, added to the
      head's prediction, or None.
  """
  encoder: nn.Module
  head: nn.Module
  resample: Any = None
  covariates: nn.Module | None = None
  linear: nn.Module | None = None

  def __post_init__(self):
    if self.resample is not None:
      object.__setattr__(self, 'resample', sau_lib.frozen(self.resample))
    super().__post_init__()

  def prepare(self, lab: jax.Array) -> jax.Array:
    """Lab spectra in the encoder's input space."""
    if self.resample is None:
      return lab
    return sau_lib.fixed_adaptation(lab, self.resample)

  def __call__(self, lab: jax.Array, *, train: bool,
               covariates: jax.Array | None = None) -> dict[str, jax.Array]:
    return self.from_prepared(self.prepare(lab), train=train,
                              covariates=covariates)

  def from_prepared(self, x: jax.Array, *, train: bool,
                    covariates: jax.Array | None = None
                    ) -> dict[str, jax.Array]:
    """Outputs for spectra already in the encoder's input space (a pixel
    resampled to the lab grid, or a pixel itself in sensor space)."""
    features, layers = self.encoder(x, train=train)
    features = covariate_branch.add(self.covariates, features, covariates)
    return {'pred': _with_linear(self.linear, self.head(features, train=train),
                                 x),
            'features': features, 'layers': layers}


class Decoder(nn.Module):
  """Latent [B, D] -> spectrum [B, n]: the latent SAU's autoencoder half."""
  hidden: int = 128

  @nn.compact
  def __call__(self, latent: jax.Array, size: int) -> jax.Array:
    return nn.Dense(size, name='out')(
        nn.gelu(nn.Dense(self.hidden, name='hidden')(latent)))


class Student(nn.Module):
  """Satellite spectrum [B, n_sat] (good bands) -> teacher-like outputs.

  Returns {'pred': [B], 'features': [B, features], 'layers'} ('layers': the
  encoder's per-block embeddings, in the teacher's width: the student's
  encoder is built with the teacher's settings) and, with a physics SAU, 'adapted': [B, n_in] (the SAU's
  output, in the teacher's input space) or, latent, 'latent': [B, features]
  (the encoder's output before the projection into the teacher's feature
  space).

  Attributes:
    encoder: as the teacher's (built with the same settings, so the student
      can start from the teacher's parameters).
    head: as the teacher's.
    init_matrix: (n_in, n_sat), the physics SAU's start: the inverse
      `deepsalt_spectral.resampling.inverse_matrix` for a lab-space teacher,
      the identity for a sensor-space one (required unless latent).
    learn_sau: True: the trainable SAU. False (the 'no SAU' ablation): the
      fixed physics matrix, applied as a constant with no parameters.
    latent: the latent SAU instead: encoder on the pixel + projection.
    sau_hidden: width of the SAU's residual MLP.
    discriminator_hidden: width of the domain discriminator.
    covariates: a `covariate_branch.CovariateBranch`, or None (no covariates).
    linear: as the teacher's, on the encoder's input (the SAU's output, or
      the pixel itself for a latent student), or None.
    plsr: an `encoder.PlsrPath` on the pixel instead of `linear`: PLSR's
      prediction plus the head's output as a bounded correction of it
      (model.student_path='plsr'), or None.
  """
  encoder: nn.Module
  head: nn.Module
  init_matrix: Any = None
  learn_sau: bool = True
  latent: bool = False
  sau_hidden: int = 64
  discriminator_hidden: int = 64
  covariates: nn.Module | None = None
  linear: nn.Module | None = None
  plsr: nn.Module | None = None

  def __post_init__(self):
    if self.linear is not None and self.plsr is not None:
      raise ValueError('Student takes a linear path or a PLSR path, not both.')
    if self.latent:
      object.__setattr__(self, 'learn_sau', False)
    elif self.init_matrix is None:
      raise ValueError('Student needs init_matrix, the (n_in, n_sat) start '
                       'of its SAU, or latent=True.')
    else:
      object.__setattr__(self, 'init_matrix',
                         sau_lib.frozen(self.init_matrix))
    super().__post_init__()

  @property
  def shared(self) -> tuple[str, ...]:
    """The subtrees that start from the teacher's."""
    if self.latent:
      return ('head',)
    return SHARED + (('linear',) if self.linear is not None else ())

  def setup(self):
    if self.learn_sau:
      self.sau = sau_lib.SpectralAdaptationUnit(self.init_matrix,
                                                self.sau_hidden)
    if self.latent:
      self.project = nn.Dense(self.encoder.features)
      self.decoder = Decoder()
    self.discriminator = DomainDiscriminator(self.discriminator_hidden)

  def __call__(self, satellite: jax.Array, *, train: bool,
               covariates: jax.Array | None = None) -> dict[str, jax.Array]:
    if self.latent:
      inputs = satellite
      latent, layers = self.encoder(satellite, train=train)
      features = self.project(latent)
      out = {'latent': latent}
      if self.is_initializing():
        self.decoder(latent, satellite.shape[-1])
    else:
      if self.learn_sau:
        inputs = self.sau(satellite)
      else:
        inputs = sau_lib.fixed_adaptation(satellite, self.init_matrix)
      features, layers = self.encoder(inputs, train=train)
      out = {'adapted': inputs}
    features = covariate_branch.add(self.covariates, features, covariates)
    if self.is_initializing():  # Create the discriminator's params too.
      self.discriminator(features)
    head = self.head(features, train=train)
    pred = (_with_linear(self.linear, head, inputs) if self.plsr is None
            else self.plsr(satellite, head))
    return {'pred': pred, 'features': features, 'layers': layers, **out}

  def discriminate(self, features: jax.Array) -> jax.Array:
    """Domain logits [B] for features [B, D]."""
    return self.discriminator(features)

  def reconstruct(self, latent: jax.Array, size: int) -> jax.Array:
    """The pixel [B, size] decoded from its latent (latent SAU only)."""
    return self.decoder(latent, size)

  def sau_prior(self) -> jax.Array:
    """The SAU's distance from its physics start (0 without a SAU)."""
    return self.sau.prior() if self.learn_sau else jnp.zeros(())


def _with_linear(linear: nn.Module | None, pred: jax.Array,
                 inputs: jax.Array) -> jax.Array:
  """The head's prediction plus the linear path on the encoder's inputs."""
  return pred if linear is None else pred + linear(inputs)


def init_student_from_teacher(student_params: Mapping[str, Any],
                              teacher_params: Mapping[str, Any],
                              shared: tuple[str, ...] = SHARED
                              ) -> dict[str, Any]:
  """Student params with the `shared` subtrees replaced by the teacher's,
  and 'covariates' when both have that subtree with the same shapes (the
  same covariates: the student starts with the teacher's predictions).

  Accepts the `params` collections themselves or variable dicts that wrap
  them as {'params': ...} (both arguments alike). Returns a new dict; the
  inputs are not modified. The teacher's arrays are copied: a train step that
  donates the student state while it also reads the teacher params must not
  see the same buffers twice.

  Raises:
    ValueError: if the subtrees differ in structure or shape (teacher and
      student built with different encoder settings).
  """
  if 'params' in student_params:
    if 'params' not in teacher_params:
      raise ValueError('Pass both params collections or both variable dicts '
                       "({'params': ...}), not one of each.")
    return {**student_params, 'params': init_student_from_teacher(
        student_params['params'], teacher_params['params'], shared)}
  out = dict(student_params)
  for name in shared:
    if name not in student_params or name not in teacher_params:
      raise ValueError(f'Both param trees need a {name!r} subtree; got '
                       f'student {sorted(student_params)}, teacher '
                       f'{sorted(teacher_params)}.')
    shapes = [jax.tree.map(lambda x: x.shape, tree[name])
              for tree in (student_params, teacher_params)]
    if shapes[0] != shapes[1]:
      raise ValueError(f'Student and teacher {name!r} params differ in '
                       'structure or shape; build both with the same encoder '
                       'settings (features, num_blocks, kernel_size, ...).')
    out[name] = jax.tree.map(jnp.copy, teacher_params[name])
  scope = covariate_branch.SCOPE
  if scope in student_params and scope in teacher_params and (
      jax.tree.map(jnp.shape, student_params[scope]) ==
      jax.tree.map(jnp.shape, teacher_params[scope])):
    out[scope] = jax.tree.map(jnp.copy, teacher_params[scope])
  return out
