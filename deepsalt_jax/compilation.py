"""Compilation paid once and counted: a persistent XLA cache, compile time.

Every stage, CV fold and peer with the same shapes compiles the same
programs. The persistent compilation cache (on by default) keeps them on
disk, so a re-run, the next fold or the next peer loads them instead of
compiling again. Its folder is $DEEPSALT_CACHE_DIR, else
~/.cache/deepsalt_jax/jax_cache; DEEPSALT_CACHE_DIR=off turns it off, and a
folder set through JAX's own `jax_compilation_cache_dir` (or
$JAX_COMPILATION_CACHE_DIR) is used as it is. JAX keys every entry by the
program, the devices, the compiler options and the jax/jaxlib versions, so
a stale entry is never loaded; a cache that cannot be read or written only
warns and compiles.

`CompileClock` counts what JAX spends tracing, lowering and compiling (or
loading from the cache) while it is open: the run log reports it per stage.
"""
from __future__ import annotations

import os
import pathlib

import jax
from jax import monitoring
from jax.experimental.compilation_cache import compilation_cache

CACHE_ENV = "DEEPSALT_CACHE_DIR"
OFF = ("off", "none", "0", "")
# JAX's default (1 s) skips what compiles faster, but on CPU a training step
# compiles in about a second and is paid again by every fold and peer.
MIN_COMPILE_SECONDS = 0.1

# jax._src.dispatch's compile events (tracing, lowering to MLIR, XLA compile
# or persistent-cache load) and the cache-hit event of jax._src.compiler.
_DURATIONS = ("/jax/core/compile/jaxpr_trace_duration",
              "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")
_BACKEND = _DURATIONS[-1]
_CACHE_HIT = "/jax/compilation_cache/cache_hits"


def cache_dir() -> pathlib.Path | None:
  """The persistent cache's folder, or None when DEEPSALT_CACHE_DIR=off."""
  value = os.environ.get(CACHE_ENV)
  if value is None:
    return pathlib.Path.home() / ".cache" / "deepsalt_jax" / "jax_cache"
  return None if value.strip().lower() in OFF else pathlib.Path(value)


def use_persistent_cache() -> str | None:
  """Turns the persistent compilation cache on; returns its folder (None:
  off). Call before the first compilation that should use it."""
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  folder = cache_dir()
  if folder is None:
    return None
  jax.config.update("jax_compilation_cache_dir", str(folder))
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    MIN_COMPILE_SECONDS)
  # JAX decides once per process whether the cache is used, at the first
  # compilation: decide again with the folder set.
  compilation_cache.reset_cache()
  return str(folder)


class CompileClock:
  """Seconds JAX spends tracing, lowering and compiling while open.

  Programs loaded from the persistent cache count their loading time and
  are counted as `cached`.
  """

  def __init__(self):
    self.seconds, self.programs, self.cached = 0.0, 0, 0

  def _on_duration(self, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event in _DURATIONS:
      self.seconds += duration
      self.programs += event == _BACKEND

  def _on_event(self, event: str, **kwargs) -> None:
    del kwargs
    self.cached += event == _CACHE_HIT

  def __enter__(self) -> CompileClock:
    monitoring.register_event_duration_secs_listener(self._on_duration)
    monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc) -> None:
    monitoring.unregister_event_duration_listener(self._on_duration)
    monitoring.unregister_event_listener(self._on_event)

  def summary(self) -> str:
    return (f"{self.seconds:.1f} s compiling {self.programs} programs "
            f"({self.cached} loaded from the persistent cache)")
