"""Run logs from process 0: JSONL metrics, TensorBoard events, progress."""
from __future__ import annotations

import json
import logging as py_logging
import math
import time

from absl import logging
from etils import epath
import numpy as np

from deepsalt_jax import paths
from deepsalt_jax import sharding


class _QuietLibraries(py_logging.Filter):
  """Drops INFO chatter of checkpointing/data libraries (warnings pass)."""
  LIBRARIES = ("/orbax/", "/tensorflow_datasets/")

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or not any(
        lib in record.pathname for lib in self.LIBRARIES)


def quiet_library_logs() -> None:
  """Keeps the terminal to our progress lines and library warnings."""
  py_logging.getLogger("absl").addFilter(_QuietLibraries())


class MetricWriter:
  """Writes scalars as JSONL and TensorBoard events (process 0 only)."""

  def __init__(self, directory: epath.PathLike):
    self._staging = None
    self._tb = None
    if sharding.is_main_process():
      from tensorboardX import SummaryWriter  # Lazy: only process 0 writes.
      self._staging = paths.Staging(directory)
      self._tb = SummaryWriter(str(self._staging.local / "tensorboard"))

  def write(self, step: int, scalars: dict[str, float],
            name: str = "metrics.jsonl") -> None:
    if self._staging is None:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self._staging.local / name, "a") as f:
      f.write(json.dumps(record) + "\n")
    for key, value in scalars.items():
      self._tb.add_scalar(key, float(value), int(step))
    self._tb.flush()
    self._staging.publish_all()

  def close(self) -> None:
    if self._staging is not None:
      self._tb.close()
      self._staging.publish_all()
      self._staging.close()


def first_non_finite(history: list[tuple[int, dict[str, float]]]
                     ) -> tuple[int, str] | None:
  """(step, term) of the first NaN/Inf loss term in `history`, if any.

  At a step, the terms come before their weighted sum 'loss', so a NaN in
  one term is reported under its own name.
  """
  for step, scalars in history:
    for key in sorted(scalars, key=lambda k: (k == "loss", k)):
      if not math.isfinite(scalars[key]):
        return step, key
  return None


class Progress:
  """A progress line: step, loss terms, steps/s and ETA."""

  def __init__(self, name: str, first_step: int, total_steps: int):
    self.name, self.total = name, total_steps
    self._start_step, self._start = first_step, time.perf_counter()

  def line(self, step: int, scalars: dict[str, float]) -> str:
    elapsed = time.perf_counter() - self._start
    rate = (step - self._start_step) / max(elapsed, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    terms = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
    return (f"[{self.name}] step {step}/{self.total} {terms} "
            f"| {rate:.1f} steps/s, ETA {eta:.0f}s")

  def log(self, step: int, scalars: dict[str, float]) -> None:
    if sharding.is_main_process():
      logging.info("%s", self.line(step, scalars))


def eta(start: float, done: int, total: int) -> str:
  """', ETA <s> s' for the `total - done` units left at the pace of the
  `done` finished since `start` (time.perf_counter()); '' before the
  first."""
  if not done:
    return ""
  return f", ETA {(time.perf_counter() - start) / done * (total - done):.0f} s"


def mean_scalars(history: list[tuple[int, dict[str, float]]]
                 ) -> dict[str, float]:
  keys = history[-1][1].keys()
  return {k: float(np.mean([s[k] for _, s in history])) for k in keys}
