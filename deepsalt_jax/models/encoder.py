"""Spectral encoders and regression head (Flax Linen, state-free).

Encoders by name (ENCODERS): 'conv' reads a spectrum on a fixed band grid as
a 1-D sequence of band tokens: a strided conv stem, residual ConvNeXt-style
blocks (depthwise conv along the bands + token MLP; LayerNorm only, so there
is no batch state to sync across devices) and attention pooling with one
learned query per head. 'transformer' embeds groups of bands as tokens and
runs pre-norm self-attention blocks. 'mlp' is a plain MLP.

Every encoder maps [B, n_bands] to (features [B, D], layers): `layers` holds
one embedding per block (residual block, transformer block or dense layer),
each pooled over tokens to [B, features], first block first, for layer-wise
distillation. The pooling is a mean that nothing else reads: jit prunes it
when the layers are unused.

Sized for 2 CPU cores, where XLA's cost grows with batch x tokens x blocks
(memory-bound elementwise work, not FLOPs): the default stem stride of 4
gives 45 tokens of 40 nm on the 180-band lab grid, and its 7-band kernel
(70 nm) overlaps neighbouring tokens so narrow absorption features still
reach a token. Stride 2 doubles the cost.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from deepsalt_jax import choices
from deepsalt_jax import targets


def _check_spectra(x: jax.Array, encoder: str) -> None:
  if x.ndim != 2:
    raise ValueError(f'{encoder} expects [batch, bands], got shape '
                     f'{x.shape}.')


class DepthwiseConv1D(nn.Module):
  """Per-channel 'SAME' conv along axis 1 of [B, L, C], written as shifts.

  XLA:CPU runs a grouped convolution ~100x slower than these fused shifted
  multiply-adds (measured: 56 ms vs 0.6 ms for [256, 90, 64], kernel 7).
  """
  kernel_size: int = 7

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    length, channels = x.shape[1:]
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (self.kernel_size, channels))
    bias = self.param('bias', nn.initializers.zeros, (channels,))
    left = (self.kernel_size - 1) // 2
    padded = jnp.pad(x, ((0, 0), (left, self.kernel_size - 1 - left), (0, 0)))
    out = sum(padded[:, i:i + length] * kernel[i]
              for i in range(self.kernel_size))
    return out + bias


class ResidualBlock(nn.Module):
  """Pre-norm residual block: depthwise conv over bands, then a token MLP."""
  kernel_size: int = 7
  mlp_ratio: int = 2
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    batch, length, features = x.shape
    # No affine LayerNorm parameters: the depthwise kernel and the MLP absorb
    # a per-channel scale and shift.
    y = nn.LayerNorm(use_scale=False, use_bias=False, name='norm')(x)
    y = DepthwiseConv1D(self.kernel_size, name='depthwise')(y)
    # The token MLP on a 2-D view: XLA:CPU computes the weight gradient of a
    # [B*L, D] matmul ~2x faster than that of the 3-D dot_general.
    y = y.reshape(batch * length, features)
    y = nn.gelu(nn.Dense(self.mlp_ratio * features, name='expand')(y))
    # Zero-initialised output: every block starts as the identity, which keeps
    # early training stable without BatchNorm.
    y = nn.Dense(features, kernel_init=nn.initializers.zeros,
                 name='project')(y).reshape(batch, length, features)
    # Channel dropout shared by all tokens of a spectrum (SpatialDropout1D):
    # B*D random draws instead of B*L*D, which cost ~30 % of a CPU step.
    y = nn.Dropout(self.dropout, broadcast_dims=(1,),
                   deterministic=not train)(y)
    return x + y


class AttentionPool(nn.Module):
  """Pools tokens [B, L, D] -> [B, D] with one learned query per head.

  Each head scores the tokens with its own query and averages its slice of
  the channels, so heads can attend to different absorption regions. No
  key/value projections: cheaper than full multi-head attention.
  """
  num_heads: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, length, features = x.shape
    if features % self.num_heads:
      raise ValueError(f'features={features} must be divisible by '
                       f'num_heads={self.num_heads}.')
    scores = nn.Dense(self.num_heads, use_bias=False, name='query')(
        x.reshape(batch * length, features))
    weights = jax.nn.softmax(
        scores.reshape(batch, length, self.num_heads), axis=1)[..., None]
    values = x.reshape(batch, length, self.num_heads, -1)
    pooled = (weights * values).sum(axis=1).reshape(batch, features)
    return nn.Dense(features, name='out')(pooled)


class SpectralEncoder(nn.Module):
  """Spectrum [B, n_bands] -> embedding [B, features].

  Attributes:
    features: token width and embedding size.
    num_blocks: number of residual blocks.
    kernel_size: conv kernel length (stem: in bands; blocks: in tokens).
    stem_stride: band subsampling of the stem (tokens = ceil(n_bands/stride)).
    num_heads: attention-pooling heads; 0 selects mean pooling.
    mlp_ratio: hidden width of the token MLP, in multiples of `features`.
    dropout: channel-dropout rate in the blocks ('dropout' rng when training).
  """
  features: int = 64
  num_blocks: int = 3
  kernel_size: int = 7
  stem_stride: int = 4
  num_heads: int = 4
  mlp_ratio: int = 2
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               wavelength: Optional[jax.Array] = None
               ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Encodes spectra.

    Args:
      x: [B, n_bands] reflectance.
      train: enables dropout.
      wavelength: optional [n_bands] normalised wavelengths (e.g. scaled to
        [0, 1]), fed as a second input channel. It changes the stem's
        parameter shape, so pass it always or never for one set of params.

    Returns:
      ([B, features] embedding, per-block embeddings).
    """
    _check_spectra(x, 'SpectralEncoder')
    tokens = x[..., None]
    if wavelength is not None:
      wl = jnp.broadcast_to(jnp.asarray(wavelength, x.dtype), x.shape)
      tokens = jnp.concatenate([tokens, wl[..., None]], axis=-1)
    tokens = nn.Conv(self.features, (self.kernel_size,),
                     strides=(self.stem_stride,), padding='SAME',
                     name='stem')(tokens)
    # Learned position embedding: pooling ignores order, but where along the
    # spectrum a feature sits (1450 vs 2200 nm) is what identifies it.
    position = self.param('position', nn.initializers.normal(0.02),
                          tokens.shape[1:])
    tokens = nn.LayerNorm(name='stem_norm')(tokens + position)
    layers = []
    for i in range(self.num_blocks):
      tokens = ResidualBlock(self.kernel_size, self.mlp_ratio, self.dropout,
                             name=f'block{i}')(tokens, train=train)
      layers.append(tokens.mean(axis=1))
    tokens = nn.LayerNorm(name='final_norm')(tokens)
    if self.num_heads:
      return AttentionPool(self.num_heads, name='pool')(tokens), tuple(layers)
    return tokens.mean(axis=1), tuple(layers)


