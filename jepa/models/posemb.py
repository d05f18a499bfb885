"""Position encodings: fixed sin-cos tables (NumPy) and V-JEPA 2's 3D rotary embedding (JAX).

The sin-cos tables are computed in NumPy from static shapes, so under `jit` they are constants: they are
never parameters, never trained, decayed, EMA-averaged or checkpointed. Each function reproduces one reference
channel layout exactly (see the docstrings); the layouts differ between I-JEPA and V-JEPA and a converted
checkpoint is only correct with the matching one.

Token order everywhere is raster order: n = r * w + c for images and n = (i * h + r) * w + c for video,
where i is the tubelet (time) index, r the patch row and c the patch column.

RoPE (V-JEPA 2) rotates query/key channels inside attention instead of adding a table; `rope_3d` applies it.
"""

import functools
import math
from typing import Literal

import jax.numpy as jnp
import numpy as np

RopeLayout = Literal["reference", "rotation"]
ROPE_LAYOUTS = ("reference", "rotation")


def _frequencies(dim: int) -> np.ndarray:
  """ω_k = 10000^(-k / (dim/2)) for k < dim/2 (float64), as in every reference repository."""
  if dim % 2:
    raise ValueError(f"sin-cos / RoPE channel count must be even, got {dim}")
  return 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))


