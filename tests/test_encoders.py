"""The transformer encoder, per-layer embeddings, the bounded head and the
layer-wise distillation settings."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import distill
from deepsalt_jax import stages
from deepsalt_jax import targets
from deepsalt_jax.models import deepsalt
from deepsalt_jax.models import encoder
from deepsalt_jax.models import from_config
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors

VISNIR = lab_grid.visnir()

SMALL = dict(features=16, num_blocks=2, num_heads=4)


def _spectra(n, bands, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(0.05, 0.6, (n, bands)), jnp.float32)


def _randomised(params, seed=0):
  """Every parameter drawn at random: zero-initialised outputs and the tiny
  position embedding would hide what the trained network can express."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [
      0.5 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])


@pytest.mark.parametrize('bands,tokens', [(180, 45), (216, 54), (1701, 63)])
def test_transformer_shapes_on_any_grid(bands, tokens):
  model = encoder.TransformerEncoder()
  x = _spectra(3, bands)
  shapes = jax.tree.map(lambda a: a.shape, jax.eval_shape(
      lambda: (model.init(jax.random.key(0), x, train=False),
               model.apply(model.init(jax.random.key(0), x, train=False), x,
                           train=False))))
  params, (features, layers) = shapes
  assert features == (3, 64) and layers == ((3, 64),) * 3
  group = encoder.token_group(bands, 4, 64)
  assert params['params']['position'] == (tokens, 64)
  assert params['params']['embed']['kernel'] == (group, 64)
  assert tokens <= 64 and group * tokens >= bands > group * (tokens - 1)


@pytest.mark.slow
def test_transformer_dropout_off_is_deterministic():
  model = encoder.TransformerEncoder(**SMALL, dropout=0.5)
  x = _spectra(4, 180)
  # Random parameters: at init the blocks' zero outputs hide dropout.
  params = _randomised(model.init(jax.random.key(0), x, train=False))
  run = jax.jit(lambda key, train: model.apply(
      params, x, train=train, rngs={'dropout': key})[0], static_argnums=1)
  key1, key2 = jax.random.key(1), jax.random.key(2)
  np.testing.assert_array_equal(run(key1, False), run(key2, False))
  np.testing.assert_array_equal(run(key1, True), run(key1, True))
  assert not np.allclose(run(key1, True), run(key2, True))


