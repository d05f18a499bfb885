"""Losses of the JEPA family as pure functions of arrays.

Every function here is a pure function of its array arguments: safe under `jax.jit`, `jax.grad` and
`jax.vmap`, with no state and no randomness other than an explicit key. Whatever the input dtype (e.g.
bfloat16 activations), inputs are cast to float32 inside and every statistic is computed and returned in
float32.

Contents:
- Prediction losses of the predictive JEPAs: `layer_norm` (the non-affine target normalisation), `smooth_l1`,
  `l1`, `l2` (all with an optional validity mask) and `prediction_loss` (I-JEPA: smooth-L1, V-JEPA: L1,
  IWM: L2, against layer-normed, stop-gradient targets).
- SIGReg (LeJEPA): `epps_pulley` (the univariate Epps-Pulley statistic against N(0, 1), two quadratures),
  `sample_directions`, `sigreg` (sliced over random unit directions), `lejepa_invariance` and `lejepa_loss`.
- `vicreg` (variance-invariance-covariance regularisation).

Batch statistics (SIGReg, VICReg) are means over the batch axis. Under `jax.jit` with the batch sharded over a
mesh, that mean is over the global batch (XLA inserts the collectives), so value and gradient are those of the
global batch. Inside `jax.shard_map`, pass `axis_name` to `epps_pulley`/`sigreg` instead.

Example:

  import jax
  from jepa import losses

  z = jax.random.normal(jax.random.key(1), (256, 64))        # [N, K] projector outputs
  reg = losses.sigreg(z, key=jax.random.key(0))              # ~1.06 for Gaussian z, large for collapsed z
  views = jax.random.normal(jax.random.key(2), (8, 256, 64))  # [V, N, K]: 2 global + 6 local views
  step = 0
  loss, metrics = losses.lejepa_loss(views, num_global=2, key=jax.random.fold_in(jax.random.key(0), step))
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


# ------------------------------------------------------------------------------------------------------------
# Prediction losses (I-JEPA, V-JEPA, IWM).
# ------------------------------------------------------------------------------------------------------------


def layer_norm(x: ArrayLike, eps: float = 1e-5) -> Array:
  """Non-affine layer norm over the last axis, in float32.

    y = (x - mean(x)) / sqrt(var(x) + eps),   mean and var (biased, 1/D) over the last axis of size D.

  The variance is computed in two passes, var = mean((x - mean(x))^2), which does not lose precision to
  cancellation the way mean(x^2) - mean(x)^2 does when |mean| >> std. This matches `F.layer_norm(h, (D,))` as
  applied to the I-JEPA / V-JEPA targets (no scale or bias, eps 1e-5).

  Args:
    x: array [..., D], any float dtype.
    eps: added to the variance.

  Returns:
    float32 array of x's shape.
  """
  x = jnp.asarray(x, _F32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  centred = x - mean
  var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
  return centred * jax.lax.rsqrt(var + eps)


def _masked_mean(fn, d: Array, mask: ArrayLike | None) -> Array:
  """Mean of e = fn(d) [..., D] over all elements, or over the positions where `mask` [...] is set.

    masked mean = sum_{p, k} w_p * e_{p, k} / (D * sum_p w_p),   w = mask broadcast to d.shape[:-1].

  A bool mask selects positions; a float mask weights them. With no valid position the result is 0 (not
  NaN), so a batch made only of padding cannot poison the step. Invalid positions of d are replaced by 0 with
  `where` *before* fn (not multiplied by 0 after it), so a NaN/inf in a padded slot reaches neither the value
  nor the gradient (0 * NaN is NaN in the backward pass of fn).
  """
  if mask is None:
    return jnp.mean(fn(d))
  lead_shape = d.shape[:-1]
  mask = jnp.asarray(mask)
  try:
    mask = jnp.broadcast_to(mask, lead_shape)
  except ValueError as e:
    raise ValueError(
        f"mask of shape {mask.shape} does not broadcast to the positions {lead_shape} (pred.shape[:-1]); "
        "pass a mask over positions, without the feature axis") from e
  weights = mask.astype(_F32)
  valid = (mask if mask.dtype == jnp.bool_ else weights != 0)[..., None]
  elementwise = jnp.where(valid, fn(jnp.where(valid, d, 0.0)), 0.0)
  total = jnp.sum(elementwise * weights[..., None])
  count = jnp.sum(weights) * d.shape[-1]
  # count == 0 only when everything is padding: the numerator is then 0 as well, and 0/1 is the right answer.
  return total / jnp.where(count == 0, 1.0, count)


def _diff(pred: ArrayLike, target: ArrayLike) -> Array:
  pred = jnp.asarray(pred, _F32)
  target = jnp.asarray(target, _F32)
  if pred.shape != target.shape:
    raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}")
  return pred - target


def smooth_l1(pred: ArrayLike, target: ArrayLike, *, beta: float = 1.0,
              mask: ArrayLike | None = None) -> Array:
  """Smooth-L1 (Huber / beta) loss, mean over all elements or over the valid positions.

    d = pred - target,
    e(d) = 0.5 * d^2 / beta   if |d| < beta,
           |d| - 0.5 * beta   otherwise,
    loss = mean e(d)   (masked: sum_{p,k} m_p e_{p,k} / (K * sum_p m_p)).

  Same definition as `torch.nn.functional.smooth_l1_loss`; beta = 0 is L1. The I-JEPA objective is this with
  beta = 1 against layer-normed targets.

  Args:
    pred: [..., K] prediction.
    target: [..., K] target, same shape.
    beta: the switch point between the quadratic and the linear branch.
    mask: optional bool or float array broadcastable to pred.shape[:-1] (True / weight > 0 = valid position).

  Returns:
    float32 scalar.
  """
  if isinstance(beta, (int, float)) and beta <= 0:
    return _masked_mean(jnp.abs, _diff(pred, target), mask)

  def elementwise(d):
    ad = jnp.abs(d)
    # The quadratic branch divides by beta; guard the denominator so that a traced beta of 0 cannot produce a
    # NaN in the (discarded) branch, which `where` would still propagate into the gradient.
    safe_beta = jnp.where(beta > 0, beta, 1.0)
    return jnp.where(ad < beta, 0.5 * jnp.square(d) / safe_beta, ad - 0.5 * beta)

  return _masked_mean(elementwise, _diff(pred, target), mask)


def l1(pred: ArrayLike, target: ArrayLike, *, mask: ArrayLike | None = None) -> Array:
  """Mean absolute error: loss = mean |pred - target| (masked: over valid positions and all features).

  The V-JEPA / V-JEPA 2 objective (mean |z - h|^p / p with p = 1) against layer-normed targets.

  Args:
    pred: [..., K]; target: same shape; mask: optional, broadcastable to pred.shape[:-1].

  Returns:
    float32 scalar.
  """
  return _masked_mean(jnp.abs, _diff(pred, target), mask)


def l2(pred: ArrayLike, target: ArrayLike, *, mask: ArrayLike | None = None) -> Array:
  """Mean squared error: loss = mean (pred - target)^2 (masked: over valid positions and all features).

  The IWM objective against layer-normed targets.

  Args:
    pred: [..., K]; target: same shape; mask: optional, broadcastable to pred.shape[:-1].

  Returns:
    float32 scalar.
  """
  return _masked_mean(jnp.square, _diff(pred, target), mask)


def prediction_loss(pred: ArrayLike, target: ArrayLike, *, kind: str = "smooth_l1",
                    mask: ArrayLike | None = None, normalize_target: bool = True, beta: float = 1.0) -> Array:
  """Latent prediction loss of the predictive JEPAs.

    h = sg(layer_norm(target))   (or sg(target) when normalize_target is False),
    loss = mean_{valid p, k} e(pred_{p,k} - h_{p,k}),   e = smooth-L1(beta) | |.| | (.)^2   for kind =
    'smooth_l1' (I-JEPA, beta 1) | 'l1' (V-JEPA, V-JEPA 2) | 'l2' (IWM).

  sg is stop_gradient: the targets come from the (EMA) target encoder and are constants for the predictor's
  update, so no gradient flows into `target` whatever the caller passes.

  Args:
    pred: [..., K] predictor outputs.
    target: [..., K] target-encoder features at the same positions.
    kind: 'smooth_l1', 'l1' or 'l2'.
    mask: optional bool/float array broadcastable to pred.shape[:-1]; padded target slots are excluded.
    normalize_target: apply the non-affine layer norm (eps 1e-5) to the targets first.
    beta: smooth-L1 switch point (kind 'smooth_l1' only).

  Returns:
    float32 scalar.
  """
  target = layer_norm(target) if normalize_target else jnp.asarray(target, _F32)
  target = jax.lax.stop_gradient(target)
  if kind == "smooth_l1":
    return smooth_l1(pred, target, beta=beta, mask=mask)
  if kind == "l1":
    return l1(pred, target, mask=mask)
  if kind == "l2":
    return l2(pred, target, mask=mask)
  raise ValueError(f"prediction_loss kind={kind!r} is unknown; use 'smooth_l1', 'l1' or 'l2'")


# ------------------------------------------------------------------------------------------------------------
# SIGReg (LeJEPA).
# ------------------------------------------------------------------------------------------------------------

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


def lejepa_invariance(z: ArrayLike, num_global: int) -> Array:
  """LeJEPA prediction (invariance) term: every view predicts the centre of the global views.

    mu_n = (1/V_g) sum_{g < V_g} z_{g,n},   inv = mean_{v, n, k} (mu_{n,k} - z_{v,n,k})^2,

  over all V views (global and local). No stop-gradient on mu (as in the paper). Equivalently
  inv = mean_{v,g} mean_{n,k} (z_g - z_v)^2 - (1/2) mean_{g,g'} mean_{n,k} (z_g - z_g')^2.

  Args:
    z: [V, N, K] projector outputs; views 0..num_global-1 are the global views.
    num_global: V_g, 1 <= V_g <= V.

  Returns:
    float32 scalar.
  """
  z = jnp.asarray(z, _F32)
  if z.ndim != 3:
    raise ValueError(f"lejepa_invariance expects z of shape [V, N, K], got {z.shape}")
  num_global = int(num_global)
  if not 1 <= num_global <= z.shape[0]:
    raise ValueError(f"num_global={num_global} must be between 1 and the number of views V={z.shape[0]}")
  mu = jnp.mean(z[:num_global], axis=0)
  return jnp.mean(jnp.square(mu[None] - z))


def lejepa_loss(z: ArrayLike, *, num_global: int, key: Array | None = None, lam: float = 0.05,
                form: str = "convex", num_slices: int = 256,
                **sigreg_kwargs) -> tuple[Array, dict[str, Array]]:
  """LeJEPA objective: invariance to the global-view centre plus SIGReg on every view.

    convex (paper, default):  L = (1 - lam) * inv + lam * (1/V) sum_v SIGReg(z_v),
    additive:                 L = inv + lam * (1/V) sum_v SIGReg(z_v),

  with inv = `lejepa_invariance(z, num_global)`. No predictor, no EMA, no stop-gradient. The form changes what
  a given lam means, so it is explicit: the paper and Lightly use convex lam = 0.05, stable-pretraining
  additive lam = 0.02.

  Args:
    z: [V, N, K] projector outputs, global views first.
    num_global: number of global views V_g.
    key: PRNG key for the SIGReg directions (fold_in(root, step)); or pass `directions=` via sigreg_kwargs.
    lam: SIGReg weight.
    form: 'convex' or 'additive'.
    num_slices: number of random directions M.
    **sigreg_kwargs: forwarded to `sigreg` (quadrature, num_knots, t_max, chunk_size, axis_name, directions).

  Returns:
    (loss, {'invariance': inv, 'sigreg': sigreg}), float32 scalars.
  """
  if form not in ("convex", "additive"):
    raise ValueError(f"lejepa_loss form={form!r} is unknown; use 'convex' ((1-lam)*inv + lam*sigreg) or "
                     "'additive' (inv + lam*sigreg)")
  z = jnp.asarray(z, _F32)
  inv = lejepa_invariance(z, num_global)
  reg = sigreg(z, key=key, num_slices=num_slices, **sigreg_kwargs)
  inv_weight = (1.0 - lam) if form == "convex" else 1.0
  loss = inv_weight * inv + lam * reg
  return loss, {"invariance": inv, "sigreg": reg}


# ------------------------------------------------------------------------------------------------------------
# VICReg.
# ------------------------------------------------------------------------------------------------------------


def _std_and_cov_terms(z: Array, eps: float) -> tuple[Array, Array]:
  n, k = z.shape
  centred = z - jnp.mean(z, axis=0)
  # Unbiased variance as in the reference implementation; eps inside the sqrt keeps the gradient finite at
  # full collapse (std = 0).
  std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
  var_term = jnp.mean(jax.nn.relu(1.0 - std))
  cov = jnp.matmul(centred.T, centred, precision=_HIGHEST) / (n - 1)
  off_diag = cov - jnp.diag(jnp.diag(cov))
  cov_term = jnp.sum(jnp.square(off_diag)) / k
  return var_term, cov_term


def vicreg(z1: ArrayLike, z2: ArrayLike, *, sim_coeff: float = 25.0, std_coeff: float = 25.0,
           cov_coeff: float = 1.0, eps: float = 1e-4) -> tuple[Array, dict[str, Array]]:
  """VICReg (Bardes et al., 2022) on two branches z1, z2 [N, K].

    inv = mean_{n,k} (z1 - z2)^2,
    var = (1/2) sum_{b in {1,2}} (1/K) sum_k relu(1 - sqrt(Var_n(z_b[:, k]) + eps)),   Var unbiased (1/(N-1)),
    cov = sum_{b in {1,2}} (1/K) sum_{i != j} C_b[i, j]^2,   C_b = (z_b - mean)^T (z_b - mean) / (N - 1),
    L = sim_coeff * inv + std_coeff * var + cov_coeff * cov.

  Args:
    z1, z2: [N, K] embeddings of the two branches (any float dtype, computed in float32), N >= 2.
    sim_coeff, std_coeff, cov_coeff: term weights (defaults 25, 25, 1).
    eps: added to the variance inside the square root.

  Returns:
    (loss, {'invariance': inv, 'variance': var, 'covariance': cov}), float32 scalars (terms unweighted).
  """
  z1 = jnp.asarray(z1, _F32)
  z2 = jnp.asarray(z2, _F32)
  if z1.ndim != 2 or z1.shape != z2.shape:
    raise ValueError(f"vicreg expects two [N, K] arrays of the same shape, got {z1.shape} and {z2.shape}")
  if z1.shape[0] < 2:
    raise ValueError(f"vicreg needs at least 2 samples for a variance, got N={z1.shape[0]}")
  inv = jnp.mean(jnp.square(z1 - z2))
  var1, cov1 = _std_and_cov_terms(z1, eps)
  var2, cov2 = _std_and_cov_terms(z2, eps)
  var = 0.5 * (var1 + var2)
  cov = cov1 + cov2
  loss = sim_coeff * inv + std_coeff * var + cov_coeff * cov
  return loss, {"invariance": inv, "variance": var, "covariance": cov}
