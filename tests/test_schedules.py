"""Schedules against their closed forms, the reference's worked values (ijepa_vjepa.md §6.4) and the previous
hand-written implementation (frozen below), at every step of several configs."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jepa import schedules

# ------------------------------------------------------------------------------------------------------------
# The hand-written jnp schedules that jepa/schedules.py had before it was built on optax's schedules, copied
# verbatim: the optax-built schedules must give the same values (float32) to 1e-7 at every step.
# ------------------------------------------------------------------------------------------------------------


def _old_warmup_cosine(step, *, start, ref, final, warmup_steps, total_steps):
  step = jnp.asarray(step, jnp.float32)
  warm = start + (step / max(warmup_steps, 1)) * (ref - start)
  progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
  progress = jnp.clip(progress, 0.0, 1.0)
  cos = final + (ref - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  cos = jnp.maximum(final, cos) if final <= ref else jnp.minimum(final, cos)
  return jnp.where(step < warmup_steps, warm, cos)


def _old_cosine_ramp(step, *, ref, final, total_steps):
  step = jnp.asarray(step, jnp.float32)
  progress = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
  value = final + (ref - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  return jnp.minimum(final, value) if final >= ref else jnp.maximum(final, value)


def _old_linear(step, *, start, end, total_steps):
  step = jnp.asarray(step, jnp.float32)
  value = start + step * (end - start) / max(total_steps, 1)
  return jnp.minimum(end, value) if end >= start else jnp.maximum(end, value)


def _old_from_config(optim_cfg, ema_cfg, num_steps):
  total = int(round(optim_cfg.schedule_scale * num_steps))
  warmup = int(optim_cfg.warmup_steps)

  def lr(count):
    return _old_warmup_cosine(count + 1, start=optim_cfg.start_lr, ref=optim_cfg.lr, final=optim_cfg.final_lr,
                              warmup_steps=warmup, total_steps=total)

  def weight_decay(count):
    return _old_cosine_ramp(count + 1, ref=optim_cfg.weight_decay, final=optim_cfg.final_weight_decay,
                            total_steps=total)

  def momentum(count):
    return _old_linear(count, start=ema_cfg.momentum, end=ema_cfg.final_momentum, total_steps=total)

  return lr, weight_decay, momentum


# ------------------------------------------------------------------------------------------------------------
# Closed forms (float64), written from the reference formulas.
# ------------------------------------------------------------------------------------------------------------


def _ref_warmup_cosine(s, start, ref, final, w, t):
  if s < w:
    return start + s / w * (ref - start)
  p = min((s - w) / max(t - w, 1), 1.0)
  clamp = max if final <= ref else min  # the reference's max(final, .) for a decay; a rising lr clamps above
  return clamp(final, final + (ref - final) * 0.5 * (1 + math.cos(math.pi * p)))


def _cfgs(num_steps=187_500, momentum=0.996, final_momentum=1.0, **optim):
  o = dict(lr=1e-3, start_lr=2e-4, final_lr=1e-6, warmup_steps=25_000, weight_decay=0.04, final_weight_decay=0.4,
           schedule_scale=1.0)
  o.update(optim)
  ema = ml_collections.ConfigDict(dict(momentum=momentum, final_momentum=final_momentum))
  return ml_collections.ConfigDict(o), ema, num_steps


# (optim, ema, num_steps): the configs' schedules and the edge cases of the formulas.
CONFIGS = {
    "ijepa_vith14": _cfgs(),
    "vjepa_ipe_scale": _cfgs(90_000, 0.998, lr=6.25e-4, warmup_steps=12_000, schedule_scale=1.25),
    "vjepa2_constant_after_warmup": _cfgs(30_000, lr=5.25e-4, start_lr=1e-4, final_lr=5.25e-4, warmup_steps=12_000,
                                          final_weight_decay=0.04),
    "lejepa_from_zero": _cfgs(2_851, 1.0, lr=5e-4, start_lr=0.0, final_lr=5e-7, warmup_steps=285,
                              weight_decay=0.05, final_weight_decay=0.05),
    "no_warmup": _cfgs(1_000, lr=2e-3, final_lr=1e-3, warmup_steps=0),
    "warmup_is_the_run": _cfgs(40, warmup_steps=40),
    "shrunk_below_warmup": _cfgs(40, warmup_steps=30, schedule_scale=0.5),
    "tiny": _cfgs(4, warmup_steps=2),
    "one_step": _cfgs(1, warmup_steps=1),
    "wd_from_zero_lr_rising": _cfgs(500, 0.99, 0.999, lr=1e-4, start_lr=1e-4, final_lr=1e-3, warmup_steps=50,
                                    weight_decay=0.0, final_weight_decay=0.3),
    "zero_lr_wd_falling_momentum_falling": _cfgs(300, 1.0, 0.99, lr=0.0, start_lr=0.0, final_lr=0.0,
                                                 warmup_steps=7, weight_decay=0.4, final_weight_decay=0.04),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_equal_to_previous_implementation_at_every_step(name):
  optim, ema, num_steps = CONFIGS[name]
  steps = jnp.arange(int(1.5 * num_steps * optim.schedule_scale) + 3, dtype=jnp.int32)  # past the end too
  new = schedules.from_config(optim, ema, num_steps)
  old = _old_from_config(optim, ema, num_steps)
  new, old = (jax.jit(lambda s, fns=fns: [f(s) for f in fns]) for fns in (new, old))  # as in the train step
  for what, got, want in zip(("lr", "weight_decay", "momentum"), new(steps), old(steps)):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == np.float32 and got.shape == want.shape, what
    # Both round differently in float32 (e.g. pi * (s / T) vs (pi * s) / T): up to ~9e-8 apart (weight decay,
    # momentum; lr: ~2e-10), each as close to the float64 closed form as the other.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7, err_msg=f"{name}: {what}")
  # One scalar int32 count at a time, as in the train step.
  for k in (0, 1, optim.warmup_steps, num_steps - 1):
    np.testing.assert_allclose(new(jnp.int32(k)), old(jnp.int32(k)), rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_closed_form_offsets_and_final_values(name):
  optim, ema, num_steps = CONFIGS[name]
  total = int(round(optim.schedule_scale * num_steps))
  lr, wd, mom = schedules.from_config(optim, ema, num_steps)
  ks = sorted({0, 1, optim.warmup_steps - 1, optim.warmup_steps, num_steps // 2, num_steps - 1, total, total + 5}
              - {-1})
  vals = {f: np.asarray(fn(jnp.asarray(ks, jnp.int32)), np.float64) for f, fn in (("lr", lr), ("wd", wd),
                                                                                  ("mom", mom))}
  for i, k in enumerate(ks):
    s = k + 1  # lr and wd: update k uses schedule step k + 1
    want_lr = _ref_warmup_cosine(s, optim.start_lr, optim.lr, optim.final_lr, optim.warmup_steps, total)
    p = min(s / max(total, 1), 1.0)
    want_wd = optim.final_weight_decay + (optim.weight_decay - optim.final_weight_decay) * 0.5 * (
        1 + math.cos(math.pi * p))
    m0, m1 = ema.momentum, ema.final_momentum
    want_mom = m0 + min(k / max(total, 1), 1.0) * (m1 - m0)  # momentum: step k
    assert vals["lr"][i] == pytest.approx(want_lr, rel=1e-5, abs=1e-9), (k, "lr")
    assert vals["wd"][i] == pytest.approx(want_wd, rel=1e-5, abs=1e-7), (k, "wd")  # float32 cancellation
    assert vals["mom"][i] == pytest.approx(want_mom, abs=1e-7), (k, "momentum")
  # Final values, held past the end of the schedule (the lr's warmup runs its course even past T).
  end = jnp.asarray([total, total + 1, 2 * total + 10], jnp.int32)
  lr_end = end + max(optim.warmup_steps - total, 0)
  np.testing.assert_allclose(np.asarray(lr(lr_end)), optim.final_lr, rtol=0, atol=1e-7)
  np.testing.assert_allclose(np.asarray(wd(end)), optim.final_weight_decay, rtol=0, atol=1e-7)
  np.testing.assert_allclose(np.asarray(mom(end)), ema.final_momentum, rtol=0, atol=1e-7)


@pytest.mark.parametrize("s", [0, 1, 50, 99, 100, 101, 500, 999, 1000, 1200])
def test_warmup_cosine_closed_form(s):
  got = float(schedules.warmup_cosine(start=2e-4, ref=1e-3, final=1e-6, warmup_steps=100, total_steps=1000)(s))
  want = _ref_warmup_cosine(min(s, 1000), 2e-4, 1e-3, 1e-6, 100, 1000)
  assert got == pytest.approx(want, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("s", [0, 10, 250, 500, 999, 1000])
def test_cosine_ramp_rises_to_final(s):
  got = float(schedules.cosine_ramp(ref=0.04, final=0.4, total_steps=1000)(s))
  want = 0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi * s / 1000))
  assert got == pytest.approx(want, rel=1e-5)


def test_linear_momentum():
  for s in (0, 1, 37, 500, 1000, 2000):
    got = float(schedules.linear(start=0.996, end=1.0, total_steps=1000)(s))
    assert got == pytest.approx(min(1.0, 0.996 + s * 0.004 / 1000), abs=1e-7)


def test_ijepa_vith14_worked_values():
  """I-JEPA ViT-H/14: 187.5K steps, 25K warmup: lr peaks at 1e-3, ends at 1e-6; wd ≈ 0.056 / 0.22 / 0.4."""
  lr, wd, mom = schedules.from_config(*CONFIGS["ijepa_vith14"])
  assert float(lr(24_999)) == pytest.approx(1e-3, rel=1e-6)   # update k uses schedule step k + 1
  assert float(lr(187_499)) == pytest.approx(1e-6, rel=1e-3)
  assert float(wd(25_000)) == pytest.approx(0.056, abs=2e-3)
  assert float(wd(93_750)) == pytest.approx(0.22, abs=1e-3)
  assert float(wd(187_499)) == pytest.approx(0.4, abs=1e-6)
  assert float(mom(0)) == pytest.approx(0.996)                 # the first EMA update uses step 0
  assert float(mom(93_750)) == pytest.approx(0.998, abs=1e-6)


def test_vjepa_truncated_schedules():
  """V-JEPA: schedules over 1.25x the 90K-step run never reach their final values (§6.4)."""
  lr, wd, mom = schedules.from_config(*CONFIGS["vjepa_ipe_scale"])
  assert float(lr(89_999)) == pytest.approx(7.5e-5, rel=0.02)
  assert float(wd(89_999)) == pytest.approx(0.366, abs=1e-3)
  assert float(mom(90_000)) == pytest.approx(0.9996, abs=1e-6)
  assert np.all(np.diff([float(lr(s)) for s in range(0, 12_000, 1000)]) > 0)
