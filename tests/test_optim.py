"""The optimizer (optax AdamW + optional global-norm clipping from a step on) against a float64 NumPy AdamW;
and optax.incremental_update as the EMA."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jepa import optim
from jepa import schedules

NUM_UPDATES = 10
# Gradient norms in units of grad_clip: clipped at some updates, left alone at others, on both sides of warmup.
NORM_SCALES = (0.2, 3.0, 0.5, 5.0, 1.5, 0.1, 4.0, 0.8, 2.0, 10.0)


# ------------------------------------------------------------------------------------------------------------
# Float64 NumPy reference: clip (from update index `start` on), Adam, decoupled decay on the masked leaves.
# ------------------------------------------------------------------------------------------------------------


def _np_run(cfg, lr_fn, wd_fn, params, grads_seq, decay):
  start = cfg.warmup_steps if cfg.clip_after_warmup else 0
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  out = []
  for t, grads in enumerate(grads_seq):
    g = {k: np.asarray(x, np.float64) for k, x in grads.items()}
    norm = np.sqrt(sum(np.sum(x**2) for x in g.values()))
    if cfg.grad_clip > 0 and t >= start and norm > cfg.grad_clip:
      g = {k: x * cfg.grad_clip / norm for k, x in g.items()}
    lr, wd = float(lr_fn(t)), float(wd_fn(t))
    updates = {}
    for k in p:
      m[k] = cfg.b1 * m[k] + (1 - cfg.b1) * g[k]
      v[k] = cfg.b2 * v[k] + (1 - cfg.b2) * g[k] ** 2
      mhat, vhat = m[k] / (1 - cfg.b1 ** (t + 1)), v[k] / (1 - cfg.b2 ** (t + 1))
      u = mhat / (np.sqrt(vhat) + cfg.eps) + (wd * p[k] if decay[k] else 0.0)
      updates[k] = -lr * u
      p[k] = p[k] + updates[k]
    out.append(updates)
  return out


def _setup(grad_clip, clip_after_warmup, warmup_steps):
  cfg = ml_collections.ConfigDict(dict(
      lr=1e-3, start_lr=2e-4, final_lr=1e-6, warmup_steps=warmup_steps, weight_decay=0.04, final_weight_decay=0.4,
      schedule_scale=1.0, b1=0.9, b2=0.999, eps=1e-8, grad_clip=grad_clip, clip_after_warmup=clip_after_warmup))
  ema = ml_collections.ConfigDict(dict(momentum=0.996, final_momentum=1.0))
  rng = np.random.default_rng(0)
  params = {"kernel": rng.standard_normal((8, 6)), "bias": rng.standard_normal(6),
            "mask_token": rng.standard_normal((1, 1, 6)), "scale": 1 + 0.1 * rng.standard_normal(6)}
  params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  grads_seq = []
  for s in NORM_SCALES:
    g = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    norm = np.sqrt(sum(np.sum(x**2) for x in g.values()))
    grads_seq.append({k: jnp.asarray(x * s * max(grad_clip, 1.0) / norm, jnp.float32) for k, x in g.items()})
  return cfg, ema, params, grads_seq


def _run(tx, params, grads_seq):
  state = tx.init(params)
  update = jax.jit(tx.update)
  out = []
  for grads in grads_seq:
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(updates)
  return out, state


@pytest.mark.parametrize("grad_clip,clip_after_warmup,warmup_steps", [
    (1.0, True, 4),    # V-JEPA: clipping from update index 4 on
    (1.0, False, 4),   # clipping from the first update
    (1.0, True, 0),    # clip after a warmup of 0 = always
    (0.0, False, 3),   # no clipping: plain adamw
])
def test_updates_equal_numpy(grad_clip, clip_after_warmup, warmup_steps):
  cfg, ema, params, grads_seq = _setup(grad_clip, clip_after_warmup, warmup_steps)
  lr_fn, wd_fn, _ = schedules.from_config(cfg, ema, NUM_UPDATES)
  new, _ = _run(optim.make_optimizer(cfg, lr_fn, wd_fn), params, grads_seq)
  decay = jax.tree.map(bool, optim.decay_mask(params))
  assert decay == {"kernel": True, "bias": False, "mask_token": True, "scale": False}
  ref = _np_run(cfg, lr_fn, wd_fn, params, grads_seq, decay)
  for t in range(NUM_UPDATES):
    for k in params:
      got = np.asarray(new[t][k])
      np.testing.assert_allclose(got, ref[t][k], rtol=1e-4, atol=1e-7, err_msg=f"update {t}, {k} (NumPy)")
  # The clipping did something: without it, the large-gradient updates differ.
  if grad_clip > 0:
    unclipped, _ = _run(optim.make_optimizer(ml_collections.ConfigDict(dict(cfg, grad_clip=0.0)), lr_fn, wd_fn),
                        params, grads_seq)
    first_clipped = warmup_steps if clip_after_warmup else 0
    first_clipped = next(t for t in range(first_clipped, NUM_UPDATES) if NORM_SCALES[t] > 1)
    assert all(np.allclose(new[t]["kernel"], unclipped[t]["kernel"], rtol=0, atol=0) for t in range(first_clipped))
    assert not np.allclose(new[first_clipped]["kernel"], unclipped[first_clipped]["kernel"], rtol=1e-3)


@pytest.mark.parametrize("momentum", [0.996, 0.9996, 0.998, 0.5, 1.0, 0.0])
def test_incremental_update_is_the_ema(momentum):
  """train_state.ema_update (optax.incremental_update(ema, params, m)) = m * ema + (1 - m) * params.

  optax computes step_size * new + (1 - step_size) * old, which with new = ema, step_size = m is the train step's
  former hand-written expression term by term: under jit the two compile alike and agree bit for bit. Against the
  eager (unfused) expression they may differ by one rounding (XLA may contract a * b + c * d into an FMA): 1 ulp.
  """
  from jepa import train_state  # pylint: disable=import-outside-toplevel
  shapes = {"a": (256, 64), "b": {"c": (3,), "d": (2, 3, 4)}, "e": (4096,)}
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(jax.random.key(3), 2 * len(leaves))
  m = jnp.float32(momentum)
  ema_fn = jax.jit(lambda e, p, m: train_state.ema_update(e, p, m))
  by_hand = jax.jit(lambda p, e, m: jax.tree.map(lambda p, e: m * e + (1 - m) * p, p, e))
  for scale in (1.0, 10.0):  # |x| < 1 (uniform), and up to 10
    params = treedef.unflatten([jax.random.uniform(k, s, jnp.float32, -scale, scale)
                                for k, s in zip(keys, leaves)])
    ema = treedef.unflatten([jax.random.uniform(k, s, jnp.float32, -scale, scale)
                             for k, s in zip(keys[len(leaves):], leaves)])
    got, want = ema_fn(ema, params, m), by_hand(params, ema, m)
    want_eager = jax.tree.map(lambda p, e: m * e + (1 - m) * p, params, ema)
    for g, w, w_eager, p, e in zip(*(jax.tree.leaves(t) for t in (got, want, want_eager, params, ema))):
      g, w, w_eager = np.asarray(g), np.asarray(w), np.asarray(w_eager)
      assert g.dtype == np.float32 and g.shape == p.shape
      np.testing.assert_array_equal(g, w)
      assert np.all(np.abs(g - w_eager) <= np.spacing(np.abs(w_eager))), scale  # <= 1 ulp
      exact = float(m) * np.asarray(e, np.float64) + (1 - float(m)) * np.asarray(p, np.float64)
      np.testing.assert_allclose(g, exact, rtol=0, atol=2.4e-7 * scale)  # ~2 roundings of |x| <= scale
