"""Frozen features of a train state: one extraction, shared by every evaluator and picture.

  apply = features.apply_fn(state_def, method.features)   # jit of (state, images) -> features, cached
  x, y = features.extract(apply, state, source, mesh, example_fn=..., batch_size=...)

`fn(model, teacher, images)` is any function of the eval-mode model and its EMA teacher (None without one):
the method's probe features, patch tokens for pictures, the teacher's tokens for an attentive probe.
"""
import jax
import jax.numpy as jnp
import numpy as np

from jepa import parallel
from jepa.data import pipeline
from jepa.data import sources


def apply_fn(state_def, fn):
  """jit of (state, images) -> fn(model, teacher, images) in float32, replicated over `state_def.mesh`."""
  if fn not in state_def.applied:  # One compilation per feature function and state layout.

    def apply(state, images):
      model, teacher = state_def.models(state)
      return fn(model, teacher, images).astype(jnp.float32)

    state_def.applied[fn] = jax.jit(apply, out_shardings=parallel.replicated(state_def.mesh))
  return state_def.applied[fn]


def extract(apply, state, source, mesh, *, example_fn, batch_size, max_examples=0):
  """Features and labels of a fixed subset of `max_examples` of `source` (0 = all), in source order.

  Args:
    apply: (state, images) -> features, e.g. `apply_fn(state_def, method.features)`.
    state: the train state.
    source: examples.
    mesh: the device mesh the images are sharded over (batch axes).
    example_fn: per-example transform (e.g. the method's eval transform).
    batch_size: global batch, a multiple of the device count.
    max_examples: see `source`.
  """
  source = sources.fixed_subset(source, max_examples)
  batch_sharding = parallel.batch_sharding(mesh)
  feats, labels, order = [], [], []
  rank, count = jax.process_index(), jax.process_count()
  local_batch = batch_size // count
  for j, batch in enumerate(pipeline.eval_batches(source, example_fn, batch_size=local_batch,
                                                  process_index=rank, process_count=count)):
    images = parallel.global_batch({"image": batch["image"]}, batch_sharding)["image"]
    out = np.asarray(apply(state, images))
    # Labels, padding mask and source index travel the same way as the images (a global array, then to every
    # host), so they line up with the feature rows whatever the mesh's device order; eval_batches gives process
    # p the examples p, p + count, ..., and sorting by index returns features in source order, so the probes
    # see the same data in the same order for any number of processes.
    index = (rank + count * (j * local_batch + np.arange(local_batch))).astype(np.int32)
    rows = parallel.host_rows({"mask": batch["mask"], "label": batch["label"], "index": index}, batch_sharding)
    feats.append(out[rows["mask"]])
    labels.append(rows["label"][rows["mask"]])
    order.append(rows["index"][rows["mask"]])
  order = np.argsort(np.concatenate(order), kind="stable")
  return np.concatenate(feats)[order], np.concatenate(labels)[order]
