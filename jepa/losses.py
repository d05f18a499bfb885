"""Losses of the JEPA family as pure functions of arrays.

Every function here is a pure function of its array arguments: safe under `jax.jit`, `jax.grad` and
`jax.vmap`, with no state and no randomness other than an explicit key. Whatever the input dtype (e.g.
bfloat16 activations), inputs are cast to float32 inside and every statistic is computed and returned in
float32.

Contents:
- Prediction losses of the predictive JEPAs: `layer_norm` (the non-affine target normalisation), `smooth_l1`,
  `l1`, `l2` (all with an optional validity mask) and `prediction_loss` (I-JEPA: smooth-L1, V-JEPA: L1,
  IWM: L2, against layer-normed, stop-gradient targets).
- SIGReg (LeJEPA), defined in jepa/sigreg.py and re-exported here: `epps_pulley` (the univariate Epps-Pulley
  statistic against N(0, 1), two quadratures), `quadrature_rule`, `sample_directions`, `sigreg` (sliced over
  random unit directions); the LeJEPA objective `lejepa_invariance` and `lejepa_loss`.
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

from typing import Any

import jax
import jax.numpy as jnp

# Re-exported: `losses.sigreg`, `losses.epps_pulley`, ... are the public names.
from jepa.sigreg import epps_pulley, quadrature_rule, sample_directions, sigreg  # noqa: F401

Array = jax.Array
ArrayLike = Any

_F32 = jnp.float32
_HIGHEST = jax.lax.Precision.HIGHEST  # full-precision float32 matmuls (TPU/GPU may round inputs to bfloat16)


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
# LeJEPA objective (SIGReg itself: jepa/sigreg.py).
# ------------------------------------------------------------------------------------------------------------


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
