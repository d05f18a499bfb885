"""Learning-rate, weight-decay and EMA-momentum schedules (the reference formulas, as optax schedules).

All three follow `src/utils/schedulers.py` of the I-JEPA / V-JEPA repositories (identical in all three):

  W = warmup_steps, T = schedule_scale * total_steps (V-JEPA's `ipe_scale` = 1.25 stretches the schedules past
  the end of the run so they never reach their final values; I-JEPA and LeJEPA use 1.0).

  warmup_cosine(s) = start + (s / W) (ref - start)                                  for s < W
                     max(final, final + (ref - final) * (1 + cos(pi (s - W) / (T - W))) / 2)   otherwise
  cosine_ramp(s)   = final + (ref - final) * (1 + cos(pi s / T)) / 2, clamped at `final` (works upwards too:
                     I-JEPA's weight decay rises 0.04 -> 0.4)
  linear(s)        = start + s (end - start) / T, clamped at `end` (EMA momentum 0.996 -> 1.0)

Each is built from optax's schedules: `optax.linear_schedule` (warmup, momentum), `optax.cosine_decay_schedule`
(the cosine part, ref * ((1 - alpha) c + alpha) with alpha = final / ref, c = (1 + cos(pi s / T)) / 2; it
holds its last value past T) and `optax.join_schedules` (warmup, then cosine). The values equal the formulas
above to float32 rounding (tests/test_schedules.py: <= 1e-7 at every step of several configs).

Step offsets as in the references: the lr and wd schedulers are stepped *before* each update, so update k
(0-based) uses schedule step k + 1; the momentum for the EMA update after update k uses step k.
"""
import optax


def _cosine(ref, final, steps):
  """(1 + cos(pi s / steps)) / 2 from `ref` to `final` (either direction), `final` from `steps` on."""
  if ref == 0:
    # cosine_decay_schedule scales its init value, so a ramp up from 0 is `final` minus a decay from `final`.
    decay = optax.cosine_decay_schedule(final, steps)
    return lambda count: final - decay(count)
  return optax.cosine_decay_schedule(ref, steps, alpha=final / ref)


def warmup_cosine(*, start, ref, final, warmup_steps, total_steps) -> optax.Schedule:
  """Linear warmup from `start` to `ref` over `warmup_steps`, then cosine decay to `final` at `total_steps`."""
  warmup_steps = int(warmup_steps)
  decay = _cosine(ref, final, max(int(total_steps) - warmup_steps, 1))
  if warmup_steps <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(start, ref, warmup_steps), decay], [warmup_steps])


def cosine_ramp(*, ref, final, total_steps) -> optax.Schedule:
  """Cosine from `ref` at step 0 to `final` at `total_steps` (rising or falling), clamped at `final`."""
  return _cosine(ref, final, max(int(total_steps), 1))


def linear(*, start, end, total_steps) -> optax.Schedule:
  """Linear from `start` at step 0 to `end` at `total_steps`, clamped at `end`."""
  return optax.linear_schedule(start, end, max(int(total_steps), 1))


def from_config(optim_cfg, ema_cfg, num_steps):
  """The three schedules of a run as functions of the 0-based update index (reference offsets applied)."""
  total = int(round(optim_cfg.schedule_scale * num_steps))
  lr = warmup_cosine(start=optim_cfg.start_lr, ref=optim_cfg.lr, final=optim_cfg.final_lr,
                     warmup_steps=optim_cfg.warmup_steps, total_steps=total)
  wd = cosine_ramp(ref=optim_cfg.weight_decay, final=optim_cfg.final_weight_decay, total_steps=total)
  momentum = linear(start=ema_cfg.momentum, end=ema_cfg.final_momentum, total_steps=total)
  return (lambda count: lr(count + 1)), (lambda count: wd(count + 1)), momentum