class RegressionHead(nn.Module):
  """Embedding [B, D] -> scalar prediction [B] (transformed target space).

  Attributes:
    hidden: width of the hidden layer.
    dropout: its dropout rate.
    bounds: () for a linear output z; (low, high) in target units (dS/m for
      EC) for forward(low + (high - low) * sigmoid(z)), as the DeepSalt
      authors bound EC to [0.05, 77] dS/m. `forward` is the target transform
      the model regresses, so a prediction in target units stays within the
      bounds whatever the transform.
    transform: that target transform's name (targets.TRANSFORMS).
    zero_output: the output layer starts at zero (a teacher that starts as
      PLSR, its linear path: models/from_config.plsr_start).
  """
  hidden: int = 64
  dropout: float = 0.1
  bounds: tuple[float, ...] = ()
  transform: str = 'identity'
  zero_output: bool = False

  @nn.compact
  def __call__(self, features: jax.Array, *, train: bool,
               keep: Optional[jax.Array] = None) -> jax.Array:
    """Predicts; `keep` ([..., hidden] 0/1) are dropout masks to use instead
    of drawing them (MC sampling with each sample's own keys)."""
    y = nn.gelu(nn.Dense(self.hidden, name='hidden')(features))
    if keep is None:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    else:
      y = y * keep / (1.0 - self.dropout)
    z = nn.Dense(1, name='out', kernel_init=(
        nn.initializers.zeros if self.zero_output else
        nn.initializers.lecun_normal()))(y)[..., 0]
    if not self.bounds:
      return z
    low, high = self.bounds
    forward, _ = targets.TRANSFORMS[self.transform]
    return forward(low + (high - low) * jax.nn.sigmoid(z))


