"""Heads on top of a backbone: the LeJEPA/VICReg projector and the V-JEPA attentive probe.

The attentive pooler reproduces the reference `AttentivePooler` / `CrossAttentionBlock` of V-JEPA
(`facebookresearch/jepa`) and V-JEPA 2 (`facebookresearch/vjepa2`), `src/models/attentive_pooler.py` and
`src/models/utils/modules.py`:

  q0 = query                                     # learned [1, num_queries, D], trunc-normal(0.02)
  q1 = q0 + XAttn(q0, LN1(x))                    # the query itself is NOT normalised
  q2 = q1 + MLP(LN2(q1))
  XAttn(q, y) = concat_h softmax(q W_q^h (y W_k^h)^T / sqrt(d_h)) y W_v^h    # no output projection
  MLP(z) = fc2(GELU_exact(fc1(z))), hidden = int(D * mlp_ratio)

Variants (`variant`):
  - "vjepa" (reference depth 1): the cross-attention block; with depth > 1 the extra depth-1 self-attention
    blocks run on the *query* after it.
  - "vjepa2" (reference depth 4): depth-1 pre-LN self-attention blocks run *first, on the tokens x*, then the
    cross-attention block.

Parameter names mirror the PyTorch modules (norm1, xattn.q, xattn.kv, norm2, mlp.fc1, mlp.fc2, attn.qkv,
attn.proj) so a checkpoint converter maps them one to one (kernels are the transposed torch weights).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jepa.errors import ConfigError
from jepa.models import vit as vit_lib

# PyTorch defaults (momentum 0.1 on the new statistic == Flax momentum 0.9 on the running value).
_BN_MOMENTUM = 0.9
_BN_EPS = 1e-5
# The attentive probe uses nn.LayerNorm's default eps, not the encoder's 1e-6.
_LN_EPS = 1e-5
_INIT_STD = 0.02


def _trunc_normal(std: float = _INIT_STD):
  """torch.nn.init.trunc_normal_(std=std) with its default *absolute* bounds [-2, 2].

  jax's `truncated_normal` initializer truncates at +-2 standard deviations instead, which shrinks the
  effective std by about 12%; with std 0.02 the torch bounds are +-100 sigma, i.e. a plain normal.
  """

  def init(key, shape, dtype=jnp.float32):
    return std * jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, dtype)

  return init


def _torch_uniform(fan_in: int):
  """nn.Linear's default init for weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _torch_linear(din: int, dout: int, *, dtype: Any, rngs: nnx.Rngs, use_bias: bool = True) -> nnx.Linear:
  """Linear layer initialised like an untouched torch nn.Linear (what the LeJEPA/VICReg heads use)."""
  init = _torch_uniform(din)
  return nnx.Linear(din, dout, kernel_init=init, bias_init=init, use_bias=use_bias, dtype=dtype, rngs=rngs)


def _vjepa_linear(din: int, dout: int, *, dtype: Any, rngs: nnx.Rngs) -> nnx.Linear:
  """Linear layer with the V-JEPA pooler init: weights trunc-normal(0.02), bias 0."""
  return nnx.Linear(din, dout, kernel_init=_trunc_normal(), bias_init=nnx.initializers.zeros,
                    dtype=dtype, rngs=rngs)


