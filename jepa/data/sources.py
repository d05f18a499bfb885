"""Random-access image sources behind one interface.

A *source* is a sequence of examples: ``len(src)`` and ``src[i] -> {'image': uint8 [H, W, C], 'label': int}``
with ``C`` in {1, 3}, plus the attributes ``num_classes`` (int) and ``name`` (str). grain reads sources by
index (``grain.MapDataset.source(src)``), so every source here is

* cheap to construct: the constructor validates paths and reads only what ``len`` and ``num_classes`` need;
  pixel data is loaded on first access and images are decoded one at a time in ``__getitem__``;
* picklable: large arrays and open handles are dropped by ``__getstate__`` and re-created lazily, so a worker
  process receives a few hundred bytes, not the dataset.

Bad input raises :class:`jepa.errors.DataError` with one line naming the file / key and the fix.

Sources: :class:`DigitsSource` (embedded default, scikit-learn's 1,797 8x8 digits), :class:`TfdsSource`,
:class:`FolderSource`, :class:`NpzSource` (packed JPEG or plain arrays), :class:`IdxSource` (MNIST IDX), and
the :class:`Subset` wrapper used for the fixed train/eval carve-out. :func:`get_source` builds one from the
``data`` section of a config.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import threading
import zipfile
from typing import Any, Sequence

import numpy as np
from PIL import Image

from jepa.errors import ConfigError, DataError

Example = dict[str, Any]

# The carve-out permutation is seeded independently of the run seed, so that every run (and every method)
# agrees on which training examples are held out for evaluation.
CARVE_SEED = 0

# Labels are class indices 0..K-1; a larger largest label is taken for something else (an id, a hash) rather
# than a class, whose one-hot probe would not fit in memory (a label of 1e9 aborted XLA).
MAX_CLASSES = 100_000

# Largest number of consecutive corrupt examples a skip_corrupt reader walks past before concluding the data is
# broken (jepa.data.pipeline.SkipCorrupt and Subset(skip_corrupt=True)).
MAX_CONSECUTIVE_CORRUPT = 1000

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm', '.pgm')


def _first_line(e: BaseException) -> str:
  """'Type: first line of the message': library messages can span many lines (tfds lists every dataset)."""
  text = str(e).strip()
  return f'{type(e).__name__}: {text.splitlines()[0]}' if text else type(e).__name__


def _as_hwc_uint8(image: np.ndarray, where: str) -> np.ndarray:
  """Returns ``image`` as uint8 [H, W, C] with C in {1, 3} (grayscale gets a channel axis)."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise DataError(f'{where}: image has shape {image.shape}, expected [H, W] or [H, W, C] with C in 1, 3')
  if image.shape[-1] == 4:  # RGBA: the alpha channel carries no content for SSL.
    image = image[:, :, :3]
  if image.dtype != np.uint8:
    raise DataError(f'{where}: image has dtype {image.dtype}, expected uint8')
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
      if im.mode != 'L':
        im = im.convert('RGB')
      image = np.asarray(im, dtype=np.uint8)
  except Exception as e:  # Pillow raises several unrelated types for bad data.
    raise DataError(f'{where}: cannot decode image ({_first_line(e)}); replace or delete the file, '
                    'or set --config.data.skip_corrupt=True') from None
  return _as_hwc_uint8(image, where)


