"""Checkpointer: round trip, params alone, damaged and half-written steps."""
import logging

from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax
import pytest

from conftest import delete_checkpoint_data
from deepsalt_jax import checkpoint


def _state(width=3, step=0):
  params = {"w": jnp.arange(2 * width, dtype=jnp.float32).reshape(2, width)
                 + step, "b": jnp.full(width, float(step))}
  state = train_state.TrainState.create(apply_fn=None, params=params,
                                        tx=optax.adam(1e-3))
  return state.replace(step=jnp.asarray(step))


def _abstract(tree):
  mesh = jax.make_mesh((1,), ("data",))
  return checkpoint.abstract_like(tree, NamedSharding(mesh, P()))


def _saved(directory, steps, keep=3):
  ckpt = checkpoint.Checkpointer(directory, every=1, keep=keep)
  for step in steps:
    ckpt.save(step, _state(step=step))
  ckpt.close()


def test_round_trip_keeps_latest_and_restores_state_and_params(tmp_path):
  _saved(tmp_path, (1, 2, 3, 4, 6), keep=2)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "6"]
  ckpt = checkpoint.Checkpointer(tmp_path)
  assert ckpt.latest_step() == 6
  state = ckpt.restore_state(_abstract(_state()))
  assert int(state.step) == 6
  np.testing.assert_array_equal(state.params["w"], _state(step=6).params["w"])
  jax.tree.map(np.testing.assert_array_equal, state.opt_state,
               _state(step=6).opt_state)
  # Parameters alone: no optimizer state is built or read.
  params, step = ckpt.restore_params(_abstract(_state().params))
  assert step == 6
  np.testing.assert_array_equal(params["b"], np.full(3, 6.0))
  ckpt.close()


def _truncate(step_dir):
  for f in step_dir.rglob("*"):
    if f.is_file():
      f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])


@pytest.mark.parametrize("damage", [_truncate, delete_checkpoint_data])
def test_damaged_latest_step_falls_back_with_a_warning(tmp_path, caplog,
                                                       damage):
  _saved(tmp_path, (2, 4))
  damage(tmp_path / "4")
  ckpt = checkpoint.Checkpointer(tmp_path)
  with caplog.at_level(logging.WARNING):
    params, step = ckpt.restore_params(_abstract(_state().params))
  assert step == 2
  np.testing.assert_array_equal(params["b"], np.full(3, 2.0))
  assert "step 4" in caplog.text and "damaged" in caplog.text
  # Resuming deletes the damaged later step, so training can save it again.
  state = ckpt.restore_state(_abstract(_state()))
  assert int(state.step) == 2 and ckpt.latest_step() == 2
  ckpt.save(4, _state(step=4))
  ckpt.close()
  params, step = checkpoint.Checkpointer(tmp_path).restore_params(
      _abstract(_state().params))
  assert step == 4


def test_a_folder_of_damaged_steps_falls_back_to_the_next(tmp_path, caplog):
  """A stage's damaged `best` for its regular checkpoints."""
  _saved(tmp_path / "best", (4,))
  _saved(tmp_path / "checkpoints", (2, 6))
  delete_checkpoint_data(tmp_path / "best" / "4")
  with caplog.at_level(logging.WARNING):
    params, step = checkpoint.restore_params(
        [tmp_path / "best", tmp_path / "checkpoints"],
        _abstract(_state().params))
  assert step == 6
  np.testing.assert_array_equal(params["b"], np.full(3, 6.0))
  assert f"Every step in {tmp_path / 'best'} is damaged; restoring from " in (
      caplog.text)
  delete_checkpoint_data(tmp_path / "checkpoints" / "6")
  delete_checkpoint_data(tmp_path / "checkpoints" / "2")
  with pytest.raises(ValueError, match=r"No readable checkpoint in .*"
                     r"checkpoints: steps \[6, 2\] are damaged"):
    checkpoint.restore_params([tmp_path / "best", tmp_path / "checkpoints"],
                              _abstract(_state().params))


def test_no_readable_step_says_what_to_do(tmp_path):
  _saved(tmp_path, (2, 4))
  _truncate(tmp_path / "2")
  delete_checkpoint_data(tmp_path / "4")
  with pytest.raises(ValueError, match=r"No readable checkpoint .* steps "
                     r"\[4, 2\] are damaged.*delete"):
    checkpoint.Checkpointer(tmp_path).restore_params(
        _abstract(_state().params))


def test_half_written_step_is_ignored_with_a_warning(tmp_path, caplog):
  _saved(tmp_path, (2,))
  # What a run killed while saving step 3 leaves behind.
  partial = tmp_path / "3.orbax-checkpoint-tmp-1732"
  (partial / "params").mkdir(parents=True)
  (partial / "params" / "garbage").write_bytes(b"\0" * 10)
  with caplog.at_level(logging.WARNING):
    ckpt = checkpoint.Checkpointer(tmp_path)
  assert "half-written" in caplog.text and partial.name in caplog.text
  assert ckpt.latest_step() == 2
  assert ckpt.restore_params(_abstract(_state().params))[1] == 2


def test_restore_into_another_model_shape_names_the_field(tmp_path):
  _saved(tmp_path, (1,))
  with pytest.raises(ValueError, match=r"  w: checkpoint \(2, 3\) vs "
                     r"config \(2, 5\)"):
    checkpoint.Checkpointer(tmp_path).restore_params(
        _abstract(_state(width=5).params))


def test_missing_checkpoint_says_what_to_do(tmp_path):
  with pytest.raises(ValueError, match="train first"):
    checkpoint.Checkpointer(tmp_path).restore_params(
        _abstract(_state().params))
