"""Tests for jepa.models.heads: projector layout, attentive pooler vs a NumPy reference, masks, probes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jepa.errors import ConfigError
from jepa.models.heads import AttentiveClassifier, AttentivePooler, Projector

D, H = 16, 4


# ---------------------------------------------------------------------------------------------------------
# Independent NumPy (float64) implementation of the documented attentive-pooler formula.
# ---------------------------------------------------------------------------------------------------------

def _np(a):
  return np.asarray(a, dtype=np.float64)


def _lin(x, linear):
  return x @ _np(linear.kernel[...]) + (0.0 if linear.bias is None else _np(linear.bias[...]))


def _ln(x, norm, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * _np(norm.scale[...]) + _np(norm.bias[...])


_erf = np.vectorize(math.erf)


def _mlp(x, mlp):
  h = _lin(x, mlp.fc1)
  return _lin(0.5 * h * (1.0 + _erf(h / math.sqrt(2.0))), mlp.fc2)


def _mha(q, k, v, heads, valid=None):
  """q [B, n, D], k, v [B, N, D]; head h owns channels [h*d, (h+1)*d)."""
  b, n, dim = q.shape
  d = dim // heads
  out = np.zeros_like(q)
  for h in range(heads):
    sl = slice(h * d, (h + 1) * d)
    logits = np.einsum("bnd,bmd->bnm", q[..., sl], k[..., sl]) / math.sqrt(d)
    if valid is not None:
      logits = np.where(valid[:, None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out[..., sl] = np.einsum("bnm,bmd->bnd", w, v[..., sl])
  return out


def _np_cross_block(q, x, blk, heads, valid=None, normalise_query=False):
  y = _ln(x, blk.norm1)
  qin = _ln(q, blk.norm1) if normalise_query else q
  kv = _lin(y, blk.xattn.kv)
  dim = q.shape[-1]
  # kv's output channels: first D are the keys, last D the values.
  q = q + _mha(_lin(qin, blk.xattn.q), kv[..., :dim], kv[..., dim:], heads, valid)
  return q + _mlp(_ln(q, blk.norm2), blk.mlp)


def _np_self_block(x, blk, heads, valid=None):
  qkv = _lin(_ln(x, blk.norm1), blk.attn.qkv)
  dim = x.shape[-1]
  a = _mha(qkv[..., :dim], qkv[..., dim:2 * dim], qkv[..., 2 * dim:], heads, valid)
  x = x + _lin(a, blk.attn.proj)
  return x + _mlp(_ln(x, blk.norm2), blk.mlp)


def _np_pooler(pooler, x, heads, valid=None, normalise_query=False):
  x = _np(x)
  q = np.broadcast_to(_np(pooler.query[...]), (x.shape[0],) + pooler.query.shape[1:])
  if pooler.variant == "vjepa2":
    for blk in pooler.blocks:
      x = _np_self_block(x, blk, heads, valid)
    return _np_cross_block(q, x, pooler.cross, heads, valid, normalise_query)
  q = _np_cross_block(q, x, pooler.cross, heads, valid, normalise_query)
  for blk in pooler.blocks:
    q = _np_self_block(q, blk, heads)
  return q


def _randomise(module, key):
  """Replaces every parameter by noise so that LayerNorm scales/biases and zero biases are exercised."""
  params = nnx.state(module, nnx.Param)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  new = [0.3 * jax.random.normal(k, p.shape) + (1.0 if p.ndim == 1 else 0.0) for k, p in zip(keys, leaves)]
  nnx.update(module, jax.tree.unflatten(treedef, new))


# One compiled program per (module structure, input shapes) instead of one XLA compile per primitive per
# shape in eager mode: the faster way to run many small calls on CPU.
_call = nnx.jit(lambda m, x, valid: m(x, valid=valid))


def _run(module, x, valid=None):
  return _call(module, x, valid)


def _tokens(key, b=2, n=6):
  return jax.random.normal(key, (b, n, D)) * 1.5 + 0.5


# ---------------------------------------------------------------------------------------------------------
# Attentive pooler
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant,depth,num_queries", [("vjepa", 1, 1), ("vjepa", 2, 3), ("vjepa2", 3, 2)])
def test_pooler_matches_numpy_reference(variant, depth, num_queries):
  pooler = AttentivePooler(dim=D, heads=H, num_queries=num_queries, depth=depth, variant=variant,
                           rngs=nnx.Rngs(0))
  _randomise(pooler, jax.random.key(1))
  x = _tokens(jax.random.key(2))
  out = _run(pooler, x)
  assert out.shape == (2, num_queries, D) and out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out, np.float64), _np_pooler(pooler, x, H), rtol=1e-5, atol=1e-5)


def test_query_is_not_normalised():
  pooler = AttentivePooler(dim=D, heads=H, rngs=nnx.Rngs(0))
  _randomise(pooler, jax.random.key(3))
  x = _tokens(jax.random.key(4))
  out = np.asarray(_run(pooler, x), np.float64)
  # A reference that also ran the query through LN1 gives a clearly different answer, so the NumPy match
  # above pins "LN1 on x only".
  assert np.abs(out - _np_pooler(pooler, x, H, normalise_query=True)).max() > 1e-2
  # x enters only through LN1, which is invariant to a positive scale of each token ...
  np.testing.assert_allclose(_run(pooler, 3.0 * x), out, rtol=1e-4, atol=1e-4)
  # ... while the query is used raw: scaling it changes the result.
  q = pooler.query[...]
  pooler.query[...] = 3.0 * q
  assert np.abs(np.asarray(_run(pooler, x)) - out).max() > 1e-2
  pooler.query[...] = q
  # Changing LN1's parameters acts on x only: with scale 0 every token becomes LN1's bias, so the output no
  # longer depends on x at all.
  pooler.cross.norm1.scale[...] = jnp.zeros((D,))
  np.testing.assert_allclose(_run(pooler, x), _run(pooler, _tokens(jax.random.key(5))), rtol=1e-6, atol=1e-6)


def test_vjepa2_runs_self_attention_on_tokens_first():
  x = _tokens(jax.random.key(6), n=5)
  deep = AttentivePooler(dim=D, heads=H, variant="vjepa2", rngs=nnx.Rngs(0))
  assert len(deep.blocks) == 3  # default depth 4 = 3 self-attention blocks + the cross block
  out = _run(deep, x)
  assert out.shape == (2, 1, D)
  shallow = AttentivePooler(dim=D, heads=H, variant="vjepa2", depth=1, rngs=nnx.Rngs(0))
  assert len(shallow.blocks) == 0
  assert np.abs(np.asarray(out) - np.asarray(_run(shallow, x))).max() > 1e-4
  _randomise(deep, jax.random.key(7))
  got = np.asarray(_run(deep, x), np.float64)
  np.testing.assert_allclose(got, _np_pooler(deep, x, H), rtol=1e-5, atol=1e-5)
  # The same weights applied in the V-JEPA order (self blocks after, on the query) give another answer.
  deep.variant = "vjepa"
  assert np.abs(got - _np_pooler(deep, x, H)).max() > 1e-3


@pytest.mark.parametrize("variant", ["vjepa", "vjepa2"])
def test_valid_mask_ignores_padding(variant):
  pooler = AttentivePooler(dim=D, heads=H, num_queries=2, depth=2, variant=variant, rngs=nnx.Rngs(0))
  _randomise(pooler, jax.random.key(8))
  real = _tokens(jax.random.key(9), b=2, n=4)
  pad = 100.0 * jax.random.normal(jax.random.key(10), (2, 3, D))
  # Padding inserted in the middle and at the end: position must not matter, only the mask.
  x = jnp.concatenate([real[:, :2], pad[:, :1], real[:, 2:], pad[:, 1:]], axis=1)
  valid = jnp.array([[True, True, False, True, True, False, False]] * 2)
  np.testing.assert_allclose(_run(pooler, x, valid), _run(pooler, real), rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(_run(pooler, x)) - np.asarray(_run(pooler, real))).max() > 1e-3
  # Rows with different numbers of valid tokens.
  valid2 = jnp.array([[True, True, False, True, True, False, False],
                      [True, False, False, False, False, False, False]])
  got = _run(pooler, x, valid2)
  np.testing.assert_allclose(got[1:], _run(pooler, real[1:, :1]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(got, np.float64), _np_pooler(pooler, x, H, np.asarray(valid2)),
                             rtol=1e-5, atol=1e-5)


def test_pooler_init_follows_reference():
  pooler = AttentivePooler(dim=D, heads=H, variant="vjepa2", rngs=nnx.Rngs(0))
  assert pooler.query.shape == (1, 1, D)
  assert abs(float(jnp.std(pooler.query[...])) - 0.02) < 0.01
  # fc1 / fc2 kernels have 16 * 64 = 1024 entries: std estimates within a few percent (fixed seed).
  assert abs(float(jnp.std(pooler.cross.mlp.fc1.kernel[...])) / 0.02 - 1) < 0.08
  np.testing.assert_array_equal(pooler.cross.xattn.kv.bias[...], 0.0)
  assert pooler.cross.norm1.epsilon == 1e-5 and pooler.blocks[0].norm2.epsilon == 1e-5
  # V-JEPA 2's _rescale_blocks: self block i (1-based) divides proj and fc2 by sqrt(2 i); the cross block's
  # fc2 reuses the last self block's id (3).
  for i, blk in enumerate(pooler.blocks, 1):
    assert abs(float(jnp.std(blk.mlp.fc2.kernel[...])) * math.sqrt(2 * i) / 0.02 - 1) < 0.08
  assert abs(float(jnp.std(pooler.cross.mlp.fc2.kernel[...])) * math.sqrt(6) / 0.02 - 1) < 0.08
  assert pooler.cross.xattn.proj is None
  # V-JEPA: the cross block is layer 1, so its fc2 is divided by sqrt(2).
  v1 = AttentivePooler(dim=D, heads=H, rngs=nnx.Rngs(0))
  assert abs(float(jnp.std(v1.cross.mlp.fc2.kernel[...])) * math.sqrt(2) / 0.02 - 1) < 0.08


def test_optional_out_proj():
  pooler = AttentivePooler(dim=D, heads=H, out_proj=True, rngs=nnx.Rngs(0))
  assert pooler.cross.xattn.proj.kernel.shape == (D, D)
  assert _run(pooler, _tokens(jax.random.key(11))).shape == (2, 1, D)


def test_attentive_classifier():
  clf = AttentiveClassifier(dim=D, heads=H, num_classes=5, rngs=nnx.Rngs(0))
  x = _tokens(jax.random.key(12))
  logits = _run(clf, x)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  expected = _run(clf.pooler, x)[:, 0] @ clf.linear.kernel[...] + clf.linear.bias[...]
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_run(clf, x, jnp.ones(x.shape[:2], bool)), logits, rtol=1e-5, atol=1e-5)
  assert len(AttentiveClassifier(dim=D, heads=H, num_classes=5, variant="vjepa2",
                                 rngs=nnx.Rngs(0)).pooler.blocks) == 3
  bf16 = AttentiveClassifier(dim=D, heads=H, num_classes=5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  assert _run(bf16, x).dtype == jnp.float32


def test_pooler_bad_config():
  with pytest.raises(ConfigError):
    AttentivePooler(dim=D, heads=H, variant="vjepa3", rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError):
    AttentivePooler(dim=D, heads=5, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError):
    AttentivePooler(dim=D, heads=H, depth=0, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------------------------------------
# Projector and linear head
# ---------------------------------------------------------------------------------------------------------

def test_projector_layout_and_shapes():
  proj = Projector(in_dim=12, hidden_dim=32, out_dim=8, num_layers=3, rngs=nnx.Rngs(0))
  assert len(proj.layers) == 2
  assert [l.linear.kernel.shape for l in proj.layers] == [(12, 32), (32, 32)]
  # No bias before a BatchNorm: it would cancel exactly and get a zero gradient.
  assert all(l.linear.bias is None for l in proj.layers) and proj.out.bias is not None
  for layer in proj.layers:
    assert isinstance(layer.bn, nnx.BatchNorm) and layer.bn.num_features == 32
    assert layer.bn.momentum == 0.9 and layer.bn.epsilon == 1e-5
  assert isinstance(proj.out, nnx.Linear) and proj.out.kernel.shape == (32, 8)
  # Exactly one BatchNorm per hidden layer and none on the output.
  bns = [m for _, m in nnx.iter_graph(proj) if isinstance(m, nnx.BatchNorm)]
  assert len(bns) == 2
  x = jax.random.normal(jax.random.key(0), (6, 12))
  y = proj(x)
  assert y.shape == (6, 8) and y.dtype == jnp.float32
  # Hand-computed forward in train mode (batch statistics, biased variance).
  h = np.asarray(x, np.float64)
  for layer in proj.layers:
    h = _lin(h, layer.linear)
    h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5) * _np(layer.bn.scale[...]) + _np(layer.bn.bias[...])
    h = np.maximum(h, 0.0)
  np.testing.assert_allclose(y, _lin(h, proj.out), rtol=1e-4, atol=1e-5)
  # Eval mode: running statistics, examples independent.
  proj.eval()
  np.testing.assert_allclose(proj(x)[:1], proj(x[:1]), rtol=1e-5, atol=1e-6)


def test_projector_single_layer_and_bad_config():
  proj = Projector(in_dim=12, out_dim=4, num_layers=1, rngs=nnx.Rngs(0))
  assert len(proj.layers) == 0 and proj.out.kernel.shape == (12, 4)
  with pytest.raises(ConfigError):
    Projector(in_dim=12, num_layers=0, rngs=nnx.Rngs(0))
