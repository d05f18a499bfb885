"""2-D convolutions as one matmul over gathered patches (im2col), where XLA's CPU convolutions are slow.

XLA's CPU backend runs a convolution and its two gradients as convolutions; at small feature maps and for
strided convolutions those kernels lose most of the machine. Gathering the k x k taps of every output pixel
into the channel axis turns the convolution into one [B*Ho*Wo, k*k*Cin] x [k*k*Cin, Cout] matmul, whose
gradients are a matmul and the transpose of the gather (pads and adds). Measured forward + backward on 2 cores
(Intel Xeon with AVX-512/AMX, 2026-12-03, batch 128, float32; experiments/results/conv_impl.md):

| input map, channels, stride | XLA conv | im2col |
|---|---|---|
| 24 x 24, 16 -> 16, 1 | 21.8 ms | 41.7 ms |
| 24 x 24, 16 -> 32, 2 | 14.4 ms | 7.4 ms |
| 6 x 6, 64 -> 256, 2 | 6.5 ms | 5.7 ms |
| 4 x 4, 64 -> 256, 2 | 25.4 ms | 2.6 ms |
| 2 x 2, 256 -> 256, 1 | 137.4 ms | 8.9 ms |

Stems on raw pixels are the third case: with 2-3 input channels XLA's CPU convolution keeps few lanes busy,
while im2col's matmul sees k*k*Cin taps (2-core AMD EPYC with AVX-512, 2026-12-04, forward + gradient of the
kernel only, as in training; experiments/results/conv_impl_world_model.md):

| input map, channels, batch | XLA conv | im2col |
|---|---|---|
| 65 x 65, 2 -> 16, 288 (world model's first conv) | 161.0 ms | 81.9 ms |
| 24 x 24, 3 -> 16, 128 (CIFAR ResNet stem) | 4.1 ms | 2.9 ms |
| 33 x 33, 16 -> 16, 288 (its residual blocks; gradients of x too) | 96.9 ms | 163.1 ms |

So `model.conv='auto'` uses im2col on the CPU backend for strided convolutions, for output maps of at most
3 x 3 pixels and for inputs of at most 4 channels, and XLA's convolution everywhere else (and on every other
backend, where the vendor kernels win). On whole steps the stems are a small part: the world model's default step
1.38 -> 1.34-1.37 s, LeJEPA's `cifar10_cpu` step unchanged within noise (0.32 s). The results are the same
convolution up to float reassociation (tests check it against NumPy, and both paths of the ResNet and of the
IMPALA encoder against each other).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jepa.errors import ConfigError

SETTINGS = ("auto", "xla", "im2col")

# 'auto' gathers patches for output maps up to this many pixels (3 x 3): the table in the docstring.
_SMALL_MAP = 9
# ... and for inputs of at most this many channels (stems on raw pixels): the second table.
_FEW_CHANNELS = 4


def check(setting: str) -> str:
  if setting not in SETTINGS:
    raise ConfigError(f"model.conv={setting!r} is unknown; use 'auto' (im2col where XLA's CPU convolutions are "
                      "slow), 'xla' or 'im2col'")
  return setting


def output_side(size: int, k: int, stride: int, padding: int) -> int:
  """Side of a convolution's output map: floor((size + 2 padding - k) / stride) + 1."""
  return (size + 2 * padding - k) // stride + 1


def use_im2col(setting: str, stride: int, out_pixels: int, cin: int) -> bool:
  """Whether a convolution with this stride, output map size (Ho * Wo) and input channels runs as im2col."""
  if check(setting) != "auto":
    return setting == "im2col"
  return jax.default_backend() == "cpu" and (stride > 1 or out_pixels <= _SMALL_MAP or cin <= _FEW_CHANNELS)


def im2col_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
  """Cross-correlation of NHWC `x` with an HWIO `kernel`, symmetric zero padding, equal strides.

  y[b, i, j, o] = sum_{u, v, c} xpad[b, s*i + u, s*j + v, c] * kernel[u, v, c, o]; the taps (u, v, c) are
  gathered in the kernel's own order, so the matmul takes the kernel reshaped without a transpose.
  """
  kh, kw, cin, cout = kernel.shape
  b, h, w, _ = x.shape
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  ho, wo = output_side(h, kh, stride, padding), output_side(w, kw, stride, padding)
  taps = [x[:, u:u + stride * (ho - 1) + 1:stride, v:v + stride * (wo - 1) + 1:stride, :]
          for u in range(kh) for v in range(kw)]
  patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
  y = jnp.dot(patches.reshape(b * ho * wo, kh * kw * cin), kernel.reshape(kh * kw * cin, cout))
  return y.reshape(b, ho, wo, cout)


class Conv(nnx.Conv):
  """k x k convolution with symmetric zero padding k // 2, run as XLA's convolution or as im2col (`impl`).

  Explicit padding rather than "SAME": for stride 2 on even inputs "SAME" pads (0, 1) while PyTorch pads
  (1, 1), which shifts the sampling grid and would break weight-converted parity. The parameters are
  nnx.Conv's (`kernel` [k, k, cin, cout], `bias` [cout]) either way, so checkpoints do not depend on `impl`.
  """

  def __init__(self, cin: int, cout: int, k: int, stride: int, *, impl: str, use_bias: bool, kernel_init: Any,
               bias_init: Any = nnx.initializers.zeros_init(), dtype: Any, rngs: nnx.Rngs):
    pad = k // 2
    super().__init__(cin, cout, (k, k), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                     use_bias=use_bias, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype, rngs=rngs)
    self.impl = check(impl)

  def __call__(self, x: jax.Array) -> jax.Array:
    k, stride, pad = self.kernel_size[0], self.strides[0], self.padding[0][0]
    out_pixels = output_side(x.shape[1], k, stride, pad) * output_side(x.shape[2], k, stride, pad)
    if not use_im2col(self.impl, stride, out_pixels, self.in_features):
      return super().__call__(x)
    kernel = self.kernel.value
    bias = self.bias.value if self.bias is not None else None
    if self.dtype is not None:
      x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
      bias = None if bias is None else bias.astype(self.dtype)
    y = im2col_conv(x, kernel, stride, pad)
    return y if bias is None else y + bias
