"""The scikit-learn peers: the random forest's bootstrap cap."""
import numpy as np
from sklearn.ensemble import RandomForestRegressor

from deepsalt_jax import baselines


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, 6))
  return x, x[:, 0] - x[:, 1] ** 2 + 0.1 * rng.normal(size=n)


def _trees(forest):
  return [(t.tree_.feature.tolist(), t.tree_.threshold.tolist(),
           t.tree_.value.tolist()) for t in forest.estimators_]


def test_forest_below_the_cap_is_scikit_learns_default_forest():
  x, y = _data(80)
  predict = baselines.random_forest(x, y, seed=3, trees=20)
  before = RandomForestRegressor(20, min_samples_leaf=2, n_jobs=-1,
                                 random_state=3).fit(x, y)
  assert _trees(predict.__self__) == _trees(before)
  # The same trees; threads sum their predictions in any order.
  np.testing.assert_allclose(predict(x), before.predict(x), rtol=1e-12)


def test_forest_trees_above_the_cap_grow_on_cap_samples():
  cap = 50
  x, y = _data(3 * cap)
  forest = baselines.random_forest(x, y, trees=5, samples=cap).__self__
  assert forest.max_samples == cap
  # A tree's root weighs its bootstrap draws: cap of the 150 samples.
  assert [t.tree_.weighted_n_node_samples[0]
          for t in forest.estimators_] == [cap] * 5
  uncapped = baselines.random_forest(x, y, trees=5, samples=None).__self__
  assert _trees(forest) != _trees(uncapped)