@pytest.mark.slow
def test_transformer_reads_where_bands_are():
  # Swapping two band groups (whole tokens) changes the embedding: the
  # position embedding tells tokens apart; without it, attention and mean
  # pooling would be blind to the swap.
  model = encoder.TransformerEncoder(**SMALL, dropout=0.0)
  x = _spectra(2, 180)
  params = _randomised(model.init(jax.random.key(0), x, train=False))
  # Identity standardisation: its per-band statistics would not swap along.
  params['params']['standardize'] = {'mean': jnp.zeros(180),
                                     'scale': jnp.ones(180)}
  swapped = jnp.concatenate([x[:, 4:8], x[:, :4], x[:, 8:]], axis=1)
  embed = jax.jit(lambda p, x: model.apply(p, x, train=False)[0])
  assert not np.allclose(embed(params, x), embed(params, swapped), atol=1e-3)
  blind = jax.tree.map(lambda a: a, params)
  blind['params']['position'] = jnp.zeros_like(params['params']['position'])
  np.testing.assert_allclose(embed(blind, x), embed(blind, swapped),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_student_from_teacher_equals_teacher_with_transformer():
  band = sensors.builtin('enmap')
  p = resampling.inverse_matrix(resampling.lab_wavelengths(),
                                band.good_wavelength, band.good_fwhm)
  parts = lambda: dict(encoder=encoder.TransformerEncoder(**SMALL),
                       head=encoder.RegressionHead(16, 0.1))
  teacher = deepsalt.Teacher(**parts())
  student = deepsalt.Student(init_matrix=p, **parts())
  satellite = _spectra(3, p.shape[1])
  t_params = _randomised(teacher.init(jax.random.key(0), _spectra(3, 180),
                                      train=False)['params'])
  s_params = deepsalt.init_student_from_teacher(
      student.init(jax.random.key(1), satellite, train=False)['params'],
      t_params)
  out = student.apply({'params': s_params}, satellite, train=False)
  via = teacher.apply({'params': t_params}, out['adapted'], train=False)
  for name in ('pred', 'features', 'layers'):
    for a, b in zip(jax.tree.leaves(out[name]), jax.tree.leaves(via[name])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_mlp_layers_are_its_activations():
  model = encoder.MLPEncoder(features=8, num_blocks=2, dropout=0.5)
  x = _spectra(3, 5)
  params = model.init(jax.random.key(0), x, train=False)
  features, layers = model.apply(params, x, train=False)
  assert len(layers) == 2
  np.testing.assert_array_equal(features, layers[-1])  # No dropout.
  dense0 = params['params']['dense0']
  np.testing.assert_allclose(layers[0], jax.nn.gelu(
      x @ dense0['kernel'] + dense0['bias']), rtol=1e-5, atol=1e-6)


def test_bounded_head_range_and_centre_in_target_space():
  forward, inverse = targets.TRANSFORMS['log1p']
  head = encoder.RegressionHead(8, 0.0, (0.05, 77.0), 'log1p')
  features = 10.0 * _spectra(64, 8)
  params = head.init(jax.random.key(0), features, train=False)
  # z = 0: the middle of the range, 0.05 + 76.95 / 2 dS/m, in log1p space.
  centre = jax.tree.map(jnp.zeros_like, params)
  np.testing.assert_allclose(head.apply(centre, features, train=False),
                             math.log1p(0.05 + 76.95 / 2), rtol=1e-6)
  for scale in (1.0, 1e3, -1e3):
    scaled = jax.tree.map(lambda a: scale * a, _randomised(params))
    ec = inverse(head.apply(scaled, features, train=False))
    assert float(ec.min()) >= 0.05 - 1e-4 and float(ec.max()) <= 77.0 + 1e-3
  # Linear: the same parameters give z itself.
  linear = encoder.RegressionHead(8, 0.0)
  assert float(linear.apply(centre, features, train=False)[0]) == 0.0


def _model_config(**overrides):
  config = distill.get_config('compare=none,candidates=none').model
  config.update(overrides)
  return config


def test_bounded_head_follows_the_target_and_needs_bounds():
  with pytest.raises(errors.UserError, match='linear_path=False'):
    from_config.build_teacher(_model_config(head='bounded'), 'enmap', VISNIR,
                              target_transform='log1p')
  teacher = from_config.build_teacher(
      _model_config(head='bounded', linear_path=False), 'enmap', VISNIR,
      target_transform='log1p')
  assert teacher.head.bounds == (0.05, 77.0) and teacher.linear is None
  assert teacher.head.transform == 'log1p'
  soc = distill.get_config(
      'dataset=soc,head=bounded,compare=none,candidates=none')
  assert soc.model.head_bounds == [] and stages.teacher_config(
      soc).model.head == 'bounded'
  with pytest.raises(errors.UserError, match='model.head_bounds'):
    from_config.build_teacher(soc.model, 'enmap', VISNIR,
                              target_transform='identity')
  with pytest.raises(errors.UserError, match='model.head='):
    from_config.build_teacher(_model_config(head='relu', linear_path=False),
                              'enmap', VISNIR, target_transform='log1p')


def _layers_config(arg=''):
  return distill.get_config(','.join(filter(None, [
      'compare=none,candidates=none,distill=layers', arg])))


def test_layer_weights_follow_the_blocks_and_mismatches_are_refused():
  assert _layers_config('encoder=conv').loss.distill_layer_weights == [
      1.35, 1.05, 0.65]
  assert _layers_config().loss.distill_layer_weights == [1.35, 1.05]  # mlp.
  assert _layers_config('tiny').loss.distill_layer_weights == [1.35]
  stages.plan(_layers_config('encoder=transformer'), VISNIR)
  config = _layers_config('encoder=transformer')
  config.loss.distill_layer_weights = (1.0, 1.0)
  with pytest.raises(errors.UserError, match='give 3 weights'):
    stages.plan(config, VISNIR)
  config = _layers_config('encoder=transformer')
  config.model.encoder.num_blocks = 2  # The teacher's too: 3 weights for 2.
  assert stages.teacher_config(config).model.encoder.num_blocks == 2
  with pytest.raises(errors.UserError, match='give 2 weights'):
    stages.plan(config, VISNIR)
  config = _layers_config()
  config.loss.distill = 'logits'
  with pytest.raises(errors.UserError, match='loss.distill'):
    stages.plan(config, VISNIR)


def test_layer_distillation_reaches_the_students_blocks():
  sensor = 'enmap'
  n_sat, n_lab = sensors.builtin(sensor).good.size, 180
  batch = {'labelled': {'satellite': _spectra(4, n_sat, 1),
                        'target': jnp.ones(4)},
           'paired': {'satellite': _spectra(4, n_sat, 2),
                      'lab': _spectra(4, n_lab, 3)},
           'unlabelled': {'satellite': _spectra(4, n_sat, 4)},
           'library': {'lab': _spectra(4, n_lab, 5), 'target': jnp.ones(4)}}

  def student_plan(w_distill_feature):
    config = _layers_config('tiny')
    config.model.init_from_teacher = False
    config.loss.w_alignment = 0.0  # Alignment gathers over a device mesh.
    config.loss.w_distill_feature = w_distill_feature
    return stages.plan(config, VISNIR)

  plan = student_plan(1.0)
  t_params = plan.teacher.init_params(sensor)
  params = plan.students[0].init_params(sensor, t_params)

  def block_grad(plan):
    loss_fn = plan.students[0].loss_fn(sensor, plan.teacher)
    grads, terms = jax.jit(jax.grad(  # Jitted: 3x faster than eager here.
        lambda p: loss_fn(p, batch, jax.random.key(0), t_params, 0),
        has_aux=True))(params)
    return grads['encoder']['dense0']['kernel'], terms

  with_layers, terms = block_grad(plan)
  without_layers, _ = block_grad(student_plan(0.0))
  assert float(terms['distillation']) > 0  # A fresh student differs.
  # The block's own embedding is distilled: its gradient is the layer
  # term's, beyond what the prediction terms give it.
  assert float(jnp.abs(with_layers - without_layers).max()) > 1e-3
