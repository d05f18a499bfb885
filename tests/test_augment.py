"""Tests for jepa.data.augment: parameters are in range, recorded, and consistent with the output."""

import numpy as np
import pytest
from PIL import Image

from jepa.data import augment


def _image(h=40, w=60, c=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _ramp(h, w):
  """float32 [h, w, 3]: channel 0 = row, channel 1 = column coordinate of the pixel centre, in [0, 1]."""
  ys = (np.arange(h, dtype=np.float32) + 0.5) / h
  xs = (np.arange(w, dtype=np.float32) + 0.5) / w
  rows, cols = np.repeat(ys[:, None], w, 1), np.repeat(xs[None, :], h, 0)
  return np.stack([rows, cols, np.full((h, w), 0.5, np.float32)], axis=-1)


def test_to_rgb_and_to_float():
  gray = _image(c=1)
  rgb = augment.to_rgb(gray)
  assert rgb.shape == (40, 60, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])
  assert augment.to_rgb(_image()).shape == (40, 60, 3)
  f = augment.to_float(np.asarray([[[0, 255]]], np.uint8))
  assert f.dtype == np.float32 and f.tolist() == [[[0.0, 1.0]]]


@pytest.mark.parametrize("seed", range(20))
def test_random_resized_crop_params_in_range(seed):
  img = _image(37, 53)
  out, params = augment.random_resized_crop(img, np.random.default_rng(seed), 24, scale=(0.3, 1.0))
  assert out.shape == (24, 24, 3) and out.dtype == np.float32
  assert 0.0 <= out.min() and out.max() <= 1.0
  top, left, h, w = params["crop"]
  assert params["crop"].dtype == np.float32
  assert 0 <= top and 0 <= left and 0 < h <= 1 and 0 < w <= 1
  assert top + h <= 1 + 1e-6 and left + w <= 1 + 1e-6
  # Area in the scale range (up to the rounding of h and w to whole pixels), aspect in the ratio range.
  assert 0.3 - 0.06 <= h * w <= 1.0
  aspect = (w * 53) / (h * 37)
  assert 3 / 4 - 0.1 <= aspect <= 4 / 3 + 0.1


@pytest.mark.parametrize("seed", range(5))
def test_random_resized_crop_matches_explicit_crop(seed):
  img = _image(37, 53, seed=seed)
  out, params = augment.random_resized_crop(img, np.random.default_rng(seed), (20, 24))
  top, left, h, w = np.round(params["crop"] * np.asarray([37, 53, 37, 53])).astype(int)
  crop = Image.fromarray(img).crop((left, top, left + w, top + h))
  expected = np.asarray(crop.resize((24, 20), Image.BILINEAR))
  np.testing.assert_allclose(out, expected / 255.0, atol=1.5 / 255)


def test_random_resized_crop_content_follows_params():
  img = _ramp(64, 80)
  for seed in range(10):
    out, params = augment.random_resized_crop(img, np.random.default_rng(seed), 32)
    top, left, h, w = params["crop"]
    # The mean row / column coordinate of the output is the crop's centre.
    assert abs(out[..., 0].mean() - (top + h / 2)) < 2 / 64
    assert abs(out[..., 1].mean() - (left + w / 2)) < 2 / 80


def test_random_resized_crop_fallback_is_centre_crop():
  # A 10:1 strip cannot fit any crop with aspect in [3/4, 4/3] and area >= 90%: torchvision falls back to the
  # centre crop with the extreme ratio.
  img = _image(10, 100)
  _, params = augment.random_resized_crop(img, np.random.default_rng(0), 8, scale=(0.9, 1.0))
  top, left, h, w = params["crop"] * np.asarray([10, 100, 10, 100])
  assert (top, h) == (0, 10) and round(w) == 13 and round(left) == (100 - 13) // 2


def test_center_crop_resize():
  img = _image(30, 50)
  out = augment.center_crop_resize(img, 30)
  np.testing.assert_allclose(out, img[:, 10:40] / 255.0, atol=1e-6)  # same scale: a pure centre crop
  out = augment.center_crop_resize(_image(64, 96), 32, crop_fraction=0.875)
  assert out.shape == (32, 32, 3) and out.dtype == np.float32
  ramp = augment.center_crop_resize(_ramp(60, 90), 16)
  assert abs(ramp[..., 0].mean() - 0.5) < 1e-3 and abs(ramp[..., 1].mean() - 0.5) < 1e-3


def test_hflip():
  img = _image()
  out, params = augment.hflip(img, np.random.default_rng(0), p=1.0)
  assert params["flip"] and np.array_equal(out, augment.to_float(img)[:, ::-1])
  out, params = augment.hflip(img, np.random.default_rng(0), p=0.0)
  assert not params["flip"] and np.array_equal(out, augment.to_float(img))
  flips = [bool(augment.hflip(img, np.random.default_rng(s))[1]["flip"]) for s in range(200)]
  assert 60 < sum(flips) < 140


def test_color_jitter_params_recorded():
  img = augment.to_float(_image())
  for seed in range(10):
    out, params = augment.color_jitter(img, np.random.default_rng(seed), 0.4, 0.3, 0.2, 0.1, p=1.0)
    assert params["applied"]
    assert 0.6 <= params["brightness"] <= 1.4 and 0.7 <= params["contrast"] <= 1.3
    assert 0.8 <= params["saturation"] <= 1.2 and -0.1 <= params["hue"] <= 0.1
    assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    # The fixed order makes the output a function of the recorded factors.
    expected = augment.adjust_hue(augment.adjust_saturation(augment.adjust_contrast(
        augment.adjust_brightness(img, params["brightness"]), params["contrast"]), params["saturation"]),
                                  params["hue"])
    np.testing.assert_allclose(out, expected, atol=1e-6)
    factors = [params[k] for k in ("brightness", "contrast", "saturation", "hue")]
    np.testing.assert_allclose(augment.jitter_action(params), factors)


