"""LeJEPA: multi-crop views, loss and its terms, new directions per step, one compilation, 1 vs 8 devices."""
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from jepa import train
from jepa.data import sources
from jepa.errors import ConfigError
from jepa.methods import get_method
from tests.helpers import load_config


def _config(**lejepa_overrides):
  c = load_config("lejepa_vit", "tiny")
  c.lejepa.update(lejepa_overrides)
  return c


def _batch(method, n=8, seed=0):
  """A batch of n training examples, stacked as the pipeline would."""
  fn = method.example_fn(train=True)
  src = sources.DigitsSource()
  examples = [fn(dict(src[i]), np.random.default_rng([seed, i])) for i in range(n)]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _loss(method, model, batch, key):
  """method.loss under one jit (eager mode would compile every op separately, which is slower)."""
  return nnx.jit(lambda m, b, k: method.loss(m, None, b, k))(model, batch, key)


def _features(method, model, images):
  return nnx.jit(lambda m, x: method.features(m, None, x))(model, images)


def test_example_fn_shapes_dtypes_and_determinism():
  c = _config(num_global=2, num_local=3)
  fn = get_method(c).example_fn(train=True)
  example = sources.DigitsSource()[5]
  out = fn(dict(example), np.random.default_rng(7))
  assert out["global_views"].shape == (2, 16, 16, 3) and out["global_views"].dtype == np.float32
  assert out["local_views"].shape == (3, 8, 8, 3) and out["local_views"].dtype == np.float32
  assert out["label"].dtype == np.int32 and int(out["label"]) == int(example["label"])
  again = fn(dict(example), np.random.default_rng(7))
  for k in out:
    np.testing.assert_array_equal(out[k], again[k])
  other = fn(dict(example), np.random.default_rng(8))
  assert not np.array_equal(out["global_views"], other["global_views"])
  # The views of one example differ from each other (independent augmentations).
  assert not np.array_equal(out["global_views"][0], out["global_views"][1])


def test_example_fn_without_local_views_and_eval():
  c = _config(num_global=3, num_local=0)
  method = get_method(c)
  out = method.example_fn(train=True)(dict(sources.DigitsSource()[0]), np.random.default_rng(0))
  assert set(out) == {"global_views", "label"} and out["global_views"].shape == (3, 16, 16, 3)
  ev = method.example_fn(train=False)(dict(sources.DigitsSource()[0]), np.random.default_rng(0))
  assert ev["image"].shape == (16, 16, 3)


def test_loss_is_finite_and_logs_both_terms():
  c = _config()
  method = get_method(c)
  model = method.init_model(nnx.Rngs(0))
  batch = _batch(method)
  loss, metrics = _loss(method, model, batch, jax.random.key(3))
  assert np.isfinite(float(loss))
  for k in ("invariance", "sigreg", "rankme"):
    assert np.isfinite(float(metrics[k])), k
  lam = c.lejepa.lam
  expected = (1 - lam) * float(metrics["invariance"]) + lam * float(metrics["sigreg"])
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert 1.0 <= float(metrics["rankme"]) <= c.lejepa.proj_dim + 1e-3
  feats = _features(method, model, batch["global_views"][:, 0])
  assert feats.shape == (8, c.model.encoder.width)  # The probe reads the backbone, not the projector.


def test_directions_are_redrawn_from_the_step_key():
  c = _config()
  method = get_method(c)
  model = method.init_model(nnx.Rngs(0))
  batch = _batch(method)
  f = nnx.jit(lambda m, b, k: method.loss(m, None, b, k)[1]["sigreg"])
  step_key = lambda step: jax.random.fold_in(jax.random.key(c.seed), step)
  s0, s0_again, s1 = (float(f(model, batch, step_key(s))) for s in (0, 0, 1))
  assert s0 == s0_again       # Same step: same directions (reproducible, identical on every device).
  assert s0 != s1             # Next step: new directions, so a different SIGReg value on the same batch.


def test_resnet_backbone_and_additive_form():
  c = _config(backbone="resnet18", resnet_width=4, num_local=0, form="additive", lam=0.5)
  method = get_method(c)
  method.validate()
  model = method.init_model(nnx.Rngs(0))
  batch = _batch(method, n=4)
  loss, metrics = _loss(method, model, batch, jax.random.key(0))
  np.testing.assert_allclose(float(loss), float(metrics["invariance"]) + 0.5 * float(metrics["sigreg"]),
                             rtol=1e-5)
  model.eval()
  assert _features(method, model, batch["global_views"][:, 0]).shape == (4, 32)  # 8 * width 4


@pytest.mark.parametrize("overrides,match", [
    (dict(local_size=6), "lejepa.local_size=6 is not divisible by model.patch_size=4"),
    (dict(backbone="vgg"), "lejepa.backbone='vgg' is unknown"),
    (dict(form="sum"), "lejepa.form='sum' is unknown"),
    (dict(num_knots=4), "lejepa.quadrature / lejepa.num_knots"),
    (dict(local_scale=(0.5, 0.2)), "lejepa.local_scale"),
])
def test_validation_names_the_key(overrides, match):
  with pytest.raises(ConfigError, match=match):
    get_method(_config(**overrides)).validate()


def test_tiny_training_compiles_once(tmp_path):
  c = _config()
  c.eval.probe = False
  run = train.setup(c, str(tmp_path), verbose=False)
  _, result = train.fit(run)
  assert result["step"] == 3 and result["skipped_steps"] == 0
  assert run.train_step._cache_size() == 1  # pylint: disable=protected-access
  with open(os.path.join(tmp_path, "metrics.jsonl"), encoding="utf-8") as f:
    logged = [json.loads(line) for line in f]
  last = logged[-1]
  for key in ("loss", "invariance", "sigreg", "rankme"):
    assert np.isfinite(last[key]), key
