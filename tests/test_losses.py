"""Tests for jepa.losses against independent NumPy (float64) references and closed forms (SIGReg itself:
tests/test_sigreg.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jepa import losses
from tests.test_sigreg import _np_gaussian, _np_sigreg


# ------------------------------------------------------------------------------------------------------------
# Prediction losses.
# ------------------------------------------------------------------------------------------------------------


def _np_layer_norm(x, eps=1e-5):
  x = np.asarray(x, np.float64)
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps)


def _np_masked_mean(e, mask):
  if mask is None:
    return float(e.mean())
  w = np.broadcast_to(np.asarray(mask, np.float64), e.shape[:-1])
  return float((e * w[..., None]).sum() / (w.sum() * e.shape[-1]))


def _np_smooth_l1(d, beta):
  ad = np.abs(d)
  return np.where(ad < beta, 0.5 * d**2 / beta, ad - 0.5 * beta)


def test_layer_norm_matches_numpy_and_is_float32():
  x = _np_gaussian(0, (4, 7, 32), scale=3.0, shift=100.0)  # large mean: the two-pass variance matters
  y = losses.layer_norm(jnp.asarray(x, jnp.bfloat16))
  assert y.dtype == jnp.float32
  ref = _np_layer_norm(np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32)))
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(losses.layer_norm(x)), _np_layer_norm(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mask_kind", [None, "bool", "float", "broadcast"])
def test_elementwise_losses_match_numpy(mask_kind):
  rng = np.random.default_rng(1)
  pred = rng.standard_normal((3, 5, 8)).astype(np.float32) * 2
  target = rng.standard_normal((3, 5, 8)).astype(np.float32)
  mask = {None: None,
          "bool": rng.random((3, 5)) < 0.6,
          "float": (rng.random((3, 5)) < 0.6).astype(np.float32),
          "broadcast": np.array([[True], [False], [True]])}[mask_kind]
  d = pred.astype(np.float64) - target
  for beta in (1.0, 0.5):
    got = jax.jit(lambda p, t, beta=beta: losses.smooth_l1(p, t, beta=beta, mask=mask))(pred, target)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), _np_masked_mean(_np_smooth_l1(d, beta), mask), rtol=1e-5)
  got = jax.jit(lambda p, t: (losses.smooth_l1(p, t, beta=0.0, mask=mask), losses.l1(p, t, mask=mask),
                               losses.l2(p, t, mask=mask)))(pred, target)
  np.testing.assert_allclose(np.asarray(got, np.float64),
                             [_np_masked_mean(np.abs(d), mask), _np_masked_mean(np.abs(d), mask),
                              _np_masked_mean(d**2, mask)], rtol=1e-5)


@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0, 0.3, 0.7])
def test_smooth_l1_closed_form_gradient_and_huber(beta):
  """smooth_l1 against the float64 closed form (value and gradient) and optax.huber_loss(x, beta) / beta.

  jepa keeps its own `where` form rather than optax's: the two agree to a few ulps, but optax's rounds the
  gradient differently, which would change every trained number (a run is chaotic in its last bits).
  """
  rng = np.random.default_rng(7)
  pred = (rng.standard_normal((4, 33, 16)) * 3).astype(np.float32)  # |d| from ~0 to ~15: both branches
  target = rng.standard_normal((4, 33, 16)).astype(np.float32)
  mask = rng.random((4, 33)) < 0.7
  d32 = jnp.asarray(pred) - jnp.asarray(target)
  d = np.asarray(d32, np.float64)  # the float32 difference, as the loss sees it
  e_ref = _np_smooth_l1(d, beta)
  spacing = np.spacing(np.abs(e_ref).astype(np.float32)).astype(np.float64)
  assert np.all(np.abs(np.asarray(optax.huber_loss(d32, delta=beta) / beta) - e_ref) <= 3 * spacing)
  for m in (None, mask):
    val, grad = jax.jit(jax.value_and_grad(lambda p, m=m: losses.smooth_l1(p, target, beta=beta, mask=m)))(pred)
    assert val.dtype == jnp.float32
    np.testing.assert_allclose(float(val), _np_masked_mean(e_ref, m), rtol=1e-6)  # float32 mean of 2112 terms
    huber = losses._masked_mean(lambda x: optax.huber_loss(x, delta=beta) / beta,  # pylint: disable=protected-access
                                d32, m)
    np.testing.assert_allclose(float(val), float(huber), rtol=3e-7)
    w = np.ones(d.shape[:-1]) if m is None else np.asarray(m, np.float64)
    want_grad = np.where(np.abs(d) < beta, d / beta, np.sign(d)) * w[..., None] / (w.sum() * d.shape[-1])
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=0, atol=3e-7 * np.max(np.abs(want_grad)))
  # A traced beta takes the same path (beta = 0 traced is L1, with a finite gradient).
  traced = jax.jit(lambda p, b: losses.smooth_l1(p, target, beta=b, mask=mask))
  eager = losses.smooth_l1(pred, target, beta=beta, mask=mask)
  np.testing.assert_allclose(float(traced(pred, beta)), float(eager), rtol=2.4e-7)  # 1 ulp: summation order
  np.testing.assert_allclose(float(traced(pred, 0.0)), float(losses.l1(pred, target, mask=mask)), rtol=2.4e-7)
  g0 = jax.jit(jax.grad(lambda p: losses.smooth_l1(p, target, beta=jnp.float32(0.0), mask=mask)))(pred)
  assert np.all(np.isfinite(np.asarray(g0)))


def test_public_names_and_sigreg_module():
  """`from jepa import losses` keeps every public name; SIGReg lives in jepa/sigreg.py, re-exported."""
  from jepa import sigreg as sigreg_module  # pylint: disable=import-outside-toplevel
  for name in ("layer_norm", "smooth_l1", "l1", "l2", "prediction_loss", "quadrature_rule", "epps_pulley",
               "sample_directions", "sigreg", "lejepa_invariance", "lejepa_loss", "vicreg", "Array", "ArrayLike"):
    assert callable(getattr(losses, name)) or name.startswith("Array"), name
  for name in ("quadrature_rule", "epps_pulley", "sample_directions", "sigreg"):
    assert getattr(losses, name) is getattr(sigreg_module, name), name


def test_masked_loss_ignores_garbage_in_padding_and_all_padding_is_zero():
  pred = np.ones((2, 3, 4), np.float32)
  pred[1, 2] = np.nan  # a padded slot holding garbage
  target = np.zeros((2, 3, 4), np.float32)
  mask = np.array([[True, True, False], [True, True, False]])
  val, grad = jax.jit(jax.value_and_grad(lambda p: losses.l2(p, target, mask=mask)))(jnp.asarray(pred))
  assert float(val) == pytest.approx(1.0)
  assert np.all(np.isfinite(np.asarray(grad)))
  val, grad = jax.jit(jax.value_and_grad(lambda p: losses.l1(p, target, mask=np.zeros((2, 3), bool))))(
      jnp.ones((2, 3, 4)))
  assert float(val) == 0.0 and np.all(np.asarray(grad) == 0)


def test_prediction_loss_kinds_normalise_and_stop_gradient():
  rng = np.random.default_rng(2)
  pred = rng.standard_normal((2, 6, 16)).astype(np.float32)
  target = (rng.standard_normal((2, 6, 16)) * 4 + 1).astype(np.float32)
  mask = rng.random((2, 6)) < 0.5
  h = _np_layer_norm(target)
  d = pred - h
  refs = {"smooth_l1": _np_masked_mean(_np_smooth_l1(d, 1.0), mask),
          "l1": _np_masked_mean(np.abs(d), mask),
          "l2": _np_masked_mean(d**2, mask)}
  got = jax.jit(lambda p, t: [losses.prediction_loss(p, t, kind=kind, mask=mask) for kind in refs])(
      pred, target)
  np.testing.assert_allclose(np.asarray(got, np.float64), list(refs.values()), rtol=1e-5)
  got = jax.jit(lambda p, t: losses.prediction_loss(p, t, kind="l2", normalize_target=False))(pred, target)
  np.testing.assert_allclose(float(got), np.mean((pred.astype(np.float64) - target) ** 2), rtol=1e-5)
  g_target = jax.jit(jax.grad(lambda t: losses.prediction_loss(pred, t)))(jnp.asarray(target))
  assert np.all(np.asarray(g_target) == 0)
  with pytest.raises(ValueError, match="kind"):
    losses.prediction_loss(pred, target, kind="huber")


# LeJEPA and VICReg.
# ------------------------------------------------------------------------------------------------------------


def _np_invariance_pairwise(z, num_global):
  """inv = mean_{v,g} (z_g - z_v)^2 - (1/2) mean_{g,g'} (z_g - z_g')^2 over n, k (no centre used)."""
  z = np.asarray(z, np.float64)
  glob = z[:num_global]
  cross = np.mean([(zg - zv) ** 2 for zg in glob for zv in z])
  within = np.mean([(zg - zh) ** 2 for zg in glob for zh in glob])
  return cross - 0.5 * within


def test_lejepa_invariance_matches_pairwise_form():
  z = _np_gaussian(18, (6, 10, 5))
  for num_global in (1, 2, 6):
    np.testing.assert_allclose(float(losses.lejepa_invariance(z, num_global)),
                               _np_invariance_pairwise(z, num_global), rtol=1e-5)
  with pytest.raises(ValueError, match="num_global"):
    losses.lejepa_invariance(z, 7)


def test_lejepa_loss_forms_and_gradient_through_centre():
  z = _np_gaussian(19, (4, 32, 8))
  key = jax.random.key(5)
  a = np.asarray(losses.sample_directions(key, 8, 64))
  inv = _np_invariance_pairwise(z, 2)
  reg = np.mean([_np_sigreg(z[v], a) for v in range(4)])
  loss, m = jax.jit(lambda z: losses.lejepa_loss(z, num_global=2, key=key, lam=0.05, num_slices=64))(z)
  np.testing.assert_allclose(float(m["invariance"]), inv, rtol=1e-5)
  np.testing.assert_allclose(float(m["sigreg"]), reg, rtol=1e-5)
  np.testing.assert_allclose(float(loss), 0.95 * inv + 0.05 * reg, rtol=1e-5)
  loss_add, _ = jax.jit(lambda z: losses.lejepa_loss(z, num_global=2, key=key, lam=0.02, form="additive",
                                                      num_slices=64))(z)
  np.testing.assert_allclose(float(loss_add), inv + 0.02 * reg, rtol=1e-5)
  with pytest.raises(ValueError, match="form"):
    losses.lejepa_loss(z, num_global=2, key=key, form="sum")
  # No stop-gradient on the centre: the invariance gradient w.r.t. a global view includes the centre's share.
  g = jax.jit(jax.grad(lambda z: losses.lejepa_invariance(z, 2)))(jnp.asarray(z))
  zz = z.astype(np.float64)
  mu = zz[:2].mean(0)
  size = zz.size
  g_ref = -2 * (mu - zz) / size
  g_ref[:2] += (2 * (mu - zz) / size).sum(0)[None] / 2
  np.testing.assert_allclose(np.asarray(g), g_ref, rtol=1e-4, atol=1e-7)


def _np_vicreg(z1, z2, sim=25.0, std=25.0, cov=1.0, eps=1e-4):
  z1 = np.asarray(z1, np.float64)
  z2 = np.asarray(z2, np.float64)
  n, k = z1.shape
  inv = np.mean((z1 - z2) ** 2)
  var_t, cov_t = 0.0, 0.0
  for z in (z1, z2):
    var_t += np.mean(np.maximum(0.0, 1 - np.sqrt(z.var(axis=0, ddof=1) + eps))) / 2
    c = np.cov(z, rowvar=False)
    cov_t += (np.sum(c**2) - np.sum(np.diag(c) ** 2)) / k
  return sim * inv + std * var_t + cov * cov_t, inv, var_t, cov_t


def test_vicreg_matches_numpy():
  rng = np.random.default_rng(20)
  z1 = (rng.standard_normal((64, 16)) * 0.5).astype(np.float32)
  z2 = (z1 + 0.1 * rng.standard_normal((64, 16))).astype(np.float32)
  z2[:, 3] = z2[:, 2] * 2  # correlated columns
  loss, m = jax.jit(losses.vicreg)(z1, z2)
  ref = _np_vicreg(z1, z2)
  np.testing.assert_allclose(float(loss), ref[0], rtol=1e-5)
  for name, r in zip(("invariance", "variance", "covariance"), ref[1:]):
    np.testing.assert_allclose(float(m[name]), r, rtol=1e-5)
  loss2, _ = jax.jit(lambda a, b: losses.vicreg(a, b, sim_coeff=1.0, std_coeff=2.0, cov_coeff=0.5))(z1, z2)
  np.testing.assert_allclose(float(loss2), _np_vicreg(z1, z2, 1.0, 2.0, 0.5)[0], rtol=1e-5)
  val, grad = jax.jit(jax.value_and_grad(lambda a: losses.vicreg(a, a)[0]))(jnp.ones((8, 4)))  # full collapse
  assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(grad)))
