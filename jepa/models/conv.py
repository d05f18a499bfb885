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

So `model.conv='auto'` uses im2col on the CPU backend for strided convolutions and for output maps of at most
3 x 3 pixels, and XLA's convolution everywhere else (and on every other backend, where the vendor kernels
win). The results are the same convolution up to float reassociation (a test checks both against NumPy).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jepa.errors import ConfigError

SETTINGS = ("auto", "xla", "im2col")

# 'auto' gathers patches for output maps up to this many pixels (3 x 3): the table in the docstring.
_SMALL_MAP = 9


def check(setting: str) -> str:
  if setting not in SETTINGS:
    raise ConfigError(f"model.conv={setting!r} is unknown; use 'auto' (im2col where XLA's CPU convolutions are "
                      "slow), 'xla' or 'im2col'")
  return setting


def output_side(size: int, k: int, stride: int, padding: int) -> int:
  """Side of a convolution's output map: floor((size + 2 padding - k) / stride) + 1."""
  return (size + 2 * padding - k) // stride + 1


def use_im2col(setting: str, stride: int, out_pixels: int) -> bool:
  """Whether a convolution with this stride and output map size (Ho * Wo) runs as im2col under `setting`."""
  if check(setting) != "auto":
    return setting == "im2col"
  return jax.default_backend() == "cpu" and (stride > 1 or out_pixels <= _SMALL_MAP)


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
