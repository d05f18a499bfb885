r"""Training throughput of methods' jitted steps: img/s, step time, compile time, memory and MFU.

The issue's reference point (I-JEPA ViT-Tiny/16, 224 px, batch 16, predictor 6 x 384, fp32), written to
experiments/results/benchmark_cpu.{json,md}:

  python experiments/benchmark.py --config=configs/ijepa_vit.py --sizes=tiny --config.data.image_size=224 \
      --config.model.patch_size=16 --config.model.predictor.depth=6 --config.model.predictor.width=384 \
      --config.train.batch_size=16 --output=experiments/results/benchmark_cpu

Add --config.masks.context_keep=49 --config.masks.target_keep=34 for the reference implementation's token
counts (it truncates every mask to the batch's smallest; our default counts are larger, see docs/masks.md).

Methods and sizes: --methods=ijepa,lejepa,iwm --sizes=tiny,small. The first method's config is --config; each
other method's is configs/<method>_vit.py with the same preset, and every --config.* override given on the
command line is applied to all of them (so they share resolution, patch size, batch and so on). A size sets
model.encoder.size and clears its explicit width/depth/heads/mlp_ratio (unless those are overridden too), so
the standard ViT-Ti/S/B/... shapes are measured.

Batches come from the real data pipeline (embedded digits resized to the config's resolution) and are produced
before timing, so `img_per_s` is the step's alone; `end_to_end_img_per_s` includes the pipeline. MFU =
(XLA cost-analysis FLOPs per step / step time) / peak FLOP/s; on CPU the peak is the measured FLOP/s of a
large float32 matmul in the same process. Every figure is stored with the machine and its 1-minute load
average before and after: on a shared machine they are lower bounds. Each run is appended to --output.json
(reruns of a setting are kept side by side, since their loads differ) and --output.md is regenerated from it.
"""
import datetime
import json
import os
import platform
import resource
import sys
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jepa import parallel  # pylint: disable=wrong-import-position
from jepa import train  # pylint: disable=wrong-import-position
from jepa import train_state  # pylint: disable=wrong-import-position

config_flags.DEFINE_config_file("config", "configs/ijepa_vit.py", "Config to benchmark.", lock_config=False)
flags.DEFINE_list("methods", [], "Methods to measure (default: the config's). Others use configs/<m>_vit.py.")
flags.DEFINE_list("sizes", [], "Encoder sizes (model.encoder.size) to measure (default: the config's).")
flags.DEFINE_integer("steps", 10, "Timed steps (after one warm-up step).")
flags.DEFINE_string("output", "", "Results prefix: runs appended to PREFIX.json, PREFIX.md rewritten.")
flags.DEFINE_string("note", "", "Free text stored with each result (e.g. what changed).")
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


