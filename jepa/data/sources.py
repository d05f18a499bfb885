"""Sources from the ``data`` section of a config: :func:`get_source` (with the fixed train/eval carve-out and
the label checks), the :class:`Subset` wrapper that carries the carve-out and skips corrupt examples, and
:func:`fixed_subset`.

The sources themselves live in one module per kind; none of them imports a module listed below it, or this
one, so that the imports run one way (no cycles):

* :mod:`jepa.data.source_base`: the source interface (see its docstring), label checks and image decoding;
* :mod:`jepa.data.image_sources`: :class:`DigitsSource` (embedded default), :class:`TfdsSource`,
  :class:`FolderSource`, :class:`NpzSource`, :class:`IdxSource` (re-exported here, as is ``decode_image``);
* :mod:`jepa.data.video`: moving digits, video lists decoded with PyAV, TFDS video (clip augmentations in
  :mod:`jepa.data.video_augment`);
* :mod:`jepa.data.synthetic` and :mod:`jepa.data.trajectories` (two_rooms, and two_rooms_video clips; imported
  on first use).

Every ``data.source`` kind is mapped to its source here, in :func:`_build`.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Sequence

import numpy as np

from jepa.data import source_base
from jepa.data import synthetic
from jepa.data import video
# The image sources and decode_image are re-exported: callers use sources.NpzSource, sources.decode_image, ...
from jepa.data.image_sources import DigitsSource, FolderSource, IdxSource, NpzSource, TfdsSource
from jepa.data.source_base import decode_image  # noqa: F401  (re-exported)
from jepa.errors import ConfigError, DataError

Example = source_base.Example

# The carve-out permutation is seeded independently of the run seed, so that every run (and every method)
# agrees on which training examples are held out for evaluation.
CARVE_SEED = 0

# Largest number of consecutive corrupt examples a skip_corrupt reader walks past before concluding the data is
# broken (jepa.data.pipeline.SkipCorrupt and Subset(skip_corrupt=True)).
MAX_CONSECUTIVE_CORRUPT = 1000


def check_classes(source: Any, key: str = "data.path") -> None:
  """A one-line DataError when a labelled source holds a single class: every probe would then score 1.0 for
  any encoder, a result without meaning. Sources without labels (TFDS without a label feature) pass."""
  labels = getattr(source, "labels", None)
  if labels is not None:
    present = np.unique(np.asarray(labels))
    if len(present) != 1:
      return
    only = int(present[0])
  elif int(getattr(source, "num_classes", 0) or 0) == 1:
    only = 0
  else:
    return
  where = (getattr(source, "path", None) or getattr(source, "labels_path", None) or getattr(source, "root", None)
           or getattr(source, "name", "the data"))
  raise DataError(f"{key}: {where} holds a single class (every label is {only}); the probes need at least 2 "
                  "classes (with one, any encoder scores 1.0): pass labelled data with 2 or more classes")



class SkipsCorrupt:
  """Mixin of the readers that replace an unreadable example (a read raising DataError) by the next readable
  one, deterministically, and count it (``num_skipped`` reads, ``skipped_indices`` positions; a lock keeps
  them exact under grain's reader threads; the first ``max_logged`` are logged with the error)."""

  max_logged = 10

  def _init_counters(self) -> None:
    self.num_skipped = 0
    self.skipped_indices: set[int] = set()
    self.reported: set[int] = set()  # Positions already announced by eval_batches.
    self._lock = threading.Lock()

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    state.pop("_lock", None)
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _read_skipping(self, read: Any, n: int, index: int) -> Example:
    """``read(index)``, or if it raises DataError ``read(index + 1)``, ... (modulo ``n``)."""
    index = int(index)
    for step in range(min(n, MAX_CONSECUTIVE_CORRUPT)):
      i = (index + step) % n
      try:
        return read(i)
      except DataError as e:
        with self._lock:
          self.num_skipped += 1
          self.skipped_indices.add(i)
          count = self.num_skipped
        if count <= self.max_logged:
          # The error's own fix ("... or set data.skip_corrupt=True") is what is already happening: left out.
          logging.warning("skip_corrupt: example %d of %s replaced by the next one: %s", i, self.name,
                          str(e).split("; ")[0])
    raise DataError(f"{self.name}: {min(n, MAX_CONSECUTIVE_CORRUPT)} consecutive examples from index {index} "
                    "are unreadable; check the data files (see the warnings above)")


class Subset(SkipsCorrupt):
  """The examples ``indices`` of ``source``, in that order (used for the train/eval carve-out).

  With ``skip_corrupt`` (``data.skip_corrupt``, set by :func:`get_source`) an unreadable example is replaced by
  the next readable one of the subset (training and evaluation alike, so a corrupt file never ends a run and
  never pulls an example across the train/eval carve-out); see :class:`SkipsCorrupt` for the counters.
  """

  def __init__(self, source: Any, indices: Sequence[int], name: str | None = None, skip_corrupt: bool = False):
    self.source = source
    self.indices = np.asarray(indices, np.int64)
    if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(source)):
      raise ValueError(f"Subset indices out of range for a source of {len(source)} examples")
    self.name = name or source.name
    self.num_classes = source.num_classes
    self.skip_corrupt = bool(skip_corrupt)
    self._init_counters()

  def __len__(self) -> int:
    return len(self.indices)

  def _read(self, index: int) -> Example:
    return self.source[int(self.indices[index])]

  def __getitem__(self, index: int) -> Example:
    if not self.skip_corrupt:
      return self._read(index)
    n = len(self.indices)
    index = int(index)
    return self._read_skipping(self._read, n, index + n if index < 0 else index)

  def __repr__(self) -> str:
    return f"Subset({self.source!r}, n={len(self)})"


