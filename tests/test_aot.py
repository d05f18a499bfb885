"""Ahead-of-time compilation for a TPU topology on this CPU machine (experiments/aot.py), every method.

libtpu (in the [test] extra) compiles each method's tiny train step for a v5e 2x2 slice (4 chips) on a
2 x 2 (data x fsdp) mesh, with a small `fsdp_min_size` so that the FSDP rule shards the tiny kernels. Checked against
independent computations: the compiled step's input shardings are the FSDP rule's (parallel.param_spec) for
parameters, EMA and optimizer moments and the batch rule for the batch; its argument bytes hold each array's
per-device shard (shape / mesh axes x itemsize), padded at most to the layout's tile (TPU pads f32 arrays to
(8, 128) tiles, which dominates tiny arrays; small arrays take up to 1 KiB more); the donated state is
aliased; the FLOPs are positive.
One fresh process, as the topology's devices live beside the CPU ones for the rest of a process's life.
"""
import json
import platform
import sys

import pytest

from tests.helpers import run_in_fresh_process
from tests.test_parallel import CASES

CODE = r"""
import json, os, sys, traceback
sys.path.insert(0, "experiments")
import aot  # Sets the libtpu host variables before JAX starts.
import jax, numpy as np
from jepa import parallel, train
from tests.helpers import load_config

devices = aot.topology_devices("v5e:2x2")
out = {"kind": devices[0].device_kind, "n": len(devices)}
for method, name in json.loads(CASES):
  try:
    c = aot.synthetic_data(load_config(name, "tiny"))
    c.eval.update(probe=False, pictures=False, report=False)
    c.mesh.update(data=2, fsdp=2, fsdp_min_size=64)
    t = train.setup(c, "/nonexistent/aot", verbose=False, devices=devices)
    abstract_state = t.state_def.abstract
    batch = aot.abstract_batch(t, t.method.example_fn(train=True), c.train.batch_size)
    compiled = t.train_step.lower(abstract_state, batch).compile()
    state_in, batch_in = compiled.input_shardings[0]
    flat_state = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    got = jax.tree.leaves(state_in)
    rule_ok, checked = [], 0
    for (path, leaf), sh in zip(flat_state, got):
      key = jax.tree_util.keystr(path)
      part = key.split("'")[1]
      if part in ("params", "ema", "opt_state", "model_state"):  # The FSDP rule shards all of them alike.
        want = jax.sharding.NamedSharding(t.mesh, parallel.param_spec(leaf.shape, 2, 64))
        rule_ok.append([key, str(sh.spec), str(want.spec), sh.is_equivalent_to(want, leaf.ndim)])
        checked += 1
    batch_ok = all(s.is_equivalent_to(parallel.batch_sharding(t.mesh), len(b.shape)) for s, b in
                   zip(jax.tree.leaves(batch_in), jax.tree.leaves(batch)))
    def shard_bytes(x, spec):
      shape = list(x.shape)
      for d, axis in enumerate(tuple(spec)):
        for a in ((axis,) if isinstance(axis, str) else (axis or ())):
          shape[d] //= t.mesh.shape[a]
      return int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
    expected = sum(shard_bytes(x, s.spec) for x, s in zip(jax.tree.leaves(abstract_state), got))
    expected += sum(shard_bytes(b, parallel.batch_sharding(t.mesh).spec) for b in jax.tree.leaves(batch))
    def tiled_bytes(x, sharding, layout):  # The shard padded to the layout's tile (TPU: (8, 128) for f32).
      dims = list(sharding.shard_shape(x.shape))
      if layout is None:
        return 512 + int(np.prod(dims, dtype=np.int64)) * np.dtype(x.dtype).itemsize
      dims = [dims[d] for d in layout.major_to_minor]
      tile = layout.tiling[0] if layout.tiling else ()
      for i, size in enumerate(tile):
        j = len(dims) - len(tile) + i
        if j >= 0:
          dims[j] = -(-dims[j] // size) * size
      return int(np.prod(dims, dtype=np.int64)) * np.dtype(x.dtype).itemsize
    formats = jax.tree.leaves(compiled.input_formats[0])
    shardings = jax.tree.leaves(compiled.input_shardings[0])
    args = jax.tree.leaves((abstract_state, batch))
    tiled = sum(tiled_bytes(x, s, f.layout) for x, s, f in zip(args, shardings, formats))
    m = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out[method] = {"rules": rule_ok, "checked": checked, "batch_ok": batch_ok, "expected_args": expected,
                   "args": m.argument_size_in_bytes, "tiled": tiled, "num_args": len(args),
                   "alias": m.alias_size_in_bytes,
                   "state_bytes": sum(shard_bytes(x, s.spec)
                                      for x, s in zip(jax.tree.leaves(abstract_state), got)),
                   "flops": float(cost.get("flops", 0))}
  except Exception:
    out[method] = {"error": traceback.format_exc()[-3000:]}
print(json.dumps(out))
"""


@pytest.fixture(name="compiled", scope="module")
def _compiled():
  if not (sys.platform == "linux" and platform.machine() == "x86_64"):
    pytest.skip(f"libtpu has wheels for Linux x86-64 only, not {sys.platform} {platform.machine()}")
  cases = json.dumps(json.dumps([(m, n) for m, n in CASES.items() if n]))
  return run_in_fresh_process(f"CASES = {cases}\n" + CODE, devices=1, timeout=1200)


@pytest.mark.parametrize("method", sorted(m for m, n in CASES.items() if n))
def test_tiny_step_compiles_for_a_tpu_slice(compiled, method):
  assert compiled["kind"] == "TPU v5 lite" and compiled["n"] == 4
  result = compiled[method]
  assert "error" not in result, result.get("error")
  assert result["checked"] > 0
  bad = [r for r in result["rules"] if not r[3]]
  assert not bad, f"shardings that break the FSDP rule: {bad[:5]}"
  assert any("fsdp" in r[1] for r in result["rules"]), "no array was FSDP-sharded; the check checks nothing"
  assert result["batch_ok"]
  # Every array's shard is there, padded at most to its layout's tile (plus up to 1 KiB per array).
  assert result["expected_args"] <= result["args"] <= result["tiled"] + 1024 * result["num_args"], result
  # Donation: the whole state is aliased to the output (the step updates it in place).
  assert result["alias"] >= result["state_bytes"] * 0.99
  assert result["flops"] > 0
