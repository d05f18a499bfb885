"""Video sources (embedded moving digits, CSV of files decoded with PyAV, TFDS) and clip sampling.

A video source follows the source interface of :mod:`jepa.data.source_base` (``len``, ``src[i]``,
``num_classes``, ``name``; cheap to build, picklable) with examples ``{'video': ..., 'label': int}``:

* :class:`MovingDigitsSource` returns the clip itself, uint8 [T, H, W, 1], deterministic per index;
* :class:`VideoCsvSource` and :class:`TfdsVideoSource` return a small *clip reader* whose ``read(rng)``
  decodes the clip: the window is random when a generator is given (training) and central without one
  (evaluation). The reader exists because the window must be drawn from the pipeline's per-example
  generator, which the source never sees, and because decoding only the frames of one window is what makes
  long videos affordable.

:func:`get_clip` turns either form into uint8 [T, H, W, C]. Clip sampling (:func:`clip_indices`) follows the
V-JEPA reference: ``num_frames`` frames ``frame_step`` apart inside a window of
(num_frames - 1) * frame_step + 1 frames; a video shorter than the window is padded with its last frame.

The video augmentations (:func:`random_resized_crop_video`, :func:`hflip_video`,
:func:`center_crop_resize_video`) live in :mod:`jepa.data.video_augment` and are re-exported here.
:func:`jepa.data.sources.get_source` builds these sources from the ``data`` config.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from typing import Any

import numpy as np
from PIL import Image

from jepa import config as config_lib
from jepa.data import image_sources
from jepa.data import source_base
# The clip augmentations are re-exported: callers use video.random_resized_crop_video, ...
from jepa.data.video_augment import center_crop_resize_video, hflip_video, random_resized_crop_video  # noqa: F401
from jepa.errors import ConfigError, DataError

SOURCES = config_lib.VIDEO_SOURCES
LABELS = ("motion", "digit")

Example = dict[str, Any]


# ----------------------------------------------------------------------------------------------------------
# Clip sampling.
# ----------------------------------------------------------------------------------------------------------


def clip_indices(num_available: int, num_frames: int, frame_step: int,
                 rng: np.random.Generator | None = None) -> np.ndarray:
  """Frame indices of one clip: ``num_frames`` indices ``frame_step`` apart.

    span  = (num_frames - 1) * frame_step + 1
    start ~ U{0, ..., num_available - span}   with rng (training), or (num_available - span) // 2 without
    idx_i = min(start + i * frame_step, num_available - 1)

  A video shorter than the span starts at 0 and its last frame is repeated (the reference's padding).

  Args:
    num_available: frames in the video (>= 1).
    num_frames: frames per clip T.
    frame_step: distance between sampled frames (the reference's sampling rate, 4 for V-JEPA).
    rng: draws the window start; None takes the central window.

  Returns:
    int64 [num_frames].
  """
  if num_available < 1:
    raise ValueError(f"a video needs at least one frame, got {num_available}")
  span = (num_frames - 1) * frame_step + 1
  slack = max(0, num_available - span)
  start = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
  return np.minimum(start + np.arange(num_frames) * frame_step, num_available - 1)


@dataclasses.dataclass(frozen=True)
class ArrayClipReader:
  """A decoded video [N, H, W, C] from which ``read`` takes one clip (TFDS video features decode whole)."""
  frames: np.ndarray
  num_frames: int
  frame_step: int

  def read(self, rng: np.random.Generator | None = None) -> np.ndarray:
    return self.frames[clip_indices(len(self.frames), self.num_frames, self.frame_step, rng)]


def _import_av():
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DataError("video files are decoded with PyAV, which is not installed: pip install av "
                    "(or pip install -e '.[video]')") from None
  return av


def _av_error(path: str, e: Exception) -> DataError:
  reason = source_base.first_line(e)
  return DataError(f"{path}: cannot decode video ({reason}); replace or delete the file, or set "
                   "--config.data.skip_corrupt=True")


def count_frames(path: str) -> int:
  """Frames in the first video stream: the container's count, or the number of packets when it has none."""
  av = _import_av()
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      if stream.frames > 0:
        return int(stream.frames)
      return sum(1 for packet in container.demux(stream) if packet.size)
  except (IndexError, av.FFmpegError, OSError) as e:
    raise _av_error(path, e) from None


def read_frames(path: str, indices: np.ndarray) -> np.ndarray:
  """Decodes the frames at ``indices`` (any order, repeats allowed) of a video file as uint8 [K, H, W, 3].

  Decodes sequentially up to the largest index and converts only the wanted frames to RGB. Indices past the
  last decodable frame (container frame counts can be off by a few) repeat the last decoded frame.
  """
  av = _import_av()
  wanted = set(int(i) for i in indices)
  last = max(wanted)
  frames = {}
  previous = None
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      for i, frame in enumerate(container.decode(stream)):
        if i in wanted:
          frames[i] = frame.to_ndarray(format="rgb24")
        previous = (i, frame)
        if i >= last:
          break
  except (IndexError, av.FFmpegError, OSError) as e:
    raise _av_error(path, e) from None
  if previous is None:
    raise DataError(f"{path}: the video has no decodable frames; replace or delete the file, or set "
                    "--config.data.skip_corrupt=True")
  last_i, last_frame = previous
  if last_i not in frames:
    frames[last_i] = last_frame.to_ndarray(format="rgb24")
  return np.stack([frames[min(int(i), last_i)] for i in indices])


@dataclasses.dataclass(frozen=True)
class FileClipReader:
  """A video file from which ``read`` decodes one clip (only the frames of the window are converted)."""
  path: str
  num_frames: int
  frame_step: int

  def read(self, rng: np.random.Generator | None = None) -> np.ndarray:
    indices = clip_indices(count_frames(self.path), self.num_frames, self.frame_step, rng)
    return read_frames(self.path, indices)


def get_clip(example: Example, rng: np.random.Generator | None = None) -> np.ndarray:
  """The clip of a video example as uint8 [T, H, W, C]: the array itself, or its reader's clip.

  Args:
    example: a video source's example.
    rng: the example's generator (random window); None for the central window.
  """
  video = example["video"]
  if isinstance(video, np.ndarray):
    return video
  return video.read(rng)


# ----------------------------------------------------------------------------------------------------------
# Moving digits: the embedded offline video set.
# ----------------------------------------------------------------------------------------------------------


def _reflect(x: np.ndarray, room: float) -> np.ndarray:
  """Folds positions into [0, room] as a bouncing object would: a triangle wave of period 2 * room."""
  if room <= 0:
    return np.zeros_like(x)
  x = np.mod(x, 2.0 * room)
  return np.where(x > room, 2.0 * room - x, x)


class MovingDigitsSource(source_base.LazySource):
  """scikit-learn's 8x8 digits moving across a black canvas: clips uint8 [T, S, S, 1], two labels.

  Clip i shows digit image i mod 1797, resized to ``digit_size``, moving in a straight line with one of
  ``num_directions`` directions and bouncing off the canvas walls. Everything is drawn from
  ``np.random.default_rng([seed, i])``, so a clip depends only on its index:

    direction k ~ U{0, ..., K-1},  theta = 2 pi k / K  (k = 0: rightwards, counter-clockwise on screen)
    speed     s ~ U(speed) pixels per frame of the underlying video
    velocity  v = s * (-sin theta, cos theta)          (rows grow downwards)
    frame t of the clip (t = 0 .. T-1) is frame tau = t * frame_step of the video, where the digit's top-left
    corner is at reflect(p0 + v * hold * floor(tau / hold)), folded into [0, S - digit_size] per axis.

  The digit steps once every ``hold`` video frames. With the default hold 2 and frame_step 1 the two frames of
  a 2-frame tubelet are identical, so the motion shows only *across* tubelets: neither a frame nor a tubelet
  tells the direction, and an encoder has to relate tokens over time (with hold 1, a random encoder's tubelet
  embedding already sees the motion between its two frames and an attentive probe on it is near 100%).

  The start p0 is uniform over the positions from which the whole clip fits without a bounce whenever the
  path is short enough (then the motion label is exact in every frame); longer paths bounce, and the label is
  the direction at the first frame.

  Labels: ``label='motion'`` gives the direction k (``num_directions`` classes; a single frame cannot tell
  it), ``'digit'`` the digit class (10). Examples also carry both as ``'direction'`` and ``'digit'``.

  Args:
    num_frames: frames per clip T.
    frame_step: video frames between clip frames.
    canvas: frame side S in pixels.
    label: 'motion' or 'digit'.
    num_directions: motion classes K (4: right, up, left, down; 8 adds the diagonals).
    digit_size: digit side in pixels; default S // 2.
    speed: range of pixels per video frame; default (1, 2) * S / 32.
    hold: video frames between steps of the digit (1: smooth motion).
    clips_per_digit: clips per digit image (each with its own motion); len = 1797 * clips_per_digit.
    noise: amplitude of uniform per-pixel, per-frame noise added to the clip (0-255 scale; 0 = none).
    seed: the data seed of the clips (fixed, so every run sees the same dataset).
  """

  _LAZY = ("_digits",)

  def __init__(self, *, num_frames: int = 8, frame_step: int = 1, canvas: int = 32, label: str = "motion",
               num_directions: int = 8, digit_size: int | None = None,
               speed: tuple[float, float] | None = None, hold: int = 2, clips_per_digit: int = 1,
               noise: float = 0.0, seed: int = 0):
    if label not in LABELS:
      raise ConfigError(f"data.label={label!r} is not one of {list(LABELS)} for moving_digits")
    digit_size = canvas // 2 if digit_size is None else int(digit_size)
    if not 1 <= digit_size <= canvas:
      raise ConfigError(f"moving_digits digit_size={digit_size} must be in [1, data.image_size={canvas}]")
    if num_frames < 1 or frame_step < 1 or hold < 1:
      raise ConfigError(f"data.num_frames={num_frames}, data.frame_step={frame_step} and moving_digits "
                        f"hold={hold} must be >= 1")
    self.name = f"moving_digits_{label}"
    self.num_frames = int(num_frames)
    self.frame_step = int(frame_step)
    self.canvas = int(canvas)
    self.label = label
    self.num_directions = int(num_directions)
    self.digit_size = digit_size
    self.speed = tuple(speed) if speed is not None else (canvas / 32.0, 2.0 * canvas / 32.0)
    self.clips_per_digit = int(clips_per_digit)
    self.noise = float(noise)
    self.hold = int(hold)
    self.seed = int(seed)
    self.num_classes = self.num_directions if label == "motion" else 10
    self._digits = None
    self._lock = threading.Lock()

  def _load(self) -> tuple[np.ndarray, np.ndarray]:
    with self._lock:
      if self._digits is None:
        base = image_sources.DigitsSource()
        images = np.stack([np.asarray(Image.fromarray(base[i]["image"][:, :, 0]).resize(
            (self.digit_size, self.digit_size), Image.BILINEAR)) for i in range(len(base))])
        labels = np.asarray([base[i]["label"] for i in range(len(base))], np.int64)
        self._digits = (images, labels)
    return self._digits

  def __len__(self) -> int:
    return image_sources.DigitsSource._LEN * self.clips_per_digit  # pylint: disable=protected-access

  def motion(self, index: int) -> dict[str, Any]:
    """Clip ``index``'s motion: direction, velocity [2] and the digit's (row, col) positions [T, 2]."""
    rng = np.random.default_rng([self.seed, int(index)])
    k = int(rng.integers(self.num_directions))
    theta = 2.0 * math.pi * k / self.num_directions
    speed = rng.uniform(*self.speed)
    velocity = speed * np.array([-math.sin(theta), math.cos(theta)])
    velocity[np.abs(velocity) < 1e-9] = 0.0  # Exact zeros for axis-aligned motion.
    room = float(self.canvas - self.digit_size)
    times = (np.arange(self.num_frames) * self.frame_step) // self.hold * self.hold
    extent = velocity * times[-1]
    start = np.empty(2)
    for a in range(2):
      if abs(extent[a]) <= room:  # The whole path fits: start where no bounce happens.
        lo, hi = max(0.0, -extent[a]), room - max(0.0, extent[a])
        start[a] = rng.uniform(lo, hi)
      else:
        start[a] = rng.uniform(0.0, room)
    positions = _reflect(start[None, :] + times[:, None] * velocity[None, :], room)
    return {"direction": k, "velocity": velocity, "positions": positions}

  def __getitem__(self, index: int) -> Example:
    index = self._check_index(index)
    images, labels = self._digits if self._digits is not None else self._load()
    digit_index = index % len(images)
    motion = self.motion(index)
    clip = np.zeros((self.num_frames, self.canvas, self.canvas, 1), np.uint8)
    d = self.digit_size
    for t, (r, c) in enumerate(np.rint(motion["positions"]).astype(np.int64)):
      clip[t, r:r + d, c:c + d, 0] = images[digit_index]
    if self.noise:
      rng = np.random.default_rng([self.seed, index, 1])
      noisy = clip + rng.uniform(0, self.noise, clip.shape)
      clip = np.clip(noisy, 0, 255).astype(np.uint8)
    digit = int(labels[digit_index])
    label = motion["direction"] if self.label == "motion" else digit
    return {"video": clip, "label": label, "digit": digit, "direction": motion["direction"]}


# ----------------------------------------------------------------------------------------------------------
# File-backed sources.
# ----------------------------------------------------------------------------------------------------------


class VideoCsvSource(source_base.LazySource):
  """Videos listed in a text file, one ``path label`` per line (the V-JEPA CSV format), decoded with PyAV.

  Fields are separated by whitespace; the label is the last field (an integer) and the path everything
  before it. Relative paths are taken relative to the file's folder; blank lines and lines starting with '#'
  are skipped. Reading a video needs the `av` package (``pip install av``); listing it does not.

  Args:
    path: the list file.
    num_frames, frame_step: clip sampling (see :func:`clip_indices`).
    key: the config key that named ``path`` (for error messages).
  """

  def __init__(self, path: str, *, num_frames: int, frame_step: int, key: str = "data.path"):
    path = source_base.check_exists(path, key)
    self.path = path
    self.name = os.path.splitext(os.path.basename(path))[0]
    self.num_frames = int(num_frames)
    self.frame_step = int(frame_step)
    folder = os.path.dirname(os.path.abspath(path))
    files, labels = [], []
    with open(path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        line = line.strip()
        if not line or line.startswith("#"):
          continue
        parts = line.rsplit(None, 1)
        try:
          if len(parts) != 2:
            raise ValueError
          label = int(parts[1])
        except ValueError:
          raise DataError(f'{key}: {path} line {lineno} is {line!r}; expected "<video path> <integer label>"'
                          ) from None
        video = os.path.expanduser(parts[0])
        files.append(video if os.path.isabs(video) else os.path.join(folder, video))
        labels.append(label)
    if not files:
      raise DataError(f'{key}: {path} lists no videos; expected lines "<video path> <integer label>"')
    self.files = files
    self.labels = np.asarray(labels, np.int64)
    self.num_classes = int(self.labels.max()) + 1
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> Example:
    index = self._check_index(index)
    path = self.files[index]
    if not os.path.isfile(path):
      raise DataError(f"{path} (line {index + 1} of {self.path}) does not exist; fix the list or set "
                      "--config.data.skip_corrupt=True")
    return {"video": FileClipReader(path, self.num_frames, self.frame_step), "label": int(self.labels[index])}


class TfdsVideoSource(image_sources.TfdsSource):
  """A prepared TFDS video dataset (e.g. a `tfds.features.Video` feature) read with ``tfds.data_source``.

  ``video_key`` names the frames feature ([N, H, W, C] uint8; decoded whole by TFDS), ``label_key`` the label
  ('' or absent gives -1). Examples hold an :class:`ArrayClipReader`, so the clip window is drawn per example.
  """

  def __init__(self, name: str, split: str = "train", data_dir: str = "", *, video_key: str = "video",
               label_key: str = "label", num_frames: int, frame_step: int):
    # Not TfdsSource.__init__: episode datasets (e.g. bair_robot_pushing_small) have a Sequence of features at
    # the top level, whose names live one level down.
    if not name:
      raise DataError("data.name is empty; pass --config.data.name=... (a TFDS video dataset name)")
    self.name, self.split, self.data_dir = name, split, os.path.expanduser(data_dir) if data_dir else None
    self.image_key, self.label_key = video_key, label_key
    self.num_frames = int(num_frames)
    self.frame_step = int(frame_step)
    self._lock = threading.Lock()
    self._ds = None
    ds = self._open()
    features = ds.dataset_info.features
    features = getattr(features, "feature", features)  # A top-level Sequence wraps a FeaturesDict.
    names = sorted(features.keys())
    if video_key not in names:
      raise DataError(f"data.video_key: {name} has no feature {video_key!r} (features: {names}); pass "
                      "--config.data.video_key=...")
    self._has_label = bool(label_key) and label_key in names
    self.num_classes = int(getattr(features[label_key], "num_classes", 0) or 0) if self._has_label else 0
    self._len = len(ds)

  def __getitem__(self, index: int) -> Example:
    index = self._check_index(index)
    self._ensure("_ds", self._open)
    where = f"{self.name}[{self.split}] example {index}"
    try:
      record = self._ds[index]
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f"{where}: cannot read ({source_base.first_line(e)}); "
                      "rebuild the dataset or set --config.data.skip_corrupt=True") from None
    frames = np.asarray(record[self.image_key])
    if frames.ndim == 3:
      frames = frames[..., None]
    if frames.ndim != 4 or frames.dtype != np.uint8 or len(frames) == 0:
      raise DataError(f"{where}: {self.image_key!r} has shape {frames.shape} and dtype {frames.dtype}; "
                      "expected uint8 [frames, H, W, C]: set --config.data.video_key to the video feature")
    label = int(record[self.label_key]) if self._has_label else -1
    return {"video": ArrayClipReader(frames, self.num_frames, self.frame_step), "label": label}
