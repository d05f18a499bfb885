"""The optimizer: AdamW with scheduled lr and weight decay, no decay on biases and 1-D parameters.

  - weight decay applies to every parameter with ndim > 1 whose name is not a bias (the references' rule;
    mask tokens are 3-D and *are* decayed); fixed position tables are not parameters at all;
  - optional global-norm gradient clipping, from step `clip_start` on (V-JEPA clips only after warmup).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def decay_mask(params):
  def rule(path, x):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    return x.ndim > 1 and "bias" not in name
  return jax.tree_util.tree_map_with_path(rule, params)


class _ClipState(NamedTuple):
  count: jax.Array


def clip_by_global_norm_from(max_norm, start_step):
  """Global-norm clipping that switches on at `start_step` (0 = always)."""

  def init(params):
    del params
    return _ClipState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    active = (state.count >= start_step) & (norm > max_norm)
    scale = jnp.where(active, max_norm / jnp.maximum(norm, 1e-12), 1.0)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), _ClipState(count=state.count + 1)

  return optax.GradientTransformation(init, update)


def make_optimizer(optim_cfg, lr_fn, wd_fn):
  tx = optax.adamw(lr_fn, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps, weight_decay=wd_fn,
                   mask=decay_mask)
  if optim_cfg.grad_clip > 0:
    start = optim_cfg.warmup_steps if optim_cfg.clip_after_warmup else 0
    tx = optax.chain(clip_by_global_norm_from(optim_cfg.grad_clip, start), tx)
  return tx
