"""SIGReg (LeJEPA): the Epps-Pulley normality statistic, sliced over random directions.

`from jepa import losses` re-exports every name here (`losses.sigreg`, `losses.epps_pulley`, ...); the LeJEPA
objective built on it (`lejepa_invariance`, `lejepa_loss`) is in jepa/losses.py.

Pure functions of their array arguments (jit / grad / vmap safe, no randomness but an explicit key), computed
and returned in float32 whatever the input dtype.

  SIGReg(z) = (1/M) sum_m EP({a_m^T z_n}_n),   a_m unit directions, EP the N-scaled Epps-Pulley statistic:
  EP = N * integral [(C(t) - exp(-t^2/2))^2 + S(t)^2] exp(-t^2/2) dt,   C + iS the empirical char. function.

Batch statistics are means over the batch axis: under `jax.jit` with the batch sharded over a mesh that is the
global batch (XLA inserts the collectives); inside `jax.shard_map`, pass `axis_name` instead.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = Any

_F32 = jnp.float32
# Projections feed a statistic that must be float32-accurate; on TPU/GPU the default matmul precision of a
# float32 dot may round inputs to bfloat16, so ask for full precision explicitly.
_HIGHEST = jax.lax.Precision.HIGHEST

_QUADRATURES = ("library", "paper")
_DEFAULT_T_MAX = {"library": 3.0, "paper": 5.0}


def quadrature_rule(quadrature: str = "library", num_knots: int = 17,
                    t_max: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Knots t_k and weights w_k (Gaussian weight included) such that EP = N * sum_k w_k * err(t_k).

  'library' (official lejepa `EppsPulley(t_max=3, n_points=17)`): the integrand is even in t, so only t >= 0
  is evaluated: t_k = k * t_max / (n - 1), k = 0..n-1, Delta = t_max / (n - 1),
    w_k = c_k * Delta * exp(-t_k^2 / 2),   c_0 = c_{n-1} = 1, c_k = 2 inside,
  which is exactly the trapezoid rule on [-t_max, t_max] with 2n - 1 knots. n must be odd (as in the library).

  'paper' (LeJEPA Algorithm 1): t_k = -t_max + k * Delta on [-t_max, t_max] (t_max = 5),
  Delta = 2 t_max / (n - 1),
    w_k = c_k * Delta * exp(-t_k^2 / 2),   c_0 = c_{n-1} = 1/2, c_k = 1 inside (plain trapezoid).

  Computed in NumPy (float64) so that the rule is a trace-time constant.

  Returns:
    (t, w): float64 arrays of shape [n].
  """
  if quadrature not in _QUADRATURES:
    raise ValueError(f"quadrature={quadrature!r} is unknown; use 'library' (half grid on [0, 3]) or 'paper' "
                     "(trapezoid on [-5, 5])")
  num_knots = int(num_knots)
  if quadrature == "library" and (num_knots < 3 or num_knots % 2 == 0):
    raise ValueError(f"num_knots={num_knots} is invalid for the 'library' quadrature: it needs an odd number "
                     ">= 3 (the lejepa library's constraint), e.g. 17")
  if num_knots < 2:
    raise ValueError(f"num_knots={num_knots} is invalid: the trapezoid rule needs at least 2 knots, e.g. 17")
  t_max = _DEFAULT_T_MAX[quadrature] if t_max is None else float(t_max)
  if not t_max > 0:
    raise ValueError(f"t_max={t_max} must be > 0 (e.g. 3 for 'library', 5 for 'paper')")
  if quadrature == "library":
    t = np.linspace(0.0, t_max, num_knots)
    delta = t_max / (num_knots - 1)
    c = np.full(num_knots, 2.0)
    c[0] = c[-1] = 1.0
  else:
    t = np.linspace(-t_max, t_max, num_knots)
    delta = 2.0 * t_max / (num_knots - 1)
    c = np.ones(num_knots)
    c[0] = c[-1] = 0.5
  return t, c * delta * np.exp(-0.5 * t**2)


def _axis_size(axis_name) -> Any:
  names = axis_name if isinstance(axis_name, (tuple, list)) else (axis_name,)
  return math.prod(jax.lax.axis_size(n) for n in names)


