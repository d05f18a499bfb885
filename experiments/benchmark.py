r"""Training throughput of a method's jitted step: img/s, step time, compile time, peak memory and MFU.

  python experiments/benchmark.py --config=configs/ijepa_vit.py --config.data.image_size=224 \
      --config.model.patch_size=16 --config.model.predictor.depth=6 --config.train.batch_size=16

Any config and override works (ml_collections flags). Batches come from the real data pipeline (embedded digits
resized to the config's resolution); they are produced before timing, so the figures are the step's alone, and
a second figure includes the pipeline (`end_to_end_img_per_s`). MFU = (XLA cost-analysis FLOPs per step / step
time) / peak FLOP/s; on CPU the peak is measured with a large float32 matmul in the same process.
"""
import json
import os
import platform
import resource
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import jax
import jax.numpy as jnp
import numpy as np

from jepa import parallel
from jepa import train

config_flags.DEFINE_config_file("config", "configs/ijepa_vit.py", "Config to benchmark.", lock_config=True)
flags.DEFINE_integer("steps", 10, "Timed steps (after one warm-up step).")
flags.DEFINE_string("output", "", "Optional JSON file for the figures.")
FLAGS = flags.FLAGS


def matmul_peak_flops(n=2048, repeats=5):
  """Measured float32 matmul FLOP/s of this device: the practical peak MFU is quoted against on CPU."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best


def device_peak_flops():
  kind = jax.devices()[0].device_kind.lower()
  table = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "v5": 197e12, "v4": 275e12}  # dense bf16
  for name, peak in table.items():
    if name in kind:
      return peak, f"{kind} dense bf16 spec"
  return matmul_peak_flops(), "measured float32 2048^3 matmul"


def main(argv):
  del argv
  config = FLAGS.config
  config.eval.probe = False
  workdir = tempfile.mkdtemp()
  trainer = train.Trainer(config, workdir, verbose=False)
  from jepa.data import pipeline  # pylint: disable=import-outside-toplevel
  iterator = pipeline.make_train_iterator(
      trainer.train_source, trainer.method.example_fn(train=True), batch_size=trainer.local_batch,
      seed=config.seed, num_threads=config.data.num_threads, prefetch=config.data.prefetch)
  batches = [parallel.global_batch(next(iterator), trainer.batch_sharding) for _ in range(FLAGS.steps + 1)]
  state = trainer._init(config.seed)  # pylint: disable=protected-access

  t0 = time.perf_counter()
  compiled = trainer.train_step.lower(state, batches[0]).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")

  state, m = trainer.train_step(state, batches[0])
  jax.block_until_ready(m)
  times = []
  for b in batches[1:]:
    t = time.perf_counter()
    state, m = trainer.train_step(state, b)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))

  t = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, m = trainer.train_step(state, parallel.global_batch(next(iterator), trainer.batch_sharding))
  jax.block_until_ready(m)
  e2e_s = (time.perf_counter() - t) / FLAGS.steps

  peak, peak_src = device_peak_flops()
  stats = jax.devices()[0].memory_stats() or {}
  batch = config.train.batch_size
  result = {
      "method": config.method, "encoder": config.model.encoder.to_dict(), "image_size": config.data.image_size,
      "patch_size": config.model.patch_size, "predictor": config.model.predictor.to_dict(), "batch": batch,
      "dtype": config.dtype, "devices": jax.device_count(), "device": jax.devices()[0].device_kind,
      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
      "compile_s": round(compile_s, 2), "step_s": round(step_s, 4), "img_per_s": round(batch / step_s, 2),
      "end_to_end_img_per_s": round(batch / e2e_s, 2), "step_gflops": round(flops / 1e9, 2),
      "achieved_gflops_per_s": round(flops / step_s / 1e9, 1), "peak_gflops_per_s": round(peak / 1e9, 1),
      "peak_source": peak_src, "mfu": round(flops / step_s / peak, 4),
      "peak_memory_mb": round(stats.get("peak_bytes_in_use", 0) / 2**20, 1) or None,
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "context_tokens": int(batches[0]["context_idx"].shape[-1]) if "context_idx" in batches[0] else None,
  }
  print(json.dumps(result, indent=2))
  if FLAGS.output:
    with open(FLAGS.output, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
