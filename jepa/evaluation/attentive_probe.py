"""Attentive probe on frozen tokens (the V-JEPA / V-JEPA 2 evaluation protocol, scaled down).

An `AttentiveClassifier` (jepa/models/heads.py) is trained on frozen encoder tokens x [N, T, D] (all tokens of
the target encoder) and scored on a held-out split:

  logits = W pool(x) + b,   pool(x) = CrossAttentionBlock(q, x)   (variant 'vjepa', depth 1)
                                    = CrossAttentionBlock(q, SelfBlocks^3(x))   (variant 'vjepa2', depth 4)
  minimise  mean_i CE(logits_i, y_i)   with AdamW (0.9, 0.999), weight decay on matrices only,
            lr cosine from `lr` to 0 over all steps (no warmup), gradient clipping at global norm 1.0

as in the reference eval configs (V-JEPA video probes: lr 1e-3, wd 0.01, 20 epochs). Left out: the
reference's weight-decay cosine to 1e-6, its data augmentation of the probe's inputs (features are extracted
once here), multi-view test-time averaging and V-JEPA 2's 20-head lr/wd sweep reporting the best head.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jepa import optim
from jepa.models import heads as heads_lib


def default_heads(dim: int) -> int:
  """dim // 64 heads (head_dim 64, as ViT-S/B/L/g-xformers), at least 1, lowered until it divides dim."""
  h = max(1, dim // 64)
  while dim % h:
    h -= 1
  return h


def attentive_probe(train_x, train_y, eval_x, eval_y, num_classes, *, variant="vjepa", depth=0, heads=0,
                    epochs=20, batch_size=64, lr=1e-3, weight_decay=0.01, clip=1.0, seed=0):
  """Trains an attentive classifier on frozen tokens and returns held-out accuracy.

  Args:
    train_x: [N, T, D] training tokens (float32 or castable).
    train_y: [N] int labels in [0, num_classes).
    eval_x: [M, T, D] held-out tokens.
    eval_y: [M] labels.
    num_classes: classifier outputs.
    variant: 'vjepa' (cross-attention only) or 'vjepa2' (self-attention blocks on the tokens first).
    depth: total blocks; 0 = the variant's reference depth (1 or 4).
    heads: attention heads; 0 = `default_heads(D)`.
    epochs: passes over the training tokens.
    batch_size: examples per step (capped at N).
    lr: peak learning rate (cosine to 0).
    weight_decay: AdamW decay (biases and 1-D parameters excluded).
    clip: global gradient-norm clip (0 disables).
    seed: probe initialisation and batch order.

  Returns:
    {'accuracy': held-out top-1, 'train_accuracy': top-1 on the training tokens, 'heads': heads used}.
  """
  train_x = jnp.asarray(train_x, jnp.float32)
  eval_x = jnp.asarray(eval_x, jnp.float32)
  train_y = np.asarray(train_y, np.int32)
  n, _, dim = train_x.shape
  heads = heads or default_heads(dim)
  batch_size = max(1, min(batch_size, n))
  steps_per_epoch = -(-n // batch_size)
  total = max(1, epochs * steps_per_epoch)

  model = heads_lib.AttentiveClassifier(dim=dim, heads=heads, num_classes=num_classes, depth=depth or None,
                                        variant=variant, rngs=nnx.Rngs(seed))
  graphdef, params = nnx.split(model, nnx.Param)
  params = params.to_pure_dict()
  tx = optax.adamw(optax.cosine_decay_schedule(lr, total), weight_decay=weight_decay, mask=optim.decay_mask)
  if clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  opt_state = tx.init(params)

  def logits_fn(p, x):
    return nnx.merge(graphdef, p)(x)

  # The tokens are an argument, not a closed-over constant, so they are not baked into the compiled program.
  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(p, state, tokens, idx, y):
    def loss_fn(q):
      return optax.softmax_cross_entropy_with_integer_labels(logits_fn(q, tokens[idx]), y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, state = tx.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss

  predict = jax.jit(lambda p, x: jnp.argmax(logits_fn(p, x), axis=-1))

  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    # A fresh permutation per epoch, topped up with random examples to whole batches (one compiled shape).
    order = rng.permutation(n)
    order = np.concatenate([order, rng.integers(0, n, steps_per_epoch * batch_size - n)])
    for b in range(steps_per_epoch):
      idx = order[b * batch_size:(b + 1) * batch_size]
      params, opt_state, _ = step(params, opt_state, train_x, jnp.asarray(idx),
                                   jnp.asarray(train_y[idx]))

  def accuracy(x, y):
    y = np.asarray(y)
    if len(y) == 0:
      return float("nan")
    preds = []
    for start in range(0, len(y), batch_size):
      chunk = x[start:start + batch_size]
      pad = batch_size - chunk.shape[0]  # Pad the last chunk so `predict` compiles once.
      if pad:
        chunk = jnp.concatenate([chunk, jnp.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
      preds.append(np.asarray(predict(params, chunk))[:batch_size - pad])
    return float(np.mean(np.concatenate(preds) == y))

  return {"accuracy": accuracy(eval_x, eval_y), "train_accuracy": accuracy(train_x, train_y), "heads": heads}
