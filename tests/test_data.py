"""Tests for jepa.data.sources and jepa.data.pipeline (tiny fixtures written to tmp_path)."""

import gzip
import io
import os
import pickle
import types

import grain
import numpy as np
import pytest
from PIL import Image

from jepa.data import pipeline
from jepa.data import sources
from jepa.errors import DataError

SHARED_TFDS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tensorflow_datasets")
if not os.path.isdir(SHARED_TFDS):
  SHARED_TFDS = "/work/shared/data/tensorflow_datasets"


class RangeSource:
  """In-memory source whose example i has label i and a constant image of value i % 256."""

  def __init__(self, n: int, bad: tuple[int, ...] = ()):
    self.n = n
    self.bad = set(bad)
    self.name = "range"
    self.num_classes = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    i = int(i)
    if i in self.bad:
      raise DataError(f"range example {i}: corrupt")
    return {"image": np.full((4, 4, 1), i % 256, np.uint8), "label": i}


def label_and_noise(example, rng):
  """An example_fn that exposes the per-element rng through a random number."""
  return {"label": np.int32(example["label"]), "noise": np.float32(rng.uniform()),
          "image": example["image"].astype(np.float32) / 255.0}


def _check_example(ex, shape, num_classes):
  assert set(ex) == {"image", "label"}
  assert ex["image"].dtype == np.uint8 and ex["image"].shape == shape
  assert isinstance(ex["label"], int) and 0 <= ex["label"] < num_classes


def _one_line_error(excinfo, *needles):
  msg = str(excinfo.value)
  assert "\n" not in msg
  for needle in needles:
    assert needle in msg, msg
  return msg


# ----------------------------------------------------------------------------------------------- sources


def test_digits_source():
  src = sources.DigitsSource()
  assert len(src) == 1797 and src.num_classes == 10 and src.name == "digits"
  _check_example(src[0], (8, 8, 1), 10)
  images = np.stack([src[i]["image"] for i in range(len(src))])
  assert images.max() == 255 and images.min() == 0
  labels = [src[i]["label"] for i in range(len(src))]
  assert sorted(set(labels)) == list(range(10))
  copy = pickle.loads(pickle.dumps(src))
  assert len(pickle.dumps(src)) < 10_000  # pixels are not shipped to workers
  np.testing.assert_array_equal(copy[5]["image"], src[5]["image"])


def _write_folder(root, bad=False):
  rng = np.random.default_rng(0)
  for cls, mode in (("b_dog", "RGB"), ("a_cat", "L")):
    os.makedirs(root / cls)
    for k in range(3):
      shape = (6, 5, 3) if mode == "RGB" else (6, 5)
      Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / cls / f"{k}.png")
  (root / "a_cat" / "notes.txt").write_text("not an image")
  if bad:
    (root / "b_dog" / "9_bad.png").write_bytes(b"this is not a png")


def test_folder_source(tmp_path):
  _write_folder(tmp_path)
  src = sources.FolderSource(str(tmp_path))
  assert len(src) == 6 and src.num_classes == 2 and src.class_names == ["a_cat", "b_dog"]
  _check_example(src[0], (6, 5, 1), 2)  # 'L' keeps one channel
  _check_example(src[3], (6, 5, 3), 2)
  assert [src[i]["label"] for i in range(6)] == [0, 0, 0, 1, 1, 1]
  expected = np.asarray(Image.open(tmp_path / "b_dog" / "1.png"))
  np.testing.assert_array_equal(src[4]["image"], expected)
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(src))[4]["image"], expected)


def test_folder_corrupt_file_names_file(tmp_path):
  _write_folder(tmp_path, bad=True)
  src = sources.FolderSource(str(tmp_path))
  with pytest.raises(DataError) as excinfo:
    src[len(src) - 1]
  _one_line_error(excinfo, "9_bad.png", "skip_corrupt")


def _jpeg(img, quality=95):
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG", quality=quality)
  return np.frombuffer(buf.getvalue(), np.uint8)


def test_npz_packed_jpeg(tmp_path):
  images = [np.full((8, 10, 3), c, np.uint8) for c in (0, 60, 120, 250)]
  blobs = [_jpeg(im) for im in images]
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
  path = tmp_path / "train.npz"
  np.savez(path, jpeg_bytes=np.concatenate(blobs), offsets=offsets, labels=np.asarray([0, 1, 2, 1], np.int16),
           class_names=np.asarray(["x", "y", "z"]), filenames=np.asarray([f"{i}.jpg" for i in range(4)]))
  src = sources.NpzSource(str(path))
  assert len(src) == 4 and src.num_classes == 3 and src.class_names == ["x", "y", "z"]
  for i, image in enumerate(images):
    ex = src[i]
    _check_example(ex, (8, 10, 3), 3)
    np.testing.assert_allclose(ex["image"], image, atol=3)
  assert [src[i]["label"] for i in range(4)] == [0, 1, 2, 1]
  assert len(pickle.dumps(src)) < 10_000
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(src))[2]["image"], src[2]["image"])