def checked_labels(raw: Any, where: str, key: str, num_classes: int = 0) -> np.ndarray:
  """``raw`` as int64 class indices, or a one-line DataError naming ``where`` (the file) and the fix.

  Labels must be integers (integer-valued floats pass) in [0, num_classes) when the file declares its classes
  (``num_classes`` > 0), else in [0, MAX_CLASSES).
  """
  raw = np.asarray(raw)
  fix = 'renumber the labels as class indices 0..K-1'
  if raw.dtype.kind not in 'biuf':
    raise DataError(f'{key}: {where} has labels of dtype {raw.dtype}; labels must be integer class indices: '
                    f'{fix}')
  values = raw.ravel()
  if not values.size:
    return raw.astype(np.int64)

  def bad(i, why):
    return DataError(f'{key}: {where} has label {float(values[i]):.10g} at index {i}; {why}: {fix}')

  if raw.dtype.kind == 'f':
    wrong = ~np.isfinite(values) | (values != np.round(values))
    if wrong.any():
      raise bad(int(np.argmax(wrong)), 'labels must be integer class indices')
  if values.min() < 0:
    raise bad(int(np.argmin(values)), 'labels must be in [0, num_classes)')
  top = int(np.argmax(values))
  if num_classes and values[top] >= num_classes:
    raise bad(top, f'the file declares {num_classes} classes, so labels must be in [0, {num_classes})')
  if values[top] >= MAX_CLASSES:
    raise bad(top, f'labels must be class indices in [0, num_classes), at most {MAX_CLASSES} classes')
  return raw.astype(np.int64)


def check_classes(source: Any, key: str = 'data.path') -> None:
  """A one-line DataError when a labelled source holds a single class: every probe would then score 1.0 for
  any encoder, a result without meaning. Sources without labels (TFDS without a label feature) pass."""
  labels = getattr(source, 'labels', None)
  if labels is not None:
    present = np.unique(np.asarray(labels))
    if len(present) != 1:
      return
    only = int(present[0])
  elif int(getattr(source, 'num_classes', 0) or 0) == 1:
    only = 0
  else:
    return
  where = (getattr(source, 'path', None) or getattr(source, 'labels_path', None) or getattr(source, 'root', None)
           or getattr(source, 'name', 'the data'))
  raise DataError(f'{key}: {where} holds a single class (every label is {only}); the probes need at least 2 '
                  'classes (with one, any encoder scores 1.0): pass labelled data with 2 or more classes')


def _check_exists(path: str, key: str, what: str = 'file') -> str:
  """Raises a one-line DataError if ``path`` (the value of config key ``key``) does not exist."""
  if not path:
    raise DataError(f'{key} is empty; pass --config.{key}=... (an existing {what})')
  path = os.path.expanduser(path)
  if what == 'folder':
    ok = os.path.isdir(path)
  else:
    ok = os.path.isfile(path)
  if not ok:
    raise DataError(f'{key}: {path} does not exist; pass --config.{key}=... to an existing {what}')
  return path


class _LazySource:
  """Base class: holds lazily loaded state that is dropped when pickled."""

  # Attribute names that are (re)built on first use and not sent to worker processes.
  _LAZY: tuple[str, ...] = ()

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    for key in self._LAZY:
      state[key] = None
    state.pop('_lock', None)
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _check_index(self, index: int) -> int:
    n = len(self)
    index = int(index)
    if index < 0:
      index += n
    if not 0 <= index < n:
      raise IndexError(f'{self.name}: index {index} out of range for {n} examples')
    return index

  def __repr__(self) -> str:
    return f'{type(self).__name__}(name={self.name!r}, len={len(self)}, num_classes={self.num_classes})'


class DigitsSource(_LazySource):
  """scikit-learn's 1,797 real 8x8 handwritten digits (10 classes, 1 channel): the offline default.

  Pixel values 0..16 are rescaled to 0..255 uint8.
  """

  _LAZY = ('_images', '_labels')
  _LEN = 1797

  def __init__(self):
    self.name = 'digits'
    self.num_classes = 10
    self._images = None
    self._labels = None
    self._lock = threading.Lock()
    self._load()

  def _load(self) -> None:
    # load_digits reads a 500 kB csv shipped with scikit-learn (a few ms); small enough to hold in memory.
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    self._images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, :, :, None]
    self._labels = digits.target.astype(np.int64)

  def __len__(self) -> int:
    return self._LEN

  def __getitem__(self, index: int) -> Example:
    index = self._check_index(index)
    if self._images is None:
      with self._lock:
        if self._images is None:
          self._load()
    return {'image': self._images[index], 'label': int(self._labels[index])}