def sincos_1d(positions, dim: int) -> np.ndarray:
  """1-D sin-cos encoding: [sin(p ω_0) … sin(p ω_{d/2-1}) | cos(p ω_0) … cos(p ω_{d/2-1})].

  Sines first, then cosines (not interleaved), with ω_k = 10000^(-k/(d/2)).

  Args:
    positions: array of any shape of (possibly non-integer) positions; flattened.
    dim: number of output channels (even).

  Returns:
    float32 array [positions.size, dim].
  """
  pos = np.asarray(positions, dtype=np.float64).reshape(-1)
  angles = pos[:, None] * _frequencies(dim)[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def _grid_2d(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
  """Row and column index of each token in raster order, each [h*w]."""
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return rows.reshape(-1), cols.reshape(-1)


def sincos_2d_ijepa(h: int, w: int, dim: int) -> np.ndarray:
  """I-JEPA 2D table [h*w, dim]: [sin col | cos col | sin row | cos row], each dim/4 wide.

  I-JEPA builds its grid with a w-first meshgrid, so the first half of the channels encodes the *column*; ω
  has dim/4 entries. This is the opposite of V-JEPA's 2D table (`sincos_2d_vjepa`).
  """
  if dim % 4:
    raise ValueError(f"2D sin-cos width must be divisible by 4, got {dim}")
  rows, cols = _grid_2d(h, w)
  return np.concatenate([sincos_1d(cols, dim // 2), sincos_1d(rows, dim // 2)], axis=1)


def sincos_2d_vjepa(h: int, w: int, dim: int) -> np.ndarray:
  """V-JEPA / V-JEPA 2 2D table [h*w, dim]: [sin row | cos row | sin col | cos col], each dim/4 wide."""
  if dim % 4:
    raise ValueError(f"2D sin-cos width must be divisible by 4, got {dim}")
  rows, cols = _grid_2d(h, w)
  return np.concatenate([sincos_1d(rows, dim // 2), sincos_1d(cols, dim // 2)], axis=1)


def sincos_3d(t: int, h: int, w: int, dim: int, uniform_power: bool = True) -> np.ndarray:
  """V-JEPA 3D table [t*h*w, dim], laid out [time | row | column], each part [sin | cos].

  With `uniform_power` (every V-JEPA config) each axis gets 2*ceil(dim/6) channels and the concatenation is
  truncated to the first `dim` channels (for dim 1024: 342 per axis, 1026 in all, the last 2 cosines of the
  column part dropped). Otherwise time gets dim/2, rows dim/4 and columns dim/4 channels. The time coordinate
  is the tubelet index 0 … t-1.
  """
  if uniform_power:
    dims = (2 * math.ceil(dim / 6),) * 3
  else:
    if dim % 8:
      raise ValueError(f"3D sin-cos width must be divisible by 8 without uniform_power, got {dim}")
    dims = (dim // 2, dim // 4, dim // 4)
  mesh = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
  times, rows, cols = (a.reshape(-1) for a in mesh)
  parts = [sincos_1d(coord, d) for coord, d in zip((times, rows, cols), dims)]
  return np.concatenate(parts, axis=1)[:, :dim]


@functools.lru_cache(maxsize=64)
def table(kind: str, grid: tuple[int, ...], dim: int, uniform_power: bool = True) -> np.ndarray:
  """Cached, read-only fixed table [prod(grid), dim] for a model's `pos_embedding` option.

  Args:
    kind: 'sincos_ijepa' (2D grids only) or 'sincos_vjepa' (2D row-first table, or 3D for (t, h, w)).
    grid: token grid, (h, w) or (t, h, w).
    dim: channels.
    uniform_power: 3D channel split (see `sincos_3d`).
  """
  if kind == "sincos_ijepa":
    if len(grid) != 2:
      raise ValueError("'sincos_ijepa' is a 2D (image) table; use 'sincos_vjepa' or 'rope' for video")
    out = sincos_2d_ijepa(*grid, dim)
  elif kind == "sincos_vjepa":
    if len(grid) == 2:
      out = sincos_2d_vjepa(*grid, dim)
    else:
      out = sincos_3d(*grid, dim, uniform_power=uniform_power)
  else:
    raise ValueError(f"no fixed table for pos_embedding={kind!r}")
  out.setflags(write=False)  # Shared between callers through the cache.
  return out


@functools.lru_cache(maxsize=64)
def grid_coordinates(grid: tuple[int, ...]) -> np.ndarray:
  """Integer (time, row, column) coordinates [prod(grid), 3] of raster-ordered tokens; images get time 0.

  Equals V-JEPA 2's `separate_positions` of the flat index n: t = n // (H W), h = (n mod H W) // W,
  w = n mod W, with H, W the actual grid (the reference's `handle_nonsquare_inputs` behaviour; the same for
  square grids).
  """
  if len(grid) == 2:
    grid = (1, *grid)
  coords = np.stack(np.meshgrid(*(np.arange(g) for g in grid), indexing="ij"), axis=-1).reshape(-1, 3)
  coords = coords.astype(np.int32)
  coords.setflags(write=False)
  return coords


def rope_sub_dim(head_dim: int) -> int:
  """Channels per axis for V-JEPA 2's 3D RoPE: 2 * floor(floor(head_dim / 3) / 2).

  The time, row and column sub-blocks take this many channels each from the start of every head; the remaining
  head_dim - 3 * sub channels are left unrotated (64 -> 20, tail 4; 80 -> 26, tail 2; 32 -> 10, tail 2).
  """
  return 2 * ((head_dim // 3) // 2)


def _rotate_block(x: jnp.ndarray, pos: jnp.ndarray, layout: RopeLayout) -> jnp.ndarray:
  """Rotary embedding of one axis: x [..., N, H, d], pos [..., N] -> same shape as x.

  The partner vector pairs adjacent channels, y = (-x1, x0, -x3, x2, …), and out = x * C + y * S. In the
  'reference' layout C and S tile the d/2 angles ([θ_0 … θ_{d/2-1}, θ_0 … θ_{d/2-1}]); in the 'rotation'
  layout each angle is repeated for its pair ([θ_0, θ_0, θ_1, θ_1, …]).
  """
  d = x.shape[-1]
  # Angles in float32 even for bf16 activations: the reference builds ω in q's dtype, which matters only in
  # the last bits and is identical in float32.
  omega = jnp.asarray(_frequencies(d), jnp.float32)
  theta = pos.astype(jnp.float32)[..., None, None] * omega  # [..., N, 1, d/2]
  if layout == "reference":
    theta = jnp.concatenate([theta, theta], axis=-1)
  elif layout == "rotation":
    theta = jnp.repeat(theta, 2, axis=-1)
  else:
    raise ValueError(f"rope_layout must be one of {ROPE_LAYOUTS}, got {layout!r}")
  pairs = x.reshape(*x.shape[:-1], d // 2, 2)
  partner = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
  out = x.astype(jnp.float32) * jnp.cos(theta) + partner.astype(jnp.float32) * jnp.sin(theta)
  return out.astype(x.dtype)


def rope_3d(x: jnp.ndarray, positions: jnp.ndarray, *, layout: RopeLayout = "reference") -> jnp.ndarray:
  """Applies V-JEPA 2's 3D rotary embedding to queries or keys.

  The head is split as [time | row | column | unrotated tail], each rotated part `rope_sub_dim(head_dim)`
  channels wide and rotated by its own coordinate.

  Layouts:
    'reference': the form in `facebookresearch/vjepa2` (`rotate_queries_or_keys`) that the released weights
      depend on. The cos/sin vectors are *tiled* rather than repeated per pair, so channel j uses frequency
      θ_{j mod d/2} while the rotated pairs are (2i, 2i+1): the two members of a pair get different angles, so
      this is not a true rotation and q·k is not a function of relative position alone. Use it for parity and
      for imported V-JEPA 2 weights.
    'rotation': each adjacent pair (2i, 2i+1) is rotated by the angle θ_i (the `repeat_interleave` fix
      proposed in vjepa2 PR #15). A true rotation: attention scores depend only on the relative positions.
      For new models.

  Args:
    x: [B, N, heads, head_dim] queries or keys.
    positions: [B, N, 3] or [N, 3] (time, row, column) coordinates, integer or float.
    layout: 'reference' or 'rotation' (above).

  Returns:
    Array of x's shape and dtype.
  """
  sub = rope_sub_dim(x.shape[-1])
  positions = jnp.broadcast_to(positions, (*x.shape[:-2], 3))
  parts = [_rotate_block(x[..., a * sub:(a + 1) * sub], positions[..., a], layout) for a in range(3)]
  return jnp.concatenate([*parts, x[..., 3 * sub:]], axis=-1)
