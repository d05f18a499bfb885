"""Tests for jepa.models.resnet: parameter counts, shapes, BatchNorm train/eval behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jepa.errors import ConfigError
from jepa.models.resnet import ResNet, resnet


def _num_params(model) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


# torchvision counts (with fc) minus the fc layer; the CIFAR stem's 3x3 conv has 64*3*(49-9) = 7,680 fewer
# weights than the 7x7 one. ResNet-18 CIFAR: 11,173,962 with a 10-way fc (the usual CIFAR ResNet-18),
# minus 512*10+10.
@pytest.mark.parametrize("name,cifar_stem,expected", [
    ("resnet18", True, 11_173_962 - (512 * 10 + 10)),
    ("resnet18", False, 11_689_512 - (512 * 1000 + 1000)),
    ("resnet34", False, 21_797_672 - (512 * 1000 + 1000)),
    ("resnet50", False, 25_557_032 - (2048 * 1000 + 1000)),
    ("resnet50", True, 25_557_032 - (2048 * 1000 + 1000) - 64 * 3 * (49 - 9)),
])
def test_param_count(name, cifar_stem, expected):
  # Abstract init: shapes only, no 11M-parameter arrays materialised.
  model = nnx.eval_shape(lambda: resnet(name, cifar_stem=cifar_stem, rngs=nnx.Rngs(0)))
  assert _num_params(model) == expected
  assert model.embed_dim == (2048 if name == "resnet50" else 512)


def test_resnet18_cifar_count_is_11168832():
  model = nnx.eval_shape(lambda: resnet("resnet18", cifar_stem=True, rngs=nnx.Rngs(0)))
  assert _num_params(model) == 11_168_832


# All small models below share stage_sizes=(1, 1) and width 8, so their initialisers hit the same compiled
# kernels (each new parameter shape costs an XLA compile on CPU).
@pytest.mark.parametrize("cifar_stem,hw,fmap_hw", [(True, 8, 4), (False, 16, 2)])
def test_basic_shapes(cifar_stem, hw, fmap_hw):
  # CIFAR stem keeps the resolution through stage 1 (8 -> 8 -> 4); the ImageNet stem divides it by 4
  # first (16 -> 8 -> 4 after the max-pool, then 4 -> 2).
  model = ResNet(stage_sizes=(1, 1), width=8, cifar_stem=cifar_stem, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, hw, hw, 3))
  emb, fmap = model(x, return_features=True)
  assert model.embed_dim == 16
  assert emb.shape == (2, 16) and emb.dtype == jnp.float32
  assert fmap.shape == (2, fmap_hw, fmap_hw, 16)
  np.testing.assert_allclose(emb, fmap.mean(axis=(1, 2)), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(model(x), emb)


def _basic_resnet_params(stem, widths, blocks_per_stage, cin=3):
  """Parameters of a basic-block ResNet counted by hand: the stem conv (bias-free) + BN, then per block two
  3x3 convs + BNs and, where the width or resolution changes, a 1x1 conv + BN shortcut."""
  count = cin * stem * 9 + 2 * stem
  prev = stem
  for i, w in enumerate(widths):
    for j in range(blocks_per_stage):
      count += prev * w * 9 + 2 * w + w * w * 9 + 2 * w
      if prev != w or (i > 0 and j == 0):
        count += prev * w + 2 * w
      prev = w
  return count


def test_stage_widths_set_each_stage_and_the_embedding():
  # A wider last stage only: the embedding is its width, and the parameters are the hand count above.
  model = nnx.eval_shape(lambda: resnet("resnet18", width=16, stage_widths=(16, 32, 64, 256), cifar_stem=True,
                                        rngs=nnx.Rngs(0)))
  assert model.embed_dim == 256
  assert _num_params(model) == _basic_resnet_params(16, (16, 32, 64, 256), 2)
  # The default widths are width * 2**i: the same hand count gives torchvision's ResNet-18.
  assert _basic_resnet_params(64, (64, 128, 256, 512), 2) == 11_168_832
  x = jax.ShapeDtypeStruct((2, 24, 24, 3), jnp.float32)
  emb, fmap = nnx.eval_shape(lambda m, x: m(x, return_features=True), model, x)
  assert emb.shape == (2, 256) and fmap.shape == (2, 3, 3, 256)


@pytest.mark.parametrize("name,cifar_stem,hw,fmap_hw,dim", [
    ("resnet18", True, 32, 4, 512), ("resnet18", False, 224, 7, 512), ("resnet50", False, 224, 7, 2048),
    ("resnet34", True, 32, 4, 512)])
def test_full_size_shapes_abstract(name, cifar_stem, hw, fmap_hw, dim):
  # Shape inference only (nothing is compiled or run): the four stages give strides 1, 2, 4, 8 after the
  # stem (CIFAR: 32 -> 4; ImageNet: 224 -> 56 after stem + max-pool -> 7).
  model = nnx.eval_shape(lambda: resnet(name, cifar_stem=cifar_stem, rngs=nnx.Rngs(0)))
  x = jax.ShapeDtypeStruct((2, hw, hw, 3), jnp.float32)
  emb, fmap = nnx.eval_shape(lambda m, x: m(x, return_features=True), model, x)
  assert emb.shape == (2, dim) and emb.dtype == jnp.float32
  assert fmap.shape == (2, fmap_hw, fmap_hw, dim)


def test_bottleneck_shapes_and_channels():
  model = ResNet(stage_sizes=(1, 1), block="bottleneck", width=4, cifar_stem=True, in_channels=1,
                 rngs=nnx.Rngs(0))
  out = model(jnp.ones((3, 8, 8, 1)))
  assert model.embed_dim == 4 * 2 * 4
  assert out.shape == (3, 32)


def test_bf16_compute_gives_float32_output_and_float32_params():
  model = ResNet(stage_sizes=(1, 1), width=8, cifar_stem=True, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  out = model(jnp.ones((2, 8, 8, 3)))
  assert out.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_zero_init_last_bn_gamma():
  model = ResNet(stage_sizes=(1, 1), width=8, cifar_stem=True, rngs=nnx.Rngs(0))
  for blk in model.blocks:
    np.testing.assert_array_equal(blk.bn2.scale[...], 0.0)
    np.testing.assert_array_equal(blk.bn1.scale[...], 1.0)
  model = ResNet(stage_sizes=(1, 1), block="bottleneck", width=4, cifar_stem=True, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(model.blocks[0].bn3.scale[...], 0.0)
  off = ResNet(stage_sizes=(1, 1), width=8, cifar_stem=True, zero_init_residual=False, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(off.blocks[0].bn2.scale[...], 1.0)


def _stem_stats(model):
  return np.asarray(model.stem_bn.mean[...]), np.asarray(model.stem_bn.var[...])


def test_batchnorm_train_vs_eval():
  model = ResNet(stage_sizes=(1, 1), width=8, cifar_stem=True, zero_init_residual=False, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3)) * 2.0 + 1.0

  # Train mode: batch statistics are used (an example's output depends on the rest of the batch) and the
  # running averages move towards them with momentum 0.9.
  model.train()
  mean0, var0 = _stem_stats(model)
  out_full = model(x)
  mean1, var1 = _stem_stats(model)
  assert not np.allclose(mean1, mean0) and not np.allclose(var1, var0)
  conv_out = np.asarray(model.stem_conv(x))
  np.testing.assert_allclose(mean1, 0.9 * mean0 + 0.1 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
  out_half = model(x[:2])
  assert not np.allclose(out_full[:2], out_half, atol=1e-4)

  # Eval mode: running averages are used and left unchanged, so each example is processed independently.
  model.eval()
  mean2, var2 = _stem_stats(model)
  out_a = model(x)
  out_b = model(x[:1])
  np.testing.assert_allclose(out_a[:1], out_b, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(_stem_stats(model)[0], mean2)
  np.testing.assert_array_equal(_stem_stats(model)[1], var2)


def test_batch_stats_update_persists_under_nnx_jit():
  model = ResNet(stage_sizes=(1, 1), width=8, cifar_stem=True, rngs=nnx.Rngs(0))
  model.train()

  @nnx.jit
  def forward(m, x):
    return m(x)

  before = _stem_stats(model)[0]
  forward(model, jnp.ones((2, 4, 4, 3)) * 3.0)
  assert not np.allclose(_stem_stats(model)[0], before)


def test_bad_config_raises():
  with pytest.raises(ConfigError):
    resnet("resnet101", cifar_stem=True, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError):
    ResNet(block="wide", cifar_stem=True, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError):
    ResNet(stage_sizes=(2, 0), cifar_stem=True, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError):
    resnet("resnet18", block="bottleneck", cifar_stem=True, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError, match="one positive width for each of the 2 stages"):
    ResNet(stage_sizes=(1, 1), stage_widths=(8, 16, 32), cifar_stem=True, rngs=nnx.Rngs(0))