class TfdsSource(_LazySource):
  """A prepared TFDS dataset read with ``tfds.data_source`` (ArrayRecord; no TensorFlow needed).

  Args:
    name: TFDS name, optionally with config/version ('fashion_mnist', 'cifar10:3.0.2').
    split: split name or slice ('train', 'test', 'train[:90%]').
    data_dir: the TFDS data folder; '' for TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
    image_key: feature holding the image.
    label_key: feature holding the class label; '' (or absent from the features) gives label -1.
  """

  _LAZY = ('_ds',)

  def __init__(self, name: str, split: str = 'train', data_dir: str = '', image_key: str = 'image',
               label_key: str = 'label'):
    if not name:
      raise DataError('data.name is empty; pass --config.data.name=... (a TFDS name, e.g. fashion_mnist)')
    if data_dir:
      data_dir = os.path.expanduser(data_dir)
      base = name.split(':')[0].split('/')[0]
      if not os.path.isdir(os.path.join(data_dir, base)):
        raise DataError(f'data.data_dir: {os.path.join(data_dir, base)} does not exist; prepare {name} there '
                        '(tfds build --file_format=array_record) or pass --config.data.data_dir=... to the '
                        'folder that holds it')
    self.name = name
    self.split = split
    self.data_dir = data_dir or None
    self.image_key = image_key
    self.label_key = label_key
    self._lock = threading.Lock()
    self._ds = None
    ds = self._open()
    features = ds.dataset_info.features
    if image_key not in features:
      raise DataError(f'data.image_key: {name} has no feature {image_key!r} (features: {sorted(features)}); '
                      'pass --config.data.image_key=...')
    self._has_label = bool(label_key) and label_key in features
    self.num_classes = int(getattr(features[label_key], 'num_classes', 0) or 0) if self._has_label else 0
    self._len = len(ds)

  def _open(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    try:
      ds = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir, download=False)
    except Exception as e:  # tfds raises ValueError, DatasetNotFoundError, NotImplementedError, ...
      msg = (f'data.name={self.name!r} split={self.split!r} data_dir={self.data_dir!r}: cannot open '
             f'({_first_line(e)}); prepare it in ArrayRecord format or fix --config.data.name/data_dir')
      raise DataError(msg) from None
    self._ds = ds
    return ds

  @staticmethod
  def has_split(name: str, split: str, data_dir: str = '') -> bool:
    """Whether the prepared dataset has a split called ``split`` (slices like 'train[:10%]' count)."""
    try:
      TfdsSource(name, split, data_dir)
    except DataError:
      return False
    return True

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> Example:
    index = self._check_index(index)
    if self._ds is None:
      with self._lock:
        if self._ds is None:
          self._open()
    try:
      record = self._ds[index]
    except Exception as e:
      raise DataError(f'{self.name}[{self.split}] example {index}: cannot read ({_first_line(e)}); '
                      'rebuild the dataset or set --config.data.skip_corrupt=True') from None
    image = _as_hwc_uint8(record[self.image_key], f'{self.name}[{self.split}] example {index}')
    label = int(record[self.label_key]) if self._has_label else -1
    return {'image': image, 'label': label}


