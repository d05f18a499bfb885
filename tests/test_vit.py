"""Tests for the ViT encoder and the position encodings (tiny sizes, CPU)."""

import math
import types

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa.errors import ConfigError
from jepa.models import factory
from jepa.models import posemb
from jepa.models import vit as vit_lib

ATOL = 1e-5


def _tiny(**kw):
  args = dict(image_size=16, patch_size=4, width=24, depth=2, heads=2, rngs=nnx.Rngs(0))
  args.update(kw)
  return vit_lib.ViT(**args)


@nnx.jit
def _jit_forward(model, x, idx, valid):
  return model(x, idx=idx, valid=valid)


def _fwd(model, x, idx=None, valid=None):
  """Jitted forward: one compile per model structure and shape beats op-by-op eager dispatch on CPU."""
  return _jit_forward(model, x, idx, valid)


def _images(b=2, size=16, seed=0):
  return jax.random.normal(jax.random.key(seed), (b, size, size, 3))


def _video(b=2, t=4, size=16, seed=1):
  return jax.random.normal(jax.random.key(seed), (b, t, size, size, 3))


# ---------------------------------------------------------------- shapes


def test_image_shapes_with_and_without_idx():
  model = _tiny()
  assert model.grid == (4, 4) and model.num_patches == 16
  x = _images()
  assert _fwd(model, x).shape == (2, 16, 24)
  idx = jnp.array([[0, 5, 9], [15, 2, 3]])
  out = _fwd(model, x, idx=idx)
  assert out.shape == (2, 3, 24) and out.dtype == jnp.float32


@pytest.mark.parametrize("pos", ["sincos_vjepa", "rope", "none"])
def test_video_shapes_with_and_without_idx(pos):
  model = _tiny(num_frames=4, tubelet_size=2, pos_embedding=pos)
  assert model.grid == (2, 4, 4) and model.num_patches == 32
  x = _video()
  assert _fwd(model, x).shape == (2, 32, 24)
  idx = jnp.array([[0, 17, 31, 4], [1, 2, 3, 30]])
  assert _fwd(model, x, idx=idx).shape == (2, 4, 24)


def test_non_square_images():
  model = _tiny(image_size=(8, 16), pos_embedding="rope")
  assert model.grid == (2, 4)
  assert _fwd(model, jnp.ones((1, 8, 16, 3))).shape == (1, 8, 24)


def test_return_all_layers():
  model = _tiny(depth=3)
  x = _images()
  out, layers = nnx.jit(lambda m, x: m(x, return_all_layers=True))(model, x)
  assert len(layers) == 3 and all(layer.shape == (2, 16, 24) for layer in layers)
  np.testing.assert_allclose(out, model.norm(layers[-1]), atol=ATOL)
  np.testing.assert_allclose(out, _fwd(model, x), atol=ATOL)


def test_bfloat16_compute_returns_float32_close_to_float32():
  x = _images()
  ref = _fwd(_tiny(), x)
  out = _fwd(_tiny(dtype=jnp.bfloat16), x)
  assert out.dtype == jnp.float32
  assert float(jnp.mean(jnp.abs(out - ref))) < 0.05


def test_patch_embed_matches_conv():
  """The flattened-patch matmul is a stride = kernel convolution with an HWIO / THWIO kernel."""
  model = _tiny(num_frames=4, tubelet_size=2, pos_embedding="sincos_vjepa")
  pe = model.patch_embed
  x = _video(b=1)
  y = pe(x)
  conv = jax.lax.conv_general_dilated(x, pe.kernel[...], window_strides=(2, 4, 4), padding="VALID",
                                      dimension_numbers=("NTHWC", "THWIO", "NTHWC"))
  np.testing.assert_allclose(y, conv.reshape(1, -1, 24) + pe.bias[...], atol=1e-4)
  assert pe.kernel.shape == (2, 4, 4, 3, 24)


# ---------------------------------------------------------------- sin-cos tables (independent loops)


def _freq(k, half):
  return 10000.0 ** (-k / half)


def test_sincos_1d():
  pos = np.array([0.0, 1.0, 2.5, 7.0])
  out = posemb.sincos_1d(pos, 6)
  for i, p in enumerate(pos):
    for j in range(6):
      fn = math.sin if j < 3 else math.cos
      assert out[i, j] == pytest.approx(fn(p * _freq(j % 3, 3)), abs=1e-6)


