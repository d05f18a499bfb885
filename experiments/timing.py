"""Shared by the experiment harnesses: a config's seconds per train step, the machine's CPU description, and
writing a result file."""
import functools
import json
import os
import platform
import time

import numpy as np

from jepa import parallel
from jepa import train
from jepa import train_state

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def step_seconds(config, workdir, calibration_steps):
  """Median seconds per step of the config's train step (after compilation), on a throw-away state."""
  run = train.setup(config, workdir, verbose=False)
  state = run.state_def.init(config.seed)
  iterator = train_state.train_iterator(run.config, run.method, run.train_source)
  times = []
  for i in range(calibration_steps + 1):
    batch = parallel.global_batch(next(iterator), parallel.batch_sharding(run.mesh))
    t0 = time.perf_counter()
    state, metrics = run.train_step(state, batch)
    metrics["loss"].block_until_ready()
    if i:  # Step 0 compiles.
      times.append(time.perf_counter() - t0)
  return float(np.median(times))


@functools.cache
def _cpuinfo():
  """/proc/cpuinfo's text ('' where there is none), read once per process."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      return f.read()
  except OSError:
    return ""


def has_cpu_flag(flag):
  return f" {flag} " in _cpuinfo()


def cpu_model():
  """The CPU's model name from /proc/cpuinfo (e.g. 'AMD EPYC', 'Intel(R) Xeon(R) Processor'), else the
  architecture: step times swing ~2-4x between the machine types a budget may land on, so results name it."""
  for line in _cpuinfo().splitlines():
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return platform.processor() or platform.machine()


def machine():
  """(CPU model and core count, the CPU_FLAGS it has) for a result file."""
  return (f"{cpu_model()}, {os.cpu_count()} cores", " ".join(f for f in CPU_FLAGS if has_cpu_flag(f)))


def write_result(directory, out):
  """Writes the result dict `out` to <directory>/<out['name']>.json (rewritten after every point)."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, f"{out['name']}.json"), "w", encoding="utf-8") as f:
    json.dump(out, f, indent=2)