def test_npz_plain(tmp_path):
  rng = np.random.default_rng(0)
  gray = rng.integers(0, 256, (5, 7, 6), dtype=np.uint8)
  np.savez_compressed(tmp_path / "gray.npz", images=gray, labels=np.asarray([0, 1, 4, 1, 0]))
  src = sources.NpzSource(str(tmp_path / "gray.npz"))
  assert len(src) == 5 and src.num_classes == 5
  _check_example(src[2], (7, 6, 1), 5)
  np.testing.assert_array_equal(src[2]["image"][:, :, 0], gray[2])
  rgb = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
  np.savez(tmp_path / "rgb.npz", images=rgb, labels=np.asarray([2, 0, 1]))
  src = sources.NpzSource(str(tmp_path / "rgb.npz"))
  np.testing.assert_array_equal(src[-1]["image"], rgb[2])
  assert src[1]["label"] == 0 and src.num_classes == 3


def _write_idx(path, array, compress):
  header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
  opener = gzip.open if compress else open
  with opener(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("compress", [True, False])
def test_idx_source(tmp_path, compress):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
  labels = np.asarray([3, 1, 4, 1, 5, 9, 2], np.uint8)
  suffix = ".gz" if compress else ""
  images_path = tmp_path / f"train-images-idx3-ubyte{suffix}"
  _write_idx(images_path, images, compress)
  _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress)
  src = sources.IdxSource(str(images_path), str(tmp_path / f"train-labels-idx1-ubyte{suffix}"))
  assert len(src) == 7 and src.num_classes == 10
  _check_example(src[5], (5, 4, 1), 10)
  np.testing.assert_array_equal(src[5]["image"][:, :, 0], images[5])
  assert src[5]["label"] == 9
  # get_source finds the labels file next to the images file by the MNIST naming convention.
  cfg = types.SimpleNamespace(source="idx", path=str(images_path), labels_path="", eval_fraction=0.3)
  assert len(sources.get_source(cfg, "train")) + len(sources.get_source(cfg, "eval")) == 7


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_TFDS, "fashion_mnist")),
                    reason="shared fashion_mnist TFDS folder not present")
def test_tfds_fashion_mnist():
  src = sources.TfdsSource("fashion_mnist", "train", SHARED_TFDS)
  assert len(src) == 60000 and src.num_classes == 10
  _check_example(src[123], (28, 28, 1), 10)
  copy = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(copy[123]["image"], src[123]["image"])
  cfg = types.SimpleNamespace(source="tfds", name="fashion_mnist", data_dir=SHARED_TFDS, eval_split="test")
  assert len(sources.get_source(cfg, "eval")) == 10000
  assert len(sources.get_source(cfg, "train")) == 60000
  cfg.eval_split = "validation"  # absent: falls back to the carve-out
  assert len(sources.get_source(cfg, "eval")) == 6000
  assert len(sources.get_source(cfg, "train")) == 54000


def test_carve_out_disjoint_and_deterministic():
  cfg = {"source": "digits", "eval_split": "", "eval_fraction": 0.2}
  train, evals = sources.get_source(cfg, "train"), sources.get_source(cfg, "eval")
  assert isinstance(train, sources.Subset) and isinstance(evals, sources.Subset)
  assert len(evals) == round(1797 * 0.2) and len(train) + len(evals) == 1797
  assert not set(train.indices) & set(evals.indices)
  np.testing.assert_array_equal(sources.get_source(cfg, "eval").indices, evals.indices)
  np.testing.assert_array_equal(evals[0]["image"], sources.DigitsSource()[int(evals.indices[0])]["image"])
  assert train.num_classes == 10
  # The carve-out does not depend on anything but (n, fraction).
  a, b = sources.carve_indices(100, 0.1)
  assert len(b) == 10 and sorted(np.concatenate([a, b]).tolist()) == list(range(100))


