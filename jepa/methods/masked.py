"""The shared base of the masked-prediction JEPAs (I-JEPA, V-JEPA, IWM): a ViT context encoder and a narrow
predictor, trained to predict an EMA teacher's tokens at masked positions.

  h     = layer_norm(teacher(x))                                  (no affine, eps 1e-5, no gradient)
  z     = encoder(x[context])                                     (only the context tokens are encoded)
  pred  = predictor(z, context, targets)                          ([B, M, Kt, D])
  loss  = prediction_loss(pred, h[targets]; loss.kind)            (smooth-L1 / L2 / L1 over valid targets)
          + loss.sigreg_weight * SIGReg(pooled context tokens)    (Method.context_sigreg; 0 by default)

A subclass gives the grid, the masks / views (`example_fn`) and its `loss`, built from `gather_tokens` and
`prediction_objective`; the model (`EncoderPredictor`), the patch-size check, the probe features (the teacher's
average-pooled tokens) and the PCA pictures' tokens are shared here.
"""
import jax.numpy as jnp
from flax import nnx

from jepa import losses
from jepa.methods import base
from jepa.models import factory


class EncoderPredictor(nnx.Module):
  """The trained part of a masked JEPA: a context encoder and a predictor."""

  def __init__(self, encoder, predictor):
    self.encoder = encoder
    self.predictor = predictor


def gather_tokens(tokens, idx):
  """tokens [B, N, D], idx [B, ...] -> [B, ..., D]."""
  flat = idx.reshape(idx.shape[0], -1)
  out = jnp.take_along_axis(tokens, flat[..., None], axis=1)
  return out.reshape(*idx.shape, tokens.shape[-1])


def prediction_objective(method, pred, h, z, batch, rng):
  """(loss, metrics) of a masked-prediction step with one group of targets (I-JEPA, IWM).

    loss = prediction_loss(pred, h; loss.kind, valid = batch['target_valid'])
           + loss.sigreg_weight * SIGReg(pooled context tokens z)      (Method.context_sigreg; 0 by default)

  Args:
    method: the Method (its config and context_sigreg).
    pred: predictor outputs [B, M, Kt, D]; h: the target features at the same slots (not yet normalised).
    z: context-encoder tokens [B, Kc, D].
    batch: holds 'context_valid' [B, Kc] and 'target_valid' [B, M, Kt].
    rng: the step key.
  """
  loss = losses.prediction_loss(pred, h, kind=method.config.loss.kind, mask=batch["target_valid"],
                                beta=method.config.loss.beta)
  reg, reg_metrics = method.context_sigreg(z, batch["context_valid"], rng)
  metrics = {
      "context_tokens": jnp.sum(batch["context_valid"], axis=-1).mean(),
      "target_feature_std": jnp.std(losses.layer_norm(h), axis=0).mean(),  # Collapse monitor.
      "prediction_std": jnp.std(pred.astype(jnp.float32), axis=0).mean(),
  }
  if reg_metrics:  # loss.sigreg_weight > 0: log both terms.
    metrics.update(reg_metrics, prediction_loss=loss)
  return loss + reg, metrics


class MaskedMethod(base.Method):
  """Encoder + predictor with an EMA teacher of the encoder; probes on the teacher's tokens."""
  ema_target = "encoder"

  def grid(self):
    """The token grid: (H/p, W/p) for images (V-JEPA: (T/tubelet, H/p, W/p))."""
    side = self.config.data.image_size // self.config.model.patch_size
    return (side, side)

  def predictor_kwargs(self):
    """Extra arguments of factory.build_predictor (mask tokens, conditioning); none by default."""
    return {}

  def init_model(self, rngs):
    encoder = factory.build_encoder(self.config, rngs)
    return EncoderPredictor(encoder, factory.build_predictor(self.config, encoder, rngs,
                                                             **self.predictor_kwargs()))

  def validate(self):
    data, model = self.config.data, self.config.model
    if data.image_size % model.patch_size:
      raise base.ConfigError(f"data.image_size={data.image_size} is not divisible by "
                             f"model.patch_size={model.patch_size}; change one of them")

  def features(self, model, target, images):
    """Average-pooled tokens of the frozen teacher (the I-JEPA linear-probe protocol)."""
    del model
    return target(images).mean(axis=1)

  def token_grid(self):
    return self.grid()

  def patch_tokens(self, model, target, images):
    del model
    return target(images)
