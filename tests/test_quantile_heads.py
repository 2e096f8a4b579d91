"""Quantile heads on a student's features: their width follows the noise."""
import numpy as np
from scipy import stats

from deepsalt_jax import quantile_heads


def test_the_heads_width_follows_heteroscedastic_noise():
  """y = x0 + noise whose sd grows with x1: the heads' 5-95 % width is
  about 2 x 1.645 sd, and ranks new samples' sd."""
  rng = np.random.default_rng(0)
  n = 2000
  x = rng.normal(size=(n, 6))
  sd = 0.1 + 0.2 * (x[:, 1] - x[:, 1].min())
  y = x[:, 0] + rng.normal(0.0, sd)
  heads = quantile_heads.fit(x, y, 0.9)
  assert heads["samples"] == n
  # Row k of the kernel: feature k's weight in the low and high head.
  kernel = np.asarray(heads["kernel"])
  assert kernel.shape == (6, 2)
  x_new = rng.normal(size=(500, 6))
  sd_new = 0.1 + 0.2 * (x_new[:, 1] - x[:, 1].min())
  width = quantile_heads.width(heads, x_new)
  assert (width >= 0).all()
  assert stats.spearmanr(width, sd_new)[0] > 0.9
  np.testing.assert_allclose(np.median(width), 2 * 1.645 * np.median(sd_new),
                             rtol=0.15)
  # Coverage of the heads' own band on new samples, near 90 %.
  q = ((x_new - heads["centre"]) / heads["scale"]) @ kernel + heads["bias"]
  y_new = x_new[:, 0] + rng.normal(0.0, sd_new)
  covered = np.mean((y_new >= q[:, 0]) & (y_new <= q[:, 1]))
  assert abs(covered - 0.9) < 0.04


def test_too_few_pixels_fit_no_heads():
  x = np.random.default_rng(1).normal(size=(quantile_heads.MIN_SAMPLES - 1, 3))
  assert quantile_heads.fit(x, x[:, 0], 0.9) is None
