r"""Ahead-of-time compilation of the real train step for a TPU topology, on a CPU machine: memory and speed.

  pip install -e ".[tpu]"     # libtpu, matching the installed jax (setup.py pins the pair)
  python experiments/aot.py --config=configs/ijepa_vit.py:in1k_vith14 --topology=v5p:4x4x4
  python experiments/aot.py --config=configs/ijepa_vit.py:in1k_vith14 --topology=v5e:8x8 \
      --config.mesh.fsdp=64 --config.model.remat=true

The step is `jepa.train.setup`'s own (same state layout, shardings, donation and jit as `python -m
jepa.main`), built on the topology's devices with `jax.experimental.topologies` and compiled by libtpu's
compiler; nothing runs. The data are `data.source='synthetic'` examples of the preset's shape (its ImageNet
or video folders need not exist here); shapes alone decide memory and FLOPs. Reported per device:
  - state: parameters, optimizer moments, EMA teacher (from the shardings: bytes / shards);
  - the compiled step's memory (`memory_analysis()`): arguments (state + batch), outputs, aliased (donated)
    bytes, temporaries (activations, gradients); the total resident = arguments + outputs - aliased + temp +
    code, against the chip's HBM;
  - FLOPs and HBM bytes per step (`cost_analysis()`, of the partitioned per-device program) and a roofline
    time, the largest of compute, HBM traffic and the parameter / gradient collectives over ICI (see `cost`);
    the projected MFU is compute time / that time, an upper bound (perfect overlap, no input stalls);
  - the eval/feature step (the method's probe features at eval.batch_size) the same way.
The last line per config holds `fits=<yes|no> hbm_gib=<per-device total> mfu_projected=<fraction>`; when it
does not fit, the line says what to change (FSDP over more devices, remat, gradient accumulation).
"""
import os
import re
import sys
import tempfile

