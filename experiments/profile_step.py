r"""Where a config's train step spends its time: a jax.profiler trace of a few steps, summed per XLA op.

  python experiments/profile_step.py --config=configs/ijepa_vit.py:cifar10_reference --steps=5
  python experiments/profile_step.py --config=configs/world_model.py --top=40 --config.train.batch_size=16

Compiles the config's step (`train.setup`, a throw-away state, the config's own data), runs `--warmup` steps,
then traces `--steps` steps with `jax.profiler.trace(..., create_perfetto_trace=True)` and reads the Perfetto
JSON back. XLA's CPU runtime reports one event per executed thunk (a fusion, a dot, a convolution, a copy...),
named after its HLO instruction; the table sums their durations per instruction and per kind (the instruction's
name without its numeric suffix, e.g. `transpose_copy_fusion`), as milliseconds per step and as a share of the
step's wall time. Events on the runtime's worker threads overlap in time, so shares can sum past 100%; the
`wall` row is the step itself. Prints the tables; writes nothing into the repository.
"""
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from jepa import parallel
from jepa import train
from jepa import train_state

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (with an optional :preset).")
_STEPS = flags.DEFINE_integer("steps", 5, "Traced steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_TOP = flags.DEFINE_integer("top", 25, "Rows of the per-instruction table.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", None, "Where to keep the trace (default: a temporary folder).")
_HLO = flags.DEFINE_bool("hlo", True, "Print each listed instruction's result shape and operands from the "
                         "compiled HLO (the profile's names are the compiled module's).")


def _events(trace_dir):
  """Complete ('X') events of the Perfetto trace jax.profiler wrote under trace_dir."""
  paths = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
  paths += glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
  if not paths:
    sys.exit(f"error: no trace file under {trace_dir}; jax.profiler wrote nothing to read")
  with gzip.open(max(paths, key=os.path.getmtime), "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  return [e for e in events if e.get("ph") == "X" and "dur" in e]


def _kind(name):
  """`fusion.12` / `transpose_copy_fusion.3` / `dot.7` -> the name without its numeric suffix."""
  return re.sub(r"(\.\d+)+$", "", name)


def _signatures(hlo_text):
  """{instruction name: 'shape = op(operands)'} for every instruction of the compiled module's text."""
  out = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (.*)", line)
    if m:
      sig = m.group(2)
      out.setdefault(m.group(1), sig[:160] + ("..." if len(sig) > 160 else ""))
  return out


def main(argv):
  del argv
  config = _CONFIG.value
  trace_dir = _TRACE_DIR.value or tempfile.mkdtemp(prefix="jepa_profile_")
  run = train.setup(config, tempfile.mkdtemp(prefix="jepa_profile_run_"), verbose=False)
  state = run.state_def.init(config.seed)
  iterator = train_state.train_iterator(run.config, run.method, run.train_source)
  sharding = parallel.batch_sharding(run.mesh)
  batches = [parallel.global_batch(next(iterator), sharding) for _ in range(1 + _WARMUP.value + _STEPS.value)]
  signatures = _signatures(run.train_step.lower(state, batches[0]).compile().as_text()) if _HLO.value else {}
  for batch in batches[:1 + _WARMUP.value]:  # The first compiles.
    state, metrics = run.train_step(state, batch)
  jax.block_until_ready(metrics)
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    t0 = time.perf_counter()
    for batch in batches[1 + _WARMUP.value:]:
      state, metrics = run.train_step(state, batch)
    jax.block_until_ready(metrics)
    wall_ms = (time.perf_counter() - t0) * 1e3 / _STEPS.value
  per_name = collections.Counter()
  for e in _events(trace_dir):
    name = e.get("name", "")
    if name and not name.startswith(("$", "PjitFunction", "ThunkExecutor", "TfrtCpu", "Execute")):
      per_name[name] += e["dur"] / 1e3 / _STEPS.value
  per_kind = collections.Counter()
  for name, ms in per_name.items():
    per_kind[_kind(name)] += ms
  total = sum(per_name.values())
  print(f"wall {wall_ms:.1f} ms/step over {_STEPS.value} steps; op events sum to {total:.1f} ms/step "
        f"(trace: {trace_dir})")
  for title, table, rows in (("kind", per_kind, 30), ("instruction", per_name, _TOP.value)):
    print(f"\n| {title} | ms/step | % of wall | HLO |\n|---|---|---|---|")
    for name, ms in table.most_common(rows):
      print(f"| {name} | {ms:.1f} | {100 * ms / wall_ms:.1f} | {signatures.get(name, '')} |")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