def _half_grid(t: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Folds a rule that is symmetric about t = 0 onto t >= 0 (the integrand is even), halving the knots.

  (C(t) - phi(t))^2 + S(t)^2 is even in t (C and phi are even, S is odd), so the knots -t and t contribute
  w(-t) err(t) + w(t) err(t): keep t > 0 with the two weights summed (and t = 0 as it is). The 'library' rule
  is already on t >= 0; the 'paper' rule goes from 17 knots to 9.
  """
  if not (np.allclose(t, -t[::-1]) and np.allclose(w, w[::-1])):
    return t, w
  keep = t >= -1e-12 * np.max(np.abs(t))
  return t[keep], np.where(np.abs(t[keep]) > 1e-12 * np.max(np.abs(t)), 2.0 * w[keep], w[keep])


def _characteristic_means(x: Array, t: np.ndarray) -> tuple[Array, Array]:
  """(1/N) sum_n cos(t_k x_n) and (1/N) sum_n sin(t_k x_n) for uniform knots t_k = t_0 + k Delta: [..., T] each.

  Sine and cosine dominate SIGReg's cost, so they are evaluated twice per sample instead of once per knot:
  e^{i t_0 x} and e^{i Delta x} directly, then e^{i t_{k+1} x} = e^{i t_k x} e^{i Delta x} (angle addition,
  two real multiply-adds per component). In float32 each step adds about one rounding of relative error, so
  after the 16 steps of the default rule the terms are within ~1e-6 of direct evaluation; averaged over N
  samples that is at the level of the float32 summation itself (the tests compare with float64 NumPy).
  """
  delta = float(t[1] - t[0]) if len(t) > 1 else 0.0
  if len(t) > 1 and not np.allclose(np.diff(t), delta, rtol=1e-9, atol=1e-12):
    raise ValueError("epps_pulley needs uniformly spaced knots (as quadrature_rule makes)")
  if t[0] == 0.0:
    c, s = jnp.ones_like(x), jnp.zeros_like(x)
  else:
    c, s = jnp.cos(float(t[0]) * x), jnp.sin(float(t[0]) * x)
  c_step, s_step = jnp.cos(delta * x), jnp.sin(delta * x)
  cos_means, sin_means = [], []
  for k in range(len(t)):
    if k:
      c, s = c * c_step - s * s_step, s * c_step + c * s_step
    cos_means.append(jnp.mean(c, axis=0))
    sin_means.append(jnp.mean(s, axis=0))
  return jnp.stack(cos_means, axis=-1), jnp.stack(sin_means, axis=-1)


def epps_pulley(x: ArrayLike, *, quadrature: str = "library", num_knots: int = 17, t_max: float | None = None,
                axis_name=None) -> Array:
  """Epps-Pulley statistic of each column of x against N(0, 1), scaled by the number of samples.

  For x [N, M] (N samples of M one-dimensional slices):

    C_m(t) = (1/N) sum_n cos(t x_{n,m}),   S_m(t) = (1/N) sum_n sin(t x_{n,m}),
    EP_m = N * integral [ (C_m(t) - exp(-t^2/2))^2 + S_m(t)^2 ] * exp(-t^2/2) dt,

  i.e. N times the weighted squared distance between the empirical characteristic function C + iS and that of
  N(0, 1), with weight exp(-t^2/2). The integral is a quadrature (see `quadrature_rule`): 'library' (default,
  17 knots on [0, 3], doubled) or 'paper' (17-knot trapezoid on [-5, 5]). For Gaussian data
  E[EP] ~= sqrt(2 pi) - sqrt(2 pi / 3) ~= 1.06 for every N; shifted, scaled or collapsed data give much more.
  The statistic is bounded with bounded gradients (|C|, |S| <= 1), finite even for constant columns.

  Multi-device: without `axis_name`, the means are over x's own axis 0; under `jax.jit` with x sharded along
  axis 0 that is the global batch and XLA inserts the (differentiable) collectives. With `axis_name` (inside
  `jax.shard_map` with the batch split over that mesh axis or axes), C and S are averaged with `lax.pmean`,
  which is differentiable, and N is the global count local_N * axis size, so value and gradient equal those of
  the global batch. (A non-differentiable all-reduce would leave the gradient 1/world_size too small.)

  Args:
    x: [N, ...] samples along axis 0, any float dtype (computed in float32).
    quadrature: 'library' or 'paper'.
    num_knots: number of knots n (odd for 'library').
    t_max: integration limit; default 3 ('library') or 5 ('paper').
    axis_name: mesh axis name (or tuple of names) the batch is split over, when called inside shard_map.

  Returns:
    float32 array x.shape[1:] of statistics (one per column).
  """
  t_np, w_np = _half_grid(*quadrature_rule(quadrature, num_knots, t_max))
  w = jnp.asarray(w_np, _F32)
  phi = jnp.asarray(np.exp(-0.5 * t_np**2), _F32)
  x = jnp.asarray(x, _F32)
  if x.ndim < 1:
    raise ValueError(f"epps_pulley expects samples along axis 0, got a scalar of shape {x.shape}")
  cos_mean, sin_mean = _characteristic_means(x, t_np)  # [..., T] each
  n = x.shape[0]
  if axis_name is not None:
    cos_mean = jax.lax.pmean(cos_mean, axis_name)
    sin_mean = jax.lax.pmean(sin_mean, axis_name)
    n = n * _axis_size(axis_name)
  err = jnp.square(cos_mean - phi) + jnp.square(sin_mean)
  return jnp.asarray(n, _F32) * jnp.sum(err * w, axis=-1)


def sample_directions(key: Array, dim: int, num_slices: int) -> Array:
  """Random unit directions, uniform on the sphere: A = G / ||G||_col, G ~ N(0, 1)^{dim x num_slices}.

  Returns:
    float32 [dim, num_slices], unit-norm columns. Same key -> same directions on every device; derive the key
    per step (fold_in(root, step)) so that directions are redrawn every step and reproducible after a restart.
  """
  g = jax.random.normal(key, (dim, num_slices), _F32)
  return g / jnp.linalg.norm(g, axis=0, keepdims=True)


def sigreg(z: ArrayLike, *, key: Array | None = None, directions: ArrayLike | None = None,
           num_slices: int = 256, quadrature: str = "library", num_knots: int = 17,
           t_max: float | None = None, chunk_size: int | None = None, axis_name=None) -> Array:
  """SIGReg: sketched isotropic Gaussian regulariser (LeJEPA), the mean sliced Epps-Pulley statistic.

  For embeddings z [N, K] and unit directions a_1..a_M (the columns of A [K, M]):

    SIGReg(z) = (1/M) sum_m EP({a_m^T z_n}_{n=1..N}),

  with EP the N-scaled Epps-Pulley statistic of `epps_pulley`. For z [V, N, K] the statistic is taken per view
  and averaged: (1/V) sum_v SIGReg(z_v). Directions are either given (`directions`, [K, M]) or drawn from
  `key` as column-normalised standard Gaussians (`sample_directions`); exactly one of the two. Either way they
  are wrapped in stop_gradient: they are a random probe, not a parameter.

  Args:
    z: [N, K] or [V, N, K] embeddings (projector outputs), any float dtype; computed in float32.
    key: PRNG key for drawing `num_slices` directions (use fold_in(root, step): redrawn each step).
    directions: explicit [K, M] directions (used as given, no normalisation).
    num_slices: M when drawing from `key`.
    quadrature, num_knots, t_max: see `epps_pulley`.
    chunk_size: if set, slices are processed chunk_size at a time (lax.map over chunks, each chunk
      rematerialised in the backward pass) so that the [N, chunk, knots] cos/sin tensors bound memory in both
      the forward and the backward pass; the value is the same as unchunked up to float summation order.
    axis_name: mesh axis (or axes) the batch axis N is split over, inside shard_map; see `epps_pulley`.

  Returns:
    float32 scalar.
  """
  z = jnp.asarray(z, _F32)
  if z.ndim == 2:
    z = z[None]
  if z.ndim != 3:
    raise ValueError(f"sigreg expects z of shape [N, K] or [V, N, K], got {z.shape}")
  num_views, n, dim = z.shape
  if (key is None) == (directions is None):
    raise ValueError("sigreg needs exactly one of key= (draw random directions) or directions= (a [K, M] "
                     f"array); got {'both' if key is not None else 'neither'}")
  if directions is None:
    directions = sample_directions(key, dim, int(num_slices))
  directions = jax.lax.stop_gradient(jnp.asarray(directions, _F32))
  if directions.ndim != 2 or directions.shape[0] != dim:
    raise ValueError(f"directions must have shape [K={dim}, M], got {directions.shape}")
  num_dirs = directions.shape[1]
  ep_kwargs = dict(quadrature=quadrature, num_knots=num_knots, t_max=t_max, axis_name=axis_name)
  quadrature_rule(quadrature, num_knots, t_max)  # validate the arguments even when no chunk is traced

  def total_over(a: Array) -> Array:
    # Columns are independent, so all views' slices go through one EP call: [N, V * m].
    x = jnp.einsum("vnk,km->nvm", z, a, precision=_HIGHEST).reshape(n, num_views * a.shape[1])
    return jnp.sum(epps_pulley(x, **ep_kwargs))

  if chunk_size is None or int(chunk_size) >= num_dirs:
    total = total_over(directions)
  else:
    chunk_size = int(chunk_size)
    if chunk_size < 1:
      raise ValueError(f"chunk_size={chunk_size} must be a positive number of slices per chunk (or None)")
    num_full = num_dirs // chunk_size
    head = directions[:, :num_full * chunk_size].reshape(dim, num_full, chunk_size).transpose(1, 0, 2)
    # Remat each chunk so that the backward pass recomputes its cos/sin instead of storing all of them.
    total = jnp.sum(jax.lax.map(jax.checkpoint(total_over), head))
    if num_dirs % chunk_size:
      total = total + jax.checkpoint(total_over)(directions[:, num_full * chunk_size:])
  return total / (num_views * num_dirs)