def _layer_norm(dim: int, *, dtype: Any, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # Two-pass variance, as PyTorch computes it, for closer numerical parity with the reference.
  return nnx.LayerNorm(dim, epsilon=_LN_EPS, use_fast_variance=False, dtype=dtype, rngs=rngs)


def _rescale(linear: nnx.Linear, layer_id: int) -> None:
  """The reference's `_rescale_blocks`: divide a residual-branch output weight by sqrt(2 * layer_id)."""
  linear.kernel[...] = linear.kernel[...] / math.sqrt(2.0 * layer_id)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array | None) -> jax.Array:
  """Multi-head scaled dot-product attention.

  Args:
    q: [B, n, H, d]; k, v: [B, N, H, d].
    valid: optional [B, N] bool; False keys get zero weight.

  Returns:
    [B, n, H, d] in v's dtype.
  """
  logits = jnp.einsum("bnhd,bmhd->bhnm", q, k, preferred_element_type=jnp.float32)
  logits = logits * (q.shape[-1] ** -0.5)
  if valid is not None:
    # A finite floor instead of -inf: a row whose keys are all invalid degrades to a uniform average
    # instead of NaN (its result is meaningless either way; callers give every row >= 1 valid key).
    logits = jnp.where(valid[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhnm,bmhd->bnhd", weights, v)


class Mlp(nnx.Module):
  """fc1 -> exact GELU -> fc2 (PyTorch's nn.GELU() is the erf form, not jax's default tanh form)."""

  def __init__(self, dim: int, hidden: int, *, dtype: Any, rngs: nnx.Rngs):
    self.fc1 = _vjepa_linear(dim, hidden, dtype=dtype, rngs=rngs)
    self.fc2 = _vjepa_linear(hidden, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(vit_lib.gelu(self.fc1(x)))


class CrossAttention(nnx.Module):
  """Queries attend to tokens: separate q (D->D) and fused kv (D->2D) projections, both with bias.

  kv's output is laid out as (2, heads, head_dim): the first D channels are k, the last D are v, and head h
  owns a contiguous head_dim slice of each. There is no output projection (V-JEPA 2 has none; see
  `out_proj` for the V-JEPA 1 code, which constructs one).
  """

  def __init__(self, dim: int, heads: int, *, out_proj: bool = False, dtype: Any, rngs: nnx.Rngs):
    self.heads = heads
    self.q = _vjepa_linear(dim, dim, dtype=dtype, rngs=rngs)
    self.kv = _vjepa_linear(dim, 2 * dim, dtype=dtype, rngs=rngs)
    self.proj = _vjepa_linear(dim, dim, dtype=dtype, rngs=rngs) if out_proj else None

  def __call__(self, q: jax.Array, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    b, n, d = q.shape
    hd = d // self.heads
    qh = self.q(q).reshape(b, n, self.heads, hd)
    kv = self.kv(x).reshape(b, x.shape[1], 2, self.heads, hd)
    out = _attend(qh, kv[:, :, 0], kv[:, :, 1], valid).reshape(b, n, d)
    return out if self.proj is None else self.proj(out)


class SelfAttention(nnx.Module):
  """Fused qkv (D->3D, bias, laid out (3, heads, head_dim)), attention, then proj (D->D)."""

  def __init__(self, dim: int, heads: int, *, dtype: Any, rngs: nnx.Rngs):
    self.heads = heads
    self.qkv = _vjepa_linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
    self.proj = _vjepa_linear(dim, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    b, n, d = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
    out = _attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], valid).reshape(b, n, d)
    return self.proj(out)


class SelfAttentionBlock(nnx.Module):
  """Pre-LN transformer block: x + Attn(LN1(x)), then x + MLP(LN2(x))."""

  def __init__(self, dim: int, heads: int, mlp_ratio: float, *, dtype: Any, rngs: nnx.Rngs):
    self.norm1 = _layer_norm(dim, dtype=dtype, rngs=rngs)
    self.attn = SelfAttention(dim, heads, dtype=dtype, rngs=rngs)
    self.norm2 = _layer_norm(dim, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    x = x + self.attn(self.norm1(x), valid)
    return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nnx.Module):
  """q + XAttn(q, LN1(x)), then q + MLP(LN2(q)); only the tokens x are normalised before attention."""

  def __init__(self, dim: int, heads: int, mlp_ratio: float, *, out_proj: bool = False, dtype: Any,
               rngs: nnx.Rngs):
    self.norm1 = _layer_norm(dim, dtype=dtype, rngs=rngs)
    self.xattn = CrossAttention(dim, heads, out_proj=out_proj, dtype=dtype, rngs=rngs)
    self.norm2 = _layer_norm(dim, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), dtype=dtype, rngs=rngs)

  def __call__(self, q: jax.Array, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    q = q + self.xattn(q, self.norm1(x), valid)
    return q + self.mlp(self.norm2(q))


_VARIANT_DEPTH = {"vjepa": 1, "vjepa2": 4}


class AttentivePooler(nnx.Module):
  """Pools a token set [B, N, D] into num_queries vectors with learned-query cross-attention."""

  def __init__(self, *, dim: int, heads: int, num_queries: int = 1, depth: int | None = None,
               mlp_ratio: float = 4.0, variant: str = "vjepa", out_proj: bool = False, dtype: Any = None,
               rngs: nnx.Rngs):
    """Builds the pooler.

    Args:
      dim: token width D.
      heads: attention heads (V-JEPA: the encoder's heads; V-JEPA 2: 16).
      num_queries: learned query tokens.
      depth: total blocks (1 cross-attention + depth-1 self-attention); None means the variant's reference
        depth (1 for "vjepa", 4 for "vjepa2").
      mlp_ratio: MLP hidden width / D.
      variant: "vjepa" (self-attention blocks after, on the query) or "vjepa2" (before, on the tokens).
      out_proj: give the cross-attention an output projection. Off in the documented structure; the
        `facebookresearch/jepa` code constructs `xattn.proj` and at some revisions applies it, so this exists
        only for loading such probe checkpoints.
      dtype: compute dtype (parameters stay float32); None means float32.
      rngs: parameter initialisation RNGs.
    """
    if variant not in _VARIANT_DEPTH:
      raise ConfigError(f"probe.variant={variant!r} is unknown: use one of {sorted(_VARIANT_DEPTH)}")
    depth = _VARIANT_DEPTH[variant] if depth is None else int(depth)
    if depth < 1:
      raise ConfigError(f"probe.depth={depth} is invalid: use >= 1 (1 = the cross-attention block only)")
    if dim % heads:
      raise ConfigError(f"probe.heads={heads} does not divide the embedding width {dim}: pick a divisor")
    self.variant = variant
    self.dtype = dtype
    self.query = nnx.Param(_trunc_normal()(rngs.params(), (1, num_queries, dim), jnp.float32))
    self.cross = CrossAttentionBlock(dim, heads, mlp_ratio, out_proj=out_proj, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([SelfAttentionBlock(dim, heads, mlp_ratio, dtype=dtype, rngs=rngs)
                            for _ in range(depth - 1)])
    self._rescale_init()

  def _rescale_init(self) -> None:
    """Reproduces each reference's `_rescale_blocks` (divide residual outputs by sqrt(2 * layer_id))."""
    if self.variant == "vjepa":
      # The cross block is layer 1; the self blocks were meant to be layers 2, 3, ... (the reference loop
      # `enumerate(1, self.blocks)` would crash for depth > 1; this is its evident intent).
      if self.cross.xattn.proj is not None:
        _rescale(self.cross.xattn.proj, 1)
      _rescale(self.cross.mlp.fc2, 1)
      for i, blk in enumerate(self.blocks):
        _rescale(blk.attn.proj, i + 2)
        _rescale(blk.mlp.fc2, i + 2)
    else:
      # V-JEPA 2: self blocks are layers 1..depth-1, and the cross block's fc2 reuses the *last* self
      # block's layer id (max(depth-1, 1)), a quirk kept for initialisation parity.
      for i, blk in enumerate(self.blocks):
        _rescale(blk.attn.proj, i + 1)
        _rescale(blk.mlp.fc2, i + 1)
      _rescale(self.cross.mlp.fc2, max(len(self.blocks), 1))

  def __call__(self, x: jax.Array, *, valid: jax.Array | None = None) -> jax.Array:
    """Pools tokens.

    Args:
      x: tokens [B, N, D].
      valid: optional [B, N] bool, False for padding tokens; they are never attended to.

    Returns:
      [B, num_queries, D] float32.
    """
    if self.dtype is not None:
      x = x.astype(self.dtype)
    q = jnp.broadcast_to(self.query[...], (x.shape[0],) + self.query.shape[1:]).astype(x.dtype)
    if self.variant == "vjepa2":
      for blk in self.blocks:
        x = blk(x, valid)
      q = self.cross(q, x, valid)
    else:
      q = self.cross(q, x, valid)
      for blk in self.blocks:
        q = blk(q)  # Every query is real, so no mask among the queries.
    return q.astype(jnp.float32)


class AttentiveClassifier(nnx.Module):
  """Attentive probe: AttentivePooler (one query) -> squeeze -> Linear(D -> num_classes)."""

  def __init__(self, *, dim: int, heads: int, num_classes: int, depth: int | None = None,
               mlp_ratio: float = 4.0, variant: str = "vjepa", out_proj: bool = False, dtype: Any = None,
               rngs: nnx.Rngs):
    """Builds the probe; arguments as for `AttentivePooler` (depth None = the variant's reference depth)."""
    self.pooler = AttentivePooler(dim=dim, heads=heads, num_queries=1, depth=depth, mlp_ratio=mlp_ratio,
                                  variant=variant, out_proj=out_proj, dtype=dtype, rngs=rngs)
    # The reference applies its trunc-normal init only inside the pooler; the classifier keeps torch's
    # default nn.Linear init.
    self.linear = _torch_linear(dim, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, valid: jax.Array | None = None) -> jax.Array:
    """Tokens [B, N, D] (optional `valid` [B, N]) -> logits [B, num_classes] float32."""
    pooled = self.pooler(x, valid=valid)[:, 0]
    return self.linear(pooled).astype(jnp.float32)


class _LinearBNReLU(nnx.Module):
  """One hidden projector layer: Linear (no bias) -> BatchNorm -> ReLU.

  BatchNorm subtracts the batch mean, so a bias before it would cancel exactly: it would get an exactly-zero
  gradient, and Adam, which divides each gradient by its own magnitude, would then move it by up to lr per
  step in the direction of float rounding noise (different on every mesh and thread count). The function
  computed is the same as the reference's Linear(bias=True) -> BatchNorm.
  """

  def __init__(self, din: int, dout: int, *, dtype: Any, rngs: nnx.Rngs):
    self.linear = _torch_linear(din, dout, dtype=dtype, rngs=rngs, use_bias=False)
    self.bn = nnx.BatchNorm(dout, momentum=_BN_MOMENTUM, epsilon=_BN_EPS, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn(self.linear(x)))


class Projector(nnx.Module):
  """LeJEPA / VICReg projector: (Linear -> BatchNorm -> ReLU) x (num_layers-1), then Linear(-> out_dim).

  The output layer has no BatchNorm, so the loss (e.g. SIGReg's Gaussianity test) sees an unconstrained
  embedding. BatchNorm follows nnx's `train()` / `eval()` mode; under `jax.jit` with a sharded batch its
  statistics are over the global batch.
  """

  def __init__(self, *, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, num_layers: int = 3,
               dtype: Any = None, rngs: nnx.Rngs):
    """Builds the MLP.

    Args:
      in_dim: backbone embedding width.
      hidden_dim: width of the hidden layers.
      out_dim: projection width (LeJEPA: smaller is better, e.g. 16-128).
      num_layers: Linear layers in total (1 = a single linear map).
      dtype: compute dtype (parameters stay float32); None means float32.
      rngs: parameter initialisation RNGs.
    """
    if num_layers < 1:
      raise ConfigError(f"model.projector.num_layers={num_layers} is invalid: use >= 1")
    self.dtype = dtype
    dims = [in_dim] + [hidden_dim] * (num_layers - 1)
    self.layers = nnx.List([_LinearBNReLU(a, b, dtype=dtype, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
    self.out = _torch_linear(dims[-1], out_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Embeddings [B, in_dim] -> projections [B, out_dim] float32."""
    if self.dtype is not None:
      x = x.astype(self.dtype)
    for layer in self.layers:
      x = layer(x)
    return self.out(x).astype(jnp.float32)
