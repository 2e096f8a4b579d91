"""Run in a subprocess with 8 fake CPU devices (see test_train.py).

Prints JSON: for each case, the relative difference of the loss and of the
parameter update after two SGD student steps on an 8-device mesh vs the same
steps on a 1-device mesh.
"""
import json
import sys

import jax
from jax.sharding import Mesh
import numpy as np
import optax

sys.path.insert(0, ".")
sys.path.insert(0, "tests")

from conftest import tiny_config  # noqa: E402
from deepsalt_jax import input_pipeline  # noqa: E402
from deepsalt_jax import samples  # noqa: E402
from deepsalt_jax import sharding  # noqa: E402
from deepsalt_jax import stages  # noqa: E402
from deepsalt_jax import train  # noqa: E402
from deepsalt_spectral import lab_grid  # noqa: E402


def two_steps(plan, data, mesh, teacher_params, steps):
  student = plan.students[0]
  params = student.init_params(data.sensor, teacher_params)
  # Plain SGD: Adam's normalisation would blow float noise in near-zero
  # gradients up to a full step and hide what is compared, the gradients.
  state = train.create_train_state(params, student.config, mesh,
                                   tx=optax.sgd(0.1))
  if not steps:
    return jax.device_get(state.params), None
  key = jax.random.key_data(jax.random.key(0))
  block_fn = train.make_train_block(
      student.loss_fn(data.sensor, plan.teacher), mesh)
  streams = student.streams(data)
  state, terms = block_fn(state, input_pipeline.device_streams(streams, mesh),
                          input_pipeline.block_indices(streams, 0, steps,
                                                       mesh),
                          teacher_params, key)
  jax.block_until_ready(terms)  # See train.STEPS_PER_DISPATCH.
  # The loss terms of the last step.
  return jax.device_get(state.params), jax.device_get(
      jax.tree.map(lambda t: t[-1], terms))


def relative_update_difference(p0, p8, p1) -> float:
  """|update_8 - update_1| / |update_1| over all params (global norms)."""
  diff = sum(float(np.sum(((a - o) - (b - o)) ** 2)) for a, b, o in zip(
      jax.tree.leaves(p8), jax.tree.leaves(p1), jax.tree.leaves(p0)))
  norm = sum(float(np.sum((b - o) ** 2)) for b, o in zip(
      jax.tree.leaves(p1), jax.tree.leaves(p0)))
  return (diff / norm) ** 0.5


CASES = {  # name: config arg, loss weight overrides.
    "mmd": ("alignment=mmd", {}),
    "coral": ("alignment=coral", {}),
    "adversarial": ("alignment=adversarial", {}),
    # The alignment term alone: a wrong all-gather gradient scale (e.g. 8x)
    # cannot hide behind the other terms.
    "mmd_only": ("alignment=mmd", {"w_regression": 0.0, "w_distill_feature":
                                   0.0, "w_distill_pred": 0.0,
                                   "w_reconstruction": 0.0}),
    # No batch-statistic term: per-sample losses averaged by pmean.
    "no_align": ("no_align", {}),
}


def main():
  data_dir = sys.argv[1]
  assert jax.device_count() == 8
  out = {"devices": jax.device_count()}
  for name, (arg, weights) in CASES.items():
    config = tiny_config("distill", data_dir,
                         arg + ",compare=none,candidates=none")
    config.model.encoder.dropout = 0.0  # The teacher's too.
    config.loss.update(weights)
    plan = stages.plan(config, lab_grid.visnir())
    data = samples.load_data(config.data)
    teacher_params = plan.teacher.init_params(data.sensor)
    meshes = [Mesh(np.array(jax.devices()), (sharding.AXIS,)),
              Mesh(np.array(jax.devices()[:1]), (sharding.AXIS,))]
    (p0, _), (p8, t8), (p1, t1) = [
        two_steps(plan, data, m, teacher_params, steps)
        for m, steps in ((meshes[1], 0), (meshes[0], 2), (meshes[1], 2))]
    out[name] = {
        "loss": float(abs(t8["loss"] - t1["loss"]) / abs(t1["loss"])),
        "update": relative_update_difference(p0, p8, p1),
    }
  print(json.dumps(out))


if __name__ == "__main__":
  main()