class FolderSource(_LazySource):
  """Image-class folders ``root/<class>/<file>``; classes and files sorted by name; decoded with Pillow."""

  def __init__(self, root: str, key: str = 'data.path'):
    root = _check_exists(root, key, 'folder')
    self.root = root
    self.name = os.path.basename(os.path.normpath(root))
    self.class_names = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith('.'))
    if not self.class_names:
      raise DataError(f'{key}: {root} has no class subfolders; expected {root}/<class>/<image file>')
    files, labels = [], []
    for label, cls in enumerate(self.class_names):
      folder = os.path.join(root, cls)
      for fname in sorted(os.listdir(folder)):
        if fname.lower().endswith(IMAGE_EXTENSIONS) and not fname.startswith('.'):
          files.append(os.path.join(cls, fname))
          labels.append(label)
    if not files:
      raise DataError(f'{key}: {root} has class folders but no image files ({", ".join(IMAGE_EXTENSIONS)})')
    self.files = files
    self.labels = np.asarray(labels, np.int64)
    self.num_classes = len(self.class_names)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> Example:
    index = self._check_index(index)
    path = os.path.join(self.root, self.files[index])
    try:
      with open(path, 'rb') as f:
        data = f.read()
    except OSError as e:
      raise DataError(f'{path}: cannot read ({e.strerror}); restore the file or set '
                      '--config.data.skip_corrupt=True') from None
    return {'image': decode_image(data, path), 'label': int(self.labels[index])}


class NpzSource(_LazySource):
  """Images in an ``.npz`` file, in one of two layouts.

  * Packed JPEG (see ../shared/data/README.md): ``jpeg_bytes`` (uint8, all files concatenated), ``offsets``
    (int64, N + 1), ``labels`` (N), optional ``class_names``; image i is decoded from
    ``jpeg_bytes[offsets[i]:offsets[i + 1]]`` with Pillow when it is read.
  * Plain arrays: ``images`` uint8 [N, H, W] or [N, H, W, C] and ``labels`` (N); optional ``num_classes``.
  """

  _LAZY = ('_jpeg', '_images')

  def __init__(self, path: str, key: str = 'data.path'):
    path = _check_exists(path, key)
    self.path = path
    self.name = os.path.splitext(os.path.basename(path))[0]
    if self.name == 'train' or self.name == 'test':  # ../shared/data/<dataset>/train.npz
      self.name = os.path.basename(os.path.dirname(os.path.abspath(path))) or self.name
    self._lock = threading.Lock()
    self._jpeg = None
    self._images = None
    try:
      with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if 'labels' not in keys:
          raise DataError(f'{key}: {path} has no "labels" array (has {sorted(keys)}); expected '
                          'jpeg_bytes/offsets/labels or images/labels')
        # Only the small arrays are read here; pixels are loaded on first access.
        raw_labels = np.asarray(f['labels'])
        if {'jpeg_bytes', 'offsets'} <= keys:
          self.packed = True
          self.offsets = np.asarray(f['offsets'], np.int64)
          n = len(self.offsets) - 1
          self.class_names = [str(c) for c in f['class_names']] if 'class_names' in keys else None
        elif 'images' in keys:
          self.packed = False
          self.offsets = None
          n = _npz_shape(path, 'images')[0]
          self.class_names = [str(c) for c in f['class_names']] if 'class_names' in keys else None
        else:
          raise DataError(f'{key}: {path} has neither jpeg_bytes+offsets nor images (has {sorted(keys)})')
        declared = int(f['num_classes']) if 'num_classes' in keys else 0
    except DataError:
      raise
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError.
      raise DataError(f'{key}: {path} is not a readable npz ({_first_line(e)}); '
                      'pass --config.data.path=... to a valid file') from None
    if n != len(raw_labels):
      raise DataError(f'{key}: {path} has {n} images but {len(raw_labels)} labels')
    declared = len(self.class_names) if self.class_names else declared
    self.labels = checked_labels(raw_labels, path, key, declared)
    self._len = n
    if self.class_names:
      self.num_classes = len(self.class_names)
    else:
      self.num_classes = max(declared, int(self.labels.max()) + 1 if n else 0)

  def _load(self) -> None:
    with self._lock:
      if self._jpeg is not None or self._images is not None:
        return
      with np.load(self.path, allow_pickle=False) as f:
        if self.packed:
          self._jpeg = np.asarray(f['jpeg_bytes'], np.uint8)
        else:
          images = np.asarray(f['images'])
          if images.dtype != np.uint8:
            raise DataError(f'data.path: {self.path} "images" has dtype {images.dtype}; expected uint8')
          self._images = images

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> Example:
    index = self._check_index(index)
    if self._jpeg is None and self._images is None:
      self._load()
    where = f'{self.path} image {index}'
    if self.packed:
      start, end = self.offsets[index], self.offsets[index + 1]
      image = decode_image(self._jpeg[start:end], where)
    else:
      image = _as_hwc_uint8(self._images[index], where)
    return {'image': image, 'label': int(self.labels[index])}