class Standardize(nn.Module):
  """(x - mean) / scale per band, with statistics of the training inputs.

  The statistics are parameters so that they travel with every checkpoint,
  but training never changes them: `train.make_optimizer` freezes every
  parameter under a 'standardize' scope, and `stages` sets them from the
  data before training (a student that starts from the teacher keeps the
  teacher's).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n = x.shape[-1]
    mean = self.param('mean', nn.initializers.zeros, (n,))
    scale = self.param('scale', nn.initializers.ones, (n,))
    return (x - jax.lax.stop_gradient(mean)) / jax.lax.stop_gradient(scale)


class LinearPath(nn.Module):
  """Spectrum [B, n_bands] -> [B]: a linear function of the standardised
  bands, added to the head's output in the target transform's space.

  A network of bounded-slope units flattens beyond the targets it saw; this
  path keeps a linear trend in (log) EC that extrapolates, as PLSR does.
  Zero-initialised, so a model starts as its network alone. Its statistics
  are set from the data like the encoders' (`Standardize`).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = Standardize(name='standardize')(x)
    return nn.Dense(1, kernel_init=nn.initializers.zeros, name='out')(y)[..., 0]


class PlsrPath(nn.Module):
  """(pixel [B, n_bands], the network's output [B]) -> [B]: PLSR's
  prediction of the pixel plus the network's output held to [low, high].

  A student's fixed path (model.student_path='plsr'): its numbers are set
  from data, never trained (train.FROZEN_SCOPES). The path is PLSR's fit to
  the labelled training pixels (a `LinearPath` at its coefficients), set
  before training; the network learns a correction of it, and once trained
  that correction is held to the range it takes on the labelled training
  pixels (`stages.StudentStage.finish`; unbounded before), so beyond them
  the prediction follows PLSR's log-linear trend instead of a correction
  extrapolated from elsewhere (the teacher's, learnt on the pairs).
  """

  @nn.compact
  def __call__(self, pixel: jax.Array, correction: jax.Array) -> jax.Array:
    unbounded = float(jnp.finfo(jnp.float32).max)
    low = self.param('low', nn.initializers.constant(-unbounded), ())
    high = self.param('high', nn.initializers.constant(unbounded), ())
    return LinearPath(name='path')(pixel) + jnp.clip(correction, low, high)


class MLPEncoder(nn.Module):
  """Spectrum [B, n_bands] -> embedding [B, features], a plain MLP.

  Bands are standardised with the training statistics, then `num_blocks`
  dense layers of width `features` with GELU and dropout. It has no notion
  of band order; docs/results.md compares it with the convolutional encoder.
  """
  features: int = 256
  num_blocks: int = 2
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array, *,
               train: bool) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """([B, features] embedding, each dense layer's activations)."""
    _check_spectra(x, 'MLPEncoder')
    y = Standardize(name='standardize')(x)
    layers = []
    for i in range(self.num_blocks):
      y = nn.gelu(nn.Dense(self.features, name=f'dense{i}')(y))
      # Before dropout: a layer's representation, not its training noise.
      layers.append(y)
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return y, tuple(layers)


