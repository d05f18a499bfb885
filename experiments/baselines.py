"""The raw-pixel baseline shared by the experiment scripts (imported as `baselines` from experiments/)."""
import numpy as np

from jepa.data import pipeline
from jepa.data import sources


def raw_pixels(method, source, max_examples):
  """Flattened eval-transform images (resized, centre-cropped, normalised) and labels of up to `max_examples`
  examples of `source` (0 = all): the features of the raw-pixel probe."""
  source = sources.fixed_subset(source, max_examples)
  feats, labels = [], []
  for batch in pipeline.eval_batches(source, method.example_fn(train=False), batch_size=256):
    mask = batch["mask"]
    feats.append(batch["image"].reshape(len(mask), -1)[mask])
    labels.append(batch["label"][mask])
  return np.concatenate(feats), np.concatenate(labels)
