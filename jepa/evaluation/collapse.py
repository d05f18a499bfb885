"""Collapse monitors: effective-rank scores of an embedding matrix.

- `rankme` (Garrido et al., 2023): exp of the entropy of the normalised singular values of Z [N, K]; from 1
  (rank-1, collapsed) to min(N, K) (all directions used equally).
- `lidar` (Thilak et al., 2023): the same entropy-rank of the linear-discriminant matrix
  S_w^{-1/2} S_b S_w^{-1/2}, where each surrogate class is the set of augmented views of one clean sample;
  from 1 to min(K, n - 1). It measures how many directions separate samples relative to how much the
  augmentations move them.

Both are computed in float32 with JAX (jit-safe; `lidar` with label arrays needs concrete labels or
`num_classes`).

Example:

  from jepa.evaluation import collapse
  collapse.rankme(features)                  # features [N, K]
  collapse.lidar(view_features, 4)           # [n * 4, K]: rows 4i..4i+3 are 4 views of sample i
  collapse.lidar(view_features_nqk, None)    # [n, q, K]: the same, already grouped
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
_F32 = jnp.float32
_HIGHEST = jax.lax.Precision.HIGHEST


def _entropy_rank(weights: Array) -> Array:
  """exp(-sum_k p_k log p_k) for a probability vector p (0 log 0 = 0)."""
  plogp = jnp.where(weights > 0, weights * jnp.log(jnp.where(weights > 0, weights, 1.0)), 0.0)
  return jnp.exp(-jnp.sum(plogp))


def rankme(z: Any, eps: float = 1e-7) -> Array:
  """RankMe effective rank of an embedding matrix.

    sigma_1 >= ... >= sigma_r: singular values of Z [N, K] (no centring), r = min(N, K),
    p_k = sigma_k / (sum_j sigma_j + eps) + eps,
    RankMe = exp(-sum_k p_k log p_k).

  eps = 1e-7 as in the stable-pretraining JAX callback (added to the denominator and after normalising; it
  keeps the log finite for zero singular values). Equal nonzero singular values on r directions give ~r;
  rank 1 gives 1.

  Args:
    z: [N, K] embeddings, any float dtype (computed in float32).
    eps: numerical floor.

  Returns:
    float32 scalar.
  """
  z = jnp.asarray(z, _F32)
  if z.ndim != 2:
    raise ValueError(f"rankme expects an embedding matrix [N, K], got shape {z.shape}; "
                     "flatten leading axes first")
  s = jnp.linalg.svd(z, compute_uv=False)
  p = s / (jnp.sum(s) + eps) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


def _group_assignment(z: Array, labels_or_groups, num_classes: int | None) -> tuple[Array, Array, int]:
  """Returns (x [N, K], one-hot class assignment [N, C], C)."""
  if labels_or_groups is None:
    if z.ndim != 3:
      raise ValueError("lidar with labels_or_groups=None expects grouped views [n, q, K], "
                       f"got shape {z.shape}")
    n, q, k = z.shape
    ids = np.repeat(np.arange(n), q)
    return z.reshape(n * q, k), jax.nn.one_hot(ids, n, dtype=_F32), n
  if z.ndim != 2:
    raise ValueError(f"lidar expects embeddings [N, K] with labels or a group size, got shape {z.shape}")
  num_rows = z.shape[0]
  if isinstance(labels_or_groups, (int, np.integer)):
    q = int(labels_or_groups)
    if q < 2 or num_rows % q:
      raise ValueError(f"lidar group size q={q} must be >= 2 and divide the number of rows N={num_rows} "
                       "(rows q*i .. q*i+q-1 are the q views of sample i)")
    n = num_rows // q
    return z, jax.nn.one_hot(np.repeat(np.arange(n), q), n, dtype=_F32), n
  if num_classes is not None:
    # Jit-safe path: labels are class ids in [0, num_classes), every class present.
    labels = jnp.asarray(labels_or_groups)
    return z, jax.nn.one_hot(labels, int(num_classes), dtype=_F32), int(num_classes)
  try:
    labels = np.asarray(labels_or_groups)
  except jax.errors.TracerArrayConversionError as e:
    raise ValueError(
        "lidar with traced labels needs num_classes= (labels must be ids in [0, num_classes))") from e
  if labels.shape != (num_rows,):
    raise ValueError(f"lidar labels must have shape [N={num_rows}], got {labels.shape}")
  classes, ids = np.unique(labels, return_inverse=True)
  return z, jax.nn.one_hot(ids.reshape(-1), len(classes), dtype=_F32), len(classes)


def lidar(z: Any, labels_or_groups=None, *, num_classes: int | None = None, delta: float = 1e-4,
          eps: float = 1e-8) -> Array:
  """LiDAR: entropy-rank of the linear-discriminant matrix over surrogate classes.

  Surrogate class i (i = 1..C) holds the n_i embeddings x_ij of augmented views of one clean sample (or of one
  label):

    mu_i = (1/n_i) sum_j x_ij,   mu = (1/C) sum_i mu_i,
    S_b = sum_i (mu_i - mu)(mu_i - mu)^T / (C - 1),
    S_w = sum_{i,j} (x_ij - mu_i)(x_ij - mu_i)^T / (N - C) + delta I   (N - C = n (q - 1): n groups of q),
    Sigma = S_w^{-1/2} S_b S_w^{-1/2}     (S_w^{-1/2} by eigendecomposition, eigenvalues clamped at eps;
                                           Sigma symmetrised),
    lambda_k = max(eig_k(Sigma), 0),   p_k = (lambda_k + eps) / sum_j (lambda_j + eps),
    LiDAR = exp(-sum_k p_k log p_k).

  delta = 1e-4 and eps = 1e-8 as in the reference (stable-pretraining). The grouping is given in one of three
  ways:
  - `labels_or_groups=None` and z [n, q, K]: z[i] are the q views of sample i;
  - an int q and z [n*q, K]: rows q*i .. q*i+q-1 are the views of sample i (the reference queue layout);
  - an int array of labels [N] and z [N, K]: each distinct label is a class (sizes may differ). Labels must be
    concrete, or pass `num_classes` with labels in [0, num_classes) (every class present) to use it under jit.

  Note (reference behaviour, kept): when S_b is exactly 0 (every class mean identical), all lambda_k are 0 and
  the eps floor makes p uniform, so the score is K rather than 1; any nonzero between-class spread dominates
  eps.

  Returns:
    float32 scalar in [1, min(K, C - 1)] (up to eps).
  """
  z = jnp.asarray(z, _F32)
  x, onehot, num_cls = _group_assignment(z, labels_or_groups, num_classes)
  num_rows, dim = x.shape
  if num_cls < 2 or num_rows <= num_cls:
    raise ValueError(f"lidar needs at least 2 classes and more rows than classes (N={num_rows}, "
                     f"C={num_cls}): each surrogate class needs >= 2 views")
  counts = jnp.sum(onehot, axis=0)
  means = jnp.matmul(onehot.T, x, precision=_HIGHEST) / counts[:, None]  # [C, K]
  between = means - jnp.mean(means, axis=0)
  s_b = jnp.matmul(between.T, between, precision=_HIGHEST) / (num_cls - 1)
  within = x - jnp.matmul(onehot, means, precision=_HIGHEST)
  s_w = jnp.matmul(within.T, within, precision=_HIGHEST) / (num_rows - num_cls)
  s_w = s_w + delta * jnp.eye(dim, dtype=_F32)
  w_vals, w_vecs = jnp.linalg.eigh(s_w)
  inv_sqrt = jnp.matmul(w_vecs * jax.lax.rsqrt(jnp.maximum(w_vals, eps)), w_vecs.T, precision=_HIGHEST)
  sigma = jnp.matmul(inv_sqrt, jnp.matmul(s_b, inv_sqrt, precision=_HIGHEST), precision=_HIGHEST)
  sigma = 0.5 * (sigma + sigma.T)  # eigh assumes symmetry; rounding breaks it slightly
  lam = jnp.maximum(jnp.linalg.eigvalsh(sigma), 0.0)
  p = (lam + eps) / jnp.sum(lam + eps)
  return _entropy_rank(p)