def test_errors_are_one_line(tmp_path):
  missing = str(tmp_path / "nope" / "x.npz")
  with pytest.raises(DataError) as excinfo:
    sources.get_source({"source": "npz", "path": missing}, "train")
  _one_line_error(excinfo, missing, "data.path")
  with pytest.raises(DataError) as excinfo:
    sources.get_source({"source": "folder", "path": str(tmp_path / "nofolder")}, "train")
  _one_line_error(excinfo, "nofolder")
  with pytest.raises(DataError) as excinfo:
    sources.get_source({"source": "idx", "path": missing, "labels_path": missing}, "train")
  _one_line_error(excinfo, missing)
  with pytest.raises(DataError) as excinfo:
    sources.get_source({"source": "tfds", "name": "cifar10", "data_dir": str(tmp_path)}, "train")
  _one_line_error(excinfo, "cifar10", str(tmp_path))
  with pytest.raises(DataError) as excinfo:
    sources.get_source({"source": "parquet"}, "train")
  _one_line_error(excinfo, "data.source", "parquet")
  (tmp_path / "junk.npz").write_bytes(b"junk")
  with pytest.raises(DataError) as excinfo:
    sources.NpzSource(str(tmp_path / "junk.npz"))
  _one_line_error(excinfo, "junk.npz")


# ---------------------------------------------------------------------------------------------- pipeline


def _take(it, k):
  return [next(it) for _ in range(k)]


def _assert_batches_equal(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert set(x) == set(y)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_train_iterator_deterministic():
  src = RangeSource(50)
  first = _take(pipeline.make_train_iterator(src, label_and_noise, batch_size=8, seed=3), 10)
  again = _take(pipeline.make_train_iterator(src, label_and_noise, batch_size=8, seed=3), 10)
  _assert_batches_equal(first, again)
  assert first[0]["label"].shape == (8,) and first[0]["label"].dtype == np.int32
  assert first[0]["image"].shape == (8, 4, 4, 1)
  other = _take(pipeline.make_train_iterator(src, label_and_noise, batch_size=8, seed=4), 1)
  assert not np.array_equal(first[0]["label"], other[0]["label"])
  # Epochs are reshuffled: 50 examples, 8 per batch -> epoch 1 is the first 50 labels of the stream.
  labels = np.concatenate([b["label"] for b in first])
  assert sorted(labels[:50].tolist()) == list(range(50))
  assert not np.array_equal(labels[:30], labels[50:80])


def test_train_iterator_process_sharding():
  src = RangeSource(48)
  steps = 48 // (2 * 4)  # one epoch of the global stream
  per_process = [_take(pipeline.make_train_iterator(src, label_and_noise, batch_size=4, seed=7,
                                                    process_index=p, process_count=2), steps)
                 for p in range(2)]
  seen = [np.concatenate([b["label"] for b in batches]) for batches in per_process]
  assert not set(seen[0].tolist()) & set(seen[1].tolist())
  assert sorted(np.concatenate(seen).tolist()) == list(range(48))
  # Global batch k is the same examples with the same per-element randomness whatever the process count.
  single = _take(pipeline.make_train_iterator(src, label_and_noise, batch_size=8, seed=7), steps)
  for k in range(steps):
    for key in ("label", "noise"):
      merged = np.empty(8, single[k][key].dtype)
      merged[0::2], merged[1::2] = per_process[0][k][key], per_process[1][k][key]
      np.testing.assert_array_equal(merged, single[k][key])


def test_train_iterator_state_round_trip():
  src = RangeSource(30)
  it = pipeline.make_train_iterator(src, label_and_noise, batch_size=4, seed=0)
  _take(it, 9)  # crosses an epoch boundary
  state = it.get_state()
  expected = _take(it, 6)
  restored = pipeline.make_train_iterator(src, label_and_noise, batch_size=4, seed=0)
  restored.set_state(state)
  _assert_batches_equal(_take(restored, 6), expected)


def test_train_iterator_worker_processes_same_stream_and_resume():
  """grain worker processes (data.num_workers) give the threads' stream, and their state resumes exactly."""
  src = RangeSource(30)
  threads = _take(pipeline.make_train_iterator(src, label_and_noise, batch_size=4, seed=2), 12)
  it = pipeline.make_train_iterator(src, label_and_noise, batch_size=4, seed=2, num_workers=2)
  workers = _take(it, 9)
  _assert_batches_equal(workers, threads[:9])
  state = it.get_state()
  restored = pipeline.make_train_iterator(src, label_and_noise, batch_size=4, seed=2, num_workers=2)
  restored.set_state(state)
  _assert_batches_equal(_take(restored, 3), threads[9:12])


def test_train_iterator_orbax_checkpoint(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  src = RangeSource(30)
  it = pipeline.make_train_iterator(src, label_and_noise, batch_size=4, seed=1)
  _take(it, 5)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = _take(it, 3)
    restored = pipeline.make_train_iterator(src, label_and_noise, batch_size=4, seed=1)
    mngr.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  _assert_batches_equal(_take(restored, 3), expected)


def test_corrupt_examples():
  src = RangeSource(20, bad=(4, 5, 11))
  with pytest.raises(DataError) as excinfo:
    _take(pipeline.make_train_iterator(src, label_and_noise, batch_size=5, seed=0), 4)
  _one_line_error(excinfo, "range example")
  it = pipeline.make_train_iterator(src, label_and_noise, batch_size=5, seed=0, skip_corrupt=True,
                                    num_threads=1)
  labels = np.concatenate([b["label"] for b in _take(it, 4)])
  assert not {4, 5, 11} & set(labels.tolist())
  assert it.corrupt.num_skipped >= 3 and it.corrupt.skipped_indices == {4, 5, 11}
  # Substitutes are deterministic (next readable index): 4 -> 6, 5 -> 6, 11 -> 12.
  again = pipeline.make_train_iterator(src, label_and_noise, batch_size=5, seed=0, skip_corrupt=True)
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in _take(again, 4)]), labels)
  assert np.sum(labels == 6) == 3 and np.sum(labels == 12) == 2


