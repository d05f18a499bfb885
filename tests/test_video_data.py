"""Video data: moving digits, clip sampling, the PyAV CSV source, TFDS video, clip augmentations."""
import math
import pickle
import sys
import types

import numpy as np
import pytest

from jepa.data import sources
from jepa.data import video
from jepa.errors import ConfigError, DataError


# ---------------------------------------------------------------- moving digits


def test_moving_digits_deterministic_and_picklable():
  a = video.MovingDigitsSource(num_frames=8, frame_step=1, canvas=32)
  b = pickle.loads(pickle.dumps(video.MovingDigitsSource(num_frames=8, frame_step=1, canvas=32)))
  assert len(a) == 1797 and a.num_classes == 8
  for i in (0, 5, 1796):
    x, y = a[i], b[i]
    assert x["video"].shape == (8, 32, 32, 1) and x["video"].dtype == np.uint8
    np.testing.assert_array_equal(x["video"], y["video"])
    assert x["label"] == y["label"] == x["direction"]
  assert not np.array_equal(a[0]["video"], a[1]["video"])
  digits = sources.DigitsSource()
  assert [a[i]["digit"] for i in range(20)] == [digits[i]["label"] for i in range(20)]
  by_digit = video.MovingDigitsSource(num_frames=8, canvas=32, label="digit")
  assert by_digit.num_classes == 10 and by_digit[7]["label"] == digits[7]["label"]
  np.testing.assert_array_equal(by_digit[7]["video"], a[7]["video"])  # Same clips, another label.


def _centroids(clip):
  """Intensity-weighted (row, col) centre of every frame, [T, 2]."""
  frames = clip[..., 0].astype(np.float64)
  rows, cols = np.mgrid[:frames.shape[1], :frames.shape[2]]
  mass = frames.sum(axis=(1, 2))
  return np.stack([(frames * rows).sum(axis=(1, 2)) / mass, (frames * cols).sum(axis=(1, 2)) / mass], axis=1)


@pytest.mark.parametrize("num_directions", [4, 8])
def test_motion_label_matches_rendered_motion(num_directions):
  src = video.MovingDigitsSource(num_frames=8, frame_step=1, canvas=32, num_directions=num_directions)
  counts = np.zeros(num_directions, int)
  for i in range(60):
    ex = src[i]
    centre = _centroids(ex["video"])
    steps = np.diff(centre, axis=0)  # The path fits the canvas here, so every step moves the same way.
    drow, dcol = centre[-1] - centre[0]
    angle = math.atan2(-drow, dcol)  # Rows grow downwards; direction k is at 2 pi k / K counter-clockwise.
    k = int(round(angle / (2 * math.pi / num_directions))) % num_directions
    assert k == ex["label"], (i, k, ex["label"], drow, dcol)
    velocity = src.motion(i)["velocity"]
    assert np.all(steps @ velocity >= 0)  # Never moves against the drawn velocity (no bounce).
    counts[k] += 1
  assert counts.min() > 0  # Every direction occurs.


def test_moving_digits_bounce_off_walls_for_long_paths():
  src = video.MovingDigitsSource(num_frames=16, frame_step=4, canvas=32)
  room = src.canvas - src.digit_size
  for i in range(20):
    pos = src.motion(i)["positions"]
    assert pos.min() >= 0 and pos.max() <= room
    ex = src[i]
    assert ex["video"].shape == (16, 32, 32, 1)
    assert ex["video"].reshape(16, -1).max(axis=1).min() > 0  # The digit never leaves the frame.


def test_moving_digits_bad_label():
  with pytest.raises(ConfigError, match="data.label"):
    video.MovingDigitsSource(label="colour")


def test_get_source_moving_digits_carve_out():
  cfg = {"source": "moving_digits", "num_frames": 4, "frame_step": 1, "image_size": 16, "label": "digit",
         "eval_fraction": 0.1}
  train, held = sources.get_source(cfg, "train"), sources.get_source(cfg, "eval")
  assert len(train) + len(held) == 1797 and train.num_classes == 10
  assert train[0]["video"].shape == (4, 16, 16, 1)
  with pytest.raises(ConfigError, match="data.num_frames"):
    sources.get_source({"source": "moving_digits", "num_frames": 0}, "train")


# ---------------------------------------------------------------- clip sampling


def test_clip_indices():
  np.testing.assert_array_equal(video.clip_indices(100, 4, 3), [45, 48, 51, 54])  # Central window.
  np.testing.assert_array_equal(video.clip_indices(5, 4, 2), [0, 2, 4, 4])        # Short: last frame repeats.
  rng = np.random.default_rng(0)
  starts = {int(video.clip_indices(20, 4, 2, rng)[0]) for _ in range(200)}
  assert starts == set(range(0, 14))  # Every window start 0 .. 20 - 7 is drawn.


# ---------------------------------------------------------------- files (PyAV) and TFDS


def _write_video(path, num_frames, codec="ffv1", height=24, width=32):
  """Writes frame i with red = 20 i and green = 5 i (checks which frames were decoded)."""
  av = pytest.importorskip("av")
  with av.open(str(path), "w") as out:
    stream = out.add_stream(codec, rate=10)
    stream.width, stream.height = width, height
    stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
    for i in range(num_frames):
      frame = np.zeros((height, width, 3), np.uint8)
      frame[..., 0], frame[..., 1] = 20 * i, 5 * i
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)


