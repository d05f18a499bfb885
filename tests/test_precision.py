"""Precision and memory options of the step: bf16 compute, rematerialisation, gradient accumulation."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa import parallel
from jepa import train
from jepa.data import pipeline
from jepa.errors import ConfigError
from tests.helpers import load_config


def _config(**overrides):
  c = load_config("ijepa_vit", "tiny")  # I-JEPA: no BatchNorm, so accumulation is exact.
  c.eval.probe = False
  c.train.update(checkpoint_every=0)
  for key, value in overrides.items():
    section, name = key.split("__") if "__" in key else (None, key)
    (c[section] if section else c)[name] = value
  return c


def _steps(config, n, tmp_path):
  """(run, state, [metrics], batches) after n steps on the real pipeline's first n batches."""
  t = train.setup(config, str(tmp_path), verbose=False)
  local_batch = t.config.train.batch_size // jax.process_count()
  it = pipeline.make_train_iterator(t.train_source, t.method.example_fn(train=True), batch_size=local_batch,
                                    seed=config.seed, num_threads=1, prefetch=1)
  batches = [parallel.global_batch(next(it), parallel.batch_sharding(t.mesh)) for _ in range(n)]
  state, metrics = t.state_def.init(config.seed), []
  for b in batches:
    state, m = t.train_step(state, b)
    metrics.append(jax.device_get(m))
  return t, state, metrics, batches


def _close(a, b, atol):
  for x, y in zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def test_bf16_compute_keeps_fp32_params_optimizer_state_and_loss(tmp_path):
  t, state, metrics, batches = _steps(_config(dtype="bfloat16"), 2, tmp_path / "bf16")
  for part in ("params", "ema", "opt_state"):
    floats = [x for x in jax.tree.leaves(state[part]) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats), part
  assert all(np.asarray(m["loss"]).dtype == np.float32 for m in metrics)
  # The matmuls do run in bf16: the lowered step has bf16 dot products.
  hlo = t.train_step.lower(state, batches[0]).as_text()
  assert any("dot_general" in line and "bf16" in line for line in hlo.splitlines())
  # And the loss stays close to the float32 one (same data, same init).
  _, _, reference, _ = _steps(_config(), 2, tmp_path / "fp32")
  np.testing.assert_allclose([m["loss"] for m in metrics], [m["loss"] for m in reference], rtol=2e-2)


def test_remat_changes_memory_not_results(tmp_path):
  t, state, _, batches = _steps(_config(model__remat=True), 2, tmp_path / "remat")
  _, plain, _, _ = _steps(_config(model__remat=False), 2, tmp_path / "plain")
  _close(state["params"], plain["params"], atol=1e-6)
  # Wired through jepa/models/factory.py into both the encoder and the predictor: checkpointed block calls.
  step = functools.partial(train.train_step, t.config, t.state_def)  # The step before jit.
  jaxpr = str(jax.make_jaxpr(step)(state, batches[0]))
  assert jaxpr.count("checkpoint[") + jaxpr.count("remat") >= 3  # 2 encoder blocks + 1 predictor block


def test_grad_accumulation_equals_one_big_batch(tmp_path):
  """2 micro-batches of B/2 per step == one batch of B: params, EMA, optimizer state, schedules, steps."""
  _, acc, acc_metrics, _ = _steps(_config(train__grad_accum_steps=2), 3, tmp_path / "acc")
  _, big, big_metrics, _ = _steps(_config(), 3, tmp_path / "big")
  assert int(acc["step"]) == int(big["step"]) == 3  # One step per *effective* batch.
  for part in ("params", "ema", "opt_state"):
    _close(acc[part], big[part], atol=1e-6)
  for key in ("loss", "lr", "weight_decay", "ema_momentum"):
    np.testing.assert_allclose([m[key] for m in acc_metrics], [m[key] for m in big_metrics], atol=1e-6,
                               rtol=0)
  np.testing.assert_allclose([m["grad_norm"] for m in acc_metrics], [m["grad_norm"] for m in big_metrics],
                             rtol=1e-5)


def test_grad_accumulation_must_divide_the_batch(tmp_path):
  with pytest.raises(ConfigError, match=r"train.grad_accum_steps=3 micro-batches"):
    train.setup(_config(train__grad_accum_steps=3), str(tmp_path), verbose=False)
