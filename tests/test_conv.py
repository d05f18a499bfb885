"""Tests for jepa.models.conv: im2col convolution against a NumPy loop, the ResNet's two conv paths against each
other (outputs, gradients, parameter trees), and model.conv's selection rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jepa.errors import ConfigError
from jepa.models import conv
from jepa.models.resnet import ResNet
from jepa.models.world_model import ImpalaEncoder


def _numpy_conv(x, kernel, stride, pad):
  """y[b, i, j, o] = sum_{u, v, c} xpad[b, s*i + u, s*j + v, c] kernel[u, v, c, o], by explicit loops."""
  kh, kw, _, cout = kernel.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho = (xp.shape[1] - kh) // stride + 1
  wo = (xp.shape[2] - kw) // stride + 1
  y = np.zeros((x.shape[0], ho, wo, cout))
  for i in range(ho):
    for j in range(wo):
      window = xp[:, stride * i:stride * i + kh, stride * j:stride * j + kw, :]
      y[:, i, j] = np.einsum("buvc,uvco->bo", window, kernel)
  return y


@pytest.mark.parametrize("k,stride,pad,hw", [(3, 1, 1, 5), (3, 2, 1, 6), (3, 2, 1, 5), (1, 2, 0, 6), (7, 2, 3, 9),
                                             (3, 1, 1, 2)])
def test_im2col_matches_numpy(k, stride, pad, hw):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, hw, hw, 3))
  kernel = rng.normal(size=(k, k, 3, 4))
  got = jax.jit(conv.im2col_conv, static_argnums=(2, 3))(jnp.asarray(x, jnp.float32),
                                                           jnp.asarray(kernel, jnp.float32), stride, pad)
  np.testing.assert_allclose(got, _numpy_conv(x, kernel, stride, pad), rtol=1e-4, atol=1e-4)


@nnx.jit
def _loss_and_grads(model, x):
  return nnx.value_and_grad(lambda m: jnp.sum(m(x) ** 2))(model)


@pytest.mark.parametrize("cifar_stem,hw", [(True, 8), (False, 16)])
def test_resnet_im2col_equals_xla_conv(cifar_stem, hw):
  # Same seed, so the same parameters; 'im2col' on every conv (stem, 3x3s, strided 1x1 shortcuts) against
  # XLA's convolution: the same loss and gradients up to float reassociation, and the same parameter tree.
  x = jax.random.normal(jax.random.key(1), (4, hw, hw, 3))
  models = {impl: ResNet(stage_sizes=(1, 1), width=8, cifar_stem=cifar_stem, conv=impl, rngs=nnx.Rngs(0))
            for impl in ("xla", "im2col")}
  (loss_x, grads_x), (loss_i, grads_i) = (_loss_and_grads(m, x) for m in models.values())
  assert jax.tree.structure(nnx.state(models["xla"])) == jax.tree.structure(nnx.state(models["im2col"]))
  np.testing.assert_allclose(loss_i, loss_x, rtol=1e-5)
  for gx, gi in zip(jax.tree.leaves(grads_x), jax.tree.leaves(grads_i)):
    np.testing.assert_allclose(gi, gx, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(gx))))


def test_impala_im2col_equals_xla_conv():
  # The world model's encoder (biased 3x3 convs, max-pools, residual blocks) on both paths: same loss and
  # gradients, including the biases', which im2col adds after the matmul.
  x = jax.random.normal(jax.random.key(1), (3, 17, 17, 2))
  models = {impl: ImpalaEncoder((4, 8), 1, 6, img_size=17, conv=impl, dtype=None, rngs=nnx.Rngs(0))
            for impl in ("xla", "im2col")}
  (loss_x, grads_x), (loss_i, grads_i) = (_loss_and_grads(m, x) for m in models.values())
  assert jax.tree.structure(nnx.state(models["xla"])) == jax.tree.structure(nnx.state(models["im2col"]))
  np.testing.assert_allclose(loss_i, loss_x, rtol=1e-5)
  # Reassociation error scales with the largest gradient: the LayerNorm's leaves sum terms that nearly cancel.
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_x))
  for gx, gi in zip(jax.tree.leaves(grads_x), jax.tree.leaves(grads_i)):
    np.testing.assert_allclose(gi, gx, rtol=1e-4, atol=1e-5 * scale)


def test_auto_rule_and_bad_setting():
  on_cpu = jax.default_backend() == "cpu"
  assert conv.use_im2col("auto", 2, 144, 16) == on_cpu       # strided
  assert conv.use_im2col("auto", 1, 9, 16) == on_cpu         # 3 x 3 output map
  assert conv.use_im2col("auto", 1, 4225, 2) == on_cpu       # a stem on 2-channel frames
  assert not conv.use_im2col("auto", 1, 16, 16)              # 4 x 4, stride 1, 16 channels: XLA's convolution
  assert conv.use_im2col("im2col", 1, 1024, 16) and not conv.use_im2col("xla", 2, 1, 2)
  with pytest.raises(ConfigError, match="model.conv='fft' is unknown"):
    ResNet(stage_sizes=(1,), width=8, cifar_stem=True, conv="fft", rngs=nnx.Rngs(0))