@pytest.mark.parametrize("process_count", [1, 3])
def test_eval_batches_padding(process_count):
  src = RangeSource(23)
  labels = []
  for p in range(process_count):
    batches = list(pipeline.eval_batches(src, label_and_noise, batch_size=4, process_index=p,
                                         process_count=process_count))
    per_process = -(-23 // process_count)
    assert len(batches) == -(-per_process // 4)  # the same count on every process
    for b in batches:
      assert b["mask"].dtype == np.bool_ and b["mask"].shape == (4,) and b["label"].shape == (4,)
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(mask, np.arange(len(mask)) < len(range(p, 23, process_count)))
    labels += np.concatenate([b["label"] for b in batches])[mask].tolist()
  assert sorted(labels) == list(range(23))
  # Deterministic per example: same rng draws on a second pass.
  a = [b["noise"] for b in pipeline.eval_batches(src, label_and_noise, batch_size=4)]
  b = [b["noise"] for b in pipeline.eval_batches(src, label_and_noise, batch_size=4)]
  np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))


def test_pipeline_with_digits_and_augment():
  """End to end on the embedded default: carve-out source, augmentations, pickled source."""
  from jepa.data import augment  # pylint: disable=g-import-not-at-top

  def example_fn(example, rng):
    img, crop = augment.random_resized_crop(example["image"], rng, 16)
    img, flip = augment.hflip(img, rng)
    img = augment.normalize(augment.to_rgb(img))
    return {"image": img, "label": np.int32(example["label"]), "crop": crop["crop"], "flip": flip["flip"]}

  src = pickle.loads(pickle.dumps(sources.get_source({"source": "digits"}, "train")))
  it = pipeline.make_train_iterator(src, example_fn, batch_size=16, seed=0)
  batch = next(it)
  assert batch["image"].shape == (16, 16, 16, 3) and batch["image"].dtype == np.float32
  assert batch["crop"].shape == (16, 4) and batch["flip"].dtype == np.bool_


SHARED_DATA = os.path.dirname(SHARED_TFDS)


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="shared data folder not present")
def test_shared_real_files():
  """The packed-JPEG CIFAR-10 and the gzip IDX MNIST of ../shared/data, through get_source."""
  cifar = os.path.join(SHARED_DATA, "cifar10", "train.npz")
  if os.path.isfile(cifar):
    src = sources.get_source({"source": "npz", "path": cifar}, "eval")
    assert len(src) == 5000 and src.num_classes == 10 and src.name == "cifar10_eval"
    _check_example(src[0], (32, 32, 3), 10)
  mnist = os.path.join(SHARED_DATA, "mnist", "train-images-idx3-ubyte.gz")
  if os.path.isfile(mnist):
    cfg = {"source": "idx", "path": mnist, "eval_split": "t10k-images-idx3-ubyte.gz"}
    src = sources.get_source(cfg, "eval")
    assert len(src) == 10000 and src.num_classes == 10
    _check_example(src[0], (28, 28, 1), 10)
    assert len(sources.get_source(cfg, "train")) == 60000


def test_synthetic_source_shapes_and_determinism():
  """data.source='synthetic': random uint8 images (or clips) of the configured shape, fixed per index."""
  cfg = {"source": "synthetic", "image_size": 12, "synthetic_examples": 40, "eval_fraction": 0.25}
  train, held = sources.get_source(cfg, "train"), sources.get_source(cfg, "eval")
  assert len(train) == 30 and len(held) == 10 and train.num_classes == 10
  a, b = train[3], train[3]
  assert a["image"].shape == (12, 12, 3) and a["image"].dtype == np.uint8
  np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(train[3]["image"], train[4]["image"])
  clip = sources.get_source(dict(cfg, num_frames=5), "train")[0]
  assert clip["video"].shape == (5, 12, 12, 3) and 0 <= clip["label"] < 10
