"""Models: shapes, jit, dropout, SAU physics init, teacher -> student params."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import distill
from deepsalt_jax import predict
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import targets
from deepsalt_jax.models import deepsalt
from deepsalt_jax.models import encoder
from deepsalt_jax.models import members
from deepsalt_jax.models import sau
from deepsalt_spectral import lab_grid
from deepsalt_spectral import resampling
from deepsalt_spectral import sensors

SMALL = dict(features=16, num_blocks=1)  # Fast variants for most tests.


def _parts(dropout: float = 0.1, **settings):
  """A small encoder and head, as from_config.encoder_and_head makes them."""
  return dict(encoder=encoder.SpectralEncoder(**{**SMALL, **settings},
                                              dropout=dropout),
              head=encoder.RegressionHead(16, dropout))


def soil_like(wavelength: np.ndarray) -> np.ndarray:
  """A smooth soil-like spectrum: rising continuum, iron and clay features."""
  x = (wavelength - 400.0) / 2050.0
  continuum = 0.12 + 0.35 * x - 0.12 * x**2
  iron = 0.03 * np.exp(-0.5 * ((wavelength - 900.0) / 80.0)**2)
  clay = 0.04 * np.exp(-0.5 * ((wavelength - 2200.0) / 25.0)**2)
  return continuum - iron - clay


@pytest.fixture(scope='module')
def enmap():
  """EnMAP good bands: (resampling matrix R, SAU init matrix P)."""
  band = sensors.builtin('enmap')
  lab_wl = resampling.lab_wavelengths()
  r = resampling.resampling_matrix(lab_wl, band.good_wavelength, band.good_fwhm)
  p = resampling.inverse_matrix(lab_wl, band.good_wavelength, band.good_fwhm)
  return r, p


def _lab_batch(n: int = 4) -> np.ndarray:
  base = soil_like(resampling.lab_wavelengths())
  return (base[None] * np.linspace(0.8, 1.2, n)[:, None]).astype(np.float32)


def _shapes(model, *args, **kwargs):
  """(param shapes, output shapes) of init + apply, traced abstractly."""
  def run():
    params = model.init(jax.random.key(0), *args, **kwargs)
    return params, model.apply(params, *args, **kwargs)
  return jax.tree.map(lambda a: a.shape, jax.eval_shape(run))


def test_encoder_shapes_and_pooling_variants():
  x = jnp.asarray(_lab_batch(3))
  for kwargs, tokens in ((dict(), 45), (dict(num_heads=0), 45),
                         (dict(stem_stride=2), 90)):
    params, (out, layers) = _shapes(encoder.SpectralEncoder(**kwargs), x,
                                    train=False)
    assert out == (3, 64) and layers == ((3, 64),) * 3
    assert params['params']['position'] == (tokens, 64)
  wl = jnp.linspace(0.0, 1.0, x.shape[1])
  params, (out, _) = _shapes(encoder.SpectralEncoder(**SMALL), x,
                             train=False, wavelength=wl)
  assert params['params']['stem']['kernel'] == (7, 2, 16)
  assert out == (3, 16)
  with pytest.raises(ValueError, match='batch, bands'):
    _shapes(encoder.SpectralEncoder(**SMALL), x[0], train=False)


def test_dropout_is_deterministic_given_rng():
  model = deepsalt.Teacher(**_parts(dropout=0.5))
  x = jnp.asarray(_lab_batch(8))
  params = model.init(jax.random.key(0), x, train=False)
  run = jax.jit(lambda key, train: model.apply(
      params, x, train=train, rngs={'dropout': key})['pred'],
                static_argnums=1)
  key1, key2 = jax.random.key(1), jax.random.key(2)
  np.testing.assert_array_equal(run(key1, True), run(key1, True))
  assert not np.allclose(run(key1, True), run(key2, True))
  # Without train, dropout is off: the rng changes nothing.
  np.testing.assert_array_equal(run(key1, False), run(key2, False))


def test_sau_init_inverts_resampling_of_smooth_spectra(enmap):
  r, p = enmap
  lab = soil_like(resampling.lab_wavelengths())
  assert p.shape == (180, r.shape[0])
  np.testing.assert_allclose(p @ (r @ lab), lab, atol=5e-3)
  # The learned SAU equals the physics inverse at initialisation.
  model = sau.SpectralAdaptationUnit(p)
  satellite = jnp.asarray((r @ lab)[None], jnp.float32)
  out = model.apply(model.init(jax.random.key(0), satellite), satellite)
  np.testing.assert_allclose(out[0], lab, atol=5e-3)
  np.testing.assert_allclose(
      out, sau.fixed_adaptation(satellite, sau.frozen(p)), atol=1e-6)


def test_sau_smoothness_fills_uncovered_lab_bands(enmap):
  # 1350 nm sits beside the water window that EnMAP's good bands skip: a
  # plain ridge would pull it to 0, the curvature penalty extrapolates.
  r, p = enmap
  lab_wl = resampling.lab_wavelengths()
  lab = soil_like(lab_wl)
  i = int(np.flatnonzero(lab_wl == 1350.0)[0])
  assert abs((p @ (r @ lab))[i] - lab[i]) < 5e-3


def test_sau_rejects_bad_input(enmap):
  _, p = enmap
  with pytest.raises(ValueError, match='satellite bands'):
    _shapes(sau.SpectralAdaptationUnit(p), jnp.ones((2, p.shape[1] + 1)))
  band = sensors.builtin('enmap')
  with pytest.raises(ValueError, match='ridge'):
    resampling.inverse_matrix(resampling.lab_wavelengths(),
                              band.good_wavelength, band.good_fwhm, ridge=0.0)


def test_second_difference_annihilates_lines_within_segments():
  wl = np.array([400.0, 410.0, 425.0, 430.0, 600.0, 610.0, 620.0])
  d = resampling.second_difference(wl)
  # Rows touching the 430 -> 600 gap are dropped: 2 + 1 stencils remain.
  assert d.shape == (3, wl.size)
  np.testing.assert_allclose(d @ (3.0 * wl + 1.0), 0.0, atol=1e-9)
  np.testing.assert_allclose(resampling.second_difference(np.arange(5.0))[0],
                             [1.0, -2.0, 1.0, 0.0, 0.0])


def test_student_outputs_and_discriminator(enmap):
  _, p = enmap
  model = deepsalt.Student(init_matrix=p, **_parts())
  x = jnp.full((3, p.shape[1]), 0.3)
  params = model.init(jax.random.key(0), x, train=False)
  assert set(params['params']) == {'sau', 'encoder', 'head', 'discriminator'}
  out = model.apply(params, x, train=False)
  assert out['pred'].shape == (3,)
  assert out['features'].shape == (3, 16)
  assert [layer.shape for layer in out['layers']] == [(3, 16)]
  assert out['adapted'].shape == (3, 180)
  logits = model.apply(params, out['features'], method=model.discriminate)
  assert logits.shape == (3,)


def test_student_without_sau_applies_fixed_physics(enmap):
  _, p = enmap
  model = deepsalt.Student(init_matrix=p, learn_sau=False, **_parts())
  x = jnp.asarray(np.random.default_rng(0).uniform(0.1, 0.4, (2, p.shape[1])),
                  jnp.float32)
  params = model.init(jax.random.key(0), x, train=False)
  assert 'sau' not in params['params']
  out = model.apply(params, x, train=False)
  np.testing.assert_allclose(out['adapted'], np.asarray(x) @ p.T, rtol=1e-4,
                             atol=1e-5)


def test_student_module_is_hashable_and_clonable(enmap):
  _, p = enmap
  model = deepsalt.Student(init_matrix=p, **_parts())
  same = deepsalt.Student(init_matrix=p.copy(), **_parts())
  assert hash(model) == hash(same) and model == same
  assert model.clone() == model
  assert model != deepsalt.Student(init_matrix=p * 2.0, **_parts())
  x = jnp.ones((2, p.shape[1]))
  params = model.init(jax.random.key(0), x, train=False)

  @functools.partial(jax.jit, static_argnums=0)
  def predict(module, params, x):
    return module.apply(params, x, train=False)['pred']

  np.testing.assert_allclose(predict(model, params, x),
                             predict(same, params, x))
  with pytest.raises(ValueError, match='init_matrix'):
    deepsalt.Student(**_parts())


def test_student_from_teacher_reproduces_teacher_on_sau_output(enmap):
  r, p = enmap
  teacher = deepsalt.Teacher(**_parts())
  student = deepsalt.Student(init_matrix=p, **_parts())
  lab = _lab_batch(4)
  satellite = jnp.asarray(lab @ r.T, jnp.float32)
  t_params = teacher.init(jax.random.key(0), lab, train=False)['params']
  s_params = student.init(jax.random.key(1), satellite, train=False)['params']
  before = jax.tree.map(np.array, s_params)
  merged = deepsalt.init_student_from_teacher(s_params, t_params)
  # Inputs untouched; the SAU and discriminator keep the student's params.
  assert all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(before), jax.tree.leaves(s_params)))
  assert merged['sau'] is s_params['sau']
  out = student.apply({'params': merged}, satellite, train=False)
  via_teacher = teacher.apply({'params': t_params}, out['adapted'], train=False)
  np.testing.assert_allclose(out['pred'], via_teacher['pred'], rtol=1e-5,
                             atol=1e-6)
  # The SAU output is close to the lab spectrum, so the prediction too.
  on_lab = teacher.apply({'params': t_params}, lab, train=False)
  np.testing.assert_allclose(out['pred'], on_lab['pred'], atol=1e-2)
  wrapped = deepsalt.init_student_from_teacher({'params': s_params},
                                               {'params': t_params})
  for copied, original in zip(jax.tree.leaves(wrapped['params']['encoder']),
                              jax.tree.leaves(t_params['encoder'])):
    # Equal values in fresh buffers (the trainer donates the student state).
    np.testing.assert_array_equal(copied, original)
    assert copied.unsafe_buffer_pointer() != original.unsafe_buffer_pointer()


def test_init_student_from_teacher_rejects_mismatched_trees(enmap):
  _, p = enmap
  init = lambda model, n: jax.eval_shape(functools.partial(
      model.init, train=False), jax.random.key(0), jnp.ones((2, n)))
  t_params = init(deepsalt.Teacher(**_parts(features=8)), 180)
  s_params = init(deepsalt.Student(init_matrix=p, **_parts()), p.shape[1])
  with pytest.raises(ValueError, match='same encoder settings'):
    deepsalt.init_student_from_teacher(s_params['params'], t_params['params'])


def test_sau_params_receive_gradients(enmap):
  r, p = enmap
  student = deepsalt.Student(init_matrix=p, **_parts())
  lab = jnp.asarray(_lab_batch(4))
  satellite = lab @ jnp.asarray(r.T, jnp.float32) * 1.05  # A gain error.
  params = student.init(jax.random.key(0), satellite, train=False)['params']

  def loss(params):
    out = student.apply({'params': params}, satellite, train=False)
    return jnp.mean((out['adapted'] - lab)**2)

  grads = jax.jit(jax.grad(loss))(params)['sau']
  for name in ('gain', 'offset', 'matrix'):
    assert float(jnp.abs(grads[name]).max()) > 0, name
  assert float(jnp.abs(grads['residual_out']['kernel']).max()) > 0


def test_models_run_on_a_batch_sharded_explicit_mesh(enmap):
  # jax.make_mesh gives Explicit axes: reshapes inside the jitted models must
  # keep a batch-sharded layout valid (as the trainer and evaluator shard it).
  from jax.sharding import NamedSharding, PartitionSpec as P
  _, p = enmap
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  sharding = NamedSharding(mesh, P('data'))
  n = 2 * jax.device_count()
  for model, width in (
      (deepsalt.Teacher(**_parts()), 180),
      (deepsalt.Student(init_matrix=p, **_parts()), p.shape[1])):
    x = np.full((n, width), 0.3, np.float32)
    params = model.init(jax.random.key(0), x, train=False)
    predict = jax.jit(lambda params, x: model.apply(params, x, train=False))
    np.testing.assert_allclose(
        predict(params, jax.device_put(x, sharding))['pred'],
        model.apply(params, x, train=False)['pred'], rtol=1e-5, atol=1e-6)


def test_sensor_space_teacher_reads_lab_spectra_resampled_forward():
  from deepsalt_jax.models import from_config
  import ml_collections
  config = ml_collections.ConfigDict(dict(
      space='sensor', sau='auto', sau_ridge=1e-2, use_sau=True,
      encoder=dict(kind='mlp', features=16, num_blocks=1, dropout=0.0,
                   head_hidden=8)))
  teacher = from_config.build_teacher(config, 'enmap', lab_grid.visnir(),
                                      target_transform='log1p')
  lab = _lab_batch(3)
  params = teacher.init(jax.random.key(0), lab, train=False)
  forward = from_config.forward_matrix('enmap', lab_grid.visnir())
  prepared = teacher.apply(params, lab, method=teacher.prepare)
  np.testing.assert_allclose(prepared, lab @ forward.T, rtol=1e-5, atol=1e-6)
  direct = teacher.apply(params, lab, train=False)
  via = teacher.apply(params, prepared, train=False,
                      method=teacher.from_prepared)
  np.testing.assert_allclose(direct['pred'], via['pred'], rtol=1e-6)
  # Its student's SAU starts from the identity: a pixel that is the
  # resampled lab spectrum gives the teacher's prediction.
  student = from_config.build_student(config, 'enmap', lab_grid.visnir(),
                                      target_transform='log1p')
  s_params = deepsalt.init_student_from_teacher(
      student.init(jax.random.key(1), prepared, train=False)['params'],
      params['params'])
  out = student.apply({'params': s_params}, prepared, train=False)
  np.testing.assert_allclose(out['adapted'], prepared, rtol=1e-6)
  np.testing.assert_allclose(out['pred'], direct['pred'], rtol=1e-5)
  assert float(student.apply({'params': s_params},
                             method=student.sau_prior)) == 0.0
  moved = jax.tree.map(lambda x: x, s_params)
  moved['sau'] = dict(moved['sau'], gain=moved['sau']['gain'] + 0.1)
  assert float(student.apply({'params': moved},
                             method=student.sau_prior)) == pytest.approx(
                                 0.01, rel=1e-4)


def test_standardisation_is_data_statistics_that_training_never_changes():
  from configs import distill
  from deepsalt_jax import train
  model = encoder.MLPEncoder(features=8, num_blocks=1, dropout=0.0)
  x = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, (16, 5)),
                  jnp.float32)
  params = model.init(jax.random.key(0), x, train=False)['params']
  params['standardize'] = {'mean': x.mean(0), 'scale': x.std(0)}
  y, _ = model.apply({'params': params}, x, train=False)
  # A copy without the first layer's effect: the standardised inputs.
  z = (x - x.mean(0)) / x.std(0)
  expected = jax.nn.gelu(z @ params['dense0']['kernel'] +
                         params['dense0']['bias'])
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
  tx = train.make_optimizer(distill.get_config().train)
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  for _ in range(2):  # The first step's learning rate is 0 (warm-up).
    updates, state = tx.update(grads, state, params)
  assert not np.any(updates['standardize']['mean'])
  assert not np.any(updates['standardize']['scale'])
  assert np.any(updates['dense0']['kernel'])


def test_linear_path_adds_a_standardised_linear_trend_from_zero(enmap):
  """The path starts at zero (the network alone) and adds w.(x - m)/s + b,
  unbounded: a trend that carries beyond the training range."""
  r, _ = enmap
  with_path = deepsalt.Teacher(resample=r, linear=encoder.LinearPath(),
                               **_parts())
  without = deepsalt.Teacher(resample=r, **_parts())
  lab = _lab_batch(4)
  params = with_path.init(jax.random.key(0), lab, train=False)['params']
  assert set(params['linear']) == {'standardize', 'out'}
  bare = {k: v for k, v in params.items() if k != 'linear'}
  network = without.apply({'params': bare}, lab, train=False)['pred']
  np.testing.assert_array_equal(
      with_path.apply({'params': params}, lab, train=False)['pred'], network)
  x = lab @ r.T  # The encoder's (and the path's) input: sensor space.
  rng = np.random.default_rng(0)
  mean, scale = x.mean(0), x.std(0) + 0.01
  w = rng.normal(size=(x.shape[1], 1)).astype(np.float32)
  params['linear'] = {'standardize': {'mean': mean, 'scale': scale},
                      'out': {'kernel': w, 'bias': np.array([0.5])}}
  far = np.concatenate([lab, 10.0 * lab])  # Far beyond the others.
  pred = with_path.apply({'params': params}, far, train=False)['pred']
  network_far = without.apply({'params': bare}, far, train=False)['pred']
  expected = network_far + ((far @ r.T - mean) / scale) @ w[:, 0] + 0.5
  np.testing.assert_allclose(pred, expected, rtol=1e-4, atol=1e-3)


def test_student_takes_the_teachers_linear_path_and_a_latent_one_its_own(
    enmap):
  r, _ = enmap
  band = sensors.builtin('enmap')
  eye = np.eye(band.good.size)
  teacher = deepsalt.Teacher(resample=r, linear=encoder.LinearPath(),
                             **_parts())
  student = deepsalt.Student(init_matrix=eye, linear=encoder.LinearPath(),
                             **_parts())
  assert student.shared == ('encoder', 'head', 'linear')
  lab = _lab_batch(4)
  t_params = teacher.init(jax.random.key(0), lab, train=False)['params']
  t_params['linear']['out']['kernel'] = jnp.ones_like(
      t_params['linear']['out']['kernel'])
  satellite = jnp.asarray(lab @ r.T, jnp.float32)
  s_params = deepsalt.init_student_from_teacher(
      student.init(jax.random.key(1), satellite, train=False)['params'],
      t_params, student.shared)
  np.testing.assert_array_equal(s_params['linear']['out']['kernel'],
                                t_params['linear']['out']['kernel'])
  out = student.apply({'params': s_params}, satellite, train=False)
  via_teacher = teacher.apply({'params': t_params}, out['adapted'],
                              train=False, method=teacher.from_prepared)
  np.testing.assert_allclose(out['pred'], via_teacher['pred'], rtol=1e-5,
                             atol=1e-5)
  # A latent student reads the pixel, not the teacher's space: its path is
  # its own.
  latent = deepsalt.Student(latent=True, linear=encoder.LinearPath(),
                            **_parts())
  assert latent.shared == ('head',)
  l_params = latent.init(jax.random.key(2), satellite, train=False)['params']
  assert l_params['linear']['out']['kernel'].shape == (band.good.size, 1)


def test_members_predict_each_network_as_it_predicts_alone():
  """One program for several networks (a map's ensemble or stack) gives each
  its own predictions, the teacher's through the SAU's fixed start."""
  config = distill.get_config('tiny,compare=none')
  plan = stages.plan(config, lab_grid.visnir())
  sensor = config.data.sensor
  rng = np.random.default_rng(0)
  # Untrained networks predict about 0 (EC clipped there): move them off it.
  moved = lambda p: jax.tree.map(
      lambda a: a + 0.1 * rng.standard_normal(a.shape).astype(a.dtype), p)
  teacher = moved(plan.teacher.init_params(sensor))
  students = plan.students[:2]
  params = [moved(s.init_params(sensor, teacher)) for s in students]
  x = rng.uniform(0.05, 0.5, (100, sensors.builtin(sensor).good.size))
  x = x.astype(np.float32)
  mesh = sharding.make_mesh()
  _, inverse = targets.TRANSFORMS['log1p']
  run = functools.partial(predict.predict, mesh=mesh, batch_size=32,
                          inverse=inverse, chunk=16)
  together, variables = members.members(
      [s.model(sensor) for s in students] + [plan.teacher.model(sensor)],
      params + [teacher], [None, None, plan.teacher.pixel_matrix(sensor)])
  both, _ = run(together, variables, x)
  alone = [run(s.model(sensor), p, x)[0] for s, p in zip(students, params)]
  alone.append(run(plan.teacher.model(sensor), teacher,
                   plan.teacher.pixel_inputs(sensor, x),
                   method='from_prepared')[0])
  alone = np.stack(alone, axis=1)
  assert both.shape == (100, 3) and np.all(np.ptp(alone, axis=0) > 0.1)
  np.testing.assert_allclose(both, alone, rtol=1e-5, atol=1e-5)
