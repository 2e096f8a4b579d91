"""Lab grids from the data, SAU modes by coverage, and the latent SAU."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import distill
from data_prep import roles
from deepsalt_jax import evaluate
from deepsalt_jax import losses
from deepsalt_jax import run_config
from deepsalt_jax import samples
from deepsalt_jax import sharding
from deepsalt_jax import stages
from deepsalt_jax import train
from deepsalt_jax.models import from_config
from deepsalt_spectral import errors
from deepsalt_spectral import lab_grid
from deepsalt_spectral import sensors

# A MIR FTIR grid like LimeSoDa's NRW sets (absorbance, 2 cm-1 steps).
MIR = lab_grid.LabGrid(np.arange(600.0, 4001.0, 4.0), "cm-1", "absorbance")


def _model_config(**overrides) -> ml_collections.ConfigDict:
  config = distill.get_config("tiny").model
  config.update(overrides)
  return config


def test_lab_grid_round_trips_and_says_when_physics_fails():
  enmap = sensors.builtin("enmap")
  bands = enmap.good_wavelength, enmap.good_fwhm
  assert lab_grid.visnir().physics_problem(*bands) == ""
  assert "absorbance in cm-1" in MIR.physics_problem(*bands)
  short = lab_grid.LabGrid(np.arange(400.0, 1001.0, 10.0))
  assert "covers" in short.physics_problem(*bands)
  again = lab_grid.LabGrid.from_json(json.loads(json.dumps(MIR.to_json())))
  assert again == MIR and again != lab_grid.visnir()
  np.testing.assert_allclose(MIR.wavelength_nm[[0, -1]], [1e7 / 600, 2500])
  with pytest.raises(errors.UserError, match="unit"):
    lab_grid.LabGrid(MIR.axis, "um")


def test_sau_mode_follows_coverage_unless_named():
  config = _model_config(space="lab")
  assert from_config.sau_mode(config, "enmap", lab_grid.visnir()) == "physics"
  assert from_config.sau_mode(config, "enmap", MIR) == "latent"
  config.sau = "latent"
  assert from_config.sau_mode(config, "enmap", lab_grid.visnir()) == "latent"
  config.sau = "physics"
  with pytest.raises(errors.UserError, match="sau=latent"):
    from_config.sau_mode(config, "enmap", MIR)
  with pytest.raises(errors.UserError, match="use space=lab"):
    from_config.build_teacher(_model_config(space="sensor"), "enmap", MIR,
                              target_transform="log1p")


def test_latent_student_starts_from_the_teachers_head_only():
  config = _model_config(space="lab")
  teacher = from_config.build_teacher(config, "enmap", MIR,
                                      target_transform="log1p")
  student = from_config.build_student(config, "enmap", MIR,
                                      target_transform="log1p")
  n_sat = sensors.builtin("enmap").good.size
  t_params = teacher.init(jax.random.key(0), jnp.zeros((2, MIR.size)),
                          train=False)["params"]
  stage = stages.StudentStage("student", distill.get_config("tiny"), MIR)
  s_params = stage.init_params("enmap", t_params)
  assert student.latent and student.shared == ("head",)
  chex_equal = lambda a, b: jax.tree.all(jax.tree.map(np.array_equal, a, b))
  assert chex_equal(s_params["head"], t_params["head"])
  assert {"encoder", "project", "decoder", "head"} <= set(s_params)
  # Its encoder reads the pixel, not the lab grid.
  assert s_params["encoder"]["dense0"]["kernel"].shape[0] == n_sat
  out = student.apply({"params": s_params}, jnp.zeros((3, n_sat)),
                      train=False)
  assert out["pred"].shape == (3,) and "adapted" not in out
  assert out["features"].shape == out["latent"].shape


def test_info_nce_known_answers():
  eye = jnp.eye(4)
  assert float(losses.info_nce(eye, eye, temperature=0.01)) < 1e-6
  same = jnp.ones((4, 3))
  np.testing.assert_allclose(losses.info_nce(same, same), np.log(4),
                             rtol=1e-5)
  # Swapped partners: worse than chance.
  assert float(losses.info_nce(eye, eye[::-1], 0.1)) > np.log(4)
  assert float(losses.autoencoder_loss(same, same)) == 0.0


def _mir_data(n: int = 480, seed: int = 0) -> samples.Data:
  """Five soil factors seen by a MIR instrument and by EnMAP."""
  rng = np.random.default_rng(seed)
  n_sat = sensors.builtin("enmap").good.size
  z = rng.normal(size=(n, 5))
  lab = (1.0 + 0.1 * z @ rng.normal(size=(5, MIR.size))).astype(np.float32)
  satellite = (0.3 + 0.02 * z @ rng.normal(size=(5, n_sat))).astype(
      np.float32)
  target = np.expm1(1.5 + 0.5 * z[:, 0]).astype(np.float32)
  role = roles.assign_roles(rng.random(n), 0.3, 0.4)
  has_lab = role == roles.PAIRED
  return samples.Data(
      lab=np.where(has_lab[:, None], lab, np.nan).astype(np.float32),
      satellite=satellite, pair_satellite=satellite, target=target,
      region=np.zeros(n, np.int32), fold=np.zeros(n, np.int32), role=role,
      region_names=("a",), test=rng.random(n) < 0.2,
      validation=np.zeros(n, bool), blocks=np.full(n, "b0"),
      sensor="enmap", lab_grid=MIR)


@pytest.mark.slow
def test_latent_student_learns_the_pairing_on_a_mir_grid(tmp_path):
  """On a MIR lab grid the plan picks the latent SAU, the contrastive term
  falls from chance and the teacher gets no physics transfer entry."""
  config = distill.get_config("tiny,compare=none,candidates=none")
  config.model.space = "lab"
  config.data.validation_fraction = 0.0
  config.train.update(steps=120, log_every=5, checkpoint_every=120)
  config.teacher.steps = 120
  data = _mir_data()
  plan = stages.plan(config, data.lab_grid)
  params = train.train_plan(plan, data, tmp_path, sharding.make_mesh())
  logged = [json.loads(line) for line in
            (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
  chance = np.log(config.train.batch_size)
  assert logged[0]["contrastive"] > 0.8 * chance
  assert logged[-1]["contrastive"] < 0.6 * logged[0]["contrastive"]
  assert "reconstruction" not in logged[0]
  names = [e.name for e in evaluate.entries(plan, data, params)]
  assert names == ["teacher", "student"]
  run_config.save(config, tmp_path / "run", data.lab_grid)
  assert run_config.lab_grid(tmp_path / "run") == MIR
