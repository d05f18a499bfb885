"""The source interface, and the checks and image decoding that every source module shares.

A *source* is a sequence of examples: ``len(src)`` and ``src[i] -> {'image': uint8 [H, W, C], 'label': int}``
with ``C`` in {1, 3} (video sources return ``'video'`` instead, see :mod:`jepa.data.video`), plus the
attributes ``num_classes`` (int) and ``name`` (str). grain reads sources by index
(``grain.MapDataset.source(src)``), so every source is

* cheap to construct: the constructor validates paths and reads only what ``len`` and ``num_classes`` need;
  pixel data is loaded on first access and images are decoded one at a time in ``__getitem__``;
* picklable: large arrays and open handles are dropped by ``__getstate__`` and re-created lazily
  (:class:`LazySource`), so a worker process receives a few hundred bytes, not the dataset.

Bad input raises :class:`jepa.errors.DataError` with one line naming the file / key and the fix.

This module imports no other module of :mod:`jepa.data`; the image readers (:mod:`jepa.data.image_sources`),
the video sources (:mod:`jepa.data.video`) and the config entry point (:mod:`jepa.data.sources`) build on it.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Any

import numpy as np
from PIL import Image

from jepa.errors import DataError

Example = dict[str, Any]

# Labels are class indices 0..K-1; a larger largest label is taken for something else (an id, a hash) rather
# than a class, whose one-hot probe would not fit in memory (a label of 1e9 aborted XLA).
MAX_CLASSES = 100_000


def first_line(e: BaseException) -> str:
  """'Type: first line of the message': library messages can span many lines (tfds lists every dataset)."""
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def as_hwc_uint8(image: np.ndarray, where: str) -> np.ndarray:
  """Returns ``image`` as uint8 [H, W, C] with C in {1, 3} (grayscale gets a channel axis)."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise DataError(f"{where}: image has shape {image.shape}, expected [H, W] or [H, W, C] with C in 1, 3")
  if image.shape[-1] == 4:  # RGBA: the alpha channel carries no content for SSL.
    image = image[:, :, :3]
  if image.dtype != np.uint8:
    raise DataError(f"{where}: image has dtype {image.dtype}, expected uint8")
  return image


def decode_image(data: bytes | np.ndarray, where: str) -> np.ndarray:
  """Decodes encoded image bytes with Pillow into uint8 [H, W, C], C in {1, 3}.

  Args:
    data: the encoded file (JPEG, PNG, ...).
    where: a description of the file / index, used in the error message.

  Returns:
    The image; 'L' (8-bit gray) keeps one channel, every other mode is converted to RGB.

  Raises:
    DataError: the bytes are not a decodable image.
  """
  try:
    with Image.open(io.BytesIO(bytes(data))) as im:
      im.load()
      if im.mode != "L":
        im = im.convert("RGB")
      image = np.asarray(im, dtype=np.uint8)
  except Exception as e:  # Pillow raises several unrelated types for bad data.
    raise DataError(f"{where}: cannot decode image ({first_line(e)}); replace or delete the file, "
                    "or set --config.data.skip_corrupt=True") from None
  return as_hwc_uint8(image, where)


def checked_labels(raw: Any, where: str, key: str, num_classes: int = 0) -> np.ndarray:
  """``raw`` as int64 class indices, or a one-line DataError naming ``where`` (the file) and the fix.

  Labels must be integers (integer-valued floats pass) in [0, num_classes) when the file declares its classes
  (``num_classes`` > 0), else in [0, MAX_CLASSES).
  """
  raw = np.asarray(raw)
  fix = "renumber the labels as class indices 0..K-1"
  if raw.dtype.kind not in "biuf":
    raise DataError(f"{key}: {where} has labels of dtype {raw.dtype}; labels must be integer class indices: "
                    f"{fix}")
  values = raw.ravel()
  if not values.size:
    return raw.astype(np.int64)

  def bad(i, why):
    return DataError(f"{key}: {where} has label {float(values[i]):.10g} at index {i}; {why}: {fix}")

  if raw.dtype.kind == "f":
    wrong = ~np.isfinite(values) | (values != np.round(values))
    if wrong.any():
      raise bad(int(np.argmax(wrong)), "labels must be integer class indices")
  if values.min() < 0:
    raise bad(int(np.argmin(values)), "labels must be in [0, num_classes)")
  top = int(np.argmax(values))
  if num_classes and values[top] >= num_classes:
    raise bad(top, f"the file declares {num_classes} classes, so labels must be in [0, {num_classes})")
  if values[top] >= MAX_CLASSES:
    raise bad(top, f"labels must be class indices in [0, num_classes), at most {MAX_CLASSES} classes")
  return raw.astype(np.int64)


def check_exists(path: str, key: str, what: str = "file") -> str:
  """Raises a one-line DataError if ``path`` (the value of config key ``key``) does not exist."""
  if not path:
    raise DataError(f"{key} is empty; pass --config.{key}=... (an existing {what})")
  path = os.path.expanduser(path)
  if what == "folder":
    ok = os.path.isdir(path)
  else:
    ok = os.path.isfile(path)
  if not ok:
    raise DataError(f"{key}: {path} does not exist; pass --config.{key}=... to an existing {what}")
  return path


class LazySource:
  """Base class: holds lazily loaded state that is dropped when pickled."""

  # Attribute names that are (re)built on first use and not sent to worker processes.
  _LAZY: tuple[str, ...] = ()

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    for key in self._LAZY:
      state[key] = None
    state.pop("_lock", None)
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _ensure(self, attr: str, load) -> None:
    """Runs `load()` once, under the lock, if `self.<attr>` is still None (first use in this process)."""
    if getattr(self, attr) is None:
      with self._lock:
        if getattr(self, attr) is None:
          load()

  def _check_index(self, index: int) -> int:
    n = len(self)
    index = int(index)
    if index < 0:
      index += n
    if not 0 <= index < n:
      raise IndexError(f"{self.name}: index {index} out of range for {n} examples")
    return index

  def __repr__(self) -> str:
    return f"{type(self).__name__}(name={self.name!r}, len={len(self)}, num_classes={self.num_classes})"
