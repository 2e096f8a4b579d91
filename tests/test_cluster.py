"""Multi-process training on localhost: 2 processes x 2 CPU devices."""
import json
import sys

import numpy as np
import portpicker
import pytest

from conftest import REPO, cpu_devices_env, run_processes, tiny_config
from deepsalt_jax import evaluate

pytestmark = pytest.mark.slow


def _two_processes(prepared_data_dir, workdir, outs, sigterm_at=None):
  """Runs tests/multiprocess.py twice in parallel; returns their logs."""
  port = portpicker.pick_unused_port()
  env = cpu_devices_env(2)
  commands = []
  for i in range(2):
    args = [sys.executable, str(REPO / "tests" / "multiprocess.py"), str(i),
            str(port), str(prepared_data_dir), str(workdir), str(outs[i])]
    if sigterm_at is not None and i == 1:
      args.append(str(sigterm_at))
    commands.append(args)
  logs = run_processes(commands, [env, env], outs[0].parent / "logs")
  return logs, [json.loads(out.read_text()) for out in outs]


def test_two_processes_agree_on_preemption_train_like_one_and_restore(
    prepared_data_dir, tmp_path):
  outs = [tmp_path / f"out{i}.json" for i in range(2)]
  run = tmp_path / "run"
  # Only process 1 gets the SIGTERM (during step 3); both save step 3, the
  # first step at which they compare flags (a checkpoint step), and stop.
  _, seen = _two_processes(prepared_data_dir, run, outs, sigterm_at=2)
  for out in seen:
    assert "saved step 3" in out["preempted"], out
  assert sorted(p.name for p in (run / "student" / "checkpoints").iterdir()
                if p.name.isdigit()) == ["3"]

  # Re-running resumes from step 3 in both processes.
  logs, seen = _two_processes(prepared_data_dir, run, outs)
  for out in seen:
    assert (out["process_count"], out["device_count"],
            out["local_device_count"]) == (2, 4, 2)
  # Both processes hold the same replicated model: identical predictions.
  np.testing.assert_array_equal(seen[0]["pred"], seen[1]["pred"])
  # Only process 0 logs.
  assert "[student] resuming from the checkpoint of step 3" in logs[0]
  assert "[student] step" in logs[0] and "[student] step" not in logs[1]
  assert [json.loads(l)["step"] for l in (run / "student" / "metrics.jsonl")
          .read_text().splitlines()] == [3, 6]  # Written once each.

  # The 4-device, 2-process checkpoint restores in this 1-device process.
  config = tiny_config("distill", prepared_data_dir,
                       "compare=none,candidates=none")
  restored = evaluate.evaluate_checkpoints(config, run)
  np.testing.assert_allclose(restored["student"]["pred"], seen[0]["pred"],
                             rtol=1e-5)
