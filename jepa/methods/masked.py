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
import ml_collections
from flax import nnx

from jepa import config as config_lib
from jepa import losses
from jepa.methods import base
from jepa.models import factory

LOSS_KINDS = ("smooth_l1", "l1", "l2")
TRUNCATIONS = ("random", "raster")


def config_sections():
  """The masked methods' sections: `masks` (jepa/masks.py, jepa/masks_video.py) and `loss`."""
  masks = ml_collections.ConfigDict(dict(
      num_targets=4,
      target_scale=(0.15, 0.2),
      target_aspect=(0.75, 1.5),
      context_scale=(0.85, 1.0),
      min_context=10,
      allow_overlap=False,
      # Fixed token counts of 2D multi-block masks; 0 = the rule in jepa/masks.py (context: its expected size,
      # target: the smallest block). Set both to match another implementation's compute (e.g. the I-JEPA
      # reference keeps ~49 context / ~34 target tokens per block on 14x14).
      context_keep=0,
      target_keep=0,
      # How an index list longer than its slots is cut: random (a uniform subset; ours) | raster (its first
      # entries in raster order, as the references' truncation to the batch minimum; docs/fidelity.md).
      truncation="random",
      # 3D multi-block (V-JEPA): one mask group per entry; a scale entry is a number or a (low, high) range;
      # the block aspect range is target_aspect.
      video_blocks=(8, 2),
      video_spatial_scale=(0.15, 0.7),
      video_temporal_scale=(1.0, 1.0),
  ))
  # sigreg_weight > 0 adds w * SIGReg(mean-pooled context-encoder tokens) to the loss: LeJEPA's anti-collapse
  # term inside a masked JEPA (MaskedMethod.context_sigreg).
  loss = ml_collections.ConfigDict(dict(kind="smooth_l1", beta=1.0, sigreg_weight=0.0, sigreg_slices=256))
  return {"masks": masks, "loss": loss}


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
    c = self.config
    data, model = c.data, c.model
    side = data.image_size // model.patch_size
    if side < 2:
      # No mask setting fits a 1x1 grid (a target block would leave no context), so the fix is the grid.
      raise base.ConfigError(f"data.image_size={data.image_size} with model.patch_size={model.patch_size} gives "
                             f"a {side}x{side} patch grid, too small for context and target blocks; use "
                             f"--config.data.image_size={2 * model.patch_size} or more (a multiple of "
                             f"{model.patch_size}), or a smaller model.patch_size")
    if data.image_size % model.patch_size:
      raise base.ConfigError(f"data.image_size={data.image_size} is not divisible by "
                             f"model.patch_size={model.patch_size}; change one of them")
    config_lib.check_choice(c, "loss.kind", LOSS_KINDS)
    config_lib.check_choice(c, "masks.truncation", TRUNCATIONS)
    for name in ("masks.target_scale", "masks.target_aspect", "masks.context_scale"):
      config_lib.check_length(c, name, 2, "min, max")
    if c.loss.sigreg_slices <= 0 or c.loss.sigreg_weight < 0:
      raise base.ConfigError(f"loss.sigreg_slices={c.loss.sigreg_slices} must be positive and "
                             f"loss.sigreg_weight={c.loss.sigreg_weight} >= 0")

  def context_sigreg(self, tokens, valid, rng):
    """Optional anti-collapse term: SIGReg on the pooled context-encoder output.

      e_b = sum_k valid_bk z_bk / sum_k valid_bk    (mean of the valid context tokens of example b)
      term = loss.sigreg_weight * SIGReg({e_b}_b)   (jepa.losses.sigreg, loss.sigreg_slices directions)

    As in LeJEPA, SIGReg pushes the batch of embeddings towards an isotropic Gaussian, which a collapsed
    encoder (and, through the EMA, its target) cannot satisfy. The statistic is over the global batch.

    Args:
      tokens: [B, K, D] context-encoder outputs.
      valid: [B, K] bool, False for padded context slots.
      rng: the step key; the directions come from step_key(rng, SIGREG).

    Returns:
      (term, metrics): 0.0 and {} when loss.sigreg_weight is 0.
    """
    weight = self.config.loss.sigreg_weight
    if not weight:
      return 0.0, {}
    v = valid.astype(jnp.float32)[..., None]
    pooled = jnp.sum(tokens.astype(jnp.float32) * v, axis=1) / jnp.maximum(jnp.sum(v, axis=1), 1.0)
    reg = losses.sigreg(pooled, key=self.step_key(rng, self.SIGREG), num_slices=self.config.loss.sigreg_slices)
    return weight * reg, {"sigreg": reg}

  def features(self, model, target, images):
    """Average-pooled tokens of the frozen teacher (the I-JEPA linear-probe protocol)."""
    del model
    return target(images).mean(axis=1)

  def token_grid(self):
    return self.grid()

  def patch_tokens(self, model, target, images):
    del model
    return target(images)
