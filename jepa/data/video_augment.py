"""Clip augmentations: one set of parameters for every frame, so that a clip stays a coherent video.

:func:`random_resized_crop_video` (one random box for all frames), :func:`hflip_video` (one draw per clip) and
:func:`center_crop_resize_video` (the eval transform) take uint8 or float32 clips [T, H, W, C] and return
float32 clips in [0, 1] (the random ones with their parameters); crops are resized frame by frame with
:mod:`jepa.data.augment`'s image resize, so image and video views of the same content match.
:mod:`jepa.data.video` re-exports them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jepa.data import augment


def _resize_frames(clip: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int],
                   crop_first: bool) -> np.ndarray:
  # The image crops' resize (Pillow bilinear with antialiasing), frame by frame, so image and video views of
  # the same content match.
  resize = augment._resize_box  # pylint: disable=protected-access
  return np.stack([resize(frame, box, size, crop_first=crop_first) for frame in clip])


def random_resized_crop_video(clip: np.ndarray, rng: np.random.Generator, size: int,
                              scale: tuple[float, float] = (0.3, 1.0),
                              ratio: tuple[float, float] = (0.75, 1.35)) -> tuple[np.ndarray, dict[str, Any]]:
  """Random resized crop (torchvision's rule, :func:`augment.crop_params`) with one box for all frames.

  Args:
    clip: uint8 or float32 [T, H, W, C].
    rng: random generator.
    size: output side.
    scale: crop area range as a fraction of the frame.
    ratio: crop aspect (width / height) range; V-JEPA uses (0.75, 1.35).

  Returns:
    float32 [T, size, size, C] in [0, 1], and ``{'crop': (top, left, h, w) / (H, W, H, W)}``.
  """
  height, width = clip.shape[1:3]
  top, left, h, w = augment.crop_params(height, width, rng, scale, ratio)
  out = _resize_frames(clip, (left, top, left + w, top + h), (size, size), crop_first=True)
  return out, {"crop": np.asarray([top / height, left / width, h / height, w / width], np.float32)}


def center_crop_resize_video(clip: np.ndarray, size: int) -> np.ndarray:
  """Eval transform: the central square of every frame resized to ``size``; float32 [T, size, size, C]."""
  height, width = clip.shape[1:3]
  side = min(height, width)
  top, left = (height - side) / 2, (width - side) / 2
  if side == size == height == width:
    return augment.to_float(clip)
  return _resize_frames(clip, (left, top, left + side, top + side), (size, size), crop_first=False)


def hflip_video(clip: np.ndarray, rng: np.random.Generator,
                p: float = 0.5) -> tuple[np.ndarray, dict[str, Any]]:
  """Flips every frame left-right with probability ``p`` (one draw per clip)."""
  flip = bool(rng.uniform() < p)
  clip = augment.to_float(clip)
  return (clip[:, :, ::-1] if flip else clip), {"flip": np.bool_(flip)}
