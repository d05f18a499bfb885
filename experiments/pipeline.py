r"""Input-pipeline throughput: decode + augment + mask examples/s per CPU core, and scaling with workers.

  python experiments/pipeline.py                      # writes experiments/results/pipeline.md
  python experiments/pipeline.py --images=256 --seconds=5

Inputs, ImageNet-style: Imagenette (../shared/data/imagenette96) upsampled to 224 px and JPEG-encoded
(quality 90) in memory, so every read decodes a 224 px JPEG as an ImageNet pipeline would; and 16-frame
224 px clips (data.source='synthetic': random frames, no video decoding, so the clip figure is augmentation
and masking alone). The transforms are the methods' own `example_fn(train=True)` at the paper presets'
settings: I-JEPA in1k_vith14 (random resized crop, 4 target blocks + context on the 16x16 grid at patch 14),
LeJEPA in1k_vith14 (2 x 224 + 6 x 98 px views, colour jitter, blur, solarize) and V-JEPA vith16 (clip crop,
tubelet masks). Measured:
  - one thread calling example_fn in a loop (the per-core figure);
  - the real training iterator (jepa/data/pipeline.py, batches of 64) with grain reader threads and with
    grain worker processes (data.num_workers), side by side in this one run.
The paper runs need ~2,000-10,000 img/s per host; the per-core figure says how many cores that takes.
"""
import io
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jepa.data import pipeline  # pylint: disable=wrong-import-position
from jepa.data import sources  # pylint: disable=wrong-import-position
from jepa.data import synthetic  # pylint: disable=wrong-import-position
from jepa.methods import get_method  # pylint: disable=wrong-import-position
from tests.helpers import load_config  # pylint: disable=wrong-import-position

flags.DEFINE_integer("images", 512, "Distinct JPEG images held in memory.")
flags.DEFINE_float("seconds", 8.0, "Seconds per measurement.")
flags.DEFINE_list("workers", ["0", "1", "2"], "Worker-process counts to measure (0 = reader threads only).")
flags.DEFINE_string("output", os.path.join(REPO, "experiments", "results", "pipeline.md"), "Markdown output.")
FLAGS = flags.FLAGS


class JpegSource:
  """Imagenette images upsampled to `size` px and held as JPEG bytes; reads decode them (sources.decode_image)."""

  def __init__(self, path, count, size):
    npz = sources.NpzSource(path)
    examples = [npz[i] for i in np.random.default_rng(0).permutation(len(npz))[:count]]
    self.jpegs = []
    for ex in examples:
      buf = io.BytesIO()
      Image.fromarray(np.squeeze(ex["image"])).resize((size, size), Image.BICUBIC).save(buf, format="JPEG",
                                                                                         quality=90)
      self.jpegs.append(buf.getvalue())
    self.labels = np.array([ex["label"] for ex in examples], np.int64)
    self.name, self.num_classes = "imagenette224_jpeg", 10

  def __len__(self):
    return len(self.jpegs)

  def __getitem__(self, index):
    return {"image": sources.decode_image(self.jpegs[index], "jpeg"), "label": int(self.labels[index])}


def per_core(source, example_fn, seconds):
  """examples/s of one thread calling example_fn (including the read / decode)."""
  rng = np.random.default_rng(0)
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    example_fn(source[n % len(source)], rng)
    n += 1
  return n / (time.perf_counter() - t0)


def iterator_rate(source, example_fn, workers, seconds, batch_size=64):
  """examples/s of the training iterator with `workers` processes (0: two reader threads)."""
  it = pipeline.make_train_iterator(source, example_fn, batch_size=batch_size, seed=0, num_threads=2,
                                    prefetch=2, num_workers=workers)
  next(it)  # Start-up (worker processes, first batch) is not counted.
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    next(it)
    n += batch_size
  return n / (time.perf_counter() - t0)


def cases():
  path = os.path.join(REPO, "..", "shared", "data", "imagenette96", "train.npz")
  if not os.path.exists(path):
    raise SystemExit(f"error: {path} is missing; this benchmark reads Imagenette from ../shared/data")
  jpegs = JpegSource(path, FLAGS.images, 224)
  clips = synthetic.SyntheticSource(64, 224, num_frames=16)
  out = []
  for config_name, preset, source in (("ijepa_vit", "in1k_vith14", jpegs), ("lejepa_vit", "in1k_vith14", jpegs),
                                      ("vjepa_vit", "vith16", clips)):
    config = load_config(config_name, preset)
    config.data.source = "synthetic"  # The method reads only sizes from data; the examples come from `source`.
    out.append((f"{config.method} {preset}", source, get_method(config).example_fn(train=True)))
  return out


def main(argv):
  del argv
  load = os.getloadavg()[0]
  rows = []
  for name, source, fn in cases():
    row = {"case": name, "input": source.name, "per_core": per_core(source, fn, FLAGS.seconds)}
    for w in FLAGS.workers:
      row[f"workers_{w}"] = iterator_rate(source, fn, int(w), FLAGS.seconds)
    rows.append(row)
    print(row, flush=True)
  header = ["case", "input", "1 thread (per core)"] + [
      "iterator, 2 threads" if w == "0" else f"iterator, {w} worker process{'es' if w != '1' else ''}"
      for w in FLAGS.workers]
  lines = ["# Input-pipeline throughput (examples/s)", "",
           f"Written by `python experiments/pipeline.py` on {os.cpu_count()} CPU cores (load average "
           f"{load:.1f} before, {os.getloadavg()[0]:.1f} after; the cores were shared, so these are lower "
           "bounds). Its docstring says what each column measures.", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    lines.append(f"| {r['case']} | {r['input']} | {r['per_core']:.0f} | "
                 + " | ".join(f"{r[f'workers_{w}']:.0f}" for w in FLAGS.workers) + " |")
  with open(FLAGS.output, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