def describe_machine():
  """CPU model, cores this process may use, memory, jax version and XLA flags."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  try:
    with open("/proc/meminfo", encoding="utf-8") as f:
      mem_gb = int(f.readline().split()[1]) / 2**20
  except (OSError, ValueError, IndexError):
    mem_gb = float("nan")
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {"cpu": model, "cores": cores, "memory_gb": round(mem_gb, 1), "platform": jax.devices()[0].platform,
          "device": jax.devices()[0].device_kind, "devices": jax.device_count(), "jax": jax.__version__,
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _load():
  return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def method_configs():
  """(method, size, config) for every requested pair, as described in the module docstring."""
  flag = FLAGS["config"]
  base = FLAGS.config
  overrides = config_flags.get_override_values(flag)
  filename = config_flags.get_config_filename(flag)
  preset = filename.split(":", 1)[1] if ":" in filename else ""
  methods = FLAGS.methods or [base.method]
  out = []
  for method in methods:
    if method == base.method:
      config = base.copy_and_resolve_references()
    else:
      import importlib.util  # pylint: disable=import-outside-toplevel
      path = os.path.join(REPO, "configs", f"{method}_vit.py")
      spec = importlib.util.spec_from_file_location(f"cfg_{method}", path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      config = module.get_config(preset)
      for key, value in overrides.items():
        *parents, name = key.split(".")
        node = config
        for p in parents:
          node = node[p]
        node[name] = value
    for size in FLAGS.sizes or [None]:
      c = config.copy_and_resolve_references()
      if size:
        c.model.encoder.size = size
        for field, empty in (("width", 0), ("depth", 0), ("heads", 0), ("mlp_ratio", 0.0)):
          if f"model.encoder.{field}" not in overrides:
            c.model.encoder[field] = empty
        if "model.predictor.heads" not in overrides:
          c.model.predictor.heads = 0  # The encoder's head count, as in the I-JEPA reference.
      out.append((method, size or c.model.encoder.size, c))
  return out


def measure(config, peak, peak_src):
  """One setting's figures (a dict); the run, batches and state are freed on return."""
  config.eval.probe = False
  run = train.setup(config, tempfile.mkdtemp(), verbose=False)
  iterator = train_state.train_iterator(run.config, run.method, run.train_source)
  batch_sharding = parallel.batch_sharding(run.mesh)
  batches = [parallel.global_batch(next(iterator), batch_sharding) for _ in range(FLAGS.steps + 1)]
  state = run.state_def.init(config.seed)
  load_before = _load()

  t0 = time.perf_counter()
  compiled = run.train_step.lower(state, batches[0]).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  try:
    mem = compiled.memory_analysis()
    compiled_mb = round((mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                         - mem.alias_size_in_bytes) / 2**20, 1)
  except Exception:  # pylint: disable=broad-except  (not every backend reports it)
    compiled_mb = None

  state, m = run.train_step(state, batches[0])
  jax.block_until_ready(m)
  times = []
  for b in batches[1:]:
    t = time.perf_counter()
    state, m = run.train_step(state, b)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  step_s, best_s = float(np.median(times)), float(np.min(times))

  t = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, m = run.train_step(state, parallel.global_batch(next(iterator), batch_sharding))
  jax.block_until_ready(m)
  e2e_s = (time.perf_counter() - t) / FLAGS.steps
  load_after = _load()
  if peak_src.startswith("measured"):
    # Re-measured under the load the step just saw; the larger figure is the better estimate of the machine's
    # peak, so on a shared machine MFU errs low rather than above 1.
    peak = max(peak, matmul_peak_flops())

  stats = jax.devices()[0].memory_stats() or {}
  batch = config.train.batch_size
  b0 = jax.device_get(batches[0])
  tokens = {}
  if "context_idx" in b0:
    tokens = {"context_slots": int(b0["context_idx"].shape[-1]),
              "context_valid_mean": round(float(b0["context_valid"].sum(-1).mean()), 1)}
  if "target_idx" in b0:
    tokens.update(target_blocks=int(b0["target_idx"].shape[-2]) if b0["target_idx"].ndim == 3 else 1,
                  target_slots=int(b0["target_idx"].shape[-1]),
                  target_valid_mean=round(float(b0["target_valid"].sum(-1).mean()), 1))
  enc = config.model.encoder
  return {
      "method": config.method, "encoder": enc.size, "encoder_overrides": {k: v for k, v in enc.items()
                                                                          if k != "size" and v},
      "image_size": config.data.image_size, "patch_size": config.model.patch_size,
      "num_frames": config.data.get("num_frames", 0),
      "predictor": (config.model.predictor.to_dict() if "predictor" in run.state_def.abstract["params"]
                    else None),
      "batch": batch, "dtype": config.dtype, "remat": config.model.remat,
      "grad_accum_steps": config.train.get("grad_accum_steps", 1),
      "masks": {"context_keep": config.masks.get("context_keep", 0),
                "target_keep": config.masks.get("target_keep", 0)}, **tokens,
      "compile_s": round(compile_s, 2), "step_s": round(step_s, 4), "img_per_s": round(batch / step_s, 2),
      "best_step_s": round(best_s, 4), "best_img_per_s": round(batch / best_s, 2),
      "end_to_end_img_per_s": round(batch / e2e_s, 2), "step_gflops": round(flops / 1e9, 2),
      "achieved_gflops_per_s": round(flops / step_s / 1e9, 1), "peak_gflops_per_s": round(peak / 1e9, 1),
      "peak_source": peak_src, "mfu": round(flops / step_s / peak, 4),
      "compiled_memory_mb": compiled_mb,
      "peak_memory_mb": round(stats.get("peak_bytes_in_use", 0) / 2**20, 1) or None,
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "load_avg_1m": [load_before, load_after],
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "note": FLAGS.note,
  }