def _npz_shape(path: str, name: str) -> tuple[int, ...]:
  """The shape of array ``name`` in an npz, read from its .npy header without loading the data."""
  with zipfile.ZipFile(path) as z, z.open(name + '.npy') as f:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      shape = np.lib.format.read_array_header_1_0(f)[0]
    else:  # Versions 2.0 and 3.0 (very long headers) share the 2.0 reader's layout up to the encoding.
      shape = np.lib.format.read_array_header_2_0(f)[0]
  return tuple(shape)


def _open_maybe_gz(path: str):
  with open(path, 'rb') as f:
    magic = f.read(2)
  return gzip.open(path, 'rb') if magic == b'\x1f\x8b' else open(path, 'rb')


def _read_idx_header(path: str, key: str) -> tuple[int, tuple[int, ...]]:
  """Returns (header size in bytes, shape) of an IDX file (uint8 data only)."""
  try:
    with _open_maybe_gz(path) as f:
      magic = f.read(4)
      if len(magic) != 4 or magic[0] != 0 or magic[1] != 0 or magic[2] != 0x08:
        raise DataError(f'{key}: {path} is not an IDX uint8 file (magic {magic!r}); pass an MNIST-style '
                        '*-idx?-ubyte(.gz) file')
      ndim = magic[3]
      dims = np.frombuffer(f.read(4 * ndim), dtype='>u4')
  except DataError:
    raise
  except (OSError, EOFError) as e:
    raise DataError(f'{key}: {path} cannot be read ({e}); pass a valid IDX file') from None
  if len(dims) != ndim:
    raise DataError(f'{key}: {path} has a truncated IDX header')
  return 4 + 4 * ndim, tuple(int(d) for d in dims)


def _read_idx(path: str, key: str) -> np.ndarray:
  header, shape = _read_idx_header(path, key)
  try:
    with _open_maybe_gz(path) as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f'{key}: {path} cannot be read ({e}); pass a valid IDX file') from None
  count = int(np.prod(shape))
  if len(data) - header < count:
    raise DataError(f'{key}: {path} is truncated ({len(data) - header} of {count} data bytes)')
  return np.frombuffer(data, np.uint8, count=count, offset=header).reshape(shape)


class IdxSource(_LazySource):
  """MNIST-style IDX files (``*-images-idx3-ubyte`` + ``*-labels-idx1-ubyte``), gzip-compressed or not."""

  _LAZY = ('_images',)

  def __init__(self, images_path: str, labels_path: str, images_key: str = 'data.path',
               labels_key: str = 'data.labels_path'):
    self.images_path = _check_exists(images_path, images_key)
    self.labels_path = _check_exists(labels_path, labels_key)
    _, shape = _read_idx_header(self.images_path, images_key)
    if len(shape) not in (3, 4):
      raise DataError(f'{images_key}: {self.images_path} has IDX shape {shape}; expected [N, H, W(, C)] '
                      'images')
    self.labels = checked_labels(_read_idx(self.labels_path, labels_key).reshape(-1), self.labels_path,
                                 labels_key)
    if len(self.labels) != shape[0]:
      raise DataError(f'{labels_key}: {self.labels_path} has {len(self.labels)} labels but '
                      f'{self.images_path} has {shape[0]} images; pass the matching labels file')
    base = os.path.basename(self.images_path)
    self.name = os.path.basename(os.path.dirname(os.path.abspath(self.images_path))) or base
    self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
    self._len = shape[0]
    self._images = None
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> Example:
    index = self._check_index(index)
    if self._images is None:
      with self._lock:
        if self._images is None:
          self._images = _read_idx(self.images_path, 'data.path')
    return {'image': _as_hwc_uint8(self._images[index], f'{self.images_path} image {index}'),
            'label': int(self.labels[index])}


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
    state.pop('_lock', None)
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
          logging.warning('skip_corrupt: example %d of %s replaced by the next one: %s', i, self.name,
                          str(e).split('; ')[0])
    raise DataError(f'{self.name}: {min(n, MAX_CONSECUTIVE_CORRUPT)} consecutive examples from index {index} '
                    'are unreadable; check the data files (see the warnings above)')


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
      raise ValueError(f'Subset indices out of range for a source of {len(source)} examples')
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
    return f'Subset({self.source!r}, n={len(self)})'


