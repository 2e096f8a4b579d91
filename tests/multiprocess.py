"""One of 2 processes of a localhost `jax.distributed` run (test_cluster.py).

argv: process_id, coordinator port, data_dir, workdir, out_json, and
optionally the 0-based step at which this process alone gets a SIGTERM.
Trains the tiny distillation config, then writes what this process saw.
"""
import json
import os
import signal
import sys

from absl import logging
import jax

sys.path.insert(0, ".")
sys.path.insert(0, "tests")


def main():
  process_id, port, data_dir, workdir, out = sys.argv[1:6]
  sigterm_at = int(sys.argv[6]) if len(sys.argv) > 6 else None
  logging.set_verbosity(logging.INFO)  # Progress lines, from process 0 only.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                             num_processes=2, process_id=int(process_id))
  from conftest import tiny_config  # noqa: E402
  from deepsalt_jax import input_pipeline  # noqa: E402
  from deepsalt_jax import train  # noqa: E402
  import numpy as np  # noqa: E402

  if sigterm_at is not None:
    indices_fn = input_pipeline.block_indices

    def preempting(streams, first, count, mesh):
      if first <= sigterm_at < first + count and "paired" in streams:
        os.kill(os.getpid(), signal.SIGTERM)
      return indices_fn(streams, first, count, mesh)

    input_pipeline.block_indices = preempting
  config = tiny_config("distill", data_dir, "compare=none,candidates=none")
  try:
    results = train.train_and_evaluate(config, workdir)
  except train.Preempted as e:
    with open(out, "w") as f:
      json.dump({"preempted": str(e)}, f)
    return
  with open(out, "w") as f:
    json.dump({"process_count": jax.process_count(),
               "device_count": jax.device_count(),
               "local_device_count": jax.local_device_count(),
               "pred": np.asarray(results["student"]["pred"]).tolist()}, f)


if __name__ == "__main__":
  main()