def write_results(prefix, results):
  path = prefix + ".json"
  rows = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      rows = json.load(f)
  rows += results
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=2)
  with open(prefix + ".md", "w", encoding="utf-8") as f:
    f.write(markdown(rows))


def machine_peaks(rows, machines):
  """Per machine: the datasheet peak, or on CPU the best matmul FLOP/s measured on it in any run."""
  peaks = []
  for m in machines:
    mine = [r for r in rows if r["machine"] == m]
    measured = [r["peak_gflops_per_s"] * 1e9 for r in mine if r["peak_source"].startswith("measured")]
    peaks.append(max(measured) if measured else mine[0]["peak_gflops_per_s"] * 1e9)
  return peaks


def memory_mb(row):
  """The device's peak bytes in use (accelerators report it), else the compiled step's own total (CPU)."""
  if row.get("peak_memory_mb"):
    return f"{row['peak_memory_mb']:.0f} (peak)"
  return f"{row['compiled_memory_mb']:.0f} (compiled)" if row.get("compiled_memory_mb") else "-"


def markdown(rows):
  """The results as a table, with the machines they were measured on."""
  machines = []
  for r in rows:
    if r["machine"] not in machines:
      machines.append(r["machine"])
  lines = ["# Training-step throughput", "",
           "Written by `experiments/benchmark.py` (its docstring has the commands); the JSON beside this "
           "file holds every field.", "`img/s` uses the median step time and `best` the fastest step. "
           "Load is the 1-minute load average before and after the timed steps: on a shared machine the "
           "figures are lower bounds.", "MFU is against the device's dense peak: on accelerators the "
           "datasheet's bf16 figure; on CPU the fastest float32 2048^3 matmul measured on that machine in "
           "any run of this file (the best of all its measurements, so that a matmul slowed by a loaded "
           "moment does not inflate MFU: one row once read 1.03 against its own run's peak).", "",
           "Machines (with the peak MFU is quoted against):", ""]
  peaks = machine_peaks(rows, machines)
  for i, m in enumerate(machines):
    lines.append(f"- M{i}: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['device']} "
                 f"x{m['devices']}, jax {m['jax']}"
                 + (f", XLA_FLAGS=`{m['xla_flags']}`" if m["xla_flags"] else "")
                 + f"; peak {peaks[i] / 1e9:.1f} GFLOP/s")
  lines += ["", "| machine | method | encoder | px/patch | batch | predictor | dtype | ctx / tgt tokens | "
            "step s | img/s | best img/s | e2e img/s | compile s | GFLOP/step | GFLOP/s | MFU | memory MB | "
            "load | note |",
            "|" + "---|" * 19]
  for r in rows:
    p = r["predictor"]
    predictor = f"{p['depth']}x{p['width']}" if p else "-"
    tokens = (f"{r.get('context_slots', '-')} / {r.get('target_blocks', '-')}x{r.get('target_slots', '-')}"
              if "context_slots" in r else "-")
    enc = r["encoder"] + ("" if not r["encoder_overrides"] else
                          " (" + ", ".join(f"{k}={v}" for k, v in r["encoder_overrides"].items()) + ")")
    lines.append(
        f"| M{machines.index(r['machine'])} | {r['method']} | {enc} | {r['image_size']}/{r['patch_size']} | "
        f"{r['batch']} | {predictor} | {r['dtype']} | {tokens} | {r['step_s']} | "
        f"{r['img_per_s']} | {r['best_img_per_s']} | {r['end_to_end_img_per_s']} | {r['compile_s']} | "
        f"{r['step_gflops']} | {r['achieved_gflops_per_s']} | "
        f"{r['achieved_gflops_per_s'] * 1e9 / peaks[machines.index(r['machine'])]:.3f} | "
        f"{memory_mb(r)} | "
        f"{r['load_avg_1m'][0]} / {r['load_avg_1m'][1]} | {r['note']} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  machine = describe_machine()
  peak, peak_src = device_peak_flops()
  results = []
  for method, size, config in method_configs():
    print(f"measuring {method} / {size} ...", file=sys.stderr, flush=True)
    result = measure(config, peak, peak_src)
    peak = max(peak, result["peak_gflops_per_s"] * 1e9)
    result["machine"] = machine
    print(json.dumps(result, indent=2), flush=True)
    results.append(result)
  if FLAGS.output:
    write_results(FLAGS.output, results)


if __name__ == "__main__":
  app.run(main)
