"""Per-example image augmentations in NumPy that return the parameters they sampled.

Every random function has the form ``f(img, rng, ...) -> (img, params)``: ``img`` is uint8 or float32
[H, W, C], ``rng`` a ``np.random.Generator`` (in the pipeline: the per-element generator grain derives from
(seed, element index)), and ``params`` a dict of NumPy scalars / small arrays describing what was done. The
parameters make each view's transformation explicit, which IWM needs as the predictor's "action" input, and
they make tests exact.

Conventions:
* Images are float32 in [0, 1] after the first operation (uint8 inputs are divided by 255); every function
  also accepts uint8.
* Grayscale images (C = 1) pass through geometric ops unchanged in channel count; :func:`to_rgb` repeats
  them to 3 channels (do it before colour ops and :func:`normalize` with 3-channel statistics).
* Each function draws a fixed number of values from ``rng`` whatever the outcome of its coin flip (except the
  crop's rejection loop, which follows torchvision), so the random stream, and hence every later parameter,
  does not depend on whether an earlier op fired.

A typical SSL view (SimCLR / DINO / I-JEPA style), in the order used here::

  img, crop = random_resized_crop(img, rng, 224)
  img, flip = hflip(img, rng)
  img = to_rgb(img)
  img, jit = color_jitter(img, rng)
  img, gray = grayscale(img, rng, p=0.2)
  img, blur = gaussian_blur(img, rng, p=0.5)
  img, sol = solarize(img, rng, p=0.0)
  img = normalize(img)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ITU-R 601-2 luma weights: the ones torchvision's rgb_to_grayscale and Pillow's convert('L') use.
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)

Params = dict[str, Any]


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
  """(height, width) from an int or a pair."""
  if isinstance(size, (int, np.integer)):
    return int(size), int(size)
  h, w = size
  return int(h), int(w)


def to_float(img: np.ndarray) -> np.ndarray:
  """float32 in [0, 1]: uint8 is divided by 255; floating input is cast (assumed already in [0, 1])."""
  img = np.asarray(img)
  if img.dtype == np.uint8:
    return img.astype(np.float32) * np.float32(1.0 / 255.0)
  return img.astype(np.float32, copy=False)


def to_rgb(img: np.ndarray) -> np.ndarray:
  """Repeats a 1-channel image [H, W, 1] (or [H, W]) to 3 channels; 3-channel images pass through."""
  img = np.asarray(img)
  if img.ndim == 2:
    img = img[:, :, None]
  if img.shape[-1] == 1:
    return np.repeat(img, 3, axis=-1)
  return img


def _resize_box(img: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int],
                crop_first: bool = False) -> np.ndarray:
  """Resizes the region ``box`` = (left, top, right, bottom) of ``img`` to ``size`` = (h, w): float32 [0, 1].

  Uses Pillow's bilinear filter, which widens its support when downscaling (antialiasing, like torchvision's
  PIL backend and ``antialias=True``). With ``crop_first`` (integer boxes) the region is cut out first, so the
  filter sees only the crop, exactly as torchvision's ``resized_crop`` (crop, then resize); otherwise Pillow
  reads the (possibly fractional) box in place and the filter may use pixels just outside it. uint8 inputs are
  resized as 8-bit images (the fast path); float inputs channel by channel in mode 'F'.
  """
  out_h, out_w = size
  img = np.asarray(img)
  if crop_first:
    left, top, right, bottom = (int(v) for v in box)
    img = img[top:bottom, left:right]
    box = (0, 0, right - left, bottom - top)
  if img.ndim == 2:
    img = img[:, :, None]
  channels = img.shape[-1]
  if img.dtype == np.uint8 and channels in (1, 3):
    pil = Image.fromarray(np.ascontiguousarray(img[:, :, 0] if channels == 1 else img))
    out = np.asarray(pil.resize((out_w, out_h), Image.BILINEAR, box=box), dtype=np.uint8)
    return to_float(out.reshape(out_h, out_w, channels))
  img = to_float(img)
  planes = [np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, c]), mode="F").resize(
      (out_w, out_h), Image.BILINEAR, box=box)) for c in range(channels)]
  return np.stack(planes, axis=-1).astype(np.float32, copy=False)


def crop_params(height: int, width: int, rng: np.random.Generator, scale: tuple[float, float] = (0.3, 1.0),
                ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """Samples a crop (top, left, h, w) in pixels with torchvision's ``RandomResizedCrop.get_params`` rule.

  Up to 10 tries of (area fraction ~ U(scale), log aspect ~ U(log ratio)); if none fits, a centre crop of
  the whole image clamped to the ratio range.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(img: np.ndarray, rng: np.random.Generator, size: int | tuple[int, int],
                        scale: tuple[float, float] = (0.3, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[np.ndarray, Params]:
  """Crops a random region (torchvision semantics, see :func:`crop_params`) and resizes it to ``size``.

  Args:
    img: uint8 or float32 [H, W, C].
    rng: random generator.
    size: output size, int or (height, width).
    scale: range of the crop area as a fraction of the image area.
    ratio: range of the crop aspect ratio (width / height).

  Returns:
    float32 [size_h, size_w, C] in [0, 1], and ``{'crop': float32 [4]}`` = (top, left, height, width) of the
    crop divided by the image (H, W, H, W), so in [0, 1] whatever the resolution.
  """
  height, width = img.shape[:2]
  top, left, h, w = crop_params(height, width, rng, scale, ratio)
  out = _resize_box(img, (left, top, left + w, top + h), _size2(size), crop_first=True)
  crop = np.asarray([top / height, left / width, h / height, w / width], np.float32)
  return out, {"crop": crop}


def center_crop_resize(img: np.ndarray, size: int | tuple[int, int],
                       crop_fraction: float = 1.0) -> np.ndarray:
  """Eval transform: resize the short side to ``size / crop_fraction``, then take the central ``size``.

  Done as a single resize of the equivalent central box of the input (no intermediate image). With
  ``crop_fraction=0.875`` and size 224 this is the usual "resize 256, centre-crop 224".

  Returns:
    float32 [size_h, size_w, C] in [0, 1].
  """
  out_h, out_w = _size2(size)
  height, width = img.shape[:2]
  # Scale factor from input to the resized image whose short side is max(out) / crop_fraction.
  s = (max(out_h, out_w) / crop_fraction) / min(height, width)
  box_h, box_w = min(height, out_h / s), min(width, out_w / s)
  top, left = (height - box_h) / 2, (width - box_w) / 2
  return _resize_box(img, (left, top, left + box_w, top + box_h), (out_h, out_w))


def hflip(img: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> tuple[np.ndarray, Params]:
  """Flips left-right with probability ``p``. Returns float32 [0, 1] and ``{'flip': bool}``."""
  flip = bool(rng.uniform() < p)
  img = to_float(img)
  return (img[:, ::-1] if flip else img), {"flip": np.bool_(flip)}


def _gray(img: np.ndarray) -> np.ndarray:
  """Luma [H, W, 1] of a float [H, W, 3] image (or the image itself if single-channel)."""
  if img.shape[-1] == 1:
    return img
  return (img @ _LUMA)[:, :, None]


def _rgb_to_hsv(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """HSV with hue in [0, 1), following torchvision's ``_rgb2hsv``."""
  r, g, b = img[..., 0], img[..., 1], img[..., 2]
  maxc = np.maximum(np.maximum(r, g), b)
  minc = np.minimum(np.minimum(r, g), b)
  delta = maxc - minc
  gray = delta == 0
  safe_delta = np.where(gray, np.float32(1.0), delta)
  s = delta / np.where(maxc == 0, np.float32(1.0), maxc)
  rc = (maxc - r) / safe_delta
  gc = (maxc - g) / safe_delta
  bc = (maxc - b) / safe_delta
  h = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
  h = np.where(gray, 0.0, h)
  h = np.mod(h / 6.0, 1.0)
  return h.astype(np.float32), s.astype(np.float32), maxc


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
  """RGB of HSV (hue in [0, 1)) by the closed form c_n = v - v s clip(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6
  with n = 5, 3, 1 for r, g, b: the same values as the six-sector table, in a few whole-array operations."""
  h6, vs = (h * 6.0).astype(np.float32), (v * s).astype(np.float32)
  out = np.empty(h.shape + (3,), np.float32)
  for c, n in enumerate((5.0, 3.0, 1.0)):
    k = np.mod(h6 + np.float32(n), np.float32(6.0))
    out[..., c] = v - vs * np.clip(np.minimum(k, np.float32(4.0) - k), 0.0, 1.0)
  return out


def adjust_brightness(img: np.ndarray, factor: float) -> np.ndarray:
  return np.clip(img * np.float32(factor), 0.0, 1.0)


def adjust_contrast(img: np.ndarray, factor: float) -> np.ndarray:
  """Blends with the mean luma (a scalar), as torchvision does."""
  mean = np.float32(_gray(img).mean())
  return np.clip((img - mean) * np.float32(factor) + mean, 0.0, 1.0)


def adjust_saturation(img: np.ndarray, factor: float) -> np.ndarray:
  """Blends with the per-pixel luma; a no-op on 1-channel images."""
  if img.shape[-1] == 1:
    return img
  gray = _gray(img)
  return np.clip((img - gray) * np.float32(factor) + gray, 0.0, 1.0)


def adjust_hue(img: np.ndarray, shift: float) -> np.ndarray:
  """Rotates the hue by ``shift`` turns (in [-0.5, 0.5]) in HSV space; a no-op on 1-channel images."""
  if img.shape[-1] == 1 or shift == 0.0:
    return img
  h, s, v = _rgb_to_hsv(img)
  h = np.mod(h + np.float32(shift), 1.0)
  return _hsv_to_rgb(h, s, v)


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.2, hue: float = 0.1, p: float = 0.8) -> tuple[np.ndarray, Params]:
  """With probability ``p``, adjusts brightness, contrast, saturation and hue, in that fixed order.

  Factors are sampled as in torchvision's ``ColorJitter``: brightness, contrast and saturation factors from
  U(max(0, 1 - x), 1 + x), the hue shift from U(-hue, hue) (in turns of the colour wheel). torchvision applies
  the four adjustments in a random order; here the order is fixed (brightness, contrast, saturation, hue) so
  that the four factors alone define the transformation: a well-defined action vector for IWM.

  All five random numbers are drawn whether or not the jitter is applied.

  Returns:
    float32 [0, 1] image, and ``{'brightness', 'contrast', 'saturation', 'hue'}`` (float32, the sampled
    factors, recorded even when not applied) plus ``'applied'`` (bool). The effective transformation is the
    identity (1, 1, 1, 0) when ``applied`` is False; see :func:`jitter_action`.
  """
  apply = bool(rng.uniform() < p)
  b = rng.uniform(max(0.0, 1.0 - brightness), 1.0 + brightness)
  c = rng.uniform(max(0.0, 1.0 - contrast), 1.0 + contrast)
  s = rng.uniform(max(0.0, 1.0 - saturation), 1.0 + saturation)
  h = rng.uniform(-hue, hue)
  img = to_float(img)
  if apply:
    img = adjust_brightness(img, b)
    img = adjust_contrast(img, c)
    img = adjust_saturation(img, s)
    img = adjust_hue(img, h)
  params = {"brightness": np.float32(b), "contrast": np.float32(c), "saturation": np.float32(s),
            "hue": np.float32(h), "applied": np.bool_(apply)}
  return img, params


def jitter_action(params: Params) -> np.ndarray:
  """Effective jitter factors float32 [4] (brightness, contrast, saturation, hue); identity if not applied.

  Use this as the colour part of an IWM action vector.
  """
  if not bool(params["applied"]):
    return np.asarray([1.0, 1.0, 1.0, 0.0], np.float32)
  keys = ("brightness", "contrast", "saturation", "hue")
  return np.asarray([params[k] for k in keys], np.float32)


def grayscale(img: np.ndarray, rng: np.random.Generator, p: float = 0.2) -> tuple[np.ndarray, Params]:
  """With probability ``p``, replaces every channel by the luma (channel count kept).

  Returns float32 [0, 1] and ``{'grayscale': bool}``.
  """
  apply = bool(rng.uniform() < p)
  img = to_float(img)
  if apply and img.shape[-1] != 1:
    img = np.repeat(_gray(img), img.shape[-1], axis=-1)
  return img, {"grayscale": np.bool_(apply)}


def _gaussian_kernel(sigma: float) -> np.ndarray:
  radius = max(1, int(math.ceil(3.0 * sigma)))
  x = np.arange(-radius, radius + 1, dtype=np.float32)
  k = np.exp(-0.5 * (x / np.float32(sigma)) ** 2)
  return k / k.sum()


def _blur_axis(img: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
  """1-D convolution along ``axis`` with reflect padding, as a sum of shifted copies (kernels are short)."""
  radius = len(kernel) // 2
  n = img.shape[axis]
  # 'reflect' padding needs radius < n; for tiny images fall back to edge-symmetric padding.
  mode = "reflect" if radius < n else "symmetric"
  pad = [(0, 0)] * img.ndim
  pad[axis] = (radius, radius)
  padded = np.pad(img, pad, mode=mode)
  out = np.zeros_like(img)
  for i, k in enumerate(kernel):
    out += k * np.take(padded, np.arange(i, i + n), axis=axis)
  return out


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, p: float = 0.5,
                  sigma: tuple[float, float] = (0.1, 2.0)) -> tuple[np.ndarray, Params]:
  """With probability ``p``, blurs with a Gaussian of std ``sigma ~ U(sigma)`` pixels.

  The kernel is separable with radius ceil(3 sigma) and reflect padding (like PIL's GaussianBlur(radius=sigma)
  used by DINO / I-JEPA, up to the kernel truncation). Returns float32 [0, 1] and
  ``{'blur': bool, 'sigma': float32}`` (sigma recorded even when not applied).
  """
  apply = bool(rng.uniform() < p)
  s = float(rng.uniform(sigma[0], sigma[1]))
  img = to_float(img)
  if apply:
    kernel = _gaussian_kernel(s)
    img = _blur_axis(_blur_axis(img, kernel, 0), kernel, 1)
  return img, {"blur": np.bool_(apply), "sigma": np.float32(s)}


def solarize(img: np.ndarray, rng: np.random.Generator, p: float = 0.2,
             threshold: float = 0.5) -> tuple[np.ndarray, Params]:
  """With probability ``p``, inverts pixels at or above ``threshold``: x -> 1 - x where x >= threshold.

  Returns float32 [0, 1] and ``{'solarize': bool}``.
  """
  apply = bool(rng.uniform() < p)
  img = to_float(img)
  if apply:
    img = np.where(img >= np.float32(threshold), np.float32(1.0) - img, img)
  return img, {"solarize": np.bool_(apply)}


def normalize(img: np.ndarray, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD) -> np.ndarray:
  """(img - mean) / std per channel, float32. uint8 input is first scaled to [0, 1].

  A 1-channel image with 3-channel statistics uses the mean of the statistics (call :func:`to_rgb` first to
  keep 3 channels instead).
  """
  img = to_float(img)
  mean_a = np.asarray(mean, np.float32)
  std_a = np.asarray(std, np.float32)
  if img.shape[-1] != mean_a.size:
    if img.shape[-1] == 1:
      mean_a, std_a = mean_a.mean(keepdims=True), std_a.mean(keepdims=True)
    else:
      raise ValueError(f"normalize: image has {img.shape[-1]} channels, statistics have {mean_a.size}")
  return (img - mean_a) * (np.float32(1.0) / std_a)
