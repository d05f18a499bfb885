"""I-JEPA (Assran et al., 2023): predict EMA-target features of 4 image blocks from one context block.

  h      = layer_norm(target_encoder(image))                      (no affine, eps 1e-5, no gradient)
  z      = predictor(encoder(image[context]), context, targets)   ([B, M, Kt, D])
  loss   = smooth_l1(z, h[targets]), beta = 1, mean over valid target tokens and features
The target encoder follows the encoder by EMA (momentum 0.996 -> 1.0, updated by the loop). The model,
probe features and shared objective are jepa/methods/masked.py's.
"""
import jax
import numpy as np

from jepa import masks as masks_lib
from jepa import plots
from jepa.data import augment
from jepa.methods import masked


def mask_sampler(config, grid):
  m = config.masks
  return masks_lib.MultiBlock2D(
      grid=tuple(grid), num_targets=m.num_targets, target_scale=tuple(m.target_scale),
      target_aspect=tuple(m.target_aspect), context_scale=tuple(m.context_scale),
      min_context=m.min_context, allow_overlap=m.allow_overlap,
      # 0 (the default) keeps the sampler's own rule for the fixed token counts; see masks.context_keep.
      context_keep=m.context_keep or None, target_keep=m.target_keep or None, truncation=m.truncation)


config_sections = masked.config_sections  # `masks` and `loss`


class IJEPA(masked.MaskedMethod):

  def validate(self):
    super().validate()
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
    h = masked.gather_tokens(h, batch["target_idx"])                # [B, M, Kt, D]
    z = model.encoder(images, idx=batch["context_idx"], valid=batch["context_valid"],
                      rng=self.step_key(rng, self.DROP_PATH))
    pred = model.predictor(z, batch["context_idx"], batch["context_valid"], batch["target_idx"],
                           batch["target_valid"])
    return masked.prediction_objective(self, pred, h, z, batch, rng)

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


METHOD = IJEPA