def test_color_jitter_p0_identity_and_same_stream():
  img = augment.to_float(_image())
  rng0, rng1 = np.random.default_rng(3), np.random.default_rng(3)
  out, params = augment.color_jitter(img, rng0, p=0.0)
  assert not params["applied"] and np.array_equal(out, img)
  np.testing.assert_array_equal(augment.jitter_action(params), [1, 1, 1, 0])
  _, params1 = augment.color_jitter(img, rng1, p=1.0)
  assert params["brightness"] == params1["brightness"] and params["hue"] == params1["hue"]
  assert rng0.uniform() == rng1.uniform()  # same number of draws whether applied or not


def test_brightness_closed_form():
  img = augment.to_float(_image())
  out, params = augment.color_jitter(img, np.random.default_rng(0), brightness=0.5, contrast=0, saturation=0,
                                     hue=0, p=1.0)
  np.testing.assert_allclose(out, np.clip(img * params["brightness"], 0, 1), atol=1e-6)


def test_hue_matches_colorsys():
  import colorsys  # pylint: disable=g-import-not-at-top
  px = np.random.default_rng(0).random((1, 64, 3)).astype(np.float32)
  out = augment.adjust_hue(px, 0.23)
  for got, p in zip(out[0], px[0]):
    h, s, v = colorsys.rgb_to_hsv(*p)
    np.testing.assert_allclose(got, colorsys.hsv_to_rgb((h + 0.23) % 1.0, s, v), atol=1e-5)


def test_grayscale():
  img = _image()
  out, params = augment.grayscale(img, np.random.default_rng(0), p=1.0)
  assert params["grayscale"] and out.shape == img.shape
  assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
  luma = augment.to_float(img) @ np.asarray([0.299, 0.587, 0.114], np.float32)
  np.testing.assert_allclose(out[..., 0], luma, atol=1e-6)
  out, params = augment.grayscale(img, np.random.default_rng(0), p=0.0)
  assert not params["grayscale"] and np.array_equal(out, augment.to_float(img))
  one = _image(c=1)
  assert augment.grayscale(one, np.random.default_rng(0), p=1.0)[0].shape == one.shape


def test_gaussian_blur():
  flat = np.full((20, 30, 3), 0.25, np.float32)
  out, params = augment.gaussian_blur(flat, np.random.default_rng(0), p=1.0, sigma=(0.5, 1.5))
  assert params["blur"] and 0.5 <= params["sigma"] <= 1.5
  np.testing.assert_allclose(out, flat, atol=1e-6)  # a normalised kernel keeps constants
  img = augment.to_float(_image())
  out, _ = augment.gaussian_blur(img, np.random.default_rng(0), p=1.0, sigma=(2.0, 2.0))
  assert out.std() < img.std() and abs(out.mean() - img.mean()) < 0.01
  out, params = augment.gaussian_blur(img, np.random.default_rng(0), p=0.0)
  assert not params["blur"] and np.array_equal(out, img)
  tiny = augment.to_float(_image(3, 3))  # kernel radius larger than the image
  assert augment.gaussian_blur(tiny, np.random.default_rng(0), p=1.0, sigma=(2.0, 2.0))[0].shape == (3, 3, 3)


def test_solarize_closed_form():
  img = augment.to_float(_image())
  out, params = augment.solarize(img, np.random.default_rng(0), p=1.0, threshold=0.4)
  assert params["solarize"]
  np.testing.assert_array_equal(out, np.where(img >= 0.4, 1.0 - img, img).astype(np.float32))
  out, params = augment.solarize(img, np.random.default_rng(0), p=0.0)
  assert not params["solarize"] and np.array_equal(out, img)


def test_normalize():
  img = np.asarray([[[0, 255, 128]]], np.uint8)
  out = augment.normalize(img)
  mean, std = np.asarray(augment.IMAGENET_MEAN), np.asarray(augment.IMAGENET_STD)
  np.testing.assert_allclose(out[0, 0], (np.asarray([0, 1, 128 / 255]) - mean) / std, rtol=1e-6)
  assert out.dtype == np.float32
  out = augment.normalize(np.full((2, 2, 1), 0.5, np.float32), mean=(0.5,), std=(0.25,))
  np.testing.assert_allclose(out, 0.0)


def _view(img, rng):
  img, crop = augment.random_resized_crop(img, rng, 16)
  img, flip = augment.hflip(img, rng)
  img, jit = augment.color_jitter(augment.to_rgb(img), rng)
  img, gray = augment.grayscale(img, rng, p=0.2)
  img, blur = augment.gaussian_blur(img, rng, p=0.5)
  img, sol = augment.solarize(img, rng, p=0.2)
  return augment.normalize(img), {**crop, **flip, **jit, **gray, **blur, **sol}


def test_deterministic_per_seed():
  img = _image(30, 30, c=1)
  a, pa = _view(img, np.random.default_rng(42))
  b, pb = _view(img, np.random.default_rng(42))
  np.testing.assert_array_equal(a, b)
  assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
  c, pc = _view(img, np.random.default_rng(43))
  assert not np.array_equal(a, c) and not np.array_equal(pa["crop"], pc["crop"])