# The host runs nothing; the TPU devices come from libtpu's topology description. Without a TPU VM's metadata
# libtpu prints a page of warnings when it starts; these host facts (one host, this one) keep it quiet. Only
# here: on a real TPU VM the platform sets them.
# ALLOW_MULTIPLE_LIBTPU_LOAD: compiling needs no chip, so several of these may run at once (libtpu otherwise
# holds /tmp/libtpu_lockfile for the life of the process).
for _key, _value in (("JAX_PLATFORMS", "cpu"), ("TPU_SKIP_MDS_QUERY", "1"), ("TPU_WORKER_HOSTNAMES", "localhost"),
                     ("TPU_ACCELERATOR_TYPE", "v5litepod-1"), ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")):
  os.environ.setdefault(_key, _value)

from absl import flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jepa import cli  # noqa: E402
from jepa import features  # noqa: E402
from jepa import parallel  # noqa: E402
from jepa import train  # noqa: E402
from jepa.errors import ConfigError  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config (a preset) to compile.", lock_config=False)
flags.DEFINE_string("topology", "v5p:2x2x1", "TPU topology, e.g. v5e:4x4, v5p:4x4x4, v4:2x2x2, v6e:8x8.")
flags.DEFINE_bool("eval_step", True, "Also compile the eval/feature step.")
FLAGS = flags.FLAGS

GIB = 2**30
# Per chip: HBM bytes, peak dense bf16 FLOP/s, HBM bandwidth, inter-chip (ICI) bandwidth. Sources: Google Cloud
# TPU system architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e): "peak compute per chip",
# "HBM2 capacity / bandwidth" and "interchip interconnect bandwidth" rows (ICI converted from Gbps to bytes).
CHIPS = {
    "TPU v4": dict(hbm=32 * GIB, bf16_flops=275e12, hbm_bw=1228e9, ici_bw=2400e9 / 8),
    "TPU v5 lite": dict(hbm=16 * GIB, bf16_flops=197e12, hbm_bw=819e9, ici_bw=1600e9 / 8),   # v5e
    "TPU v5": dict(hbm=95 * GIB, bf16_flops=459e12, hbm_bw=2765e9, ici_bw=4800e9 / 8),       # v5p
    "TPU v6 lite": dict(hbm=32 * GIB, bf16_flops=918e12, hbm_bw=1640e9, ici_bw=3584e9 / 8),  # v6e
}


def topology_devices(name):
  """The devices of TPU topology `name` ('v5e:4x4'); one-line errors for a missing libtpu or unknown name."""
  try:
    import libtpu  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    raise ConfigError('libtpu is not installed; install it with `pip install -e ".[tpu]"` (the jax[tpu] pin '
                      "that matches the installed jax)") from None
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  # v4 chips hold two TensorCores; JAX meshes want one device per chip ("megacore"), as a v4 VM presents them.
  kwargs = {"chip_config_name": "megacore"} if name.startswith("v4") else {}
  try:
    return topologies.get_topology_desc(topology_name=name, platform="tpu", **kwargs).devices
  except Exception as e:  # pylint: disable=broad-except  (libtpu raises XlaRuntimeError / ValueError)
    detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    raise ConfigError(f"--topology={name} is not a TPU topology libtpu knows ({detail}); pass e.g. v5e:4x4, "
                      "v5p:2x2x2, v4:2x2x1 or v6e:4x4 (chip:shape)") from None


EMBEDDED = ("digits", "moving_digits", "two_rooms", "synthetic")  # Sources that exist on every machine.


def synthetic_data(config):
  """The preset's data section; a dataset that needs files (ImageNet, video folders) becomes synthetic examples
  of the same image size and frame count (shapes alone decide memory and FLOPs)."""
  if config.data.source not in EMBEDDED:
    config.data.update(source="synthetic", eval_split="", eval_fraction=0.5,
                       synthetic_examples=max(64, 2 * config.eval.batch_size))
  return config


def gib(n):
  return f"{n / GIB:.2f} GiB" if n >= GIB / 100 else f"{n / 2**20:.2f} MiB"


def _bytes(tree):
  """Per-device bytes of a pytree of sharded abstract arrays."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shard = leaf.sharding.shard_shape(leaf.shape)
    total += int(np.prod(shard, dtype=np.int64)) * leaf.dtype.itemsize
  return total


def abstract_batch(run, example_fn, batch_size):
  """ShapeDtypeStructs of a global batch of `example_fn`'s output, sharded like the loop's batches."""
  example = example_fn(run.train_source[0], np.random.default_rng(0))
  sharding = parallel.batch_sharding(run.mesh)
  return {k: jax.ShapeDtypeStruct((batch_size, *np.shape(v)), np.asarray(v).dtype, sharding=sharding)
          for k, v in example.items()}


def out_of_memory(error):
  """Bytes of temporaries libtpu asked for when it refused to compile for lack of HBM, else None."""
  text = str(error)
  if "RESOURCE_EXHAUSTED" not in text:
    return None
  match = re.search(r"HLO temporaries \(([\d.]+)([KMGT])\)", text)
  if not match:
    return None
  return float(match.group(1)) * 2 ** (10 * " KMGT".index(match.group(2)))


def memory(compiled):
  m = compiled.memory_analysis()
  total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
           + m.generated_code_size_in_bytes)
  return {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes,
          "alias": m.alias_size_in_bytes, "temp": m.temp_size_in_bytes, "total": total}


def cost(compiled, chip, *, param_bytes=0, mesh_shape=None):
  """FLOPs and bytes of the per-device program, and a roofline time: the largest of compute (FLOPs / peak),
  HBM traffic (bytes accessed / bandwidth) and the gradient / parameter collectives over ICI, assumed to
  overlap perfectly (so the MFU it implies is an upper bound). Collective bytes per device, P = the float32
  parameters' bytes: FSDP over f devices all-gathers the parameters twice (forward, backward) and
  reduce-scatters the gradients, 3 P (f - 1) / f; data parallelism over d all-reduces the (sharded) gradients,
  2 (P / f) (d - 1) / d. (XLA's own `optimal_seconds` is not used: libtpu returns negative values for
  programs with collectives.)"""
  c = compiled.cost_analysis()
  c = c[0] if isinstance(c, (list, tuple)) else c
  flops, traffic = float(c.get("flops", 0.0)), float(c.get("bytes accessed", 0.0))
  d, f = (mesh_shape or {}).get("data", 1), (mesh_shape or {}).get("fsdp", 1)
  comm = 3 * param_bytes * (f - 1) / f + 2 * (param_bytes / f) * (d - 1) / d
  times = {"compute_s": flops / chip["bf16_flops"], "hbm_s": traffic / chip["hbm_bw"], "ici_s": comm / chip["ici_bw"]}
  seconds = max(times.values())
  return {"flops": flops, "bytes_accessed": traffic, **times, "seconds": seconds,
          "bound": max(times, key=times.get).removesuffix("_s"),
          "mfu": times["compute_s"] / seconds if seconds > 0 else float("nan")}


def advice(config, num_devices, mem, chip):
  """What to change when the step does not fit: FSDP first, then remat, then micro-batches."""
  fixes = []
  if config.mesh.fsdp < num_devices:
    fixes.append(f"--config.mesh.fsdp={num_devices} (shards parameters and optimizer state over all devices)")
  if not config.model.get("remat", False):
    fixes.append("--config.model.remat=true (recomputes activations in the backward pass)")
  over = mem["total"] / chip["hbm"]
  accum = 2 ** int(np.ceil(np.log2(max(2.0, over))))
  fixes.append(f"--config.train.grad_accum_steps={accum} (activations of 1/{accum} of the batch at a time)")
  return "; or ".join(fixes)


def report(config, topology):
  devices = topology_devices(topology)
  kind = devices[0].device_kind
  chip = CHIPS.get(kind)
  if chip is None:
    raise ConfigError(f"--topology={topology}: no HBM / peak table entry for {kind!r}; add it to CHIPS in "
                      "experiments/aot.py")
  config = synthetic_data(config)
  config.eval.update(probe=False, pictures=False, report=False)
  with tempfile.TemporaryDirectory() as workdir:
    run = train.setup(config, workdir, verbose=False, devices=devices)
  n = len(devices)
  state = run.state_def.abstract
  print(f"{config_name()} on {topology}: {n} x {kind} (HBM {chip['hbm'] / GIB:.0f} GiB, "
        f"{chip['bf16_flops'] / 1e12:.0f} TFLOP/s bf16), mesh {dict(run.mesh.shape)}, batch "
        f"{config.train.batch_size} ({config.train.batch_size // n} per device), dtype {config.dtype}, remat "
        f"{bool(config.model.get('remat', False))}, grad_accum {config.train.grad_accum_steps}", flush=True)
  print(f"  state per device: params {gib(_bytes(state['params']))}, optimizer {gib(_bytes(state['opt_state']))}, "
        f"EMA {gib(_bytes(state['ema']))}, other {gib(_bytes(state['model_state']))}", flush=True)

  batch = abstract_batch(run, run.method.example_fn(train=True), config.train.batch_size)
  try:
    compiled = run.train_step.lower(state, batch).compile()
  except Exception as e:  # pylint: disable=broad-except  (libtpu refuses a program that cannot fit in HBM)
    needed = out_of_memory(e)
    if needed is None:
      raise
    total = _bytes(state) + _bytes(batch) + needed
    line = (f"{config_name()} {topology}: fits=no hbm_gib={total / GIB:.2f} mfu_projected=nan (the compiler "
            f"refused it: {needed / GIB:.2f} GiB of temporaries beside {(_bytes(state) + _bytes(batch)) / GIB:.2f}"
            f" GiB of state and batch) fix: {advice(config, n, {'total': total}, chip)}")
    print(line, flush=True)
    return {"fits": False, "memory": {"total": total}}
  param_bytes = sum(int(np.prod(x.shape, dtype=np.int64)) * x.dtype.itemsize for x in jax.tree.leaves(state["params"]))
  mesh_shape = dict(run.mesh.shape)
  mem, speed = memory(compiled), cost(compiled, chip, param_bytes=param_bytes, mesh_shape=mesh_shape)
  fits = mem["total"] <= chip["hbm"]
  print(f"  train step per device: arguments {gib(mem['argument'])} (donated {gib(mem['alias'])}), temp "
        f"{gib(mem['temp'])}, total {gib(mem['total'])} of {chip['hbm'] / GIB:.0f} GiB; "
        f"{speed['flops'] / 1e12:.2f} TFLOP, {speed['bytes_accessed'] / GIB:.1f} GiB of HBM traffic; roofline "
        f"{speed['seconds'] * 1e3:.1f} ms, {speed['bound']}-bound (compute {speed['compute_s'] * 1e3:.1f} / HBM "
        f"{speed['hbm_s'] * 1e3:.1f} / ICI {speed['ici_s'] * 1e3:.1f} ms) = "
        f"{config.train.batch_size / max(speed['seconds'], 1e-12):,.0f} img/s", flush=True)
  if FLAGS.eval_step:
    images = abstract_batch(run, run.method.example_fn(train=False), config.eval.batch_size)["image"]
    feats = features.apply_fn(run.state_def, run.method.features)  # The loop's own jit.
    ev = feats.lower(state, images).compile()
    emem, espeed = memory(ev), cost(ev, chip)
    print(f"  eval/feature step (batch {config.eval.batch_size}): temp {gib(emem['temp'])}, total "
          f"{gib(emem['total'])}; {espeed['flops'] / 1e12:.3f} TFLOP, roofline {espeed['seconds'] * 1e3:.1f} ms "
          f"({espeed['bound']}-bound)", flush=True)
  line = (f"{config_name()} {topology}: fits={'yes' if fits else 'no'} hbm_gib={mem['total'] / GIB:.2f} "
          f"mfu_projected={speed['mfu']:.3f}")
  if not fits:
    line += " fix: " + advice(config, n, mem, chip)
  print(line, flush=True)
  return {"fits": fits, "memory": mem, **speed}


def config_name():
  argv = [a for a in sys.argv[1:] if a.startswith("--config=")]
  return argv[0].split("=", 1)[1] if argv else "config"


def main(argv):
  cli.start(argv)
  with cli.boundary():
    config = cli.loaded_config(FLAGS.config)
    if config is None:
      raise ConfigError("pass --config=configs/<method>_vit.py:<preset>")
    report(config, FLAGS.topology)


if __name__ == "__main__":
  cli.run(main)
