"""Evaluation on the held-out regions: predictions, metrics, table, plot."""
from __future__ import annotations

import json
import pathlib
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from deepsalt_jax import losses
from deepsalt_jax import metrics
from deepsalt_jax import reporting

METRIC_COLUMNS = ("r2", "rmse", "rpd", "rpiq", "bias")


def predict(apply_fn, params: Any, x: np.ndarray, mesh: jax.sharding.Mesh,
            batch_size: int) -> np.ndarray:
  """Model outputs ('pred') for all rows of `x`, batched and data-sharded.

  Every process holds all of `x` and feeds its own rows of each global batch.
  """
  devices = jax.device_count()
  batch_size = -(-batch_size // devices) * devices
  sharding = NamedSharding(mesh, P("data"))
  procs, proc = jax.process_count(), jax.process_index()
  fn = jax.jit(lambda p, b: apply_fn({"params": p}, b, train=False)["pred"])
  out = []
  for start in range(0, len(x), batch_size):
    chunk = x[start:start + batch_size]
    padded = np.zeros((batch_size,) + x.shape[1:], x.dtype)
    padded[:len(chunk)] = chunk
    rows = batch_size // procs
    local = padded[proc * rows:(proc + 1) * rows]
    batch = jax.make_array_from_process_local_data(sharding, local,
                                                   padded.shape)
    pred = multihost_utils.process_allgather(fn(params, batch), tiled=True)
    out.append(np.asarray(pred)[:len(chunk)])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def score(target: np.ndarray, pred: np.ndarray, region: np.ndarray,
          region_names: tuple[str, ...]) -> dict[str, Any]:
  return {"overall": metrics.regression_metrics(target, pred),
          "per_region": metrics.per_region(target, pred, region,
                                           region_names)}


def markdown_table(results: dict[str, dict], unit: str) -> str:
  head = ("| model | input | " + " | ".join(
      c.upper() if c != "rmse" else f"RMSE ({unit})" for c in METRIC_COLUMNS)
          + " | n |")
  lines = [head, "|" + "---|" * (len(METRIC_COLUMNS) + 3)]
  for name, res in results.items():
    m = res["overall"]
    cells = " | ".join(f"{m[c]:.3f}" for c in METRIC_COLUMNS)
    lines.append(f"| {name} | {res['input']} | {cells} | {m['n']} |")
  return "\n".join(lines)


def parity_plot(path: pathlib.Path, results: dict[str, dict],
                unit: str) -> None:
  import matplotlib  # Lazy: plotting is only needed here.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 4),
                           squeeze=False)
  for ax, (name, res) in zip(axes[0], results.items()):
    y, p = np.asarray(res["target"]), np.asarray(res["pred"])
    hi = float(max(y.max(), p.max())) * 1.05
    ax.scatter(y, p, s=6, alpha=0.5)
    ax.plot([0, hi], [0, hi], "k--", lw=1)
    ax.set(xlim=(0, hi), ylim=(0, hi), xlabel=f"measured ({unit})",
           ylabel=f"predicted ({unit})",
           title=f"{name}\nR²={res['overall']['r2']:.2f} "
           f"RMSE={res['overall']['rmse']:.2f}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def report(entries: list[tuple[str, str, Any, Any, np.ndarray]], data,
           config: ml_collections.ConfigDict, workdir: pathlib.Path,
           mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """Scores each (name, input, model, params, x) on the held-out samples.

  `x` holds the model's inputs for `data`'s test rows. Writes results.json,
  results.md and parity.png into `workdir` and logs the table.
  """
  _, inverse = losses.TARGET_TRANSFORMS[config.data.target_transform]
  unit = "dS/m" if config.data.name == "salinity" else "%"
  test = data.subset(data.test)
  results = {}
  for name, input_name, model, params, x in entries:
    pred = np.asarray(inverse(predict(model.apply, params, x, mesh,
                                      config.train.eval_batch_size)))
    results[name] = {"input": input_name, "target": test["target"],
                     "pred": pred, **score(test["target"], pred,
                                           test["region"], data.region_names)}
  table = markdown_table(results, unit)
  if reporting.is_main_process():
    parity_plot(workdir / "parity.png", results, unit)
    serialisable = {k: {kk: vv for kk, vv in v.items()
                        if kk not in ("target", "pred")}
                    for k, v in results.items()}
    (workdir / "results.json").write_text(json.dumps(
        {"test_regions": config.data.test_regions, "unit": unit,
         "models": serialisable}, indent=2))
    (workdir / "results.md").write_text(table + "\n")
    logging.info("Held-out regions %s (%s):\n%s", config.data.test_regions,
                 unit, table)
  return results
