"""Meshes and sharding rules on 8 simulated CPU devices, for every method in jepa/methods/.

One fresh process per mesh shape trains every method's tiny config for 3 steps; each must match a 1-device run
(loss at every step, parameters, EMA target and BatchNorm statistics, fp32, to 1e-5), follow the FSDP rule
(with a small `fsdp_min_size`, so that the tiny kernels are sharded), keep the EMA target and the optimizer
moments on the parameters' shardings, shard the batch over both mesh axes and compile the step once. Each
process runs the training loop itself (`train.train`: iterator, step, hooks and the final checkpoint of the
sharded state), so the methods' own test files keep no 1-vs-8-device runs of their own.
"""
import glob
import json
import os

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jepa import methods
from jepa import parallel
from tests.helpers import REPO, load_config, start_in_fresh_process

STEPS = 3
FSDP_MIN_SIZE = 64
MESHES = [(8, 1), (4, 2), (1, 8)]


def _tiny_config_name(method):
  """configs/<method>_*.py or <method>.py that has a 'tiny' preset, or None."""
  paths = glob.glob(os.path.join(REPO, "configs", f"{method}_*.py")) + glob.glob(
      os.path.join(REPO, "configs", f"{method}.py"))
  for path in sorted(paths):
    name = os.path.splitext(os.path.basename(path))[0]
    try:
      load_config(name, "tiny")
    except ValueError:  # apply_preset: no such preset.
      continue
    return name
  return None


# vjepa2_ac trains on the tokens of an encoder restored from another run's workdir, so it has no self-contained
# tiny preset here; tests/test_vjepa2_ac.py trains it (encoder first) on one device.
NEEDS_ANOTHER_RUN = ("vjepa2_ac",)
CASES = {m: _tiny_config_name(m) for m in methods.available() if m not in NEEDS_ANOTHER_RUN}


def test_every_other_method_has_a_tiny_preset():
  missing = sorted(method for method, name in CASES.items() if not name)
  assert not missing, f"methods without a configs/<method>*.py 'tiny' preset: {missing}"

TRAIN = r"""
import json, os, traceback
import jax, numpy as np
from jepa import parallel, train
from tests.helpers import load_config

def specs(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): [str(x.sharding.spec), list(x.shape)] for k, x in flat}

out = {}
for method, name in json.loads(CASES):
  try:
    c = load_config(name, "tiny")
    c.eval.probe = False
    # Adam divides each gradient by its own magnitude, so a parameter whose exact gradient is zero (LeJEPA's
    # final backbone-norm bias: the projector's BatchNorm cancels any constant shift of the embedding) moves by
    # up to lr in the direction of its float rounding noise (~1e-8), differently on every mesh: 7e-4 apart
    # after 3 steps with eps=1e-8. eps=1e-4 keeps such updates below 1e-3 lr while real gradients still move
    # their parameters by a sizeable fraction of lr; both sides use the same optimizer.
    c.optim.eps = 1e-4
    c.mesh.update(data=DATA, fsdp=FSDP, fsdp_min_size=MIN_SIZE)
    c.train.update(num_steps=STEPS, log_every=1, checkpoint_every=0)
    c.eval.every = 0
    t = train.setup(c, os.path.join(WORKDIR, method), verbose=False)
    # The loop itself (data iterator, step, hooks, the final checkpoint of the sharded state), not a copy of it.
    state, _, _ = train.train(t)
    rows = [json.loads(line) for line in open(os.path.join(WORKDIR, method, "metrics.jsonl"))]
    losses = [row["loss"] for row in rows if "loss" in row]
    batch_sharding = parallel.batch_sharding(t.mesh)
    # Everything a step updates: the parameters, the EMA target, and BatchNorm's running statistics.
    trained = {part: state[part] for part in ("params", "ema", "model_state") if part in state}
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(trained))[0]
    out[method] = {
        "devices": jax.device_count(), "losses": losses, "compiles": t.train_step._cache_size(),
        "trained": {jax.tree_util.keystr(k): np.asarray(v).ravel().tolist() for k, v in leaves},
        "specs": {part: specs(state[part]) for part in ("params", "ema", "opt_state")},
        "ema_target": t.method.ema_target, "batch_spec": str(batch_sharding.spec)}
  except Exception:  # Reported per method, so one broken method does not hide the others' results.
    out[method] = {"error": traceback.format_exc()[-3000:]}
print(json.dumps(out))
"""


