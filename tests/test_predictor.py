"""Tests for the JEPA predictor (tiny sizes, CPU)."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa.errors import ConfigError
from jepa.models import posemb
from jepa.models.predictor import Predictor

ATOL = 1e-5
D = 16  # Encoder width.
B, KC, M, KT = 2, 5, 3, 4


def _predictor(**kw):
  args = dict(grid=(4, 5), embed_dim=D, width=12, depth=2, heads=2, rngs=nnx.Rngs(0))
  args.update(kw)
  return Predictor(**args)


@nnx.jit
def _jit_call(pred, ctx, ctx_idx, ctx_valid, tgt_idx, tgt_valid, mask_token_index, cond):
  return pred(ctx, ctx_idx, ctx_valid, tgt_idx, tgt_valid, mask_token_index=mask_token_index, cond=cond)


def _run(pred, ctx, ctx_idx, ctx_valid, tgt_idx, tgt_valid=None, *, mask_token_index=0, cond=None):
  """Jitted call: one compile per structure and shape is much faster than eager dispatch on CPU."""
  return _jit_call(pred, ctx, ctx_idx, ctx_valid, tgt_idx, tgt_valid, mask_token_index, cond)


def _inputs(seed=0, n=20):
  keys = jax.random.split(jax.random.key(seed), 3)
  ctx = jax.random.normal(keys[0], (B, KC, D))
  perm = jnp.stack([jax.random.permutation(k, n) for k in jax.random.split(keys[1], B)])
  ctx_idx = perm[:, :KC]
  tgt_idx = perm[:, KC:KC + M * KT].reshape(B, M, KT)
  ctx_valid = jnp.ones((B, KC), bool)
  return ctx, ctx_idx, ctx_valid, tgt_idx


@pytest.mark.parametrize("grid,pos", [((4, 5), "sincos_ijepa"), ((2, 4, 4), "sincos_vjepa"),
                                      ((2, 4, 4), "rope"), ((4, 5), "none")])
def test_output_shape(grid, pos):
  pred = _predictor(grid=grid, pos_embedding=pos)
  out = _run(pred, *_inputs(n=int(np.prod(grid))))
  assert out.shape == (B, M, KT, D) and out.dtype == jnp.float32


def test_matches_reference_steps():
  """Reference steps per block: embed(ctx) + table[ctx_idx]; mask token + table[tgt_idx]; blocks on
  [ctx ; tgt]; norm; keep the targets; proj."""
  pred = _predictor()
  ctx, ctx_idx, ctx_valid, tgt_idx = _inputs()
  out = _run(pred, ctx, ctx_idx, ctx_valid, tgt_idx)
  table = posemb.sincos_2d_ijepa(4, 5, 12)
  x = pred.embed(ctx) + table[ctx_idx]
  for m in range(M):
    seq = jnp.concatenate([x, pred.mask_tokens[...][0] + table[tgt_idx[:, m]]], axis=1)
    for block in pred.blocks:
      seq = block(seq)
    expected = pred.proj(pred.norm(seq))[:, KC:]
    np.testing.assert_allclose(out[:, m], expected, atol=ATOL)


def test_blocks_are_independent():
  pred = _predictor()
  ctx, ctx_idx, ctx_valid, tgt_idx = _inputs()
  tgt_valid = jnp.ones((B, M, KT), bool)
  out = _run(pred, ctx, ctx_idx, ctx_valid, tgt_idx, tgt_valid)
  # Change block 1's targets (positions and validity): blocks 0 and 2 are unchanged.
  tgt_idx2 = tgt_idx.at[:, 1].set(jnp.flip(tgt_idx[:, 1], axis=-1) % 3)
  tgt_valid2 = tgt_valid.at[:, 1, 0].set(False)
  out2 = _run(pred, ctx, ctx_idx, ctx_valid, tgt_idx2, tgt_valid2)
  np.testing.assert_allclose(out2[:, [0, 2]], out[:, [0, 2]], atol=ATOL)
  assert float(jnp.max(jnp.abs(out2[:, 1] - out[:, 1]))) > 1e-4
  # A block alone gives the same prediction as inside the batch of blocks.
  alone = _run(pred, ctx, ctx_idx, ctx_valid, tgt_idx[:, 2:3])
  np.testing.assert_allclose(alone[:, 0], out[:, 2], atol=ATOL)


def test_context_order_does_not_matter():
  """Positions follow ctx_idx: permuting the context (tokens with their indices) changes nothing."""
  pred = _predictor(pos_embedding="rope", grid=(2, 4, 4))
  ctx, ctx_idx, ctx_valid, tgt_idx = _inputs(n=32)
  out = _run(pred, ctx, ctx_idx, ctx_valid, tgt_idx)
  perm = jnp.array([3, 0, 4, 1, 2])
  out2 = _run(pred, ctx[:, perm], ctx_idx[:, perm], ctx_valid, tgt_idx)
  np.testing.assert_allclose(out2, out, atol=ATOL)


def test_invalid_context_keys_are_masked():
  pred = _predictor()
  ctx, ctx_idx, _, tgt_idx = _inputs()
  ctx_valid = jnp.array([[True, False, True, True, False], [True, True, True, True, False]])
  out = _run(pred, ctx, ctx_idx, ctx_valid, tgt_idx)
  # Garbage in the invalid slots changes nothing.
  garbage = jnp.where(ctx_valid[..., None], ctx, 100.0)
  out2 = _run(pred, garbage, jnp.where(ctx_valid, ctx_idx, 15), ctx_valid, tgt_idx)
  np.testing.assert_allclose(out2, out, atol=ATOL)
  # Same as running on the valid context tokens only.
  for b in range(B):
    keep = np.flatnonzero(np.asarray(ctx_valid[b]))
    alone = _run(pred, ctx[b:b + 1, keep], ctx_idx[b:b + 1, keep], None, tgt_idx[b:b + 1])
    np.testing.assert_allclose(alone[0], out[b], atol=ATOL)


def test_invalid_target_keys_are_masked():
  pred = _predictor()
  ctx, ctx_idx, ctx_valid, tgt_idx = _inputs()
  tgt_valid = jnp.ones((B, M, KT), bool).at[:, :, -1].set(False)
  out = _run(pred, ctx, ctx_idx, ctx_valid, tgt_idx, tgt_valid)
  out2 = _run(pred, ctx, ctx_idx, ctx_valid, tgt_idx.at[:, :, -1].set(0), tgt_valid)
  np.testing.assert_allclose(out2[:, :, :-1], out[:, :, :-1], atol=ATOL)
  short = _run(pred, ctx, ctx_idx, ctx_valid, tgt_idx[:, :, :-1])
  np.testing.assert_allclose(short, out[:, :, :-1], atol=ATOL)


def test_mask_token_index_selects_token():
  pred = _predictor(num_mask_tokens=2)
  assert pred.mask_tokens.shape == (2, 12)
  inputs = _inputs()
  out0 = _run(pred, *inputs, mask_token_index=0)
  out1 = _run(pred, *inputs, mask_token_index=1)
  assert float(jnp.max(jnp.abs(out0 - out1))) > 1e-4
  # `_run` traces the index; a static Python int selects the same token.
  static = nnx.jit(lambda p, *a: p(*a, mask_token_index=1))(pred, *inputs)
  np.testing.assert_allclose(static, out1, atol=ATOL)
  zero = _predictor(num_mask_tokens=2, zero_init_mask_tokens=True)
  np.testing.assert_array_equal(zero.mask_tokens[...], 0.0)
  np.testing.assert_allclose(_run(zero, *inputs, mask_token_index=0), _run(zero, *inputs, mask_token_index=1),
                             atol=ATOL)


def test_cond_changes_output():
  pred = _predictor(cond_dim=3)
  inputs = _inputs()
  cond = jax.random.normal(jax.random.key(5), (B, 3))
  out = _run(pred, *inputs, cond=cond)
  assert out.shape == (B, M, KT, D)
  other = _run(pred, *inputs, cond=cond + 1.0)
  assert float(jnp.max(jnp.abs(out - other))) > 1e-4
  # [B, cond_dim] is broadcast to every block; per-block actions condition only their block.
  per_block = jnp.broadcast_to(cond[:, None], (B, M, 3))
  np.testing.assert_allclose(_run(pred, *inputs, cond=per_block), out, atol=ATOL)
  changed = _run(pred, *inputs, cond=per_block.at[:, 1].add(1.0))
  np.testing.assert_allclose(changed[:, [0, 2]], out[:, [0, 2]], atol=ATOL)
  with pytest.raises(ValueError, match="cond"):
    pred(*inputs)


def test_config_errors():
  Predictor(grid=(4, 4), embed_dim=D, width=384, depth=0, heads=16, rngs=nnx.Rngs(0))  # head_dim 24: fine.
  with pytest.raises(ConfigError, match="model.predictor.heads"):
    _predictor(width=12, heads=5)
  with pytest.raises(ConfigError, match="model.pos_embedding"):
    _predictor(pos_embedding="learned")
  with pytest.raises(ConfigError, match="sincos_ijepa"):
    _predictor(grid=(2, 4, 4), pos_embedding="sincos_ijepa")


def test_parameter_names_and_shapes():
  pred = _predictor(depth=1)
  assert pred.embed.kernel.shape == (D, 12)
  assert pred.proj.kernel.shape == (12, D)
  assert pred.blocks[0].attn.qkv.kernel.shape == (12, 36)
  # The fixed table is not a parameter.
  assert all(leaf.shape != (20, 12) for leaf in jax.tree.leaves(nnx.state(pred)))
