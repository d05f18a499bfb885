"""ResNet-18/34/50 backbones (He et al., 2016) as Flax NNX modules, without the classifier.

The layout follows torchvision's v1.5 ResNet (the stride of a bottleneck sits on its 3x3 conv) so parameter
counts match the PyTorch models minus `fc`:

| name     | block      | stages       | embed_dim | params (CIFAR stem) | params (ImageNet stem) |
|----------|------------|--------------|-----------|---------------------|------------------------|
| resnet18 | basic      | (2, 2, 2, 2) | 512       | 11,168,832          | 11,176,512             |
| resnet34 | basic      | (3, 4, 6, 3) | 512       | 21,276,992          | 21,284,672             |
| resnet50 | bottleneck | (3, 4, 6, 3) | 2048      | 23,500,352          | 23,508,032             |

Counts are `nnx.Param` leaves only (BatchNorm running statistics are `nnx.BatchStat`, not parameters).

BatchNorm and devices: under `jax.jit` with the batch axis sharded over devices, the batch mean and variance
are reductions over the *global* batch (XLA inserts the all-reduce), i.e. synchronised BatchNorm comes for
free. Only inside `shard_map` (per-device code) would BatchNorm see a per-device batch and need `axis_name`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jepa.errors import ConfigError
from jepa.models import conv as conv_lib

# PyTorch BatchNorm defaults expressed in Flax terms: torch's momentum 0.1 weights the *new* batch statistic,
# Flax's momentum weights the *old* running value, so torch 0.1 == Flax 0.9.
_BN_MOMENTUM = 0.9
_BN_EPS = 1e-5

# torchvision initialises convs with kaiming_normal_(mode="fan_out", nonlinearity="relu").
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")

_CONFIGS = {
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), block="basic"),
    "resnet34": dict(stage_sizes=(3, 4, 6, 3), block="basic"),
    "resnet50": dict(stage_sizes=(3, 4, 6, 3), block="bottleneck"),
}


def Conv(cin: int, cout: int, k: int, stride: int, *, impl: str, dtype: Any, rngs: nnx.Rngs) -> conv_lib.Conv:
  """Bias-free k x k conv with PyTorch's padding k // 2 and torchvision's init (jepa/models/conv.py Conv)."""
  return conv_lib.Conv(cin, cout, k, stride, impl=impl, use_bias=False, kernel_init=_conv_init, dtype=dtype,
                       rngs=rngs)


def _bn(features: int, *, zero_scale: bool = False, dtype: Any, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """BatchNorm with PyTorch's defaults; `zero_scale` zero-inits gamma (last BN of a residual branch)."""
  scale_init = nnx.initializers.zeros if zero_scale else nnx.initializers.ones
  return nnx.BatchNorm(features, momentum=_BN_MOMENTUM, epsilon=_BN_EPS, scale_init=scale_init,
                       use_running_average=False, dtype=dtype, rngs=rngs)