def _processes(workdir):
  """Starts one fresh process per mesh shape and one for the 1-device reference, all at once."""
  cases = json.dumps(json.dumps([(m, n) for m, n in CASES.items() if n]))
  procs = {}
  for data, fsdp in [(1, 1)] + MESHES:
    code = "\n".join([f"CASES = {cases}", f"DATA, FSDP = {data}, {fsdp}",
                      f"MIN_SIZE, STEPS = {FSDP_MIN_SIZE}, {STEPS}",
                      f"WORKDIR = {os.path.join(workdir, f'{data}x{fsdp}')!r}", TRAIN])
    procs[(data, fsdp)] = start_in_fresh_process(code, devices=data * fsdp)
  return procs


@pytest.fixture(name="train_on", scope="module")
def _train_on(tmp_path_factory):
  """train_on(data, fsdp) -> {method: result} of every method with a tiny config on that mesh."""
  procs = _processes(str(tmp_path_factory.mktemp("meshes")))
  yield lambda data, fsdp: procs[(data, fsdp)].result(timeout=1800)
  for proc in procs.values():
    proc.kill()


def _result(train_on, method, data, fsdp):
  result = train_on(data, fsdp)[method]
  if "error" in result:
    raise AssertionError(f"{method} on a {data}x{fsdp} mesh failed:\n{result['error']}")
  return result


@pytest.mark.parametrize("mesh", MESHES, ids=lambda m: f"{m[0]}x{m[1]}")
@pytest.mark.parametrize("method", sorted(CASES))
def test_mesh_matches_one_device(train_on, method, mesh):
  single, multi = _result(train_on, method, 1, 1), _result(train_on, method, *mesh)
  assert multi["devices"] == 8 and len(single["losses"]) == STEPS
  np.testing.assert_allclose(multi["losses"], single["losses"], atol=1e-5, rtol=0)
  assert multi["trained"].keys() == single["trained"].keys()
  for path, value in single["trained"].items():
    np.testing.assert_allclose(multi["trained"][path], value, atol=1e-5, rtol=0, err_msg=path)
  assert multi["compiles"] == 1, "the step recompiled after its first call"


@pytest.mark.parametrize("mesh", MESHES, ids=lambda m: f"{m[0]}x{m[1]}")
@pytest.mark.parametrize("method", sorted(CASES))
def test_shardings_follow_the_rules(train_on, method, mesh):
  result = _result(train_on, method, *mesh)
  fsdp = mesh[1]
  assert result["batch_spec"] == str(P(parallel.BATCH_AXES))
  params = result["specs"]["params"]
  for path, (spec, shape) in params.items():  # The FSDP rule, leaf by leaf, on the live arrays.
    assert spec == str(parallel.param_spec(shape, fsdp, FSDP_MIN_SIZE)), path
  if fsdp > 1:
    assert any("fsdp" in spec for spec, _ in params.values()), "no parameter is sharded over fsdp"
  # The EMA target has exactly the shardings of the submodule it follows.
  if result["ema_target"]:
    prefix = f"['{result['ema_target']}']"
    student = {p[len(prefix):]: s for p, s in params.items() if p.startswith(prefix)}
    assert result["specs"]["ema"] == student
  # Adam's moments (paths '...mu<param path>' / '...nu<param path>') have their parameter's sharding.
  moments = {p: s for p, s in result["specs"]["opt_state"].items() if ".mu[" in p or ".nu[" in p}
  assert len(moments) == 2 * len(params)
  for path, spec in moments.items():
    assert spec == params[path.split(".mu", 1)[-1] if ".mu[" in path else path.split(".nu", 1)[-1]], path


@pytest.mark.parametrize("mesh,expected", [
    ((4, 2), {"['encoder']['blocks'][0]['mlp']['fc1']['kernel']": "P(None, 'fsdp')",        # [32, 128]
              "['encoder']['patch_embed']['kernel']": "P(None, None, None, 'fsdp')",       # [4, 4, 3, 32]
              "['encoder']['blocks'][0]['norm1']['scale']": "P()",                         # [32] < 64
              "['predictor']['blocks'][0]['attn']['qkv']['bias']": "P('fsdp',)"}),         # [96] >= 64
    ((1, 8), {"['encoder']['blocks'][0]['attn']['proj']['kernel']": "P('fsdp', None)",     # [32, 32]
              "['encoder']['blocks'][0]['mlp']['fc2']['kernel']": "P('fsdp', None)"}),     # [128, 32]
    ((8, 1), {"['encoder']['blocks'][0]['mlp']['fc1']['kernel']": "P()"}),
], ids=["4x2", "1x8", "8x1"])
def test_known_ijepa_kernels(train_on, mesh, expected):
  params = _result(train_on, "ijepa", *mesh)["specs"]["params"]
  for path, spec in expected.items():
    assert params[path][0] == spec, path