def test_csv_source_decodes_written_clip(tmp_path):
  (tmp_path / "clips").mkdir()
  _write_video(tmp_path / "clips" / "a.mkv", 10)
  _write_video(tmp_path / "clips" / "short.mkv", 3)
  (tmp_path / "list.csv").write_text("# path label\nclips/a.mkv 3\n\nclips/short.mkv 1\n")
  src = video.VideoCsvSource(str(tmp_path / "list.csv"), num_frames=4, frame_step=2)
  assert len(src) == 2 and src.num_classes == 4
  ex = src[0]
  assert ex["label"] == 3
  clip = video.get_clip(ex)  # Central window of 10 frames: span 7, start 1.
  assert clip.shape == (4, 24, 32, 3) and clip.dtype == np.uint8
  np.testing.assert_array_equal(clip[:, 0, 0, 0], [20, 60, 100, 140])
  np.testing.assert_array_equal(clip[:, 5, 7, 1], [5, 15, 25, 35])
  rng = np.random.default_rng(0)
  for _ in range(5):  # Random windows: frames 2 apart, inside the video.
    red = video.get_clip(src[0], rng)[:, 0, 0, 0].astype(int)
    assert np.all(np.diff(red) == 40) and red[0] in (0, 20, 40, 60)
  short = video.get_clip(src[1])  # 3 frames for a span of 7: the last frame repeats.
  np.testing.assert_array_equal(short[:, 0, 0, 0], [0, 40, 40, 40])
  copy = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(video.get_clip(copy[0]), clip)


def test_csv_source_lossy_mp4(tmp_path):
  _write_video(tmp_path / "b.mp4", 12, codec="mpeg4")
  (tmp_path / "l.csv").write_text(f'{tmp_path / "b.mp4"} 0\n')  # Absolute paths work too.
  clip = video.get_clip(video.VideoCsvSource(str(tmp_path / "l.csv"), num_frames=3, frame_step=4)[0])
  np.testing.assert_allclose(clip[:, 12, 16, 0], [20, 100, 180], atol=6)  # Frames 1, 5, 9 of 12.


def test_csv_source_errors(tmp_path, monkeypatch):
  (tmp_path / "bad.csv").write_text("only_a_path.mp4\n")
  with pytest.raises(DataError, match="line 1"):
    video.VideoCsvSource(str(tmp_path / "bad.csv"), num_frames=2, frame_step=1)
  (tmp_path / "missing.csv").write_text("nowhere.mp4 0\n")
  src = video.VideoCsvSource(str(tmp_path / "missing.csv"), num_frames=2, frame_step=1)
  with pytest.raises(DataError, match="does not exist"):
    src[0]  # pylint: disable=pointless-statement
  (tmp_path / "junk.mp4").write_bytes(b"not a video")
  (tmp_path / "junk.csv").write_text("junk.mp4 0\n")
  with pytest.raises(DataError, match="cannot decode video"):
    video.get_clip(video.VideoCsvSource(str(tmp_path / "junk.csv"), num_frames=2, frame_step=1)[0])
  monkeypatch.setitem(sys.modules, "av", None)  # As if PyAV were not installed.
  with pytest.raises(DataError, match="pip install av") as e:
    video.count_frames(str(tmp_path / "junk.mp4"))
  assert "\n" not in str(e.value)


def test_tfds_video_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    src = video.TfdsVideoSource("bair_robot_pushing_small", "train", video_key="image_main", label_key="",
                                num_frames=4, frame_step=2)
    assert len(src) == 3
    ex = src[1]
    assert ex["label"] == -1
    clip = video.get_clip(ex)
    assert clip.shape == (4, 64, 64, 3) and clip.dtype == np.uint8
    frames = ex["video"].frames  # 30 frames: the central window starts at (30 - 7) // 2 = 11.
    np.testing.assert_array_equal(clip, frames[[11, 13, 15, 17]])
    with pytest.raises(DataError, match="data.video_key"):
      video.TfdsVideoSource("bair_robot_pushing_small", "train", video_key="video", num_frames=4,
                            frame_step=2)


# ---------------------------------------------------------------- clip augmentations


def test_video_crop_is_shared_by_all_frames():
  rng = np.random.default_rng(3)
  frame = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
  clip = np.stack([frame, frame, frame[::-1]])
  out, params = video.random_resized_crop_video(clip, np.random.default_rng(1), 16, scale=(0.3, 0.6))
  assert out.shape == (3, 16, 16, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out[0], out[1])
  assert not np.array_equal(out[0], out[2])
  assert 0 < params["crop"][2] < 1
  flipped, p = video.hflip_video(clip, types.SimpleNamespace(uniform=lambda: 0.0))
  assert bool(p["flip"])
  np.testing.assert_allclose(flipped[2], clip[2, :, ::-1] / 255.0, atol=1e-6)
  centre = video.center_crop_resize_video(clip, 8)
  assert centre.shape == (3, 8, 8, 3)
  same = video.center_crop_resize_video(clip[:, :16, :16], 16)
  np.testing.assert_allclose(same, clip[:, :16, :16] / 255.0, atol=1e-6)