class _Shortcut(nnx.Module):
  """1x1 strided conv + BN, used when a block changes resolution or width."""

  def __init__(self, cin: int, cout: int, stride: int, *, impl: str, dtype: Any, rngs: nnx.Rngs):
    self.conv = Conv(cin, cout, 1, stride, impl=impl, dtype=dtype, rngs=rngs)
    self.bn = _bn(cout, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
  """Two 3x3 convs (ResNet-18/34). Output width = `width`."""

  expansion = 1

  def __init__(self, cin: int, width: int, stride: int, *, zero_init_residual: bool, impl: str, dtype: Any,
               rngs: nnx.Rngs):
    cout = width * self.expansion
    self.conv1 = Conv(cin, width, 3, stride, impl=impl, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(width, dtype=dtype, rngs=rngs)
    self.conv2 = Conv(width, cout, 3, 1, impl=impl, dtype=dtype, rngs=rngs)
    # Zero gamma makes each block start as the identity (Goyal et al., 2017), which helps early training.
    self.bn2 = _bn(cout, zero_scale=zero_init_residual, dtype=dtype, rngs=rngs)
    self.shortcut = (_Shortcut(cin, cout, stride, impl=impl, dtype=dtype, rngs=rngs)
                     if stride != 1 or cin != cout else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    res = x if self.shortcut is None else self.shortcut(x)
    return nnx.relu(y + res)


class BottleneckBlock(nnx.Module):
  """1x1 reduce, 3x3 (strided, torchvision v1.5), 1x1 expand x4 (ResNet-50)."""

  expansion = 4

  def __init__(self, cin: int, width: int, stride: int, *, zero_init_residual: bool, impl: str, dtype: Any,
               rngs: nnx.Rngs):
    cout = width * self.expansion
    self.conv1 = Conv(cin, width, 1, 1, impl=impl, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(width, dtype=dtype, rngs=rngs)
    self.conv2 = Conv(width, width, 3, stride, impl=impl, dtype=dtype, rngs=rngs)
    self.bn2 = _bn(width, dtype=dtype, rngs=rngs)
    self.conv3 = Conv(width, cout, 1, 1, impl=impl, dtype=dtype, rngs=rngs)
    self.bn3 = _bn(cout, zero_scale=zero_init_residual, dtype=dtype, rngs=rngs)
    self.shortcut = (_Shortcut(cin, cout, stride, impl=impl, dtype=dtype, rngs=rngs)
                     if stride != 1 or cin != cout else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    res = x if self.shortcut is None else self.shortcut(x)
    return nnx.relu(y + res)


_BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


class ResNet(nnx.Module):
  """ResNet backbone returning the global-average-pooled embedding.

  Train/eval mode is nnx's: `model.train()` makes BatchNorm normalise with the batch statistics and update
  its running averages in place (call it inside `nnx.jit`, or return the model from `jax.jit`, for the
  updates to persist); `model.eval()` makes it use the running averages and leaves them unchanged.

  Attributes:
    embed_dim: size F of the pooled embedding (512 for ResNet-18/34 at width 64, 2048 for ResNet-50).
  """

  def __init__(self, *, stage_sizes: Sequence[int] = (2, 2, 2, 2), block: str = "basic", width: int = 64,
               stage_widths: Sequence[int] = (), cifar_stem: bool, in_channels: int = 3,
               zero_init_residual: bool = True, conv: str = "auto", dtype: Any = None, rngs: nnx.Rngs):
    """Builds the network.

    Args:
      stage_sizes: number of blocks in each stage; stage i has width `width * 2**i`.
      block: "basic" (ResNet-18/34) or "bottleneck" (ResNet-50 and deeper).
      width: channels of the stem and first stage (64 for the standard models; small values for tests).
      stage_widths: the width of every stage, overriding `width * 2**i` (the stem keeps `width`); e.g. a
        wider last stage gives a larger embedding for little compute, since it runs at the lowest resolution.
      cifar_stem: True for small images (3x3 conv, stride 1, no max-pool); False for the ImageNet stem
        (7x7 conv stride 2, then 3x3 max-pool stride 2).
      in_channels: channels of the input images.
      zero_init_residual: zero-init the gamma of the last BatchNorm in each residual branch.
      conv: how the convolutions run, model.conv: 'auto' (im2col where XLA's CPU convolutions are slow),
        'xla' or 'im2col' (jepa/models/conv.py).
      dtype: compute dtype (parameters stay float32); None means float32.
      rngs: parameter initialisation RNGs.
    """
    if block not in _BLOCKS:
      raise ConfigError(f"model.block={block!r} is unknown: use one of {sorted(_BLOCKS)}")
    if not stage_sizes or any(int(n) < 1 for n in stage_sizes):
      raise ConfigError(f"model.stage_sizes={tuple(stage_sizes)} is invalid: give >= 1 block per stage")
    if stage_widths and (len(stage_widths) != len(stage_sizes) or any(int(w) < 1 for w in stage_widths)):
      raise ConfigError(f"stage_widths={tuple(stage_widths)} must give one positive width for each of the "
                        f"{len(stage_sizes)} stages, or be empty for width * 2**i")
    block_cls = _BLOCKS[block]
    self.cifar_stem = cifar_stem
    self.dtype = dtype

    stem_k, stem_s = (3, 1) if cifar_stem else (7, 2)
    self.stem_conv = Conv(in_channels, width, stem_k, stem_s, impl=conv, dtype=dtype, rngs=rngs)
    self.stem_bn = _bn(width, dtype=dtype, rngs=rngs)

    blocks = []
    cin = width
    for i, n in enumerate(stage_sizes):
      stage_width = int(stage_widths[i]) if stage_widths else width * 2**i
      for j in range(int(n)):
        # The first block of every stage but the first halves the resolution.
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(block_cls(cin, stage_width, stride, zero_init_residual=zero_init_residual,
                                impl=conv, dtype=dtype, rngs=rngs))
        cin = stage_width * block_cls.expansion
    self.blocks = nnx.List(blocks)
    self.embed_dim = cin

  def __call__(self, x: jax.Array, *, return_features: bool = False):
    """Embeds a batch of images.

    Args:
      x: images [B, H, W, C].
      return_features: also return the last stage's feature map.

    Returns:
      The pooled embedding [B, embed_dim] in float32; with `return_features`, the tuple
      (embedding, feature_map [B, h, w, embed_dim] float32).
    """
    if self.dtype is not None:
      x = x.astype(self.dtype)
    x = nnx.relu(self.stem_bn(self.stem_conv(x)))
    if not self.cifar_stem:
      # PyTorch's MaxPool2d(3, 2, padding=1) pads with -inf; flax's max_pool pads with the reduction's
      # init value (-inf) too, so the two agree on the border.
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for blk in self.blocks:
      x = blk(x)
    fmap = x.astype(jnp.float32)
    # Pool in float32: averaging many bf16 values loses precision.
    emb = jnp.mean(fmap, axis=(1, 2))
    if return_features:
      return emb, fmap
    return emb


def resnet(name: str, **kwargs) -> ResNet:
  """Builds a standard ResNet by name ("resnet18", "resnet34", "resnet50"); kwargs go to `ResNet`."""
  if name not in _CONFIGS:
    raise ConfigError(f"model.name={name!r} is not a known ResNet: use one of {sorted(_CONFIGS)}")
  for key in _CONFIGS[name]:
    if key in kwargs:
      raise ConfigError(f"model.{key} is fixed by model.name={name!r}: remove it, or build ResNet directly")
  return ResNet(**_CONFIGS[name], **kwargs)
