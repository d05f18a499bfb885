"""Vision Transformer encoder shared by I-JEPA, V-JEPA and V-JEPA 2 (2D patches or 3D tubelets).

A plain pre-LN ViT as in the reference repositories: no CLS token, qkv bias, exact-erf GELU, LayerNorm eps
1e-6, a final LayerNorm, output = all tokens. Module and parameter names mirror the PyTorch state dicts
(`patch_embed`, `blocks[i].norm1`, `.attn.qkv`, `.attn.proj`, `.norm2`, `.mlp.fc1`, `.mlp.fc2`, `norm`) so
that a converter is a rename plus the transposes documented on each module.

Precision: parameters are `param_dtype` (float32); matmuls and attention run in `dtype`; the residual stream
and the LayerNorms stay in float32. This mirrors PyTorch autocast in the references (bf16 matmul outputs added
to a float32 residual promote to float32), and the output is float32 whatever `dtype` is.

Position encodings (`pos_embedding`):
  'sincos_ijepa': I-JEPA's fixed 2D table (column first), added after the patch embedding. Images only.
  'sincos_vjepa': V-JEPA's fixed table, 2D row first for images or 3D [t | h | w] (uniform power) for video.
  'rope': V-JEPA 2's 3D rotary embedding on q/k in every block (images use time 0); no table.
  'none': no position information.
Tables are NumPy constants computed from the input's token grid at trace time (never parameters). For an input
whose grid differs from the configured one the table is regenerated for the new grid; the references
interpolate the stored table instead.
"""

from collections.abc import Sequence
import math
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jepa.errors import ConfigError
from jepa.models import backward_cut as backward_cut_lib
from jepa.models import posemb

Dtype = Any

POS_EMBEDDINGS = ("sincos_ijepa", "sincos_vjepa", "rope", "none")

# name -> (width, depth, heads, mlp_ratio), as in the reference `vision_transformer.py` constructors.
VIT_SIZES: dict[str, tuple[int, int, int, float]] = {
    "tiny": (192, 12, 3, 4.0),
    "small": (384, 12, 6, 4.0),
    "base": (768, 12, 12, 4.0),
    "large": (1024, 24, 16, 4.0),
    "huge": (1280, 32, 16, 4.0),
    "giant": (1408, 40, 16, 48 / 11),
    "giant_xformers": (1408, 40, 22, 48 / 11),
    # The reference passes a misspelled `mpl_ratio=64/13`, so its ratio silently stays 4; we keep that.
    "gigantic": (1664, 48, 16, 4.0),
}


def trunc_normal_init(std: float = 0.02, bound: float = 2.0) -> nnx.Initializer:
  """Normal(0, std) truncated at the *absolute* values ±bound, like PyTorch's `trunc_normal_(std=std)`.

  The references truncate at ±2 (not ±2 std), which with std 0.02 is never reached: the distribution is an
  untruncated normal with exactly this std. (`jax.nn.initializers.truncated_normal` truncates at ±2 std, which
  would shrink the std by 12%.)
  """

  def init(key: jax.Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> jax.Array:
    return jnp.clip(std * jax.random.normal(key, shape, jnp.float32), -bound, bound).astype(dtype)

  return init


def layer_norm(width: int, *, param_dtype: Dtype, rngs: nnx.Rngs, epsilon: float = 1e-6) -> nnx.LayerNorm:
  """LayerNorm (scale 1, bias 0) computed in float32 with the two-pass variance (closest to PyTorch)."""
  return nnx.LayerNorm(width, epsilon=epsilon, use_fast_variance=False, param_dtype=param_dtype, rngs=rngs)


def linear(in_features: int, out_features: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs,
           std: float = 0.02, use_bias: bool = True) -> nnx.Linear:
  """Linear with the references' init: weight trunc-normal(std), bias 0. Kernel [in, out] = torch weight.T."""
  return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=trunc_normal_init(std), bias_init=nnx.initializers.zeros_init(), rngs=rngs)


