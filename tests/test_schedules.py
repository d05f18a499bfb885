"""Schedules against their closed forms and the reference's worked values (ijepa_vjepa.md §6.4)."""
import math

import ml_collections
import numpy as np
import pytest

from jepa import schedules


def _ref_warmup_cosine(s, start, ref, final, w, t):
  if s < w:
    return start + s / w * (ref - start)
  p = (s - w) / (t - w)
  return max(final, final + (ref - final) * 0.5 * (1 + math.cos(math.pi * p)))


@pytest.mark.parametrize("s", [0, 1, 50, 99, 100, 101, 500, 999, 1000, 1200])
def test_warmup_cosine_closed_form(s):
  got = float(schedules.warmup_cosine(s, start=2e-4, ref=1e-3, final=1e-6, warmup_steps=100, total_steps=1000))
  want = _ref_warmup_cosine(min(s, 1000), 2e-4, 1e-3, 1e-6, 100, 1000)
  assert got == pytest.approx(want, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("s", [0, 10, 250, 500, 999, 1000])
def test_cosine_ramp_rises_to_final(s):
  got = float(schedules.cosine_ramp(s, ref=0.04, final=0.4, total_steps=1000))
  want = 0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi * s / 1000))
  assert got == pytest.approx(want, rel=1e-5)


def test_linear_momentum():
  for s in (0, 1, 37, 500, 1000, 2000):
    got = float(schedules.linear(s, start=0.996, end=1.0, total_steps=1000))
    assert got == pytest.approx(min(1.0, 0.996 + s * 0.004 / 1000), abs=1e-7)


def _cfgs(**optim):
  o = dict(lr=1e-3, start_lr=2e-4, final_lr=1e-6, warmup_steps=25_000, weight_decay=0.04, final_weight_decay=0.4,
           schedule_scale=1.0)
  o.update(optim)
  return ml_collections.ConfigDict(o), ml_collections.ConfigDict(dict(momentum=0.996, final_momentum=1.0))


def test_ijepa_vith14_worked_values():
  """I-JEPA ViT-H/14: 187.5K steps, 25K warmup: lr peaks at 1e-3, ends at 1e-6; wd ≈ 0.056 / 0.22 / 0.4."""
  lr, wd, mom = schedules.from_config(*_cfgs(), num_steps=187_500)
  assert float(lr(24_999)) == pytest.approx(1e-3, rel=1e-6)   # update k uses schedule step k + 1
  assert float(lr(187_499)) == pytest.approx(1e-6, rel=1e-3)
  assert float(wd(25_000)) == pytest.approx(0.056, abs=2e-3)
  assert float(wd(93_750)) == pytest.approx(0.22, abs=1e-3)
  assert float(wd(187_499)) == pytest.approx(0.4, abs=1e-6)
  assert float(mom(0)) == pytest.approx(0.996)                 # the first EMA update uses step 0
  assert float(mom(93_750)) == pytest.approx(0.998, abs=1e-6)


def test_vjepa_truncated_schedules():
  """V-JEPA: schedules over 1.25x the 90K-step run never reach their final values (§6.4)."""
  optim, ema = _cfgs(lr=6.25e-4, warmup_steps=12_000, schedule_scale=1.25)
  ema.momentum = 0.998
  lr, wd, mom = schedules.from_config(optim, ema, num_steps=90_000)
  assert float(lr(89_999)) == pytest.approx(7.5e-5, rel=0.02)
  assert float(wd(89_999)) == pytest.approx(0.366, abs=1e-3)
  assert float(mom(90_000)) == pytest.approx(0.9996, abs=1e-6)
  assert np.all(np.diff([float(lr(s)) for s in range(0, 12_000, 1000)]) > 0)
