"""The optimizer: AdamW with scheduled lr and weight decay, no decay on biases and 1-D parameters.

  - weight decay applies to every parameter with ndim > 1 whose name is not a bias (the references' rule;
    mask tokens are 3-D and *are* decayed); fixed position tables are not parameters at all;
  - optional global-norm gradient clipping, g <- g * grad_clip / ||g|| when ||g|| > grad_clip
    (`optax.clip_by_global_norm`); with clip_after_warmup only from update index warmup_steps on (V-JEPA clips
    only after warmup), by `optax.conditionally_transform` on its update count.

State (checkpoints store it): `optax.adamw`'s, preceded when clipping by clip_by_global_norm's `EmptyState()` or,
when clipping starts later, `ConditionallyTransformState(inner_state=EmptyState(), step=int32 update count)`.
"""
import jax
import optax


def decay_mask(params):
  def rule(path, x):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    return x.ndim > 1 and "bias" not in name
  return jax.tree_util.tree_map_with_path(rule, params)


def make_optimizer(optim_cfg, lr_fn, wd_fn):
  tx = optax.adamw(lr_fn, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps, weight_decay=wd_fn,
                   mask=decay_mask)
  if optim_cfg.grad_clip > 0:
    clip = optax.clip_by_global_norm(optim_cfg.grad_clip)
    start = int(optim_cfg.warmup_steps) if optim_cfg.clip_after_warmup else 0
    if start > 0:
      clip = optax.conditionally_transform(clip, lambda step: step >= start)
    tx = optax.chain(clip, tx)
  return tx
