"""Synthetic examples of a configured shape, for compiling and timing without a dataset.

`data.source='synthetic'` gives `data.synthetic_examples` random uint8 images of data.image_size (or, with
data.num_frames > 0, clips of that many frames), each a pure function of its index, with 10 labels. It is
what `experiments/aot.py` and `experiments/gpu_check.py` read when a preset's real data (ImageNet, video
folders) is not on the machine: the step's shapes, memory and speed do not depend on pixel values. It is not
a dataset to learn from.
"""
import numpy as np


class SyntheticSource:
  """`num_examples` random images [H, W, 3] (or clips [T, H, W, 3]) and labels in 0..9, fixed per index."""

  num_classes = 10

  def __init__(self, num_examples, image_size, num_frames=0):
    self.name = "synthetic"
    self.num_examples, self.image_size, self.num_frames = int(num_examples), int(image_size), int(num_frames)

  def __len__(self):
    return self.num_examples

  def __getitem__(self, index):
    index = int(index)
    if not 0 <= index < self.num_examples:
      raise IndexError(f"synthetic: index {index} out of range for {self.num_examples} examples")
    rng = np.random.default_rng(index)
    shape = (self.image_size, self.image_size, 3)
    if self.num_frames:
      return {"video": rng.integers(0, 256, (self.num_frames, *shape), dtype=np.uint8), "label": index % 10}
    return {"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": index % 10}
