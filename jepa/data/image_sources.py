"""The image sources: one class per storage format, each following :mod:`jepa.data.source_base`'s interface.

:class:`DigitsSource` (embedded default, scikit-learn's 1,797 8x8 digits), :class:`TfdsSource`,
:class:`FolderSource`, :class:`NpzSource` (packed JPEG or plain arrays) and :class:`IdxSource` (MNIST IDX).
They are built from a config by :func:`jepa.data.sources.get_source`, which also re-exports them.
"""

from __future__ import annotations

import gzip
import os
import threading
import zipfile

import numpy as np

from jepa.data import source_base
from jepa.errors import DataError

Example = source_base.Example

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class DigitsSource(source_base.LazySource):
  """scikit-learn's 1,797 real 8x8 handwritten digits (10 classes, 1 channel): the offline default.

  Pixel values 0..16 are rescaled to 0..255 uint8.
  """

  _LAZY = ("_images", "_labels")
  _LEN = 1797

  def __init__(self):
    self.name = "digits"
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
    self._ensure("_images", self._load)
    return {"image": self._images[index], "label": int(self._labels[index])}


class TfdsSource(source_base.LazySource):
  """A prepared TFDS dataset read with ``tfds.data_source`` (ArrayRecord; no TensorFlow needed).

  Args:
    name: TFDS name, optionally with config/version ('fashion_mnist', 'cifar10:3.0.2').
    split: split name or slice ('train', 'test', 'train[:90%]').
    data_dir: the TFDS data folder; '' for TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
    image_key: feature holding the image.
    label_key: feature holding the class label; '' (or absent from the features) gives label -1.
  """

  _LAZY = ("_ds",)

  def __init__(self, name: str, split: str = "train", data_dir: str = "", image_key: str = "image",
               label_key: str = "label"):
    if not name:
      raise DataError("data.name is empty; pass --config.data.name=... (a TFDS name, e.g. fashion_mnist)")
    if data_dir:
      data_dir = os.path.expanduser(data_dir)
      base = name.split(":")[0].split("/")[0]
      if not os.path.isdir(os.path.join(data_dir, base)):
        raise DataError(f"data.data_dir: {os.path.join(data_dir, base)} does not exist; prepare {name} there "
                        "(tfds build --file_format=array_record) or pass --config.data.data_dir=... to the "
                        "folder that holds it")
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
      raise DataError(f"data.image_key: {name} has no feature {image_key!r} (features: {sorted(features)}); "
                      "pass --config.data.image_key=...")
    self._has_label = bool(label_key) and label_key in features
    self.num_classes = int(getattr(features[label_key], "num_classes", 0) or 0) if self._has_label else 0
    self._len = len(ds)

  def _open(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    try:
      ds = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir, download=False)
    except Exception as e:  # tfds raises ValueError, DatasetNotFoundError, NotImplementedError, ...
      msg = (f"data.name={self.name!r} split={self.split!r} data_dir={self.data_dir!r}: cannot open "
             f"({source_base.first_line(e)}); prepare it in ArrayRecord format or fix --config.data.name/data_dir")
      raise DataError(msg) from None
    self._ds = ds
    return ds

  @staticmethod
  def has_split(name: str, split: str, data_dir: str = "") -> bool:
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
    self._ensure("_ds", self._open)
    try:
      record = self._ds[index]
    except Exception as e:
      raise DataError(f"{self.name}[{self.split}] example {index}: cannot read ({source_base.first_line(e)}); "
                      "rebuild the dataset or set --config.data.skip_corrupt=True") from None
    image = source_base.as_hwc_uint8(record[self.image_key], f"{self.name}[{self.split}] example {index}")
    label = int(record[self.label_key]) if self._has_label else -1
    return {"image": image, "label": label}


class FolderSource(source_base.LazySource):
  """Image-class folders ``root/<class>/<file>``; classes and files sorted by name; decoded with Pillow."""

  def __init__(self, root: str, key: str = "data.path"):
    root = source_base.check_exists(root, key, "folder")
    self.root = root
    self.name = os.path.basename(os.path.normpath(root))
    self.class_names = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    if not self.class_names:
      raise DataError(f"{key}: {root} has no class subfolders; expected {root}/<class>/<image file>")
    files, labels = [], []
    for label, cls in enumerate(self.class_names):
      folder = os.path.join(root, cls)
      for fname in sorted(os.listdir(folder)):
        if fname.lower().endswith(IMAGE_EXTENSIONS) and not fname.startswith("."):
          files.append(os.path.join(cls, fname))
          labels.append(label)
    if not files:
      raise DataError(f"{key}: {root} has class folders but no image files ({', '.join(IMAGE_EXTENSIONS)})")
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
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise DataError(f"{path}: cannot read ({e.strerror}); restore the file or set "
                      "--config.data.skip_corrupt=True") from None
    return {"image": source_base.decode_image(data, path), "label": int(self.labels[index])}