@pytest.mark.parametrize("layout", ["ijepa", "vjepa"])
def test_sincos_2d_layouts(layout):
  h, w, dim = 3, 5, 16
  table = posemb.sincos_2d_ijepa(h, w, dim) if layout == "ijepa" else posemb.sincos_2d_vjepa(h, w, dim)
  assert table.shape == (h * w, dim) and table.dtype == np.float32
  quarter = dim // 4
  for n in range(h * w):
    row, col = divmod(n, w)
    # I-JEPA: [sin col | cos col | sin row | cos row]; V-JEPA: [sin row | cos row | sin col | cos col].
    first, second = (col, row) if layout == "ijepa" else (row, col)
    for j in range(dim):
      part, k = divmod(j, quarter)
      coord = first if part < 2 else second
      fn = math.sin if part % 2 == 0 else math.cos
      assert table[n, j] == pytest.approx(fn(coord * _freq(k, quarter)), abs=1e-6)


def _loop_3d(t, h, w, dim, dims):
  """Per channel: axis from cumulative widths (t, h, w), each [sin | cos], truncated to dim."""
  out = np.zeros((t * h * w, dim))
  starts = np.cumsum([0, *dims])
  for n in range(t * h * w):
    coords = (n // (h * w), (n % (h * w)) // w, n % w)
    for j in range(dim):
      axis = int(np.searchsorted(starts, j, side="right") - 1)
      within, half = j - starts[axis], dims[axis] // 2
      fn = math.sin if within < half else math.cos
      out[n, j] = fn(coords[axis] * _freq(within % half, half))
  return out


def test_sincos_3d_uniform_power_truncation_1024():
  t, h, w = 2, 2, 3
  table = posemb.sincos_3d(t, h, w, 1024, uniform_power=True)
  assert table.shape == (12, 1024)
  # 2 * ceil(1024 / 6) = 342 channels per axis, 1026 in all: the last 2 (cosines of the column) are dropped.
  np.testing.assert_allclose(table, _loop_3d(t, h, w, 1024, (342, 342, 342)), atol=1e-5)
  cols = np.arange(12) % w
  np.testing.assert_allclose(table[:, 1023], np.cos(cols * _freq(168, 171)), atol=1e-6)


def test_sincos_3d_other_splits():
  np.testing.assert_allclose(posemb.sincos_3d(2, 3, 2, 384), _loop_3d(2, 3, 2, 384, (128,) * 3), atol=1e-5)
  np.testing.assert_allclose(posemb.sincos_3d(2, 3, 2, 32, uniform_power=False),
                             _loop_3d(2, 3, 2, 32, (16, 8, 8)), atol=1e-5)


def test_tables_are_constants_not_parameters():
  model = _tiny(num_frames=4, pos_embedding="sincos_vjepa")
  state = nnx.state(model)
  assert len(jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param)))) == 0
  sizes = {leaf.shape for leaf in jax.tree.leaves(state)}
  assert (32, 24) not in sizes and (1, 32, 24) not in sizes


def test_encoder_adds_the_documented_table():
  """With zero blocks' contribution removed, token n before the blocks = patch embedding + table[n]."""
  model = _tiny(pos_embedding="sincos_ijepa", depth=0)
  x = _images(b=1)
  expected = model.norm(model.patch_embed(x) + posemb.sincos_2d_ijepa(4, 4, 24))
  np.testing.assert_allclose(_fwd(model, x), expected, atol=ATOL)


# ---------------------------------------------------------------- masking


@pytest.mark.parametrize("pos,video", [("sincos_ijepa", False), ("sincos_vjepa", True), ("rope", True),
                                       ("rope", False)])
def test_idx_all_in_order_equals_unmasked_and_permutation_permutes(pos, video):
  model = _tiny(pos_embedding=pos, num_frames=4 if video else None)
  x = _video() if video else _images()
  n = model.num_patches
  full = _fwd(model, x)
  np.testing.assert_allclose(_fwd(model, x, idx=jnp.tile(jnp.arange(n)[None], (2, 1))), full, atol=ATOL)
  perms = jnp.stack([jax.random.permutation(jax.random.key(s), n) for s in range(2)])
  permuted = _fwd(model, x, idx=perms)
  np.testing.assert_allclose(permuted, jnp.take_along_axis(full, perms[..., None], axis=1), atol=ATOL)


