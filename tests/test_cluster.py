"""Multi-process training on localhost: 2 processes x 2 CPU devices."""
import json
import os
import subprocess
import sys

import numpy as np
import portpicker

from conftest import REPO, tiny_config
from deepsalt_jax import train


def test_two_processes_train_like_one_and_restore_in_one(prepared_data_dir,
                                                          tmp_path):
  port = portpicker.pick_unused_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen(
      [sys.executable, str(REPO / "tests" / "multiprocess.py"), str(i),
       str(port), str(prepared_data_dir), str(tmp_path / "run"),
       str(tmp_path / f"out{i}.json")], env=env, cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  logs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][
      -3000:]
  outs = [json.loads((tmp_path / f"out{i}.json").read_text())
          for i in range(2)]
  for out in outs:
    assert (out["process_count"], out["device_count"],
            out["local_device_count"]) == (2, 4, 2)
  # Both processes hold the same replicated model: identical predictions.
  np.testing.assert_array_equal(outs[0]["pred"], outs[1]["pred"])
  # Only process 0 logs.
  assert "[student] step" in logs[0] and "[student] step" not in logs[1]
  assert len((tmp_path / "run" / "student" / "metrics.jsonl").read_text()
             .splitlines()) == 3  # Steps 2, 4, 6, written once.

  # The 4-device, 2-process checkpoint restores in this 1-device process.
  config = tiny_config("distill", prepared_data_dir, "compare=none")
  restored = train.evaluate_checkpoints(config, tmp_path / "run")
  np.testing.assert_allclose(restored["student"]["pred"], outs[0]["pred"],
                             rtol=1e-5)
