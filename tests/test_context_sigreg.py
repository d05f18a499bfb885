"""loss.sigreg_weight: SIGReg on the pooled context-encoder tokens inside the predictive JEPAs."""
import jax
import numpy as np
import pytest
from flax import nnx

from jepa import losses
from jepa.data import pipeline
from jepa.data import sources
from jepa.methods import get_method
from tests.helpers import load_config


def _setup(name, weight):
  c = load_config(name, "tiny")
  c.loss.update(sigreg_weight=weight, sigreg_slices=32)
  method = get_method(c)
  model = method.init_model(nnx.Rngs(0))
  target = getattr(model, method.ema_target)
  batch = next(pipeline.make_train_iterator(sources.get_source(c.data, "train"), method.example_fn(train=True),
                                            batch_size=8, seed=0, num_threads=1, prefetch=1))
  return method, model, target, batch


def _np_sigreg(x, a):
  """Mean over the columns of x @ a of the library-quadrature Epps-Pulley statistic, float64, from the formula."""
  proj = np.asarray(x, np.float64) @ np.asarray(a, np.float64)
  t = np.linspace(0.0, 3.0, 17)
  w = np.full(17, 2 * 3.0 / 16)
  w[0] = w[-1] = 3.0 / 16
  c = np.cos(proj[:, :, None] * t).mean(0)
  s = np.sin(proj[:, :, None] * t).mean(0)
  phi = np.exp(-0.5 * t**2)
  return float(np.mean(proj.shape[0] * (((c - phi) ** 2 + s**2) * phi * w).sum(-1)))


def test_ijepa_term_is_weighted_sigreg_of_the_pooled_context_tokens():
  key = jax.random.key(3)
  method, model, target, batch = _setup("ijepa_vit", 0.3)
  loss, metrics = method.loss(model, target, batch, key)
  plain, _ = get_method(load_config("ijepa_vit", "tiny")).loss(model, target, batch, key)
  # By hand: the context encoder's tokens, the mean over valid slots, SIGReg along the method's directions.
  z = np.asarray(model.encoder(batch["image"], idx=batch["context_idx"], valid=batch["context_valid"]))
  v = np.asarray(batch["context_valid"], np.float64)[..., None]
  pooled = (z * v).sum(1) / v.sum(1)
  a = losses.sample_directions(jax.random.fold_in(key, method.SIGREG), z.shape[-1], 32)
  expected = _np_sigreg(pooled, a)
  np.testing.assert_allclose(metrics["sigreg"], expected, rtol=1e-4)
  np.testing.assert_allclose(metrics["prediction_loss"], plain, rtol=1e-6)
  np.testing.assert_allclose(loss, plain + 0.3 * expected, rtol=1e-4)


@pytest.mark.parametrize("name", ["iwm_vit", "vjepa_vit"])
def test_other_predictive_methods_add_the_term(name):
  method, model, target, batch = _setup(name, 0.5)
  loss, metrics = method.loss(model, target, batch, jax.random.key(0))
  assert np.isfinite(metrics["sigreg"]) and metrics["sigreg"] > 0
  np.testing.assert_allclose(loss, metrics["prediction_loss"] + 0.5 * metrics["sigreg"], rtol=1e-5)
  off, off_metrics = get_method(load_config(name, "tiny")).loss(model, target, batch, jax.random.key(0))
  assert "sigreg" not in off_metrics and "prediction_loss" not in off_metrics
  np.testing.assert_allclose(off, metrics["prediction_loss"], rtol=1e-6)


def test_the_term_pulls_a_collapsed_encoder_apart():
  """A constant embedding gives a large SIGReg whose gradient is finite and nonzero on the encoder."""
  method, model, target, batch = _setup("ijepa_vit", 1.0)
  tokens = jax.numpy.ones((8, 5, model.encoder.width))
  valid = jax.numpy.ones((8, 5), bool)
  term, _ = method.context_sigreg(tokens, valid, jax.random.key(0))
  assert float(term) > 5.0
  grad = jax.grad(lambda t: method.context_sigreg(t, valid, jax.random.key(0))[0])(tokens)
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
