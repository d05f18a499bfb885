"""The training loop: one compilation, exact resume, NaN guard, end-to-end probe.

Meshes and multi-device equivalence are in test_parallel.py, several processes in test_multihost.py.
"""
import json

import jax
import numpy as np
import pytest

from jepa import evaluate
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
  run = train.setup(_config(num_steps=6, checkpoint_every=0), str(tmp_path), verbose=False)
  train.fit(run)
  assert run.train_step._cache_size() == 1  # pylint: disable=protected-access


def test_resume_continues_exactly(tmp_path):
  straight, _ = train.train_and_evaluate(_config(num_steps=6, checkpoint_every=0), str(tmp_path / "a"))
  _, first = train.train_and_evaluate(_config(num_steps=6, checkpoint_every=0), str(tmp_path / "b"), stop_at=3)
  assert first["preempted"]
  resumed, _ = train.train_and_evaluate(_config(num_steps=6, checkpoint_every=0), str(tmp_path / "b"))
  assert int(resumed["step"]) == 6
  for a, b in zip(_params(straight), _params(resumed)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  for a, b in zip(jax.tree.leaves(straight["ema"]), jax.tree.leaves(resumed["ema"])):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def _poison(run):
  """Makes every loss NaN (as a diverging run would), before the step is traced."""
  loss = run.method.loss

  def nan_loss(*args):
    value, metrics = loss(*args)
    return value * float("nan"), metrics

  run.method.loss = nan_loss


def test_nan_guard_skips_updates(tmp_path):
  run = train.setup(_config(num_steps=4, checkpoint_every=2), str(tmp_path), verbose=False)
  initial = _params(run.state_def.init(run.config.seed))
  _poison(run)
  # Every step skipped: the run trains nothing, so it ends with an error (after writing its results) instead of
  # reporting an untrained model as a result.
  with pytest.raises(train.TrainingStopped, match="4 of 4 steps were skipped .* first at step 0"):
    train.fit(run)
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["skipped_steps"] == 4 and "4 of 4 steps were skipped" in results["health"]
  _, state, _ = evaluate.restore(run.config, str(tmp_path))  # The final checkpoint.
  assert int(state["skipped"]) == 4
  assert int(state["first_bad_step"]) == 0
  for a, b in zip(initial, _params(state)):  # no update was applied; checkpoints hold finite values
    np.testing.assert_array_equal(a, b)


def test_nan_guard_stops_naming_the_step(tmp_path):
  c = _config(num_steps=4, checkpoint_every=0, nan_policy="stop", log_every=1)
  run = train.setup(c, str(tmp_path), verbose=False)
  _poison(run)
  with pytest.raises(train.TrainingStopped, match="non-finite loss or gradient at step 0"):
    train.fit(run)


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

    @nnx.jit  # One compilation instead of hundreds of eager dispatches; the key is fixed inside.
    def grad(m, batch=batch, method=method, target=target):
      return nnx.grad(lambda m: method.loss(m, target, batch, jax.random.key(5))[0])(m)

    def flat_grad(m, grad=grad):
      leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(grad(m)))[0]
      # The trained encoder's blocks (the predictor / projector follow them).
      return np.concatenate([np.ravel(x) for path, x in leaves
                             if "blocks" in jax.tree_util.keystr(path)
                             and "predictor" not in jax.tree_util.keystr(path)])

    grads[rate] = [flat_grad(model) for _ in range(2 if rate else 1)]
    images = batch["image"] if "image" in batch else batch["global_views"][:, 0]
    features[rate] = np.asarray(nnx.jit(method.features)(model, target, images))
  np.testing.assert_array_equal(grads[0.5][0], grads[0.5][1])
  change = np.linalg.norm(grads[0.5][0] - grads[0.0][0]) / np.linalg.norm(grads[0.0][0])
  assert change > 1e-2, change
  np.testing.assert_allclose(features[0.5], features[0.0], atol=1e-6)


def test_resume_refuses_a_changed_config_and_rewrites_config_json(tmp_path):
  """A resume may change num_steps / logging / eval (config.json is rewritten to say so), nothing else: a changed
  lr or seed is refused naming each key, before anything trains."""
  assert train.train_and_evaluate(_config(num_steps=4, checkpoint_every=2), str(tmp_path), stop_at=2)[1]
  changed = _config(num_steps=4, checkpoint_every=2)
  changed.optim.lr, changed.seed = 0.5, 7
  with pytest.raises(train.ConfigError, match=r"another config: optim.lr \(0.001 -> 0.5\), seed \(0 -> 7\); "):
    train.train_and_evaluate(changed, str(tmp_path))
  longer = _config(num_steps=6, checkpoint_every=2, log_every=3)
  assert train.train_and_evaluate(longer, str(tmp_path))[1]["step"] == 6
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["train"]["num_steps"] == 6 and saved["train"]["log_every"] == 3


def test_progress_counts_completed_steps_and_excludes_paused_time(monkeypatch, capsys):
  """img/s = completed steps / (wall time - time inside paused()), on a fake clock; the line fits 120 columns."""
  from jepa import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  clock = [100.0]
  monkeypatch.setattr(metrics_lib.time, "perf_counter", lambda: clock[0])
  progress = metrics_lib.Progress(total_steps=100, global_batch=8)
  progress.start(1)
  clock[0] += 2.0
  progress.completed(5)        # 4 steps in 2 s
  with progress.paused():      # a 30 s checkpoint does not count
    clock[0] += 30.0
  clock[0] += 1.0
  progress.completed(7)        # 2 more steps in 1 s
  out = progress.report(7, {"loss": 0.5, "lr": 1e-3, "some_long_metric_name_" * 10: 1.0})
  assert out["steps_per_s"] == pytest.approx(6 / 3.0)
  assert out["img_per_s"] == pytest.approx(16.0)
  line = capsys.readouterr().out.strip()
  assert line == "step 7/100 loss=0.5 lr=0.001 img/s=16.0 eta=0m46s" and len(line) <= 120