@pytest.mark.parametrize("pos", ["sincos_ijepa", "rope"])
def test_invalid_keys_do_not_change_valid_outputs(pos):
  model = _tiny(pos_embedding=pos)
  x = _images()
  # Padding slots (valid False) in the middle and at the end, pointing at arbitrary tokens.
  idx = jnp.array([[3, 7, 0, 11, 12, 0], [1, 2, 9, 4, 8, 15]])
  valid = jnp.array([[True, True, False, True, True, False], [True, True, True, True, True, False]])
  out = _fwd(model, x, idx=idx, valid=valid)
  for b in range(2):
    keep = np.flatnonzero(np.asarray(valid[b]))
    alone = _fwd(model, x[b:b + 1], idx=idx[b:b + 1, keep])
    np.testing.assert_allclose(out[b, keep], alone[0], atol=ATOL)
  # Changing what the padding slots point at changes nothing valid.
  other = _fwd(model, x, idx=jnp.where(valid, idx, 5), valid=valid)
  keep = valid[..., None]
  np.testing.assert_allclose(jnp.where(keep, other, 0), jnp.where(keep, out, 0), atol=ATOL)


def test_jit_matches_eager():
  model = _tiny(pos_embedding="rope")
  x = _images()
  idx = jnp.array([[0, 7, 15, 4], [1, 2, 3, 10]])
  np.testing.assert_allclose(_fwd(model, x, idx=idx), model(x, idx=idx), atol=ATOL)


def test_remat_same_outputs_and_grads():
  x = _images()
  plain, remat = _tiny(), _tiny(remat=True)

  def loss(m):
    return jnp.sum(m(x) ** 2)

  l1, g1 = nnx.jit(nnx.value_and_grad(loss))(plain)
  l2, g2 = nnx.jit(nnx.value_and_grad(loss))(remat)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- RoPE


def _rope_loop(x, positions, layout):
  """Reference RoPE, channel by channel: [t | h | w | tail], adjacent-pair partner, tiled or paired angles."""
  n, heads, hd = x.shape
  sub = 2 * ((hd // 3) // 2)
  half = sub // 2
  out = x.copy()
  for i in range(n):
    for a in range(3):
      for hh in range(heads):
        block = x[i, hh, a * sub:(a + 1) * sub]
        for j in range(sub):
          k = j % half if layout == "reference" else j // 2
          theta = positions[i, a] * _freq(k, half)
          partner = -block[j + 1] if j % 2 == 0 else block[j - 1]
          out[i, hh, a * sub + j] = block[j] * math.cos(theta) + partner * math.sin(theta)
  return out


@pytest.mark.parametrize("layout", ["reference", "rotation"])
def test_rope_matches_channel_loop(layout):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 2, 32)).astype(np.float32)  # head_dim 32: sub 10, tail 2 (V-JEPA 2 predictor).
  positions = rng.integers(0, 8, size=(5, 3))
  out = posemb.rope_3d(jnp.asarray(x)[None], jnp.asarray(positions), layout=layout)[0]
  np.testing.assert_allclose(out, _rope_loop(x, positions, layout), atol=1e-5)
  np.testing.assert_array_equal(out[..., 30:], x[..., 30:])  # Unrotated tail.


def test_rope_sub_dims():
  assert [posemb.rope_sub_dim(d) for d in (64, 80, 32)] == [20, 26, 10]


def _scores(q, k, positions, layout):
  q = posemb.rope_3d(q, positions, layout=layout)
  k = posemb.rope_3d(k, positions, layout=layout)
  return jnp.einsum("bqhd,bkhd->bhqk", q, k)


def test_rope_rotation_scores_depend_only_on_relative_positions():
  kq, kk = jax.random.split(jax.random.key(0))
  q = jax.random.normal(kq, (1, 6, 2, 24))
  k = jax.random.normal(kk, (1, 6, 2, 24))
  positions = jax.random.randint(jax.random.key(1), (6, 3), 0, 8)
  shift = jnp.array([3, 5, 2])
  np.testing.assert_allclose(_scores(q, k, positions, "rotation"),
                             _scores(q, k, positions + shift, "rotation"), atol=1e-4)
  # The reference's tiled frequencies are not a rotation: the same shift changes the scores.
  diff = _scores(q, k, positions, "reference") - _scores(q, k, positions + shift, "reference")
  assert float(jnp.max(jnp.abs(diff))) > 1e-2


def test_rope_zero_position_is_identity():
  x = jax.random.normal(jax.random.key(0), (1, 3, 2, 24))
  np.testing.assert_allclose(posemb.rope_3d(x, jnp.zeros((3, 3))), x, atol=1e-6)


# ---------------------------------------------------------------- layout, init, sizes


