"""JEPA predictor: a narrow ViT that predicts target-token embeddings from context tokens.

Used by I-JEPA, V-JEPA (2) and IWM. Parameter names mirror the reference `VisionTransformerPredictor` with the
`predictor_` prefix dropped: `embed` (predictor_embed), `mask_tokens` ([num_mask_tokens, width]; row k is
`mask_token` or `mask_tokens.{k}`), `blocks`, `norm` (predictor_norm), `proj` (predictor_proj). The position
table is a NumPy constant, not a parameter.

Batch layout: targets come as [B, M, Kt] index arrays (M target blocks per example) and predictions as
[B, M, Kt, D]. The reference instead stacks blocks mask-major along the batch ([M*B, Kt, D]: all B examples
for block 0, then block 1, …); `out.transpose(1, 0, 2, 3).reshape(M * B, Kt, D)` converts ours to theirs.

V-JEPA 2 sorts [context ; targets] by position before its RoPE blocks and un-sorts afterwards. Attention with
RoPE and a key mask is permutation-equivariant, so we skip the sort; the outputs are the same.
"""

from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp

from jepa.errors import ConfigError
from jepa.models import posemb
from jepa.models import vit as vit_lib

Dtype = Any


class FeatureConditioning(nnx.Module):
  """IWM feature conditioning: concat(token, action) -> Linear(W + c -> W), ReLU, Linear, ReLU, Linear.

  Applied to every position-embedded mask token so that the prediction depends on the augmentation parameters
  (the "action") that map the source view to the target view. Other conditioning schemes (IWM's sequence
  conditioning with extra tokens) can replace this module.
  """

  def __init__(self, *, width: int, cond_dim: int, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """Builds the 3-layer MLP."""
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc1 = vit_lib.linear(width + cond_dim, width, **kw)
    self.fc2 = vit_lib.linear(width, width, **kw)
    self.fc3 = vit_lib.linear(width, width, **kw)

  def __call__(self, tokens: jax.Array, cond: jax.Array) -> jax.Array:
    """tokens [B, M, Kt, W], cond [B, M, c] -> [B, M, Kt, W] float32."""
    cond = jnp.broadcast_to(cond[:, :, None, :], (*tokens.shape[:-1], cond.shape[-1]))
    h = jnp.concatenate([tokens, cond.astype(tokens.dtype)], axis=-1)
    h = jax.nn.relu(self.fc1(h))
    h = jax.nn.relu(self.fc2(h))
    return self.fc3(h).astype(jnp.float32)


class SequenceConditioning(nnx.Module):
  """IWM sequence conditioning: one extra predictor token per action component, with its own projection.

    token_k = a_k * w_k + b_k,   k = 1..cond_dim,   w_k, b_k in R^W   (a Linear(1 -> W) per component)

  The tokens join the sequence after the context and before the mask tokens. They carry no position
  embedding: the separate projection per component already tells them apart (a shared projection would make
  them interchangeable under attention, the permutation symmetry that the paper breaks this way).
  """

  def __init__(self, *, width: int, cond_dim: int, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """Builds the per-component projections."""
    init = vit_lib.trunc_normal_init()
    self.kernel = nnx.Param(init(rngs.params(), (cond_dim, width), param_dtype))
    # A random (not zero) bias, so the tokens differ from each other even for a null action.
    self.bias = nnx.Param(init(rngs.params(), (cond_dim, width), param_dtype))

  def __call__(self, cond: jax.Array) -> jax.Array:
    """cond [B, M, c] -> action tokens [B, M, c, W] float32."""
    kernel = self.kernel[...].astype(jnp.float32)
    return cond.astype(jnp.float32)[..., None] * kernel + self.bias[...].astype(jnp.float32)


COND_MODES = ("feature", "sequence")


class Predictor(nnx.Module):
  """Predicts encoder embeddings of target tokens from encoded context tokens and target positions."""

  def __init__(self, *, grid: tuple[int, ...], embed_dim: int, width: int = 384, depth: int = 12, heads: int,
               mlp_ratio: float = 4.0, num_mask_tokens: int = 1, pos_embedding: str = "sincos_ijepa",
               uniform_power: bool = True, rope_layout: posemb.RopeLayout = "reference", cond_dim: int = 0,
               cond_mode: str = "feature",
               zero_init_mask_tokens: bool = False, depth_scaled_init: bool = False, remat: bool = False,
               backward_cut: bool = False, attn_implementation: str | None = None, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """Builds the predictor.

    Args:
      grid: the encoder's token grid, (h, w) or (t, h, w) (`ViT.grid`); indices are raster indices into it.
      embed_dim: encoder width D (input and output width).
      width: predictor width (384 in every reference config).
      depth: number of blocks (12; 16 for I-JEPA ViT-g).
      heads: attention heads. I-JEPA and V-JEPA use the encoder's head count; V-JEPA 2 uses 12.
      mlp_ratio: MLP hidden / width.
      num_mask_tokens: learned mask tokens (V-JEPA: one per mask generator), chosen by `mask_token_index`.
      pos_embedding: 'sincos_ijepa' (images), 'sincos_vjepa' (2D row first, or 3D for video), 'rope', 'none'.
      uniform_power: 3D sin-cos channel split (V-JEPA: True).
      rope_layout: 'reference' or 'rotation' (see `posemb.rope_3d`).
      cond_dim: size of the IWM action vector; 0 disables conditioning.
      cond_mode: how the action enters: 'feature' (mixed into every mask token, `FeatureConditioning`) or
        'sequence' (cond_dim extra tokens, `SequenceConditioning`).
      zero_init_mask_tokens: zero mask tokens (V-JEPA) instead of trunc-normal(0.02) (I-JEPA).
      depth_scaled_init: see `vit.out_std`.
      remat: rematerialise each block.
      backward_cut: materialise the residual gradient at every block (jepa/models/backward_cut.py).
      attn_implementation: None (XLA) or 'cudnn' (fused, NVIDIA GPUs); see `vit.Attention`.
      dtype: compute dtype of matmuls and attention.
      param_dtype: parameter dtype.
      rngs: parameter initialisation.
    """
    if pos_embedding not in vit_lib.POS_EMBEDDINGS:
      raise ConfigError(f"model.pos_embedding={pos_embedding!r} is unknown for the predictor; use one of "
                        f"{vit_lib.POS_EMBEDDINGS}")
    if pos_embedding == "sincos_ijepa" and len(grid) != 2:
      raise ConfigError("model.pos_embedding='sincos_ijepa' is a 2D table; use 'sincos_vjepa' or 'rope' "
                        "for video")
    if rope_layout not in posemb.ROPE_LAYOUTS:
      raise ConfigError(f"model.rope_layout={rope_layout!r} is unknown; use one of "
                        f"{posemb.ROPE_LAYOUTS}")
    if num_mask_tokens < 1:
      raise ConfigError(f"model.predictor.num_mask_tokens={num_mask_tokens} must be >= 1")
    vit_lib.check_heads(width, heads, key="model.predictor.heads", width_key="model.predictor.width",
                        rope=pos_embedding == "rope")
    self.grid = tuple(int(g) for g in grid)
    self.width = width
    self.pos_embedding = pos_embedding
    self.uniform_power = uniform_power
    self.remat = remat
    self.backward_cut = backward_cut
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.embed = vit_lib.linear(embed_dim, width, **kw)
    token_init = nnx.initializers.zeros_init() if zero_init_mask_tokens else vit_lib.trunc_normal_init()
    self.mask_tokens = nnx.Param(token_init(rngs.params(), (num_mask_tokens, width), param_dtype))
    if cond_mode not in COND_MODES:
      raise ConfigError(f"predictor cond_mode={cond_mode!r} is unknown; use one of {COND_MODES}")
    cond = None
    if cond_dim > 0 and cond_mode == "feature":
      cond = FeatureConditioning(width=width, cond_dim=cond_dim, **kw)
    elif cond_dim > 0:
      cond = SequenceConditioning(width=width, cond_dim=cond_dim, param_dtype=param_dtype, rngs=rngs)
    self.cond = cond
    self.cond_dim = cond_dim
    self.blocks = nnx.List([
        vit_lib.Block(width=width, heads=heads, mlp_ratio=mlp_ratio, use_rope=pos_embedding == "rope",
                      rope_layout=rope_layout, out_std=vit_lib.out_std(i + 1, depth_scaled_init),
                      attn_implementation=attn_implementation, **kw)
        for i in range(depth)
    ])
    self.norm = vit_lib.layer_norm(width, param_dtype=param_dtype, rngs=rngs)
    self.proj = vit_lib.linear(width, embed_dim, **kw)

  def _positions(self, idx: jax.Array) -> tuple[jax.Array | float, jax.Array | None]:
    """(additive position embedding [..., width] or 0., RoPE coordinates [..., 3] or None) at raster idx."""
    if self.pos_embedding in ("sincos_ijepa", "sincos_vjepa"):
      table = jnp.asarray(posemb.table(self.pos_embedding, self.grid, self.width, self.uniform_power))
      return table[idx], None
    if self.pos_embedding == "rope":
      return 0.0, jnp.asarray(posemb.grid_coordinates(self.grid))[idx]
    return 0.0, None

  def __call__(self, ctx: jax.Array, ctx_idx: jax.Array, ctx_valid: jax.Array | None, tgt_idx: jax.Array,
               tgt_valid: jax.Array | None = None, *, mask_token_index: int | jax.Array = 0,
               cond: jax.Array | None = None) -> jax.Array:
    """Predicts the target tokens of each of M target blocks from the same context.

    Each block is predicted independently: the context (batch B) is repeated per block (batch B*M) and
    concatenated with that block's target tokens (mask token + position), then run through the blocks with
    full attention, where invalid context and target slots are masked out as keys.

    Args:
      ctx: [B, Kc, D] context-encoder outputs.
      ctx_idx: [B, Kc] raster indices of the context tokens.
      ctx_valid: [B, Kc] bool (None = all valid).
      tgt_idx: [B, M, Kt] raster indices of the target tokens of each block.
      tgt_valid: [B, M, Kt] bool (None = all valid). Predictions at invalid slots are meaningless.
      mask_token_index: which learned mask token to use (V-JEPA: the mask generator's index).
      cond: IWM action, [B, M, cond_dim] (one per block) or [B, cond_dim]; required iff cond_dim > 0.

    Returns:
      [B, M, Kt, D] float32 predictions.
    """
    b, kc, _ = ctx.shape
    _, m, kt = tgt_idx.shape
    if (cond is None) != (self.cond is None):
      raise ValueError(f"`cond` must be given exactly when cond_dim > 0 (cond_dim={self.cond_dim})")

    ctx_pos, ctx_rope = self._positions(ctx_idx)
    tgt_pos, tgt_rope = self._positions(tgt_idx)
    x = self.embed(ctx).astype(jnp.float32) + ctx_pos  # [B, Kc, W]
    token = self.mask_tokens[...][mask_token_index].astype(jnp.float32)
    tgt = jnp.broadcast_to(token + tgt_pos, (b, m, kt, self.width))  # [B, M, Kt, W]
    extra = jnp.zeros((b, m, 0, self.width), jnp.float32)  # Sequence-conditioning tokens, if any.
    if self.cond is not None:
      if cond.ndim == 2:
        cond = jnp.broadcast_to(cond[:, None, :], (b, m, cond.shape[-1]))
      if isinstance(self.cond, SequenceConditioning):
        extra = self.cond(cond)  # [B, M, c, W]
      else:
        tgt = self.cond(tgt, cond)
    ka = extra.shape[2]

    # One sequence per (example, block): [context ; action tokens ; targets], batch index = b * M + block.
    x = jnp.broadcast_to(x[:, None], (b, m, kc, self.width))
    x = jnp.concatenate([x, extra, tgt], axis=2).reshape(b * m, kc + ka + kt, self.width)
    kv_mask = None  # No padding: no mask, so attention can take its fastest path.
    if ctx_valid is not None or tgt_valid is not None:
      if ctx_valid is None:
        ctx_valid = jnp.ones((b, kc), bool)
      if tgt_valid is None:
        tgt_valid = jnp.ones((b, m, kt), bool)
      kv_mask = jnp.concatenate([jnp.broadcast_to(ctx_valid[:, None], (b, m, kc)), jnp.ones((b, m, ka), bool),
                                 tgt_valid], axis=2)
      kv_mask = kv_mask.reshape(b * m, kc + ka + kt)
    positions = None
    if ctx_rope is not None:
      # Action tokens sit at coordinate 0: RoPE sees only relative offsets, and the tokens are told apart by
      # their own projections, not by position.
      positions = jnp.concatenate([jnp.broadcast_to(ctx_rope[:, None], (b, m, kc, 3)),
                                   jnp.zeros((b, m, ka, 3), ctx_rope.dtype), tgt_rope], axis=2)
      positions = positions.reshape(b * m, kc + ka + kt, 3)

    x = vit_lib.run_blocks(self.blocks, x, kv_mask=kv_mask, positions=positions, remat=self.remat,
                           backward_cut=self.backward_cut)
    x = self.proj(self.norm(x[:, kc + ka:]))
    return x.astype(jnp.float32).reshape(b, m, kt, -1)
