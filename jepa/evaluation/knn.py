r"""k-nearest-neighbour classifier on frozen features, by cosine similarity (Wu et al. 2018; DINO's protocol).

Features are L2-normalised, so the similarity of an eval feature x and a train feature t_i is the cosine
s_i = <x, t_i> / (|x| |t_i|). The k most similar train features N_k(x) vote for their labels:

  weighted  (DINO, Caron et al. 2021):  score_c = sum_{i in N_k(x), y_i = c} exp(s_i / T),   T = 0.07
  majority  (plain):                    score_c = #{i in N_k(x) : y_i = c}

and the prediction is argmax_c score_c, ties going to the smallest class id. k is capped at the number of
train features. With T -> 0 the weighted vote becomes 1-NN; with T -> inf it becomes the majority vote. Here
each weight of a query is divided by exp(s_max / T), s_max its largest similarity: a factor shared by all of
its neighbours, so the argmax is DINO's, and small T cannot overflow float32.

The similarities are computed in float32 on the default device, a chunk of eval rows at a time (the train
matrix stays on the device), so memory is O(chunk x N_train) rather than O(N_eval x N_train).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jepa.config import KNN_VOTES as VOTES


def _normalise(x):
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k", "num_classes", "vote"))
def _predict_chunk(queries, train, train_y, temperature, *, k, num_classes, vote):
  sims = jnp.matmul(queries, train.T, precision=jax.lax.Precision.HIGHEST)       # [Q, N]
  top_sims, top_idx = jax.lax.top_k(sims, k)                                      # [Q, k]
  if vote == "weighted":
    # exp((s - s_max) / T): the factor exp(-s_max / T), shared by the query's neighbours, keeps the weights
    # finite for small T without changing the argmax.
    weights = jnp.exp((top_sims - top_sims[:, :1]) / temperature)
  else:
    weights = jnp.ones_like(top_sims)
  onehot = jax.nn.one_hot(train_y[top_idx], num_classes, dtype=jnp.float32)      # [Q, k, C]
  return jnp.argmax(jnp.einsum("qk,qkc->qc", weights, onehot), axis=-1)           # first max on ties


def knn_predict(train_x, train_y, eval_x, num_classes, *, k=20, temperature=0.07, vote="weighted",
                chunk_size=1024):
  """Predicted labels [N_eval] of the kNN classifier in the module docstring.

  Args:
    train_x: [N, F] train features (any scale: they are L2-normalised here).
    train_y: [N] integer labels in [0, num_classes).
    eval_x: [M, F] features to classify.
    num_classes: number of classes.
    k: neighbours (capped at N).
    temperature: T of the weighted vote.
    vote: 'weighted' or 'majority'.
    chunk_size: eval rows per device call (the last chunk is padded, so one compilation serves all).
  """
  if vote not in VOTES:
    raise ValueError(f"knn vote={vote!r} is not one of {list(VOTES)}")
  if k < 1 or temperature <= 0:
    raise ValueError(f"knn needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
  train = jnp.asarray(_normalise(train_x))
  labels = jnp.asarray(np.asarray(train_y, np.int32))
  queries = _normalise(eval_x)
  k = min(int(k), train.shape[0])
  chunk = max(1, min(chunk_size, len(queries)))
  out = []
  for start in range(0, len(queries), chunk):
    q = queries[start:start + chunk]
    padded = np.concatenate([q, np.zeros((chunk - len(q), q.shape[1]), np.float32)]) if len(q) < chunk else q
    pred = _predict_chunk(jnp.asarray(padded), train, labels, jnp.float32(temperature), k=k,
                          num_classes=int(num_classes), vote=vote)
    out.append(np.asarray(pred)[:len(q)])
  return np.concatenate(out) if out else np.zeros([0], np.int32)


def knn_accuracy(train_x, train_y, eval_x, eval_y, num_classes, **kwargs):
  """Top-1 accuracy of `knn_predict` on (eval_x, eval_y)."""
  pred = knn_predict(train_x, train_y, eval_x, num_classes, **kwargs)
  return float(np.mean(pred == np.asarray(eval_y)))
