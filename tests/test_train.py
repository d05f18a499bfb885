"""The training loop: one compilation, exact resume, NaN guard, end-to-end probe.

Meshes and multi-device equivalence are in test_parallel.py, several processes in test_multihost.py.
"""
import jax
import numpy as np
import pytest

from jepa import train
from tests.helpers import load_config


def _config(**train_overrides):
  c = load_config("ijepa_vit", "tiny")
  c.eval.probe = False
  c.train.update(train_overrides)
  return c


def _params(state):
  return jax.tree.leaves(jax.device_get(state["params"]))


def test_compiles_once_over_many_steps(tmp_path):
  trainer = train.Trainer(_config(num_steps=6, checkpoint_every=0), str(tmp_path), verbose=False)
  trainer.run()
  assert trainer.train_step._cache_size() == 1  # pylint: disable=protected-access


def test_resume_continues_exactly(tmp_path):
  straight = train.Trainer(_config(num_steps=6, checkpoint_every=0), str(tmp_path / "a"), verbose=False)
  straight.run()
  first = train.Trainer(_config(num_steps=6, checkpoint_every=0), str(tmp_path / "b"), verbose=False)
  assert first.run(stop_at=3)["preempted"]
  resumed = train.Trainer(_config(num_steps=6, checkpoint_every=0), str(tmp_path / "b"), verbose=False)
  resumed.run()
  assert int(resumed.state["step"]) == 6
  for a, b in zip(_params(straight.state), _params(resumed.state)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  for a, b in zip(jax.tree.leaves(straight.state["ema"]), jax.tree.leaves(resumed.state["ema"])):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def _poison(trainer):
  """Makes every loss NaN (as a diverging run would), before the step is traced."""
  loss = trainer.method.loss

  def nan_loss(*args):
    value, metrics = loss(*args)
    return value * float("nan"), metrics

  trainer.method.loss = nan_loss


def test_nan_guard_skips_updates(tmp_path):
  trainer = train.Trainer(_config(num_steps=4, checkpoint_every=2), str(tmp_path), verbose=False)
  initial = _params(trainer._init(trainer.config.seed))  # pylint: disable=protected-access
  _poison(trainer)
  trainer.run()
  assert int(trainer.state["skipped"]) == 4
  assert int(trainer.state["first_bad_step"]) == 0
  for a, b in zip(initial, _params(trainer.state)):  # no update was applied; checkpoints hold finite values
    np.testing.assert_array_equal(a, b)


def test_nan_guard_stops_naming_the_step(tmp_path):
  c = _config(num_steps=4, checkpoint_every=0, nan_policy="stop", log_every=1)
  trainer = train.Trainer(c, str(tmp_path), verbose=False)
  _poison(trainer)
  with pytest.raises(train.TrainingStopped, match="non-finite loss or gradient at step 0"):
    trainer.run()
