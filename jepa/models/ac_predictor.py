r"""V-JEPA 2-AC's action-conditioned predictor: a block-causal transformer over frames of frozen-encoder tokens.

Input: per-frame encoder tokens z_t in R^{N x D_enc} (t = 0 .. T-1; N = h w patches of one frame), the action
a_t in R^A that leads from frame t to frame t + 1 and optionally a state s_t in R^S (V-JEPA 2-AC: the robot's
end-effector pose; A = S = 7 there). Per frame the sequence is

  x_t = [W_a a_t + b_a,  W_s s_t + b_s,  W_e z_{t,1} + b_e, ..., W_e z_{t,N} + b_e]        (C + N tokens, width W)

with C = 2 conditioning tokens (C = 1 without a state). The T frames are concatenated, run through pre-LN
transformer blocks (jepa/models/vit.py `Block`: exact-erf GELU MLP of ratio 4, qkv bias) under the
block-causal mask

  M[i, j] = floor(i / K) >= floor(j / K),    K = C + N tokens per frame,

so that every token of frame t attends to all tokens of frames <= t and to none of a later frame; then the
conditioning tokens are dropped, and LayerNorm (eps 1e-6) and a Linear W -> D_enc give zhat_{t+1}: the output
at frame t predicts the tokens of frame t + 1.

Positions: 3D RoPE (jepa/models/posemb.py `rope_3d`) in every block, no additive table. A patch token of frame
t at patch row r and column c has coordinates (t, r, c); a conditioning token of frame t has (t, 0, 0), which
rotates its time block by t and leaves its row and column blocks unrotated (a rotation by angle 0 is the
identity): the reference's "conditioning tokens are rotated on time only". The time coordinate is the frame
index t (each frame is encoded on its own, see jepa/methods/vjepa2_ac.py).

Initialisation (the reference's `_init_weights` and `_rescale_blocks`): every Linear trunc-normal(0.02) with
zero bias, LayerNorms 1 / 0, and the attention output and MLP fc2 of block l (1-based) divided by sqrt(2 l).

Source: facebookresearch/vjepa2 @ c2963a4, src/models/ac_predictor.py (VisionTransformerPredictorAC) and
src/models/utils/modules.py (ACBlock, ACRoPEAttention, build_action_block_causal_attention_mask); read, not
copied. Choices where this module and the reference differ, and why:

* RoPE layout: `rope_layout='rotation'` by default, a true rotation of each channel pair (posemb.rope_3d); the
  reference's tiled frequencies ('reference') are kept as an option. No released AC weights are imported here,
  so nothing needs the reference's non-rotation.
* The reference multiplies the row / column coordinates by grid_size / H ("snap to grid"), 1 for its square
  256 px grid; here the coordinates are the patch indices.
* Without states (state_dim = 0) there is no state token (C = 1); the reference always has one.
* No extrinsics token (the reference's use_extrinsics, off in its DROID config) and no drop-path (0 there).
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jepa import losses
from jepa.models import vit

LN_EPS = 1e-6  # The reference predictor's norm_layer = partial(nn.LayerNorm, eps=1e-6).


def block_causal_mask(num_frames, tokens_per_frame):
  """bool [T K, T K]: entry (i, j) is True iff token j's frame <= token i's frame (K = tokens_per_frame)."""
  frame = np.arange(num_frames * tokens_per_frame) // tokens_per_frame
  return frame[:, None] >= frame[None, :]


def token_positions(num_frames, grid, num_cond):
  """int32 [T (C + h w), 3] RoPE coordinates (t, r, c) in the predictor's token order: per frame t the C
  conditioning tokens at (t, 0, 0), then the h x w patches in raster order at (t, r, c)."""
  h, w = grid
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  spatial = np.concatenate([np.zeros((num_cond, 2), np.int64), np.stack([rows.ravel(), cols.ravel()], -1)])
  t = np.repeat(np.arange(num_frames), len(spatial))
  return np.concatenate([t[:, None], np.tile(spatial, (num_frames, 1))], axis=1).astype(np.int32)


class ACPredictor(nnx.Module):
  """z [B, T, N, D_enc], actions [B, T, A] (and states [B, T, S]) -> predictions [B, T, N, D_enc] of frames t + 1."""

  def __init__(self, *, embed_dim, grid, action_dim, state_dim=0, width, depth, heads, mlp_ratio=4.0,
               rope_layout="rotation", dtype=jnp.float32, rngs):
    """Builds the predictor.

    Args:
      embed_dim: D_enc, the encoder's token width.
      grid: (h, w), the patch grid of one frame (N = h w).
      action_dim, state_dim: A and S; state_dim = 0 means no state token.
      width, depth, heads, mlp_ratio: the transformer (reference: 1024, 24, 16, 4).
      rope_layout: 'rotation' or 'reference' (posemb.rope_3d).
      dtype: compute dtype of the matmuls (the residual stream and the norms stay float32).
      rngs: parameter initialisation.
    """
    vit.check_heads(width, heads, key="ac.heads", width_key="ac.width", rope=True)
    self.grid = tuple(int(g) for g in grid)
    self.num_cond = 2 if state_dim else 1
    self.rope_layout = rope_layout
    lin = dict(dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    self.predictor_embed = vit.linear(embed_dim, width, **lin)
    self.action_encoder = vit.linear(action_dim, width, **lin)
    self.state_encoder = vit.linear(state_dim, width, **lin) if state_dim else None
    self.blocks = nnx.List([
        vit.Block(width=width, heads=heads, mlp_ratio=mlp_ratio, use_rope=True, rope_layout=rope_layout,
                  out_std=vit.out_std(i + 1, depth_scaled_init=True), dtype=dtype, param_dtype=jnp.float32,
                  rngs=rngs)
        for i in range(depth)])
    self.predictor_norm = vit.layer_norm(width, param_dtype=jnp.float32, rngs=rngs, epsilon=LN_EPS)
    self.predictor_proj = vit.linear(width, embed_dim, **lin)

  @property
  def tokens_per_frame(self):
    """K = C + N."""
    return self.num_cond + self.grid[0] * self.grid[1]

  def __call__(self, z, actions, states=None):
    """The module docstring's forward pass; returns float32 [B, T, N, D_enc]."""
    b, t, n, _ = z.shape
    if n != self.grid[0] * self.grid[1]:
      raise ValueError(f"ACPredictor: {n} tokens per frame, but the grid {self.grid} has {self.grid[0] * self.grid[1]}")
    if (states is None) != (self.state_encoder is None):
      raise ValueError("ACPredictor: pass states exactly when the predictor was built with state_dim > 0")
    cond = [self.action_encoder(actions.astype(jnp.float32))[:, :, None]]
    if states is not None:
      cond.append(self.state_encoder(states.astype(jnp.float32))[:, :, None])
    x = jnp.concatenate(cond + [self.predictor_embed(z)], axis=2).astype(jnp.float32)  # [B, T, K, W]
    k = x.shape[2]
    x = x.reshape(b, t * k, -1)
    mask = jnp.asarray(block_causal_mask(t, k))
    positions = jnp.asarray(token_positions(t, self.grid, self.num_cond))
    for block in self.blocks:
      x = block(x, positions=positions, attn_mask=mask)
    x = x.reshape(b, t, k, -1)[:, :, self.num_cond:]
    return self.predictor_proj(self.predictor_norm(x)).astype(jnp.float32)