def test_qkv_split_is_3_heads_head_dim():
  model = _tiny(width=24, heads=3)
  attn = model.blocks[0].attn
  attn.qkv.kernel[...] = jnp.zeros_like(attn.qkv.kernel[...])
  attn.qkv.bias[...] = jnp.arange(72, dtype=jnp.float32)
  q, k, v = attn.qkv_heads(jnp.ones((1, 2, 24)))
  assert q.shape == (1, 2, 3, 8)
  head, channel = np.meshgrid(np.arange(3), np.arange(8), indexing="ij")
  for part, arr in enumerate((q, k, v)):
    np.testing.assert_array_equal(arr[0, 0], part * 24 + head * 8 + channel)


def test_param_count_vit_b16():
  width, depth, heads, mlp_ratio = vit_lib.VIT_SIZES["base"]
  abstract = nnx.eval_shape(lambda: vit_lib.ViT(image_size=224, patch_size=16, width=width, depth=depth, heads=heads,
                                                mlp_ratio=mlp_ratio, rngs=nnx.Rngs(0)))
  count = sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  # 12 blocks x 7,087,872 + patch embed 590,592 + final norm 1,536. The reference state dict adds the fixed
  # pos_embed (196 x 768 = 150,528) for ~85.8M; here the table is not a parameter.
  assert count == 85_646_592
  assert count + 196 * 768 == 85_797_120


def test_giant_mlp_hidden_and_sizes():
  width, _, heads, mlp_ratio = vit_lib.VIT_SIZES["giant_xformers"]
  abstract = nnx.eval_shape(lambda: vit_lib.ViT(image_size=32, patch_size=16, width=width, depth=1, heads=heads,
                                                mlp_ratio=mlp_ratio, rngs=nnx.Rngs(0)))
  assert abstract.blocks[0].mlp.fc1.kernel.shape == (1408, 6144)
  assert abstract.blocks[0].attn.head_dim == 64
  assert vit_lib.VIT_SIZES["gigantic"] == (1664, 48, 16, 4.0)
  assert vit_lib.VIT_SIZES["huge"][:3] == (1280, 32, 16)


def test_gelu_is_exact():
  mlp = vit_lib.Mlp(width=8, hidden=16, rngs=nnx.Rngs(0))
  mlp.fc2.kernel[...] = jnp.ones_like(mlp.fc2.kernel[...])  # Sum the activations so their difference shows.
  x = 30.0 * jax.random.normal(jax.random.key(0), (4, 8))
  h = mlp.fc1(x)
  exact = mlp.fc2(0.5 * h * (1.0 + jax.scipy.special.erf(h / math.sqrt(2.0))))
  tanh = mlp.fc2(jax.nn.gelu(h, approximate=True))
  np.testing.assert_allclose(mlp(x), exact, atol=1e-5)
  assert float(jnp.max(jnp.abs(mlp(x) - tanh))) > 1e-3


def test_gelu_matches_the_normal_cdf_and_its_derivative():
  # x Phi(x) and its derivative Phi(x) + x phi(x), from math.erf in float64: across the range, including the
  # large-|x| tails where the erf form and the erfc form could part.
  x = np.linspace(-12.0, 12.0, 481).astype(np.float32)
  phi_cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.astype(np.float64)])
  pdf = np.exp(-0.5 * x.astype(np.float64) ** 2) / math.sqrt(2.0 * math.pi)
  np.testing.assert_allclose(vit_lib.gelu(jnp.asarray(x)), x * phi_cdf, rtol=1e-6, atol=1e-6)
  grad = jax.vmap(jax.grad(vit_lib.gelu))(jnp.asarray(x))
  np.testing.assert_allclose(grad, phi_cdf + x * pdf, rtol=1e-5, atol=1e-6)


def test_init_values():
  model = _tiny(width=64, heads=2, depth=3)  # Same shapes as the depth-scaled test: init ops compile once.
  blk = model.blocks[0]
  for ln in (blk.norm1, blk.norm2, model.norm):
    np.testing.assert_array_equal(ln.scale[...], 1.0)
    np.testing.assert_array_equal(ln.bias[...], 0.0)
  biases = (blk.attn.qkv.bias, blk.attn.proj.bias, blk.mlp.fc1.bias, blk.mlp.fc2.bias, model.patch_embed.bias)
  for bias in biases:
    np.testing.assert_array_equal(bias[...], 0.0)
  for kernel in (blk.attn.qkv.kernel, blk.mlp.fc1.kernel, model.blocks[1].attn.proj.kernel):
    assert float(jnp.std(kernel[...])) == pytest.approx(0.02, rel=0.05)
  assert model.blocks[0].norm1.epsilon == 1e-6


