"""I-JEPA (Assran et al., 2023): predict EMA-target features of 4 image blocks from one context block.

  h      = layer_norm(target_encoder(image))                      (no affine, eps 1e-5, no gradient)
  z      = predictor(encoder(image[context]), context, targets)   ([B, M, Kt, D])
  loss   = smooth_l1(z, h[targets]), beta = 1, mean over valid target tokens and features
The target encoder follows the encoder by EMA (momentum 0.996 -> 1.0, updated by the loop).
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jepa import losses
from jepa import masks as masks_lib
from jepa import plots
from jepa.data import augment
from jepa.methods import base
from jepa.models import factory


class EncoderPredictor(nnx.Module):
  """The trained part of a masked JEPA: a context encoder and a predictor."""

  def __init__(self, encoder, predictor):
    self.encoder = encoder
    self.predictor = predictor


def prediction_objective(method, pred, h, z, batch, rng):
  """(loss, metrics) of a masked-prediction step, shared by I-JEPA and IWM (same batch mask keys).

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


def gather_tokens(tokens, idx):
  """tokens [B, N, D], idx [B, ...] -> [B, ..., D]."""
  flat = idx.reshape(idx.shape[0], -1)
  out = jnp.take_along_axis(tokens, flat[..., None], axis=1)
  return out.reshape(*idx.shape, tokens.shape[-1])


def mask_sampler(config, grid):
  m = config.masks
  return masks_lib.MultiBlock2D(
      grid=tuple(grid), num_targets=m.num_targets, target_scale=tuple(m.target_scale),
      target_aspect=tuple(m.target_aspect), context_scale=tuple(m.context_scale),
      min_context=m.min_context, allow_overlap=m.allow_overlap,
      # 0 (the default) keeps the sampler's own rule for the fixed token counts; see masks.context_keep.
      context_keep=m.get("context_keep", 0) or None, target_keep=m.get("target_keep", 0) or None,
      truncation=m.get("truncation", "random"))


class IJEPA(base.Method):
  ema_target = "encoder"

  def init_model(self, rngs):
    encoder = factory.build_encoder(self.config, rngs)
    predictor = factory.build_predictor(self.config, encoder, rngs)
    return EncoderPredictor(encoder, predictor)

  def grid(self):
    side = self.config.data.image_size // self.config.model.patch_size
    return (side, side)

  def validate(self):
    data, model = self.config.data, self.config.model
    if data.image_size % model.patch_size:
      raise base.ConfigError(f"data.image_size={data.image_size} is not divisible by "
                             f"model.patch_size={model.patch_size}; change one of them")
    mask_sampler(self.config, self.grid())  # Raises a ConfigError naming the masks.* key if they cannot fit.

  def example_fn(self, train):
    if not train:
      return self.eval_example_fn()
    data = self.config.data
    sampler = mask_sampler(self.config, self.grid())

    def fn(example, rng):
      image = augment.to_rgb(example["image"])
      image, _ = augment.random_resized_crop(image, rng, data.image_size, scale=tuple(data.crop_scale),
                                             ratio=tuple(data.crop_ratio))
      if data.flip:
        image, _ = augment.hflip(image, rng)
      out = sampler.sample(rng)
      out["image"] = augment.normalize(image, data.mean, data.std).astype(np.float32)
      out["label"] = np.int32(example["label"])
      return out

    return fn

  def loss(self, model, target, batch, rng):
    images = batch["image"]  # Masks come from the data pipeline; rng: drop-path and optional SIGReg directions.
    h = jax.lax.stop_gradient(target(images))                       # [B, N, D]
    h = gather_tokens(h, batch["target_idx"])                       # [B, M, Kt, D]
    z = model.encoder(images, idx=batch["context_idx"], valid=batch["context_valid"],
                      rng=self.step_key(rng, self.DROP_PATH))
    pred = model.predictor(z, batch["context_idx"], batch["context_valid"], batch["target_idx"],
                           batch["target_valid"])
    return prediction_objective(self, pred, h, z, batch, rng)

  def features(self, model, target, images):
    """Average-pooled tokens of the frozen target encoder (the I-JEPA linear-probe protocol)."""
    del model
    return target(images).mean(axis=1)

  # --- pictures ---------------------------------------------------------------------------------------------
  def pictures(self, example, rng):
    """The training view, and on it the context and each target block: exactly the tokens of the batch, so
    blocks longer than the fixed target size show the patches left out by the subsampling (jepa/masks.py)."""
    out = self.example_fn(train=True)(example, rng)
    image = self.display(out["image"])
    layers = [("context", out["context_idx"][out["context_valid"]])]
    layers += [(f"target {m + 1}", idx[valid]) for m, (idx, valid) in
               enumerate(zip(out["target_idx"], out["target_valid"]))]
    p = self.config.model.patch_size
    return [[plots.Panel(image, "training view"),
             plots.Panel(image, "context + targets", cell=p, layers=tuple(layers))]]

  def token_grid(self):
    return self.grid()

  def patch_tokens(self, model, target, images):
    del model
    return target(images)


METHOD = IJEPA
