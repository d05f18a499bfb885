"""Mean reciprocal rank (MRR) of a world model's predictions (IWM, Garrido et al., 2024).

For an image q, a bank of N transformed versions t_{q,1..N} is encoded by the target encoder; the world model
applies the action of version j to the clean image's latent, giving p_{q,j}. With the distance

  d_{q,jk} = (1 / (|V_q| D)) sum_{u in V_q} ||p_{q,j,u} - t_{q,k,u}||^2   (V_q: valid predicted positions)

the correct version's rank and the score are

  rank_{q,j} = #{k : d_{q,jk} <= d_{q,jj}}   (1 = the right version is the nearest; ties count against it)
  MRR        = mean_{q, j} 1 / rank_{q,j}.

MRR is 1 for a perfectly equivariant predictor. An invariant one (the same prediction whatever the action)
ranks the bank by its distance to that one point, so over j the ranks run through 1..N and MRR = H_N / N
(H_N the N-th harmonic number: 0.21 for N = 16, 0.024 for the paper's 256). Counting ties against the right
version keeps a collapsed model (all distances equal) at 1 / N instead of a perfect score.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from jepa import parallel
from jepa.data import pipeline
from jepa.data import sources


def pairwise_distances(pred, bank, valid=None):
  """d[..., j, k] as in the module docstring, float32: pred, bank [..., N, K, D], valid [..., K] or None.

  Expanded as |p|^2 - 2 p.t + |t|^2 so that no [..., N, N, K, D] difference is materialised.
  """
  pred = jnp.asarray(pred, jnp.float32)
  bank = jnp.asarray(bank, jnp.float32)
  if valid is None:
    valid = jnp.ones(pred.shape[:-3] + pred.shape[-2:-1], bool)
  w = valid.astype(jnp.float32)[..., None, :]                                    # [..., 1, K]
  count = jnp.maximum(w.sum(-1, keepdims=True), 1.0) * pred.shape[-1]           # [..., 1, 1]
  pp = jnp.einsum("...jkd,...jkd->...jk", pred, pred)
  tt = jnp.einsum("...jkd,...jkd->...jk", bank, bank)
  pt = jnp.einsum("...jud,...kud,...u->...jk", pred, bank, w[..., 0, :])
  d = (pp * w).sum(-1)[..., :, None] + (tt * w).sum(-1)[..., None, :] - 2.0 * pt
  return d / count


def reciprocal_ranks(pred, bank, valid=None):
  """1 / rank of each right version [..., N] (see the module docstring)."""
  d = pairwise_distances(pred, bank, valid)
  correct = jnp.diagonal(d, axis1=-2, axis2=-1)[..., None]
  rank = jnp.sum(d <= correct, axis=-1)
  return 1.0 / rank.astype(jnp.float32)


def mean_reciprocal_rank(pred, bank, valid=None):
  return float(jnp.mean(reciprocal_ranks(pred, bank, valid)))


@functools.partial(jax.jit, static_argnames=("models", "outputs_fn", "mesh"))
def _reciprocal_ranks(state, batch, *, models, outputs_fn, mesh):
  model, target = models(state)
  rr = reciprocal_ranks(*outputs_fn(model, target, batch))
  return jax.lax.with_sharding_constraint(rr, parallel.replicated(mesh))  # Every host reads all rows.


def evaluate_mrr(state, models, mesh, config, *, example_fn, outputs_fn, num_images, batch_size):
  """The MRR of a train state on the first `num_images` images of the eval split.

  Args:
    state: the train state.
    models: state -> (model, target) in eval mode (jepa.train_state.StateDef.models), traced inside jit.
    mesh: the device mesh the batch is sharded over.
    config: the run's config (data.*, seed).
    example_fn: per-example transform producing the method's MRR inputs (run with a generator derived from
      (seed, image index), so the bank and masks are the same at every evaluation).
    outputs_fn: outputs_fn(model, target, batch) -> (pred [B, N, K, D], bank [B, N, K, D], valid [B, K]).
    num_images: images scored (the first ones of the eval split).
    batch_size: global images per step (a multiple of the device count).
  """
  source = sources.get_source(config.data, "eval")
  if len(source) > num_images:
    source = sources.fixed_subset(source, num_images)
  scores = []
  for batch in pipeline.eval_batches(source, example_fn, batch_size=batch_size // jax.process_count(),
                                     process_index=jax.process_index(), process_count=jax.process_count(),
                                     seed=config.seed):
    real = multihost_utils.process_allgather(batch.pop("mask"), tiled=True)
    batch.pop("label", None)
    batch = parallel.global_batch(batch, parallel.batch_sharding(mesh))
    rr = np.asarray(_reciprocal_ranks(state, batch, models=models, outputs_fn=outputs_fn, mesh=mesh))  # [B, N]
    scores.append(rr[real])
  return float(np.mean(np.concatenate(scores)))
