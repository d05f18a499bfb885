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


@pytest.mark.parametrize("name", ["ijepa_vit", "iwm_vit", "lejepa_vit", "vjepa_vit"])
def test_methods_pass_their_key_to_the_trained_encoders_drop_path(name):
  """With model.encoder.drop_path > 0 the training gradient depends on the step key through the encoder (same
  key, same gradient; against the same weights without drop-path, a different one); evaluation features do
  not. Gradients rather than the loss: at init a predictor barely reads its context (I-JEPA's loss moves by
  ~1e-7), while dropped branches change the encoder's gradient by O(1)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from jepa.data import pipeline  # pylint: disable=import-outside-toplevel
  from jepa.methods import get_method  # pylint: disable=import-outside-toplevel
  grads, features = {}, {}
  for rate in (0.0, 0.5):
    c = load_config(name, "tiny")
    c.model.encoder.update(depth=3, drop_path=rate)
    method = get_method(c)
    model = method.init_model(nnx.Rngs(0))
    target = getattr(model, method.ema_target) if method.ema_target else None
    source = train.sources.get_source(c.data, "train")
    batch = next(pipeline.make_train_iterator(source, method.example_fn(train=True), batch_size=4, seed=0,
                                              num_threads=1, prefetch=1))

    def flat_grad(m, batch=batch, method=method, target=target):
      g = nnx.grad(lambda m: method.loss(m, target, batch, jax.random.key(5))[0])(m)
      leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(g))[0]
      # The trained encoder's blocks (the predictor / projector follow them).
      return np.concatenate([np.ravel(x) for path, x in leaves
                             if "blocks" in jax.tree_util.keystr(path)
                             and "predictor" not in jax.tree_util.keystr(path)])

    grads[rate] = [flat_grad(model) for _ in range(2 if rate else 1)]
    images = batch["image"] if "image" in batch else batch["global_views"][:, 0]
    features[rate] = np.asarray(method.features(model, target, images))
  np.testing.assert_array_equal(grads[0.5][0], grads[0.5][1])
  change = np.linalg.norm(grads[0.5][0] - grads[0.0][0]) / np.linalg.norm(grads[0.0][0])
  assert change > 1e-2, change
  np.testing.assert_allclose(features[0.5], features[0.0], atol=1e-6)