class NpzSource(source_base.LazySource):
  """Images in an ``.npz`` file, in one of two layouts.

  * Packed JPEG (see ../shared/data/README.md): ``jpeg_bytes`` (uint8, all files concatenated), ``offsets``
    (int64, N + 1), ``labels`` (N), optional ``class_names``; image i is decoded from
    ``jpeg_bytes[offsets[i]:offsets[i + 1]]`` with Pillow when it is read.
  * Plain arrays: ``images`` uint8 [N, H, W] or [N, H, W, C] and ``labels`` (N); optional ``num_classes``.
  """

  _LAZY = ("_jpeg", "_images")

  def __init__(self, path: str, key: str = "data.path"):
    path = source_base.check_exists(path, key)
    self.path = path
    self.name = os.path.splitext(os.path.basename(path))[0]
    if self.name == "train" or self.name == "test":  # ../shared/data/<dataset>/train.npz
      self.name = os.path.basename(os.path.dirname(os.path.abspath(path))) or self.name
    self._lock = threading.Lock()
    self._jpeg = None
    self._images = None
    try:
      with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if "labels" not in keys:
          raise DataError(f'{key}: {path} has no "labels" array (has {sorted(keys)}); expected '
                          'jpeg_bytes/offsets/labels or images/labels')
        # Only the small arrays are read here; pixels are loaded on first access.
        raw_labels = np.asarray(f["labels"])
        if {"jpeg_bytes", "offsets"} <= keys:
          self.packed = True
          self.offsets = np.asarray(f["offsets"], np.int64)
          n = len(self.offsets) - 1
          self.class_names = [str(c) for c in f["class_names"]] if "class_names" in keys else None
        elif "images" in keys:
          self.packed = False
          self.offsets = None
          n = _npz_shape(path, "images")[0]
          self.class_names = [str(c) for c in f["class_names"]] if "class_names" in keys else None
        else:
          raise DataError(f"{key}: {path} has neither jpeg_bytes+offsets nor images (has {sorted(keys)})")
        declared = int(f["num_classes"]) if "num_classes" in keys else 0
    except DataError:
      raise
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError.
      raise DataError(f"{key}: {path} is not a readable npz ({source_base.first_line(e)}); "
                      "pass --config.data.path=... to a valid file") from None
    if n != len(raw_labels):
      raise DataError(f"{key}: {path} has {n} images but {len(raw_labels)} labels")
    declared = len(self.class_names) if self.class_names else declared
    self.labels = source_base.checked_labels(raw_labels, path, key, declared)
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
          self._jpeg = np.asarray(f["jpeg_bytes"], np.uint8)
        else:
          images = np.asarray(f["images"])
          if images.dtype != np.uint8:
            raise DataError(f'data.path: {self.path} "images" has dtype {images.dtype}; expected uint8')
          self._images = images

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> Example:
    index = self._check_index(index)
    if self._jpeg is None and self._images is None:
      self._load()
    where = f"{self.path} image {index}"
    if self.packed:
      start, end = self.offsets[index], self.offsets[index + 1]
      image = source_base.decode_image(self._jpeg[start:end], where)
    else:
      image = source_base.as_hwc_uint8(self._images[index], where)
    return {"image": image, "label": int(self.labels[index])}


def _npz_shape(path: str, name: str) -> tuple[int, ...]:
  """The shape of array ``name`` in an npz, read from its .npy header without loading the data."""
  with zipfile.ZipFile(path) as z, z.open(name + ".npy") as f:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      shape = np.lib.format.read_array_header_1_0(f)[0]
    else:  # Versions 2.0 and 3.0 (very long headers) share the 2.0 reader's layout up to the encoding.
      shape = np.lib.format.read_array_header_2_0(f)[0]
  return tuple(shape)


def _open_maybe_gz(path: str):
  with open(path, "rb") as f:
    magic = f.read(2)
  return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _read_idx_header(path: str, key: str) -> tuple[int, tuple[int, ...]]:
  """Returns (header size in bytes, shape) of an IDX file (uint8 data only)."""
  try:
    with _open_maybe_gz(path) as f:
      magic = f.read(4)
      if len(magic) != 4 or magic[0] != 0 or magic[1] != 0 or magic[2] != 0x08:
        raise DataError(f"{key}: {path} is not an IDX uint8 file (magic {magic!r}); pass an MNIST-style "
                        "*-idx?-ubyte(.gz) file")
      ndim = magic[3]
      dims = np.frombuffer(f.read(4 * ndim), dtype=">u4")
  except DataError:
    raise
  except (OSError, EOFError) as e:
    raise DataError(f"{key}: {path} cannot be read ({e}); pass a valid IDX file") from None
  if len(dims) != ndim:
    raise DataError(f"{key}: {path} has a truncated IDX header")
  return 4 + 4 * ndim, tuple(int(d) for d in dims)


def _read_idx(path: str, key: str) -> np.ndarray:
  header, shape = _read_idx_header(path, key)
  try:
    with _open_maybe_gz(path) as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f"{key}: {path} cannot be read ({e}); pass a valid IDX file") from None
  count = int(np.prod(shape))
  if len(data) - header < count:
    raise DataError(f"{key}: {path} is truncated ({len(data) - header} of {count} data bytes)")
  return np.frombuffer(data, np.uint8, count=count, offset=header).reshape(shape)


class IdxSource(source_base.LazySource):
  """MNIST-style IDX files (``*-images-idx3-ubyte`` + ``*-labels-idx1-ubyte``), gzip-compressed or not."""

  _LAZY = ("_images",)

  def __init__(self, images_path: str, labels_path: str, images_key: str = "data.path",
               labels_key: str = "data.labels_path"):
    self.images_path = source_base.check_exists(images_path, images_key)
    self.labels_path = source_base.check_exists(labels_path, labels_key)
    _, shape = _read_idx_header(self.images_path, images_key)
    if len(shape) not in (3, 4):
      raise DataError(f"{images_key}: {self.images_path} has IDX shape {shape}; expected [N, H, W(, C)] "
                      "images")
    self.labels = source_base.checked_labels(_read_idx(self.labels_path, labels_key).reshape(-1), self.labels_path,
                                 labels_key)
    if len(self.labels) != shape[0]:
      raise DataError(f"{labels_key}: {self.labels_path} has {len(self.labels)} labels but "
                      f"{self.images_path} has {shape[0]} images; pass the matching labels file")
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
          self._images = _read_idx(self.images_path, "data.path")
    return {"image": source_base.as_hwc_uint8(self._images[index], f"{self.images_path} image {index}"),
            "label": int(self.labels[index])}