def carve_indices(n: int, eval_fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """Splits range(n) into (train, eval) indices by a fixed permutation (seed ``CARVE_SEED``).

  The last ``round(n * eval_fraction)`` (at least 1) positions of the permutation are held out. Both index
  arrays are returned sorted, so that reads stay in storage order (the train pipeline shuffles anyway).
  """
  if not 0.0 < eval_fraction < 1.0:
    raise ConfigError(f"data.eval_fraction={eval_fraction} must be in (0, 1); pass e.g. "
                      "--config.data.eval_fraction=0.1")
  if n < 2:
    raise DataError(f"cannot carve an eval split out of {n} example(s); use a larger dataset")
  n_eval = min(n - 1, max(1, int(round(n * eval_fraction))))
  perm = np.random.default_rng(CARVE_SEED).permutation(n)
  return np.sort(perm[:n - n_eval]), np.sort(perm[n - n_eval:])


def _cfg(cfg: Any, key: str, default: Any) -> Any:
  """Reads ``cfg.key`` from a ConfigDict / namespace / dict; missing or None gives ``default``."""
  if isinstance(cfg, dict):
    value = cfg.get(key, default)
  else:
    try:
      value = getattr(cfg, key)
    except (AttributeError, KeyError):
      value = default
  return default if value is None else value


def _sibling(path: str, other: str) -> str:
  """``other`` as given if absolute (or existing), else relative to the folder holding ``path``."""
  other = os.path.expanduser(other)
  if os.path.isabs(other) or os.path.exists(other):
    return other
  return os.path.join(os.path.dirname(os.path.abspath(os.path.expanduser(path))), other)


def _idx_labels_path(images_path: str) -> str:
  """The MNIST labels file next to an images file: '*-images-idx3-ubyte*' -> '*-labels-idx1-ubyte*'."""
  folder, base = os.path.split(images_path)
  if "images-idx3" in base:
    return os.path.join(folder, base.replace("images-idx3", "labels-idx1"))
  return ""


def _build_video(cfg: Any, which: str) -> Any:
  """The unsplit video source (:mod:`jepa.data.video`) for 'train' (or 'eval': a named split / file).

  Reads ``source``, ``num_frames``, ``frame_step``, ``image_size`` (moving digits' canvas), ``label``,
  ``path`` / ``eval_split`` (video_csv), ``name`` / ``data_dir`` / ``train_split`` / ``eval_split`` /
  ``video_key`` / ``label_key`` (tfds_video).
  """
  kind = str(_cfg(cfg, "source", "")).lower()
  num_frames = int(_cfg(cfg, "num_frames", 0))
  frame_step = int(_cfg(cfg, "frame_step", 1))
  if num_frames < 1:
    raise ConfigError(f"data.source={kind!r} is a video source: set --config.data.num_frames to the frames "
                      "per clip (e.g. 16)")
  if kind == "moving_digits":
    return video.MovingDigitsSource(num_frames=num_frames, frame_step=frame_step,
                                    canvas=int(_cfg(cfg, "image_size", 32)),
                                    label=str(_cfg(cfg, "label", "")) or "motion")
  if kind == "video_csv":
    path = str(_cfg(cfg, "path", ""))
    if which == "train":
      return video.VideoCsvSource(path, num_frames=num_frames, frame_step=frame_step)
    eval_path = _sibling(path, str(_cfg(cfg, "eval_split", "")))
    return video.VideoCsvSource(eval_path, num_frames=num_frames, frame_step=frame_step, key="data.eval_split")
  if kind == "tfds_video":
    split = str(_cfg(cfg, "train_split", "train")) if which == "train" else str(_cfg(cfg, "eval_split", ""))
    return video.TfdsVideoSource(str(_cfg(cfg, "name", "")), split, str(_cfg(cfg, "data_dir", "")),
                                 video_key=str(_cfg(cfg, "video_key", "video")),
                                 label_key=str(_cfg(cfg, "label_key", "label")), num_frames=num_frames,
                                 frame_step=frame_step)
  if kind == "two_rooms_video":
    # Two Rooms windows as 64 x 64 x 3 clips for a video encoder (jepa/data/trajectories.py TwoRoomsClips),
    # drawn like data.source='two_rooms' (100,000 windows, seed 0, carved; a named eval split: seed 1).
    from jepa.data import trajectories  # pylint: disable=g-import-not-at-top  (imports JAX, as two_rooms)
    return trajectories.TwoRoomsClips(seed=0 if which == "train" else 1,
                                      num_examples=100_000 if which == "train" else 10_000,
                                      num_frames=num_frames, frame_step=frame_step)
  raise DataError(f"data.source={kind!r} is not a video source; use one of {', '.join(video.SOURCES)}")


def _build(cfg: Any, which: str) -> Any:
  """Builds the unsplit source: ``which`` is 'train', or 'eval' for a configured eval split/file."""
  kind = str(_cfg(cfg, "source", "digits")).lower()
  path = str(_cfg(cfg, "path", ""))
  eval_split = str(_cfg(cfg, "eval_split", ""))
  if kind == "digits":
    return DigitsSource()
  if kind == "tfds":
    split = str(_cfg(cfg, "train_split", "train")) if which == "train" else eval_split
    return TfdsSource(str(_cfg(cfg, "name", "")), split, str(_cfg(cfg, "data_dir", "")),
                      image_key=str(_cfg(cfg, "image_key", "image")),
                      label_key=str(_cfg(cfg, "label_key", "label")))
  if kind in ("folder", "npz"):
    cls = FolderSource if kind == "folder" else NpzSource
    if which == "train":
      return cls(path)
    return cls(_sibling(path, eval_split), key="data.eval_split")
  if kind == "idx":
    if which == "train":
      images = path
      labels = str(_cfg(cfg, "labels_path", "")) or _idx_labels_path(path)
      return IdxSource(images, labels)
    images = _sibling(path, eval_split)
    return IdxSource(images, _idx_labels_path(images), images_key="data.eval_split",
                     labels_key="data.eval_split (labels file next to it)")
  if kind in video.SOURCES:
    return _build_video(cfg, which)
  if kind == "two_rooms":
    # EB-JEPA's Two Rooms trajectory windows (jepa/data/trajectories.py), 100,000 fixed draws (seed 0) carved
    # like other sources; a named eval split is 10,000 independent ones (seed 1). Unlabelled: num_classes 0.
    # Imported here, not above: it imports JAX (through jepa.envs.two_rooms), which image runs need not load.
    from jepa.data import trajectories  # pylint: disable=g-import-not-at-top
    src = trajectories.TwoRoomsTrajectories(seed=0 if which == "train" else 1,
                                            num_examples=100_000 if which == "train" else 10_000)
    src.name, src.num_classes = "two_rooms", 0
    return src
  if kind == "synthetic":  # Random pixels of the configured shape (compiling / timing only; jepa/data/synthetic.py).
    return synthetic.SyntheticSource(int(_cfg(cfg, "synthetic_examples", 4096)), int(_cfg(cfg, "image_size", 32)),
                                     int(_cfg(cfg, "num_frames", 0)))
  raise DataError(f"data.source={kind!r} is unknown; pass --config.data.source= one of digits, tfds, folder, "
                  "npz, idx, moving_digits, video_csv, tfds_video, two_rooms_video, two_rooms, synthetic")


def get_source(data_cfg: Any, split: str) -> Any:
  """Builds the train or eval source described by the ``data`` config section.

  Fields read (missing ones take the defaults in brackets): ``source`` ['digits'] in digits | tfds | folder |
  npz | idx; ``name`` (TFDS name); ``data_dir`` (TFDS folder); ``path`` (folder / .npz / IDX images file);
  ``labels_path`` (IDX labels; default: the ``*-labels-idx1-ubyte*`` file next to ``path``);
  ``image_key``/``label_key`` ['image'/'label'] (TFDS features); ``train_split`` ['train'];
  ``eval_split`` [''] and ``eval_fraction`` [0.1]. The video sources moving_digits | video_csv | tfds_video
  (which also read ``num_frames``, ``frame_step``, ``label``, ``video_key``) are in :mod:`jepa.data.video`.

  Eval split: for TFDS, ``eval_split`` names a split; if it is '' or the dataset lacks it (a warning is
  logged), a fixed carve-out is used. For folder / npz / idx, a non-empty ``eval_split`` is the path of the
  eval folder / file (relative paths are taken next to ``path``) and must exist. For digits there is only the
  carve-out. The carve-out holds out the last ``eval_fraction`` of a fixed permutation (seed 0, independent of
  the run seed) of the train set; the 'train' source then excludes those examples.

  With ``skip_corrupt`` [False] the source is a :class:`Subset` that replaces unreadable examples by the next
  readable one (and counts them), for training and evaluation alike. Labels are checked once here: integer
  class indices (see :func:`jepa.data.source_base.checked_labels`) and at least 2 classes in the training data
  (:func:`check_classes`).

  Args:
    data_cfg: ConfigDict (or anything with attribute access, or a dict).
    split: 'train' or 'eval'.

  Returns:
    A source (the interface is in :mod:`jepa.data.source_base`).

  Raises:
    DataError: a path, dataset or split is missing or unreadable.
    ConfigError: ``split`` or ``eval_fraction`` is invalid.
  """
  if split not in ("train", "eval"):
    raise ConfigError(f"get_source split={split!r}: expected 'train' or 'eval'")
  kind = str(_cfg(data_cfg, "source", "digits")).lower()
  eval_split = str(_cfg(data_cfg, "eval_split", ""))
  named_eval = bool(eval_split) and kind not in ("digits", "moving_digits")
  if named_eval and kind == "tfds":
    name, data_dir = str(_cfg(data_cfg, "name", "")), str(_cfg(data_cfg, "data_dir", ""))
    if not TfdsSource.has_split(name, eval_split, data_dir):
      # Checkpoints and configs are shared across datasets where some ship only a train split (e.g. the
      # CIFAR-10 copy in ../shared/data); falling back to the carve-out keeps such configs runnable.
      logging.warning("data.eval_split=%r not found in %s; carving %.0f%% of the train split out instead",
                      eval_split, name, 100 * float(_cfg(data_cfg, "eval_fraction", 0.1)))
      named_eval = False
  skip = bool(_cfg(data_cfg, "skip_corrupt", False))
  if named_eval:
    src = _build(data_cfg, split)
    if split == "train":
      check_classes(src)
    return Subset(src, np.arange(len(src)), name=src.name, skip_corrupt=True) if skip else src
  full = _build(data_cfg, "train")
  check_classes(full)
  train_idx, eval_idx = carve_indices(len(full), float(_cfg(data_cfg, "eval_fraction", 0.1)))
  if split == "train":
    return Subset(full, train_idx, name=full.name, skip_corrupt=skip)
  return Subset(full, eval_idx, name=f"{full.name}_eval", skip_corrupt=skip)


def fixed_subset(source: Any, max_examples: int) -> Any:
  """At most `max_examples` of `source`, drawn by a fixed permutation (seed 0) and kept in index order.

  Not the first N: datasets stored sorted by class (CIFAR-10 in ../shared/data is) would lose whole classes.
  """
  if not max_examples or len(source) <= max_examples:
    return source
  keep = np.sort(np.random.default_rng(0).permutation(len(source))[:max_examples])
  return Subset(source, keep)