class ACWorldModel(nnx.Module):
  """A frozen encoder and the AC predictor, with the world-model interface of the planner (`encode`, `rollout`).

  `encoder` maps raw frames [B, ...] to tokens [B, N, D_enc] (its weights are frozen variables, see
  jepa/train_state.py `freeze`); with `normalize` (V-JEPA 2's normalize_reps) both the encoder's tokens and
  every prediction pass through a non-affine LayerNorm (eps 1e-5) over D_enc.
  """

  def __init__(self, encoder, predictor, *, normalize):
    self.encoder = encoder
    self.predictor = predictor
    self.normalize = bool(normalize)

  def _norm(self, x):
    return losses.layer_norm(x) if self.normalize else x

  def encode(self, frames):
    """Raw frames [..., *frame shape] -> tokens [..., N, D_enc] (no gradient reaches the frozen encoder)."""
    lead = frames.shape[:-3]
    tokens = self.encoder(frames.reshape((-1,) + frames.shape[-3:]))
    tokens = jax.lax.stop_gradient(self._norm(tokens.astype(jnp.float32)))
    return tokens.reshape(lead + tokens.shape[-2:])

  def predict(self, z, actions, states=None):
    """One parallel (teacher-forced) pass: z [B, T, N, D], actions [B, T, A] -> zhat of frames 1..T."""
    return self._norm(self.predictor(z, actions, states))

  def rollout(self, z0, actions):
    """z0 [..., N, D], actions [..., H, A] -> zhat_1..zhat_H [..., H, N, D], autoregressively.

    The frames live in a fixed buffer of H frames (so that every pass has the same shape): pass k runs the
    predictor on the buffer and writes its output at frame k into frame k + 1. By the block-causal mask the
    output at frame k sees only frames <= k, all already filled, so the unfilled rest does not matter.
    """
    lead, (n, d) = z0.shape[:-2], z0.shape[-2:]
    h, a = actions.shape[-2:]
    z0 = z0.reshape(-1, n, d)
    actions = actions.reshape(-1, h, a)
    buffer = jnp.zeros((z0.shape[0], h + 1, n, d), jnp.float32).at[:, 0].set(z0)

    def one_pass(k, buffer):
      out = self.predict(buffer[:, :h], actions)
      return jax.lax.dynamic_update_index_in_dim(buffer, jax.lax.dynamic_index_in_dim(out, k, 1), k + 1, 1)

    buffer = jax.lax.fori_loop(0, h, one_pass, buffer)
    return buffer[:, 1:].reshape(lead + (h, n, d))