def token_group(n_bands: int, stem_stride: int, max_tokens: int) -> int:
  """Bands per token of TransformerEncoder: `stem_stride`, or more where
  that would give over `max_tokens` tokens."""
  return max(stem_stride, -(-n_bands // max_tokens))


class SelfAttention(nn.Module):
  """Multi-head self-attention over all tokens of [B, L, D]."""
  num_heads: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, length, features = x.shape
    if features % self.num_heads:
      raise ValueError(f'features={features} must be divisible by '
                       f'num_heads={self.num_heads}.')
    head = features // self.num_heads
    # Projections on 2-D views, as in ResidualBlock (faster on XLA:CPU).
    qkv = nn.Dense(3 * features, name='qkv')(
        x.reshape(batch * length, features))
    q, k, v = jnp.moveaxis(
        qkv.reshape(batch, length, 3, self.num_heads, head), 2, 0)
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(head)
    y = jnp.einsum('bhqk,bkhd->bqhd', jax.nn.softmax(scores, axis=-1), v)
    # Zero-initialised like ResidualBlock's output: blocks start as the
    # identity.
    return nn.Dense(features, kernel_init=nn.initializers.zeros, name='out')(
        y.reshape(batch * length, features)).reshape(batch, length, features)


class TransformerBlock(nn.Module):
  """Pre-norm block: self-attention, then a token MLP, each residual."""
  num_heads: int = 4
  mlp_ratio: int = 2
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    batch, length, features = x.shape
    # Channel dropout shared by the tokens, as in ResidualBlock.
    drop = lambda y: nn.Dropout(self.dropout, broadcast_dims=(1,),
                                deterministic=not train)(y)
    y = nn.LayerNorm(name='attention_norm')(x)
    x = x + drop(SelfAttention(self.num_heads, name='attention')(y))
    y = nn.LayerNorm(name='mlp_norm')(x).reshape(batch * length, features)
    y = nn.gelu(nn.Dense(self.mlp_ratio * features, name='expand')(y))
    y = nn.Dense(features, kernel_init=nn.initializers.zeros,
                 name='project')(y).reshape(batch, length, features)
    return x + drop(y)


class TransformerEncoder(nn.Module):
  """Spectrum [B, n_bands] -> (embedding [B, features], per-block ones).

  Bands are standardised with the training statistics (as MLPEncoder's),
  cut into groups of adjacent bands; each group is a token (a linear patch
  embedding) with a learned position embedding; then pre-norm transformer
  blocks, a final LayerNorm and mean pooling. Sized like the DeepSalt
  authors' (64 wide, 4 heads, 3 blocks).

  Any input length works: a group is `stem_stride` bands, or
  ceil(n_bands / max_tokens) where that is more, so attention (quadratic in
  tokens) stays CPU-sized: 45 tokens of 4 bands on the 180-band lab grid,
  54-60 on the sensors' good bands, 63 of 27 channels on a 1,701-channel MIR
  grid. The last group is padded with zeros (the standardised mean).

  Attributes:
    features: token width and embedding size.
    num_blocks: transformer blocks.
    num_heads: self-attention heads.
    mlp_ratio: hidden width of the token MLP, in multiples of `features`.
    stem_stride: the fewest bands per token.
    max_tokens: the most tokens.
    dropout: channel-dropout rate in the blocks ('dropout' rng when training).
  """
  features: int = 64
  num_blocks: int = 3
  num_heads: int = 4
  mlp_ratio: int = 2
  stem_stride: int = 4
  max_tokens: int = 64
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array, *,
               train: bool) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    _check_spectra(x, 'TransformerEncoder')
    batch, n_bands = x.shape
    group = token_group(n_bands, self.stem_stride, self.max_tokens)
    length = -(-n_bands // group)
    y = Standardize(name='standardize')(x)
    y = jnp.pad(y, ((0, 0), (0, length * group - n_bands)))
    tokens = nn.Dense(self.features, name='embed')(
        y.reshape(batch * length, group)).reshape(batch, length, -1)
    position = self.param('position', nn.initializers.normal(0.02),
                          (length, self.features))
    tokens = tokens + position
    layers = []
    for i in range(self.num_blocks):
      tokens = TransformerBlock(self.num_heads, self.mlp_ratio, self.dropout,
                                name=f'block{i}')(tokens, train=train)
      layers.append(tokens.mean(axis=1))
    return (nn.LayerNorm(name='final_norm')(tokens).mean(axis=1),
            tuple(layers))


# Encoders by name (config.model.encoder.kind).
ENCODERS = {'conv': SpectralEncoder, 'mlp': MLPEncoder,
            'transformer': TransformerEncoder}
assert set(ENCODERS) == set(choices.ENCODERS)
