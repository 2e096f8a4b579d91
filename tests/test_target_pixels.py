"""Real EnMAP soil pixels as the unlabelled domain (target=potsdam)."""
import numpy as np
import pytest

from conftest import tiny_config
from data_prep import datasets
from deepsalt_jax import input_pipeline
from deepsalt_jax import samples
from deepsalt_jax import train
from deepsalt_spectral import sensors


@pytest.mark.slow
def test_potsdam_pixels_feed_the_unlabelled_stream(reference_data,
                                                   prepared_data_dir,
                                                   tmp_path):
  pixels = datasets.load_target_pixels(reference_data / "enmap_potsdam",
                                       "enmap", prepared_data_dir)
  # 18 tiles, at most 400 bare-soil pixels each, at EnMAP's good bands.
  assert 100 < len(pixels) <= 18 * 400
  assert pixels.shape[1] == sensors.builtin("enmap").good.size
  assert np.isfinite(pixels).all()
  assert 0.0 <= pixels.min() and pixels.max() < 1.0
  assert 0.05 < np.median(pixels) < 0.5  # Soil reflectance, as a fraction.

  config = tiny_config("distill", prepared_data_dir,
                       "target=potsdam,compare=none,candidates=none")
  data = samples.load_data(config.data)
  streams = input_pipeline.student_streams(
      data, 16, 0, True, {"labelled", "unlabelled"})
  np.testing.assert_array_equal(streams["unlabelled"].arrays["satellite"],
                                pixels)
  results = train.train_and_evaluate(config, tmp_path)
  assert np.isfinite(results["student"]["overall"]["rmse"])