class PatchEmbed(nnx.Module):
  """Stride = kernel convolution, computed as one matmul over flattened, non-overlapping patches.

  Parameters:
    kernel: [p, p, C, D] for images, [kt, p, p, C, D] for video, i.e. the Flax conv (HWIO / THWIO) layout.
      From a PyTorch Conv2d weight [D, C, p, p] use `w.transpose(2, 3, 1, 0)`; from Conv3d [D, C, kt, p, p]
      use `w.transpose(2, 3, 4, 1, 0)`.
    bias: [D].
  Patches are flattened in (kt, p, p, C) order to match the kernel, and tokens in raster order (t, h, w).
  """

  def __init__(self, *, patch_size: int, in_channels: int, width: int, tubelet_size: int | None = None,
               dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """Builds the patch embedding; `tubelet_size=None` means images."""
    self.patch_size = patch_size
    self.tubelet_size = tubelet_size
    self.dtype = dtype
    spatial = (patch_size, patch_size, in_channels, width)
    shape = spatial if tubelet_size is None else (tubelet_size, *spatial)
    self.kernel = nnx.Param(trunc_normal_init()(rngs.params(), shape, param_dtype))
    self.bias = nnx.Param(jnp.zeros((width,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] or [B, T, H, W, C] -> [B, N, D] in `dtype`."""
    p, kt = self.patch_size, self.tubelet_size
    if kt is None:
      b, h, w, c = x.shape
      x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    else:
      b, t, h, w, c = x.shape
      x = x.reshape(b, t // kt, kt, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    kernel = self.kernel[...]
    n = math.prod(x.shape[1:x.ndim - kernel.ndim + 1])
    x = x.reshape(b, n, -1).astype(self.dtype)
    y = x @ kernel.reshape(-1, kernel.shape[-1]).astype(self.dtype)
    return y + self.bias[...].astype(self.dtype)


class Attention(nnx.Module):
  """Multi-head self-attention with a fused qkv projection and optional 3D RoPE.

  `qkv` is Linear(D -> 3D, bias) whose output splits as (3, heads, head_dim): outputs [0, D) are q, [D, 2D) k,
  [2D, 3D) v, and head h owns a contiguous head_dim slice of each (the reference layout, so a PyTorch qkv
  weight maps with a plain transpose). `proj` is Linear(D -> D). Attention itself is
  `jax.nn.dot_product_attention`, so `implementation='cudnn'` gives NVIDIA GPUs the fused kernel.
  """

  def __init__(self, *, width: int, heads: int, qkv_bias: bool = True, use_rope: bool = False,
               rope_layout: posemb.RopeLayout = "reference", proj_std: float = 0.02,
               implementation: str | None = None, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """Builds the layer.

    `proj_std` is the init std of `proj` (the depth-scaled init divides it by sqrt(2 l)). `implementation`
    goes to `jax.nn.dot_product_attention`: None is XLA on any backend (jax 0.10 does not pick a fused
    kernel by itself); 'cudnn' is the fused kernel on NVIDIA GPUs (bf16/fp16 compute only).
    """
    if width % heads:
      raise ValueError(f"width {width} is not divisible by heads {heads}")
    self.heads = heads
    self.head_dim = width // heads
    self.use_rope = use_rope
    self.rope_layout = rope_layout
    self.implementation = implementation
    self.qkv = linear(width, 3 * width, use_bias=qkv_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.proj = linear(width, width, std=proj_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def qkv_heads(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """[B, N, D] -> q, k, v, each [B, N, heads, head_dim] (before RoPE)."""
    b, n, _ = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim)
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

  def __call__(self, x: jax.Array, *, kv_mask: jax.Array | None = None,
               positions: jax.Array | None = None, attn_mask: jax.Array | None = None) -> jax.Array:
    """Self-attention.

    Args:
      x: [B, N, D].
      kv_mask: optional [B, N] bool; False keys receive no attention (padding). Queries are not masked.
      positions: [B, N, 3] or [N, 3] (t, h, w) token coordinates; required when RoPE is on, else ignored.
      attn_mask: optional [N, N] bool (query, key); False pairs receive no attention (e.g. the block-causal
        mask of jepa/models/ac_predictor.py). Combined with `kv_mask` by AND.

    Returns:
      [B, N, D] in the compute dtype.
    """
    q, k, v = self.qkv_heads(x)
    if self.use_rope:
      if positions is None:
        raise ValueError("Attention with RoPE needs `positions`")
      q = posemb.rope_3d(q, positions, layout=self.rope_layout)
      k = posemb.rope_3d(k, positions, layout=self.rope_layout)
    mask = None if kv_mask is None else kv_mask[:, None, None, :]  # -> [B, heads, Nq, Nk] by broadcasting.
    if attn_mask is not None:
      pairs = attn_mask[None, None]
      mask = pairs if mask is None else mask & pairs
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=self.implementation)
    return self.proj(out.reshape(*x.shape[:-1], -1))


def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU, x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, written as PyTorch's `nn.GELU()` computes it.

  `jax.nn.gelu(approximate=False)` computes the same function through erfc, which XLA's CPU backend lowers to
  a branchy polynomial: 3x slower forward on a [10752, 384] array (8.6 ms against 2.8 on 2 cores). The two forms
  agree to 1e-6 in float32.
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(1.0 / math.sqrt(2.0), x.dtype)))


class Mlp(nnx.Module):
  """fc1 (D -> hidden), exact-erf GELU (PyTorch's default), fc2 (hidden -> D)."""

  def __init__(self, *, width: int, hidden: int, fc2_std: float = 0.02, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """`fc2_std` is the init std of fc2 (the depth-scaled init divides it by sqrt(2 l))."""
    self.fc1 = linear(width, hidden, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc2 = linear(hidden, width, std=fc2_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., D] -> [..., D] in the compute dtype."""
    # The exact form, as the references (jax.nn.gelu defaults to the tanh approximation).
    return self.fc2(gelu(self.fc1(x)))


class Block(nnx.Module):
  """Pre-LN transformer block: x + DropPath(Attn(LN1 x)), then x + DropPath(MLP(LN2 x)).

  DropPath (stochastic depth, Huang et al. 2016, as timm's): in training, each example's branch output is
  zeroed with probability p and otherwise scaled by 1 / (1 - p), independently for the two branches, so the
  expected output is unchanged; without a key (evaluation, EMA targets) it is the identity.
  """

  def __init__(self, *, width: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
               use_rope: bool = False, rope_layout: posemb.RopeLayout = "reference", out_std: float = 0.02,
               drop_path: float = 0.0, attn_implementation: str | None = None, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """`out_std` is the init std of attn.proj and mlp.fc2 (0.02, or 0.02/sqrt(2 l) when depth-scaled);
    `drop_path` the probability p of dropping a branch for one example."""
    self.drop_path = float(drop_path)
    self.norm1 = layer_norm(width, param_dtype=param_dtype, rngs=rngs)
    self.attn = Attention(width=width, heads=heads, qkv_bias=qkv_bias, use_rope=use_rope,
                          rope_layout=rope_layout, proj_std=out_std, implementation=attn_implementation,
                          dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm2 = layer_norm(width, param_dtype=param_dtype, rngs=rngs)
    # int() like the reference: 1408 * 48/11 = 6144.
    self.mlp = Mlp(width=width, hidden=int(width * mlp_ratio), fc2_std=out_std, dtype=dtype,
                   param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, kv_mask: jax.Array | None = None,
               positions: jax.Array | None = None, rng: jax.Array | None = None,
               attn_mask: jax.Array | None = None) -> jax.Array:
    """[B, N, D] float32 residual stream -> same; see `Attention` for kv_mask, positions and attn_mask.

    `rng`: the drop-path key of this block in training; None (or drop_path 0) keeps every branch.
    """
    attended = self.attn(self.norm1(x), kv_mask=kv_mask, positions=positions, attn_mask=attn_mask)
    x = x + self._drop_path(attended, rng, 0)
    return x + self._drop_path(self.mlp(self.norm2(x)), rng, 1)

  def _drop_path(self, branch: jax.Array, rng: jax.Array | None, which: int) -> jax.Array:
    if rng is None or self.drop_path == 0.0:
      return branch
    keep_prob = 1.0 - self.drop_path
    shape = (branch.shape[0],) + (1,) * (branch.ndim - 1)  # One draw per example.
    keep = jax.random.bernoulli(jax.random.fold_in(rng, which), keep_prob, shape)
    return jnp.where(keep, branch / jnp.asarray(keep_prob, branch.dtype), jnp.zeros((), branch.dtype))


def out_std(layer: int, depth_scaled_init: bool) -> float:
  """Init std of attn.proj / mlp.fc2 in block `layer` (1-based): 0.02, divided by sqrt(2 layer) if scaled.

  The reference constructors apply the 1/sqrt(2 l) rescale; I-JEPA and V-JEPA then re-initialise every Linear,
  undoing it (hence the default False); V-JEPA 2 keeps it.
  """
  return 0.02 / math.sqrt(2.0 * layer) if depth_scaled_init else 0.02


def check_heads(width: int, heads: int, *, key: str, width_key: str, rope: bool) -> None:
  """Raises ConfigError unless `heads` divides `width` (and leaves RoPE at least 2 channels per axis)."""
  if heads <= 0 or width % heads:
    raise ConfigError(f"{key}={heads} does not divide {width_key}={width}; "
                      "pick a head count that divides the width")
  if rope and posemb.rope_sub_dim(width // heads) < 2:
    raise ConfigError(f"{key}={heads} gives head_dim {width // heads}, too small for 3D RoPE (needs >= 6); "
                      "use fewer heads")


def run_blocks(blocks: Sequence[Block], x: jax.Array, *, kv_mask: jax.Array | None,
               positions: jax.Array | None, remat: bool | str, collect: list[jax.Array] | None = None,
               rng: jax.Array | None = None, backward_cut: bool = False) -> jax.Array:
  """Applies `blocks` in order, optionally rematerialised (activations recomputed in the backward pass).

  Appends every block's output to `collect` when given. `rng` is the drop-path key (block i uses
  fold_in(rng, i)); None disables drop-path. `backward_cut` materialises the residual stream's gradient at
  every block boundary (`jepa/models/backward_cut.py`); the forward pass and the gradients' values are unchanged.
  """

  def apply(block: Block, h: jax.Array, kv_mask: jax.Array | None, positions: jax.Array | None,
            key: jax.Array | None) -> jax.Array:
    return block(h, kv_mask=kv_mask, positions=positions, rng=key)

  if remat:  # True: save nothing; a name: that jax.checkpoint_policies policy decides what is saved.
    apply = nnx.remat(apply, policy=None if remat is True else getattr(jax.checkpoint_policies, remat))
  for i, block in enumerate(blocks):
    if backward_cut:
      x = backward_cut_lib.materialise_cotangent(x)
    x = apply(block, x, kv_mask, positions, None if rng is None else jax.random.fold_in(rng, i))
    if collect is not None:
      collect.append(x)
  return x


def _as_pair(size: int | Sequence[int]) -> tuple[int, int]:
  """An image size given as one int (square) or (height, width)."""
  if isinstance(size, int):
    return size, size
  h, w = size
  return int(h), int(w)


class ViT(nnx.Module):
  """ViT encoder for images ([B, H, W, C], `num_frames=None`) or video ([B, T, H, W, C]).

  The forward pass follows the references: patch-embed, add the fixed position table to *all* tokens, keep the
  context tokens `idx` (masking before the blocks), blocks, final LayerNorm.
  """

  def __init__(self, *, image_size: int | Sequence[int], patch_size: int, in_channels: int = 3, width: int,
               depth: int, heads: int, mlp_ratio: float = 4.0, num_frames: int | None = None,
               tubelet_size: int = 2, pos_embedding: str = "sincos_ijepa", uniform_power: bool = True,
               rope_layout: posemb.RopeLayout = "reference", qkv_bias: bool = True,
               depth_scaled_init: bool = False, remat: bool = False, attn_implementation: str | None = None,
               drop_path_rate: float = 0.0, backward_cut: bool = False, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    """Builds the encoder.

    Args:
      image_size: input height = width, or (height, width).
      patch_size: spatial patch size p.
      in_channels: input channels C.
      width, depth, heads, mlp_ratio: transformer size (see `VIT_SIZES`).
      num_frames: frames T for video; None for images.
      tubelet_size: frames per tubelet (video only).
      pos_embedding: 'sincos_ijepa' | 'sincos_vjepa' | 'rope' | 'none' (see the module docstring).
      uniform_power: channel split of the 3D sin-cos table (V-JEPA: True).
      rope_layout: 'reference' (V-JEPA 2 weights) or 'rotation' (a true rotation); see `posemb.rope_3d`.
      qkv_bias: bias on the fused qkv projection (on in every reference).
      depth_scaled_init: divide attn.proj / mlp.fc2 init of block l by sqrt(2 l) (V-JEPA 2 style).
      remat: rematerialise each block in the backward pass (saves activation memory).
      attn_implementation: None (XLA) or 'cudnn' (fused, NVIDIA GPUs); see `Attention`.
      drop_path_rate: stochastic depth of the last block; block i of d drops with rate * i / (d - 1), as timm
        (0 in the I-JEPA / V-JEPA configs, 0.1 in LeJEPA's ViT recipes). Active only when a key is passed.
      backward_cut: materialise the residual gradient at every block (jepa/models/backward_cut.py).
      dtype: compute dtype of matmuls and attention.
      param_dtype: parameter dtype.
      rngs: parameter initialisation.
    """
    h, w = _as_pair(image_size)
    if h % patch_size or w % patch_size:
      raise ConfigError(f"data.image_size={image_size} is not divisible by model.patch_size={patch_size}")
    if pos_embedding not in POS_EMBEDDINGS:
      raise ConfigError(f"model.pos_embedding={pos_embedding!r} is unknown; use one of {POS_EMBEDDINGS}")
    if rope_layout not in posemb.ROPE_LAYOUTS:
      raise ConfigError(f"model.rope_layout={rope_layout!r} is unknown; use one of {posemb.ROPE_LAYOUTS}")
    if num_frames is not None:
      if num_frames % tubelet_size:
        raise ConfigError(f"data.num_frames={num_frames} is not divisible by "
                          f"model.tubelet_size={tubelet_size}")
      if pos_embedding == "sincos_ijepa":
        raise ConfigError("model.pos_embedding='sincos_ijepa' is a 2D table; "
                          "use 'sincos_vjepa' or 'rope' for video")
    check_heads(width, heads, key="model.encoder.heads", width_key="model.encoder.width",
                rope=pos_embedding == "rope")
    if not 0.0 <= drop_path_rate < 1.0:
      raise ConfigError(f"model.encoder.drop_path={drop_path_rate} is not a probability below 1; use e.g. 0.1")
    spatial = (h // patch_size, w // patch_size)
    self.grid: tuple[int, ...] = spatial if num_frames is None else (num_frames // tubelet_size, *spatial)
    self.width = width
    self.pos_embedding = pos_embedding
    self.uniform_power = uniform_power
    self.remat = remat
    self.backward_cut = backward_cut
    self.patch_embed = PatchEmbed(patch_size=patch_size, in_channels=in_channels, width=width,
                                  tubelet_size=None if num_frames is None else tubelet_size, dtype=dtype,
                                  param_dtype=param_dtype, rngs=rngs)
    self.blocks = nnx.List([
        Block(width=width, heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
              use_rope=pos_embedding == "rope", rope_layout=rope_layout,
              out_std=out_std(i + 1, depth_scaled_init), drop_path=rate,
              attn_implementation=attn_implementation, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        for i, rate in enumerate(np.linspace(0.0, drop_path_rate, depth).tolist())
    ])
    self.norm = layer_norm(width, param_dtype=param_dtype, rngs=rngs)

  @property
  def num_patches(self) -> int:
    """Tokens N of the configured input size."""
    return math.prod(self.grid)

  def token_grid(self, x_shape: Sequence[int]) -> tuple[int, ...]:
    """Token grid of an input of shape [B, H, W, C] or [B, T, H, W, C]."""
    p = self.patch_embed.patch_size
    kt = self.patch_embed.tubelet_size
    expected = 4 if kt is None else 5
    if len(x_shape) != expected:
      kind = "images" if kt is None else "video"
      raise ValueError(f"expected a rank-{expected} input ({kind}), got shape {tuple(x_shape)}")
    *frames, h, w, _ = x_shape[1:]
    if h % p or w % p or (frames and frames[0] % kt):
      raise ValueError(f"input {tuple(x_shape)} is not divisible into patches {p} / tubelets {kt}")
    spatial = (h // p, w // p)
    return spatial if kt is None else (frames[0] // kt, *spatial)

  def __call__(self, x: jax.Array, *, idx: jax.Array | None = None, valid: jax.Array | None = None,
               return_all_layers: bool = False,
               rng: jax.Array | None = None) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
    """Encodes all tokens, or only the tokens `idx`.

    Args:
      x: images [B, H, W, C] or video [B, T, H, W, C].
      idx: optional [B, K] int32 raster indices of the tokens to keep (the rest are dropped before the
        blocks). With RoPE the kept tokens keep their original positions.
      valid: optional [B, K] (or [B, N] without idx) bool; False slots are padding, ignored as attention keys.
        Their outputs are meaningless.
      return_all_layers: also return every block's output.
      rng: drop-path key, passed by the methods' training losses for the encoder they train; None (the
        default: evaluation, EMA targets, probes) runs every block in full.

    Returns:
      [B, K or N, D] float32 after the final LayerNorm; with `return_all_layers`, a tuple of that and the
      list of the `depth` block outputs (float32, before the final LayerNorm).
    """
    grid = self.token_grid(x.shape)
    h = self.patch_embed(x).astype(jnp.float32)
    if self.pos_embedding in ("sincos_ijepa", "sincos_vjepa"):
      h = h + posemb.table(self.pos_embedding, grid, self.width, self.uniform_power)
    positions = None
    if self.pos_embedding == "rope":
      positions = jnp.asarray(posemb.grid_coordinates(grid))
    if idx is not None:
      h = jnp.take_along_axis(h, idx[..., None], axis=1)
      if positions is not None:
        positions = positions[idx]
    layers: list[jax.Array] | None = [] if return_all_layers else None
    h = run_blocks(self.blocks, h, kv_mask=valid, positions=positions, remat=self.remat,
                   backward_cut=self.backward_cut, collect=layers,
                   rng=rng)
    out = self.norm(h).astype(jnp.float32)
    if return_all_layers:
      return out, [layer.astype(jnp.float32) for layer in layers]
    return out