def carve_indices(n: int, eval_fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """Splits range(n) into (train, eval) indices by a fixed permutation (seed ``CARVE_SEED``).

  The last ``round(n * eval_fraction)`` (at least 1) positions of the permutation are held out. Both index
  arrays are returned sorted, so that reads stay in storage order (the train pipeline shuffles anyway).
  """
  if not 0.0 < eval_fraction < 1.0:
    raise ConfigError(f'data.eval_fraction={eval_fraction} must be in (0, 1); pass e.g. '
                      '--config.data.eval_fraction=0.1')
  if n < 2:
    raise DataError(f'cannot carve an eval split out of {n} example(s); use a larger dataset')
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
  """``other`` as given if absolute, else relative to the folder holding ``path``."""
  other = os.path.expanduser(other)
  if os.path.isabs(other) or os.path.exists(other):
    return other
  return os.path.join(os.path.dirname(os.path.abspath(os.path.expanduser(path))), other)


def _idx_labels_path(images_path: str) -> str:
  """The MNIST labels file next to an images file: '*-images-idx3-ubyte*' -> '*-labels-idx1-ubyte*'."""
  folder, base = os.path.split(images_path)
  if 'images-idx3' in base:
    return os.path.join(folder, base.replace('images-idx3', 'labels-idx1'))
  return ''


def _build(cfg: Any, which: str) -> Any:
  """Builds the unsplit source: ``which`` is 'train', or 'eval' for a configured eval split/file."""
  kind = str(_cfg(cfg, 'source', 'digits')).lower()
  path = str(_cfg(cfg, 'path', ''))
  eval_split = str(_cfg(cfg, 'eval_split', ''))
  if kind == 'digits':
    return DigitsSource()
  if kind == 'tfds':
    split = str(_cfg(cfg, 'train_split', 'train')) if which == 'train' else eval_split
    return TfdsSource(str(_cfg(cfg, 'name', '')), split, str(_cfg(cfg, 'data_dir', '')),
                      image_key=str(_cfg(cfg, 'image_key', 'image')),
                      label_key=str(_cfg(cfg, 'label_key', 'label')))
  if kind in ('folder', 'npz'):
    cls = FolderSource if kind == 'folder' else NpzSource
    if which == 'train':
      return cls(path)
    return cls(_sibling(path, eval_split), key='data.eval_split')
  if kind == 'idx':
    if which == 'train':
      images = path
      labels = str(_cfg(cfg, 'labels_path', '')) or _idx_labels_path(path)
      return IdxSource(images, labels)
    images = _sibling(path, eval_split)
    return IdxSource(images, _idx_labels_path(images), images_key='data.eval_split',
                     labels_key='data.eval_split (labels file next to it)')
  if kind in ('moving_digits', 'video_csv', 'tfds_video'):
    from jepa.data import video  # pylint: disable=g-import-not-at-top  (video.py imports this module)
    return video.build_source(cfg, which)
  if kind == 'two_rooms':
    # EB-JEPA's Two Rooms trajectory windows (jepa/data/trajectories.py), 100,000 fixed draws (seed 0) carved
    # like other sources; a named eval split is 10,000 independent ones (seed 1). Unlabelled: num_classes 0.
    from jepa.data import trajectories  # pylint: disable=g-import-not-at-top
    src = trajectories.TwoRoomsTrajectories(seed=0 if which == 'train' else 1,
                                            num_examples=100_000 if which == 'train' else 10_000)
    src.name, src.num_classes = 'two_rooms', 0
    return src
  if kind == 'synthetic':  # Random pixels of the configured shape (compiling / timing only; jepa/data/synthetic.py).
    from jepa.data import synthetic  # pylint: disable=g-import-not-at-top
    return synthetic.SyntheticSource(int(_cfg(cfg, 'synthetic_examples', 4096)), int(_cfg(cfg, 'image_size', 32)),
                                     int(_cfg(cfg, 'num_frames', 0)))
  raise DataError(f'data.source={kind!r} is unknown; pass --config.data.source= one of digits, tfds, folder, '
                  'npz, idx, moving_digits, video_csv, tfds_video, two_rooms, synthetic')


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
  class indices (see :func:`checked_labels`) and at least 2 classes in the training data (:func:`check_classes`).

  Args:
    data_cfg: ConfigDict (or anything with attribute access, or a dict).
    split: 'train' or 'eval'.

  Returns:
    A source (see the module docstring).

  Raises:
    DataError: a path, dataset or split is missing or unreadable.
    ConfigError: ``split`` or ``eval_fraction`` is invalid.
  """
  if split not in ('train', 'eval'):
    raise ConfigError(f"get_source split={split!r}: expected 'train' or 'eval'")
  kind = str(_cfg(data_cfg, 'source', 'digits')).lower()
  eval_split = str(_cfg(data_cfg, 'eval_split', ''))
  named_eval = bool(eval_split) and kind not in ('digits', 'moving_digits')
  if named_eval and kind == 'tfds':
    name, data_dir = str(_cfg(data_cfg, 'name', '')), str(_cfg(data_cfg, 'data_dir', ''))
    if not TfdsSource.has_split(name, eval_split, data_dir):
      # Checkpoints and configs are shared across datasets where some ship only a train split (e.g. the
      # CIFAR-10 copy in ../shared/data); falling back to the carve-out keeps such configs runnable.
      logging.warning('data.eval_split=%r not found in %s; carving %.0f%% of the train split out instead',
                      eval_split, name, 100 * float(_cfg(data_cfg, 'eval_fraction', 0.1)))
      named_eval = False
  skip = bool(_cfg(data_cfg, 'skip_corrupt', False))
  if named_eval:
    src = _build(data_cfg, split)
    if split == 'train':
      check_classes(src)
    return Subset(src, np.arange(len(src)), name=src.name, skip_corrupt=True) if skip else src
  full = _build(data_cfg, 'train')
  check_classes(full)
  train_idx, eval_idx = carve_indices(len(full), float(_cfg(data_cfg, 'eval_fraction', 0.1)))
  if split == 'train':
    return Subset(full, train_idx, name=full.name, skip_corrupt=skip)
  return Subset(full, eval_idx, name=f'{full.name}_eval', skip_corrupt=skip)


def fixed_subset(source: Any, max_examples: int) -> Any:
  """At most `max_examples` of `source`, drawn by a fixed permutation (seed 0) and kept in index order.

  Not the first N: datasets stored sorted by class (CIFAR-10 in ../shared/data is) would lose whole classes.
  """
  if not max_examples or len(source) <= max_examples:
    return source
  keep = np.sort(np.random.default_rng(0).permutation(len(source))[:max_examples])
  return Subset(source, keep)
