r"""Forest: the random forest peer's cost and accuracy by training size.

  python -m benchmarks.forest [--sizes=50,500,5000,20000] \
      [--samples=none,1000,2000] [--test=5000]

Fits `baselines.random_forest` (300 trees) on n simulated pixels and
predicts n / 4 of them (a CV fold's share), for each size and each bootstrap
cap (`--samples`; none: all n, the forest before the cap), the caps
interleaved at each size. Prints wall and CPU seconds (user + system, all
threads) of fit + predict, the log-log slope of CPU time in n, and R2 on
--test held-out pixels. Pixels: salt-free soils (continuum, iron, water and
clay absorptions, random depths) salted by data_prep.forward_model.add_salt
(EC log-normal, random salt mixes and moisture), on 215 bands from 420 to
2440 nm (EnMAP's good bands), 1 % noise; the target is log1p(EC). Not a
test; wall times depend on the machine's load.
"""
from __future__ import annotations

import time

from absl import app
from absl import flags
import numpy as np
from sklearn import metrics

from data_prep import forward_model
from deepsalt_jax import baselines
from deepsalt_spectral import resampling

_SIZES = flags.DEFINE_list("sizes", ["50", "500", "5000", "20000"],
                           "Training sizes.")
_SAMPLES = flags.DEFINE_list("samples", ["none", "1000", "2000"],
                             "Bootstrap caps (none: all n).")
_TEST = flags.DEFINE_integer("test", 5000, "Held-out pixels for R2.")
BANDS = np.linspace(420.0, 2440.0, 215)


def pixels(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """n simulated soil pixels [n, 215] and their log1p(EC)."""
  rng = np.random.default_rng(seed)
  lab = resampling.lab_wavelengths()
  span = (lab - lab[0]) / (lab[-1] - lab[0])
  continuum = (rng.uniform(0.1, 0.3, (n, 1)) + rng.uniform(0.1, 0.3, (n, 1))
               * span ** rng.uniform(0.4, 1.2, (n, 1)))
  depth = rng.uniform(0.0, 1.0, (n, 4)) * [0.3, 0.2, 0.3, 0.25]
  features = np.stack([forward_model.gaussian_bands(lab, [(c, w, 1.0)])
                       for c, w in ((900, 200), (1400, 60), (1900, 80),
                                    (2200, 60))])
  soil = continuum * np.exp(-depth @ features)
  ec = rng.lognormal(np.log(4.0), 1.0, n)
  composition = rng.dirichlet(np.ones(len(forward_model.SALTS)), n)
  salted = forward_model.add_salt(
      soil, ec, composition, crust_noise=rng.lognormal(0.0, 0.3, n),
      base_moisture=rng.uniform(0.0, 0.05, n))
  x = np.stack([np.interp(BANDS, lab, s) for s in salted])
  x *= 1.0 + 0.01 * rng.standard_normal(x.shape)
  return x.astype(np.float32), np.log1p(ec)


def main(argv):
  del argv
  sizes = [int(s) for s in _SIZES.value]
  caps = [None if c == "none" else int(c) for c in _SAMPLES.value]
  x, y = pixels(max(sizes) + _TEST.value)
  test = slice(max(sizes), None)
  rows = {c: [] for c in caps}
  print("| n | cap | wall s | CPU s | R2 held out |\n|---|---|---|---|---|")
  for n in sizes:
    for cap in caps:
      wall, cpu = time.perf_counter(), time.process_time()
      predict = baselines.random_forest(x[:n], y[:n], samples=cap)
      predict(x[n // 4:n // 2])
      wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
      r2 = metrics.r2_score(y[test], predict(x[test]))
      rows[cap].append(cpu)
      print(f"| {n:,} | {cap or 'none'} | {wall:.1f} | {cpu:.1f} | "
            f"{r2:.3f} |", flush=True)
  for cap in caps:
    slope = np.polyfit(np.log(sizes), np.log(rows[cap]), 1)[0]
    last = np.log(rows[cap][-1] / rows[cap][-2]) / np.log(sizes[-1] /
                                                          sizes[-2])
    print(f"cap {cap or 'none'}: CPU slope {slope:.2f}, last two sizes "
          f"{last:.2f}")


if __name__ == "__main__":
  app.run(main)
