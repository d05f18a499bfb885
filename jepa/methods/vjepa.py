"""V-JEPA (Bardes et al., 2024) and V-JEPA 2's RoPE variant: predict EMA-target features of masked tubes.

Per clip x [T, H, W, C] with tubelets 2 x p x p (token grid T/2 x H/p x W/p) and G mask groups (V-JEPA: the
"short-range" union of 8 blocks at spatial scale 0.15 and the "long-range" union of 2 blocks at 0.7, every
block spanning all time steps; targets = the union, context = its complement):

  h     = layer_norm(target_encoder(x))                                  (no affine, eps 1e-5, no gradient)
  z_g   = predictor(encoder(x[context_g]), context_g, targets_g, mask token g)    for g = 1 .. G
  loss  = (1/G) sum_g mean_{valid target tokens, features} |z_g - h[targets_g]|  (L1)

The context encoder runs once per group, as in the reference. Position information is V-JEPA's fixed 3D
sin-cos table (`model.pos_embedding='sincos_vjepa'`) or V-JEPA 2's 3D RoPE in every block ('rope').
The target encoder follows the encoder by EMA (0.998 -> 1.0 over schedule_scale = 1.25 times the run).

Probe: the attentive probe on all target-encoder tokens (`probes = ('attentive',)`).
Differences from the reference, all from the shared mask sampler (jepa/masks.py, docs/masks.md): block sizes
are drawn per example, and index lists have fixed sizes with validity masks (no batch-minimum truncation).
V-JEPA 2 gives both groups mask token 0 (its token index is the clip-length group); here each group has its
own token, as in V-JEPA.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np

from jepa import losses
from jepa import masks_video as masks_lib
from jepa import plots
from jepa.data import augment
from jepa.data import video
from jepa.methods import base
from jepa.methods import masked


_GROUP_KEYS = {"num_blocks": "masks.video_blocks", "spatial_scale": "masks.video_spatial_scale",
               "temporal_scale": "masks.video_temporal_scale", "aspect": "masks.target_aspect"}


def mask_sampler(config, grid):
  """MultiBlock3D from masks.video_blocks, video_spatial_scale, video_temporal_scale (one entry per group)."""
  m = config.masks
  blocks, spatial = tuple(m.video_blocks), tuple(m.video_spatial_scale)
  temporal = tuple(m.video_temporal_scale)
  if not len(blocks) == len(spatial) == len(temporal):
    raise base.ConfigError(f"masks.video_blocks={blocks}, masks.video_spatial_scale={spatial} and "
                           f"masks.video_temporal_scale={temporal} need one entry per mask group each")
  aspect = tuple(m.target_aspect)
  groups = tuple(masks_lib.BlockGroup(num_blocks=b, spatial_scale=s, temporal_scale=t, aspect=aspect)
                 for b, s, t in zip(blocks, spatial, temporal))
  try:
    return masks_lib.MultiBlock3D(grid=tuple(grid), groups=groups, min_context=m.min_context)
  except base.ConfigError as e:
    # The sampler names its own fields (masks.groups[i].spatial_scale); name the config keys instead.
    raise base.ConfigError(re.sub(r"masks\.groups\[(\d+)\]\.(\w+)",
                                  lambda g: f"{_GROUP_KEYS[g.group(2)]}[{g.group(1)}]", str(e))) from None


config_sections = masked.config_sections  # `masks` and `loss`


class VJEPA(masked.MaskedMethod):
  probes = ("attentive",)

  def grid(self):
    data, model = self.config.data, self.config.model
    side = data.image_size // model.patch_size
    return (data.num_frames // model.tubelet_size, side, side)

  def validate(self):
    data, model = self.config.data, self.config.model
    if data.num_frames <= 0:
      raise base.ConfigError("V-JEPA trains on video: set --config.data.num_frames (e.g. 16) and a video "
                             "data.source (moving_digits, video_csv, tfds_video)")
    if data.num_frames % model.tubelet_size:
      raise base.ConfigError(f"data.num_frames={data.num_frames} is not divisible by "
                             f"model.tubelet_size={model.tubelet_size}; change one of them")
    super().validate()
    if model.pos_embedding not in ("sincos_vjepa", "rope"):
      raise base.ConfigError(f"model.pos_embedding={model.pos_embedding!r} has no 3D form; use "
                             "'sincos_vjepa' (V-JEPA) or 'rope' (V-JEPA 2)")
    mask_sampler(self.config, self.grid())  # Raises a ConfigError naming the masks.* key if they cannot fit.

  def predictor_kwargs(self):
    # One zero-initialised mask token per mask group (the reference's `zero_init_mask_tokens: true`).
    return {"num_mask_tokens": len(self.config.masks.video_blocks), "zero_init_mask_tokens": True}

  def example_fn(self, train):
    data = self.config.data
    sampler = mask_sampler(self.config, self.grid()) if train else None

    def fn(example, rng):
      # Training clips take a random window of a longer video, evaluation clips the central one.
      clip = augment.to_rgb(video.get_clip(example, rng if train else None))
      if train:
        clip, _ = video.random_resized_crop_video(clip, rng, data.image_size, scale=tuple(data.crop_scale),
                                                  ratio=tuple(data.crop_ratio))
        if data.flip:
          clip, _ = video.hflip_video(clip, rng)
        out = sampler.sample(rng)
      else:
        clip = video.center_crop_resize_video(clip, data.image_size)
        out = {}
      out["image"] = augment.normalize(clip, data.mean, data.std).astype(np.float32)  # [T, H, W, 3]
      out["label"] = np.int32(example["label"])
      return out

    return fn

  def loss(self, model, target, batch, rng):
    clips = batch["image"]  # Masks come from the data pipeline; rng: drop-path and optional SIGReg directions.
    h = jax.lax.stop_gradient(target(clips))                       # [B, N, D]
    num_groups = batch["context_idx"].shape[1]
    group_losses, group_regs, metrics = [], [], {}
    drop_key = self.step_key(rng, self.DROP_PATH)
    for g in range(num_groups):
      ctx_idx, ctx_valid = batch["context_idx"][:, g], batch["context_valid"][:, g]            # [B, Kc]
      tgt_idx, tgt_valid = batch["target_idx"][:, g:g + 1], batch["target_valid"][:, g:g + 1]  # [B, 1, Kt]
      z = model.encoder(clips, idx=ctx_idx, valid=ctx_valid, rng=self.step_key(drop_key, g))
      pred = model.predictor(z, ctx_idx, ctx_valid, tgt_idx, tgt_valid, mask_token_index=g)
      loss_g = losses.prediction_loss(pred, masked.gather_tokens(h, tgt_idx), kind=self.config.loss.kind,
                                      mask=tgt_valid, beta=self.config.loss.beta)
      group_losses.append(loss_g)
      group_regs.append(self.context_sigreg(z, ctx_valid, rng))  # Same directions for every group.
      metrics[f"loss_group{g}"] = loss_g
      metrics[f"context_tokens_group{g}"] = jnp.sum(ctx_valid, axis=-1).mean()
      if g == 0:
        metrics["prediction_std"] = jnp.std(pred.astype(jnp.float32), axis=0).mean()
    metrics["target_feature_std"] = jnp.std(losses.layer_norm(h), axis=0).mean()  # Collapse monitor.
    loss = sum(group_losses) / num_groups
    if group_regs[0][1]:  # loss.sigreg_weight > 0: the groups' mean SIGReg term, and both terms logged.
      reg = sum(term for term, _ in group_regs) / num_groups
      metrics.update(sigreg=sum(m["sigreg"] for _, m in group_regs) / num_groups, prediction_loss=loss)
      loss = loss + reg
    return loss, metrics

  def features(self, model, target, images):
    """All tokens [B, N, D] of the frozen target encoder (the attentive-probe protocol)."""
    del model
    return target(images)

  # --- pictures ---------------------------------------------------------------------------------------------
  def pictures(self, example, rng):
    """One row per mask group: every frame of the training clip with the group's context and target tubes
    (frame f shows the tubelet slice f // tubelet_size of the 3D masks)."""
    out = self.example_fn(train=True)(example, rng)
    clip = self.display(out["image"])                                # [T, H, W, 3]
    t_grid, h, w = self.grid()
    tubelet = self.config.model.tubelet_size
    rows = []
    for g in range(out["context_idx"].shape[0]):
      ctx = out["context_idx"][g][out["context_valid"][g]]
      tgt = out["target_idx"][g][out["target_valid"][g]]
      row = []
      for f in range(clip.shape[0]):
        t = f // tubelet
        in_slice = lambda idx: idx[idx // (h * w) == t] - t * h * w  # pylint: disable=cell-var-from-loop
        row.append(plots.Panel(clip[f], f"group {g} frame {f}", cell=self.config.model.patch_size,
                               layers=(("context", in_slice(ctx)), ("target", in_slice(tgt)))))
      rows.append(row)
    return rows


METHOD = VJEPA
