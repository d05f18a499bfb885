r"""The pictures of a run, written into WORKDIR/pictures/ (PNG, matplotlib Agg) at every evaluation
(eval.every) and at the end of training.

  curves.png       every training metric of metrics.jsonl against the step (collapse alarms in red)
  evaluations.png  every evaluator (probe/<name>/<trained|random_init>) over the evaluation steps (IWM: MRR)
  masks.png        what the method trains on, for the first `eval.picture_examples` eval images, each with
                   the training transform of generator default_rng([seed, index]): I-JEPA the context and
                   target blocks on the view, V-JEPA the context / target tubes of each mask group on every
                   frame, IWM the source and target views with context and predicted patches, LeJEPA the
                   global and local crops (Method.pictures; jepa/plots.py says how masks are drawn)
  pca.png          the first 3 principal components of the patch tokens of those eval images as RGB, beside
                   the image (video: the first frame of each tubelet slice), for the trained encoder
                   (Method.patch_tokens; skipped for backbones without patch tokens, e.g. ResNets)
  plan_success.png the planning evaluator over training (world models): success rate and final distance to the
                   goal against the step, from metrics.jsonl's probe/plan_* rows (skipped without them)
  <name>.png       the method's pictures of its own evaluation of this state (Method.evaluation_pictures);
                   world models: episodes.png, a few planned episodes on their maps (start, goal and its
                   success circle, the executed path, the last plan's intended path), no planning repeated

Every process calls `write_pictures` (the tokens come from a jitted call over the mesh, which every process
must join); only process 0 draws and writes.
"""
import os

import jax
import numpy as np

from jepa import features
from jepa import metrics as metrics_lib
from jepa.data import sources

FOLDER = "pictures"


def _scale(image_size):
  """Integer enlargement that draws an image at about 128 pixels (at least 1)."""
  return max(1, int(round(128 / image_size)))


def _examples(config):
  source = sources.get_source(config.data, "eval")
  n = min(config.eval.picture_examples, len(source))
  return sources.Subset(source, np.arange(n))


def mask_rows(method, subset, seed):
  """The Method.pictures rows of every example of `subset` (generator default_rng([seed, index]))."""
  rows = []
  for i in range(len(subset)):
    rows += method.pictures(dict(subset[i]), np.random.default_rng([seed, i]))
  return rows


def pca_rows(method, subset, tokens):
  """Rows [image, PCA map] per example (video: one pair per tubelet slice) from tokens [n, N, D]."""
  from jepa import plots  # pylint: disable=import-outside-toplevel
  grid = tuple(method.token_grid())
  tokens = np.asarray(tokens).reshape(len(subset), *grid, -1)
  rgb = plots.pca_rgb(tokens)                                     # [n, *grid, 3]
  eval_fn = method.example_fn(train=False)
  rows = []
  for i in range(len(subset)):
    image = method.display(eval_fn(dict(subset[i]), None)["image"])
    if len(grid) == 2:
      cell = image.shape[0] // grid[0]
      rows.append([plots.Panel(image, f"image {i}"),
                   plots.Panel(np.repeat(np.repeat(rgb[i], cell, 0), cell, 1), "patch PCA")])
    else:  # Video: frame t * tubelet of each tubelet slice t, and its PCA map.
      cell = image.shape[1] // grid[1]
      tubelet = image.shape[0] // grid[0]
      row = []
      for t in range(grid[0]):
        row.append(plots.Panel(image[t * tubelet], f"clip {i} frame {t * tubelet}"))
        row.append(plots.Panel(np.repeat(np.repeat(rgb[i, t], cell, 0), cell, 1), f"PCA slice {t}"))
      rows.append(row)
  return rows


def write_pictures(config, state_def, workdir, state, alarms=()):
  """Writes the pictures of the module docstring; returns {name: path relative to the workdir} (process 0).

  `state_def` (jepa/train_state.py) rebuilds the model from `state` for the patch tokens."""
  method = state_def.method
  subset = _examples(config)
  tokens = None
  if method.token_grid() is not None and len(subset):
    # Every process joins this jitted call; the picture batch is one multiple of the device count.
    devices = state_def.mesh.size
    tokens, _ = features.extract(features.apply_fn(state_def, method.patch_tokens), state, subset,
                                 state_def.mesh, example_fn=method.example_fn(train=False),
                                 batch_size=-(-len(subset) // devices) * devices)
  if jax.process_index() != 0:
    return {}
  # pylint: disable-next=import-outside-toplevel  (matplotlib only where pictures are drawn)
  from jepa import plots
  folder = os.path.join(workdir, FOLDER)
  os.makedirs(folder, exist_ok=True)
  written = {}

  def path(name):
    written[name] = f"{FOLDER}/{name}.png"
    return os.path.join(folder, f"{name}.png")

  rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  if not plots.plot_curves(rows, path("curves"), alarms=alarms):
    written.pop("curves")
  if not plots.plot_evaluations(rows, path("evaluations")):
    written.pop("evaluations")
  if not plots.plot_planning(rows, path("plan_success")):
    written.pop("plan_success")
  for name, draw in method.evaluation_pictures(state).items():
    draw(path(name))
  scale = _scale(config.data.image_size)
  masks = mask_rows(method, subset, config.seed)
  if masks:
    plots.save_panels(masks, path("masks"), scale=scale,
                      title=f"{config.method}: {len(subset)} eval images as the training transform sees them")
  if tokens is not None:
    plots.save_panels(pca_rows(method, subset, tokens), path("pca"), scale=scale,
                      title=f"{config.method}: first 3 principal components of the patch tokens as RGB")
  return written
