"""Two processes joined by jax.distributed on one machine: train, checkpoint, restart, restore, continue.

Each process has 2 simulated CPU devices (4 in all) on a 2x2 (data, fsdp) mesh with a small fsdp_min_size,
so parameters are sharded across the two processes and no process can read the whole state. The run must
match a single-process run of the same config step for step, write metrics only from process 0, save one
checkpoint from both processes, and resume from it after a restart of both.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.helpers import REPO, TEST_XLA_FLAGS

TINY = ["--config=configs/ijepa_vit.py:tiny", "--config.train.log_every=1",
        "--config.train.checkpoint_every=0", "--config.eval.random_baseline=False"]
SHARDED = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.fsdp_min_size=64"]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}")
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _main(workdir, args, *, process_id=None, port=None):
  """Starts `python -m jepa.main` (one of two processes when process_id is given)."""
  argv = [sys.executable, "-m", "jepa.main", f"--workdir={workdir}", *TINY, *args]
  if process_id is not None:
    argv += [f"--config.distributed.coordinator_address=localhost:{port}",
             "--config.distributed.num_processes=2", f"--config.distributed.process_id={process_id}"]
  log = open(os.path.join(os.path.dirname(workdir), f"{os.path.basename(workdir)}.{process_id}.log"), "w+")
  return subprocess.Popen(argv, env=_env(2), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True), log


def _wait(procs, timeout=900):
  """Waits for every process; on a failure or a hang kills the rest and fails with the logs' tails."""
  try:
    for proc, _ in procs:
      proc.wait(timeout=timeout)
  finally:
    for proc, _ in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  logs = []
  for proc, log in procs:
    log.seek(0)
    logs.append(log.read())
    log.close()
  if any(proc.returncode for proc, _ in procs):
    raise AssertionError("\n\n".join(f"process exited {p.returncode}:\n{text[-3000:]}"
                                     for (p, _), text in zip(procs, logs)))
  return logs


def _two_processes(workdir, steps, *args):
  port = _free_port()
  args = [f"--config.train.num_steps={steps}", *SHARDED, *args]
  return _wait([_main(workdir, args, process_id=i, port=port) for i in range(2)])


def _rows(workdir):
  """The training rows of metrics.jsonl (probe results are rows of their own)."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [row for row in map(json.loads, f) if "loss" in row]


def test_two_processes_train_checkpoint_restart_and_match_one_process(tmp_path):
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  reference = _main(single, ["--config.train.num_steps=4"])  # 1 process, 2 devices; runs beside phase 1.

  # Phase 1: 2 steps, no probe; the end of the run saves checkpoint 2 (every host writes its shards).
  _two_processes(multi, 2, "--config.eval.probe=False")
  assert sorted(os.listdir(os.path.join(multi, "checkpoints"))) == ["2"]
  data_state = sorted(os.listdir(os.path.join(multi, "checkpoints", "2", "data")))
  assert [f for f in data_state if f.startswith("process_")] == ["process_0-of-2.json", "process_1-of-2.json"]

  # Phase 2: both processes restart, restore step 2 (state into its shardings, each its own data position),
  # train to step 4 and run the probe with every process extracting its share of the features.
  logs = _two_processes(multi, 4)
  assert "resumed from step 2" in logs[0]
  assert "resumed from step 2" not in logs[1]  # Process 1 prints nothing: logs and metrics are process 0's.

  (ref_log,) = _wait([reference])
  rows, ref_rows = _rows(multi), _rows(single)
  assert [r["step"] for r in rows] == [1, 2, 3, 4] == [r["step"] for r in ref_rows]  # One writer, no repeats.
  np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in ref_rows], atol=1e-5, rtol=0)
  with open(os.path.join(multi, "results.json"), encoding="utf-8") as f:
    results = json.load(f)
  with open(os.path.join(single, "results.json"), encoding="utf-8") as f:
    ref_results = json.load(f)
  assert results["step"] == 4, ref_log
  # Same features in the same order as one process (up to fp32 rounding of the sharded computation).
  accuracy = results.get("linear_probe", {}).get("trained")
  assert accuracy is not None
  assert abs(accuracy - ref_results["linear_probe"]["trained"]) <= 0.02
