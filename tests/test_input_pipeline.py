"""The streams on the devices: every split of the data gets the same shapes."""
import numpy as np

from conftest import tiny_config
from deepsalt_jax import input_pipeline
from deepsalt_jax import samples
from deepsalt_jax import sharding


def test_every_split_pads_its_streams_to_the_same_shapes(prepared_data_dir):
  """Two held-out regions of different sizes leave streams of different
  lengths (CV.98 or ICRAF Africa held out: 4,468 or 3,623 library samples,
  either side of 4,096); on the devices both are padded (with zero rows
  after the samples) to the same power of two, so one compiled step serves
  both."""
  config = tiny_config("distill", prepared_data_dir)
  data = samples.load_data(config.data)
  mesh = sharding.make_mesh()
  shapes, lengths = [], []
  for region in (0, 5):
    split = samples.held_out(data, data.region == region, config.data)
    streams = input_pipeline.student_streams(
        split, 8, 0, True, {"labelled", "paired", "unlabelled", "library"})
    streams.update(input_pipeline.teacher_streams(split, 8, 0))
    on_devices = input_pipeline.device_streams(streams, mesh)
    shapes.append({(n, k): v.shape for n, arrays in on_devices.items()
                   for k, v in arrays.items()})
    lengths.append({n: len(s) for n, s in streams.items()})
    for name, stream in streams.items():
      for key, value in stream.arrays.items():
        padded = np.asarray(on_devices[name][key])
        np.testing.assert_array_equal(padded[:len(value)], value)
        assert not padded[len(value):].any()
        rows = padded.shape[0]
        assert rows >= len(value) and rows & (rows - 1) == 0
  assert lengths[0] != lengths[1]
  assert shapes[0] == shapes[1]
