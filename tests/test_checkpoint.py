"""Checkpointer: round trip, half-written steps, model mismatch errors."""
import logging

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax
import pytest

from deepsalt_jax import checkpoint


def _state(width=3):
  # A named tuple inside, as optax states have: saved as a dict.
  return {"w": jnp.arange(2 * width, dtype=jnp.float32).reshape(2, width),
          "opt": optax.ScaleByAdamState(jnp.asarray(7), jnp.zeros(2),
                                        jnp.ones(2))}


def _abstract(state):
  mesh = jax.make_mesh((1,), ("data",))
  return checkpoint.abstract_like(state, NamedSharding(mesh, P()))


def test_round_trip_keeps_latest(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, every=2, keep=2)
  for step in (1, 2, 3, 4, 6):
    ckpt.save(step, jax.tree.map(lambda x: x + step, _state()))
  ckpt.close()
  ckpt = checkpoint.Checkpointer(tmp_path, every=2, keep=2)
  assert ckpt.latest_step() == 6
  restored = ckpt.restore(_abstract(_state()))
  np.testing.assert_array_equal(restored["w"], _state()["w"] + 6)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "6"]


def test_half_written_step_is_ignored_with_a_warning(tmp_path, caplog):
  ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep=3)
  ckpt.save(2, _state())
  ckpt.close()
  # What a run killed while saving step 3 leaves behind.
  partial = tmp_path / "3.orbax-checkpoint-tmp-1732"
  (partial / "default").mkdir(parents=True)
  (partial / "default" / "garbage").write_bytes(b"\0" * 10)
  with caplog.at_level(logging.WARNING):
    ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep=3)
  assert "half-written" in caplog.text and partial.name in caplog.text
  assert ckpt.latest_step() == 2
  np.testing.assert_array_equal(ckpt.restore(_abstract(_state()))["w"],
                                _state()["w"])


def test_restore_into_another_model_shape_names_the_field(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep=1)
  ckpt.save(1, _state(width=3))
  ckpt.close()
  ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep=1)
  with pytest.raises(ValueError, match=r"  w: checkpoint \(2, 3\) vs "
                     r"config \(2, 5\)"):
    ckpt.restore(_abstract(_state(width=5)))


def test_missing_checkpoint_says_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match="train first"):
    checkpoint.Checkpointer(tmp_path, 1, 1).restore(_abstract(_state()))
