"""Learning-rate, weight-decay and EMA-momentum schedules (the reference formulas, as jnp functions of the step).

All three follow `src/utils/schedulers.py` of the I-JEPA / V-JEPA repositories (identical in all three):

  W = warmup_steps, T = schedule_scale * total_steps (V-JEPA's `ipe_scale` = 1.25 stretches the schedules past
  the end of the run so they never reach their final values; I-JEPA and LeJEPA use 1.0).

  warmup_cosine(s) = start + (s / W) (ref - start)                                  for s < W
                     max(final, final + (ref - final) * (1 + cos(pi (s - W) / (T - W))) / 2)   otherwise
  cosine_ramp(s)   = final + (ref - final) * (1 + cos(pi s / T)) / 2, clamped at `final` (works upwards too:
                     I-JEPA's weight decay rises 0.04 -> 0.4)
  linear(s)        = start + s (end - start) / T, clamped at `end` (EMA momentum 0.996 -> 1.0)

Step offsets as in the references: the lr and wd schedulers are stepped *before* each update, so update k
(0-based) uses schedule step k + 1; the momentum for the EMA update after update k uses step k.
"""
import jax.numpy as jnp


def warmup_cosine(step, *, start, ref, final, warmup_steps, total_steps):
  """Linear warmup from `start` to `ref` over `warmup_steps`, then cosine decay to `final` at `total_steps`."""
  step = jnp.asarray(step, jnp.float32)
  warm = start + (step / max(warmup_steps, 1)) * (ref - start)
  progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
  progress = jnp.clip(progress, 0.0, 1.0)
  cos = final + (ref - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  cos = jnp.maximum(final, cos) if final <= ref else jnp.minimum(final, cos)
  return jnp.where(step < warmup_steps, warm, cos)


def cosine_ramp(step, *, ref, final, total_steps):
  """Cosine from `ref` at step 0 to `final` at `total_steps` (rising or falling), clamped at `final`."""
  step = jnp.asarray(step, jnp.float32)
  progress = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
  value = final + (ref - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  return jnp.minimum(final, value) if final >= ref else jnp.maximum(final, value)


def linear(step, *, start, end, total_steps):
  """Linear from `start` at step 0 to `end` at `total_steps`, clamped at `end`."""
  step = jnp.asarray(step, jnp.float32)
  value = start + step * (end - start) / max(total_steps, 1)
  return jnp.minimum(end, value) if end >= start else jnp.maximum(end, value)


def from_config(optim_cfg, ema_cfg, num_steps):
  """The three schedules of a run as functions of the 0-based update index (reference offsets applied)."""
  total = int(round(optim_cfg.schedule_scale * num_steps))
  warmup = int(optim_cfg.warmup_steps)

  def lr(count):
    return warmup_cosine(count + 1, start=optim_cfg.start_lr, ref=optim_cfg.lr, final=optim_cfg.final_lr,
                         warmup_steps=warmup, total_steps=total)

  def weight_decay(count):
    return cosine_ramp(count + 1, ref=optim_cfg.weight_decay, final=optim_cfg.final_weight_decay,
                       total_steps=total)

  def momentum(count):
    return linear(count, start=ema_cfg.momentum, end=ema_cfg.final_momentum, total_steps=total)

  return lr, weight_decay, momentum
