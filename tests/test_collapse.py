"""Tests for jepa.evaluation.collapse against closed forms and independent NumPy (float64) references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa.evaluation import collapse


def _orthonormal(rng, n, k):
  q, _ = np.linalg.qr(rng.standard_normal((n, k)))
  return q


def _with_spectrum(rng, n, k, singular_values):
  """Z = U diag(s) V^T with orthonormal U [n, r], V [k, r]: singular values exactly s (and zeros)."""
  r = len(singular_values)
  return (_orthonormal(rng, n, r) * np.asarray(singular_values)) @ _orthonormal(rng, k, r).T


def _exp_entropy(p):
  p = np.asarray(p, np.float64)
  p = p / p.sum()
  p = p[p > 0]
  return float(np.exp(-np.sum(p * np.log(p))))


# ------------------------------------------------------------------------------------------------------------
# RankMe.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_rankme_equal_singular_values_gives_rank(rank):
  z = _with_spectrum(np.random.default_rng(rank), 20, 6, [2.5] * rank)
  got = collapse.rankme(z.astype(np.float32))
  assert got.dtype == jnp.float32 and got.shape == ()
  # The eps = 1e-7 floor moves the score by O(K * eps * log(1/eps)) ~ 1e-5.
  np.testing.assert_allclose(float(got), rank, rtol=1e-4)


def test_rankme_rank_one_and_known_spectrum():
  rng = np.random.default_rng(0)
  z = np.outer(rng.standard_normal(32), rng.standard_normal(8)).astype(np.float32)
  np.testing.assert_allclose(float(collapse.rankme(z)), 1.0, rtol=1e-4)
  # Spectrum (3, 1): p = (3/4, 1/4), RankMe = exp(-(3/4 ln 3/4 + 1/4 ln 1/4)) = 4 / 3^(3/4).
  z = _with_spectrum(rng, 16, 5, [3.0, 1.0]).astype(np.float32)
  np.testing.assert_allclose(float(collapse.rankme(z)), 4 / 3**0.75, rtol=1e-4)


def test_rankme_matches_numpy_formula_with_eps_and_is_scale_invariant():
  rng = np.random.default_rng(1)
  z = (rng.standard_normal((40, 12)) @ np.diag(np.geomspace(1, 1e-3, 12))).astype(np.float32)
  s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
  for eps in (1e-7, 1e-5):
    p = s / (s.sum() + eps) + eps
    ref = np.exp(-np.sum(p * np.log(p)))
    np.testing.assert_allclose(float(jax.jit(collapse.rankme, static_argnums=1)(z, eps)), ref, rtol=1e-4)
  np.testing.assert_allclose(float(collapse.rankme(100.0 * z)), float(collapse.rankme(z)), rtol=1e-4)
  assert collapse.rankme(jnp.asarray(z, jnp.bfloat16)).dtype == jnp.float32
  with pytest.raises(ValueError, match="N, K"):
    collapse.rankme(np.zeros((2, 3, 4)))


# ------------------------------------------------------------------------------------------------------------
# LiDAR.
# ------------------------------------------------------------------------------------------------------------


def _np_lidar(x, labels, delta=1e-4, eps=1e-8):
  """Independent float64 reference: LiDAR eigenvalues as the generalised eigenvalues of (S_b, S_w)."""
  x = np.asarray(x, np.float64)
  classes = np.unique(labels)
  means = np.stack([x[labels == c].mean(0) for c in classes])
  dev = means - means.mean(0)
  s_b = dev.T @ dev / (len(classes) - 1)
  within = np.concatenate([x[labels == c] - x[labels == c].mean(0) for c in classes])
  s_w = within.T @ within / (len(x) - len(classes)) + delta * np.eye(x.shape[1])
  # eig(S_w^-1/2 S_b S_w^-1/2) = eig(S_w^-1 S_b) (similar matrices).
  lam = np.maximum(np.real(np.linalg.eigvals(np.linalg.solve(s_w, s_b))), 0.0)
  return _exp_entropy(lam + eps)


def _constructed_views(between_scales, dim=4, within_scale=0.5):
  """n = 8 samples x q = 2 views in R^dim with S_w = s^2/2 I and S_b = diag(8/7 * a_k^2) exactly.

  Class means: columns 1..r of the 8x8 Hadamard matrix (zero mean, orthogonal, squared norm 8) times a_k, so
  S_b = M^T M / (n - 1) = diag(8 a_k^2 / 7). Views: mu_i +- s e_{i mod dim}, so
  S_w = sum_i 2 s^2 e e^T / (n (q - 1)) = 2 s^2 (n / dim) / n I = s^2 / 2 I (dim = 4).
  """
  h2 = np.array([[1, 1], [1, -1]])
  hadamard = np.kron(np.kron(h2, h2), h2).astype(np.float64)
  r = len(between_scales)
  means = np.zeros((8, dim))
  means[:, :r] = hadamard[:, 1:r + 1] * np.asarray(between_scales)
  e = np.eye(dim)[np.arange(8) % dim] * within_scale
  views = np.stack([means + e, means - e], axis=1)  # [n, q, dim]
  return views, 8.0 / 7.0 * np.asarray(between_scales) ** 2 / (within_scale**2 / 2 + 1e-4)


@pytest.mark.parametrize("scales", [[1.0], [1.0, 1.0, 1.0], [2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
def test_lidar_closed_form_on_constructed_scatter(scales):
  views, eigenvalues = _constructed_views(scales)
  got = collapse.lidar(views.astype(np.float32))
  assert got.dtype == jnp.float32 and got.shape == ()
  lam = np.zeros(4)
  lam[:len(scales)] = eigenvalues
  np.testing.assert_allclose(float(got), _exp_entropy(lam + 1e-8), rtol=1e-4)
  if len(set(scales)) == 1:
    np.testing.assert_allclose(float(got), len(scales), rtol=1e-4)  # r equal eigenvalues -> r


def test_lidar_layouts_agree_and_match_numpy():
  rng = np.random.default_rng(3)
  n, q, k = 12, 3, 6
  centres = rng.standard_normal((n, 1, k)) * np.array([3.0, 2.0, 1.0, 0.5, 0.1, 0.1])
  views = (centres + 0.3 * rng.standard_normal((n, q, k))).astype(np.float32)
  labels = np.repeat(np.arange(n), q)
  ref = _np_lidar(views.reshape(n * q, k), labels)
  grouped = float(collapse.lidar(views))
  np.testing.assert_allclose(grouped, ref, rtol=1e-4)
  np.testing.assert_allclose(float(collapse.lidar(views.reshape(n * q, k), q)), grouped, rtol=1e-5)
  perm = rng.permutation(n * q)
  shuffled_labels = (labels * 7 + 100)[perm]  # arbitrary label values, rows in any order
  np.testing.assert_allclose(float(collapse.lidar(views.reshape(n * q, k)[perm], shuffled_labels)), grouped,
                             rtol=1e-4)
  jitted = jax.jit(lambda x, y: collapse.lidar(x, y, num_classes=n))(views.reshape(n * q, k)[perm],
                                                                      labels[perm])
  np.testing.assert_allclose(float(jitted), grouped, rtol=1e-4)


def test_lidar_unequal_classes_matches_numpy():
  rng = np.random.default_rng(4)
  labels = np.array([0] * 2 + [1] * 5 + [2] * 3 + [3] * 4 + [4] * 2)
  x = rng.standard_normal((5, 8))[labels] * 2 + 0.5 * rng.standard_normal((len(labels), 8))
  x = x.astype(np.float32)
  np.testing.assert_allclose(float(collapse.lidar(x, labels)), _np_lidar(x, labels), rtol=1e-4)


def test_lidar_validation():
  x = np.zeros((6, 3), np.float32)
  with pytest.raises(ValueError, match="divide"):
    collapse.lidar(x, 4)
  with pytest.raises(ValueError, match="views"):
    collapse.lidar(x, np.arange(6))  # every class a single view: no within-class scatter
  with pytest.raises(ValueError, match="n, q, K"):
    collapse.lidar(x)
  with pytest.raises(ValueError, match="shape"):
    collapse.lidar(x, np.arange(5))