def test_depth_scaled_init():
  model = _tiny(width=64, heads=2, depth=3, depth_scaled_init=True)
  for layer, blk in enumerate(model.blocks, start=1):
    expected = 0.02 / math.sqrt(2 * layer)
    assert float(jnp.std(blk.attn.proj.kernel[...])) == pytest.approx(expected, rel=0.06)
    assert float(jnp.std(blk.mlp.fc2.kernel[...])) == pytest.approx(expected, rel=0.06)
    assert float(jnp.std(blk.attn.qkv.kernel[...])) == pytest.approx(0.02, rel=0.06)


def test_config_errors():
  with pytest.raises(ConfigError, match="model.encoder.heads"):
    _tiny(width=24, heads=5)
  with pytest.raises(ConfigError, match="model.pos_embedding"):
    _tiny(pos_embedding="learned")
  with pytest.raises(ConfigError, match="sincos_ijepa"):
    _tiny(num_frames=4, pos_embedding="sincos_ijepa")
  with pytest.raises(ConfigError, match="data.image_size"):
    _tiny(image_size=18)
  with pytest.raises(ConfigError, match="model.encoder.size"):
    factory.encoder_dims(types.SimpleNamespace(size="enormous"))  # The named sizes are resolved here.


# ---------------------------------------------------------------------------------------------------------
# Drop-path (stochastic depth)
# ---------------------------------------------------------------------------------------------------------

def test_drop_path_rates_are_linear_over_depth_and_validated():
  model = _tiny(depth=5, drop_path_rate=0.2)
  np.testing.assert_allclose([b.drop_path for b in model.blocks], [0.0, 0.05, 0.1, 0.15, 0.2], atol=1e-12)
  with pytest.raises(ConfigError, match="drop_path"):
    _tiny(drop_path_rate=1.0)


def test_drop_path_drops_or_rescales_each_branch_per_example():
  """Every example's output is one of the 4 keep/drop combinations of the two branches, computed by hand,
  and the drop frequency matches p."""
  p, b = 0.4, 256
  block = vit_lib.Block(width=16, heads=2, drop_path=p, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (b, 5, 16))
  out = np.asarray(block(x, rng=jax.random.key(7)))
  attn = block.attn(block.norm1(x))
  combos = {}
  for k1 in (0.0, 1.0):
    x1 = x + k1 * attn / (1 - p)
    for k2 in (0.0, 1.0):
      combos[(k1, k2)] = np.asarray(x1 + k2 * block.mlp(block.norm2(x1)) / (1 - p))
  chosen = []
  for i in range(b):
    hits = [c for c, ref in combos.items() if np.allclose(out[i], ref[i], atol=1e-5)]
    assert len(hits) == 1, (i, hits)
    chosen.append(hits[0])
  dropped = 2 * b - np.sum(chosen)  # Kept branches count 1 each.
  # 512 independent Bernoulli(0.4) draws: mean 204.8, sd 11.1; 5 sd either side.
  assert abs(dropped - 2 * b * p) < 5 * math.sqrt(2 * b * p * (1 - p))
  # Without a key, or with rate 0, the block is the plain residual block.
  plain = x + attn
  plain = plain + block.mlp(block.norm2(plain))
  np.testing.assert_allclose(block(x), plain, atol=1e-5)


def test_drop_path_in_the_encoder_is_keyed_and_remat_safe():
  x = _images(b=8)
  model = _tiny(depth=3, drop_path_rate=0.5)
  no_key = _fwd(model, x)
  np.testing.assert_allclose(_fwd(_tiny(depth=3), x), no_key, atol=1e-6)  # Same init; no key = no drop.
  key = jax.random.key(3)
  a, b = model(x, rng=key), model(x, rng=key)
  np.testing.assert_array_equal(a, b)  # Same key, same drops.
  assert not np.allclose(a, no_key, atol=1e-4)
  assert not np.allclose(a, model(x, rng=jax.random.key(4)), atol=1e-4)
  remat = _tiny(depth=3, drop_path_rate=0.5, remat=True)
  np.testing.assert_allclose(remat(x, rng=key), a, atol=1e-5)

  def loss(m, k):
    return jnp.mean(m(x, rng=k) ** 2)
  grads = nnx.grad(loss)(remat, key)
  ref = nnx.grad(loss)(model, key)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)):
    np.testing.assert_allclose(g, r, atol=1e-5)
