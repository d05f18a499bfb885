"""Builds models from the config (`config.model`), so methods share one way of naming sizes."""
import jax
import jax.numpy as jnp

from jepa import config as config_lib
from jepa.errors import ConfigError
from jepa.models import backward_cut
from jepa.models import predictor as predictor_lib
from jepa.models import vit as vit_lib


def compute_dtype(name):
  """The jnp dtype of config.dtype, one of config.DTYPES."""
  if name not in config_lib.DTYPES:
    raise ConfigError(f"dtype={name!r} is not supported; use one of {list(config_lib.DTYPES)}")
  return jnp.dtype(name)


def encoder_dims(enc_cfg):
  """(width, depth, heads, mlp_ratio) from `model.encoder.size`, with any non-zero explicit field winning."""
  if enc_cfg.size not in vit_lib.VIT_SIZES:
    raise ConfigError(f"model.encoder.size={enc_cfg.size!r} is unknown; choose one of "
                      f"{sorted(vit_lib.VIT_SIZES)}")
  preset = vit_lib.VIT_SIZES[enc_cfg.size]
  width, depth, heads = preset[:3]
  mlp_ratio = preset[3] if len(preset) > 3 else 4.0
  width = enc_cfg.width or width
  depth = enc_cfg.depth or depth
  heads = enc_cfg.heads or heads
  mlp_ratio = enc_cfg.mlp_ratio or mlp_ratio
  if width % heads:
    raise ConfigError(f"model.encoder.width={width} is not divisible by model.encoder.heads={heads}; "
                      "change one of them")
  return width, depth, heads, mlp_ratio


def build_encoder(config, rngs):
  width, depth, heads, mlp_ratio = encoder_dims(config.model.encoder)
  video = config.data.num_frames or None
  return vit_lib.ViT(image_size=config.data.image_size, patch_size=config.model.patch_size,
                     in_channels=3, width=width, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                     num_frames=video, tubelet_size=config.model.tubelet_size,
                     pos_embedding=config.model.pos_embedding, remat=remat_setting(config),
                     backward_cut=backward_cut.setting(config.model.backward_cut),
                     drop_path_rate=config.model.encoder.drop_path,
                     dtype=compute_dtype(config.dtype), rngs=rngs)


def remat_setting(config):
  """model.remat / model.remat_policy as run_blocks takes them: False, True (save nothing), or the name of a
  jax.checkpoint_policies policy (e.g. 'dots_with_no_batch_dims_saveable': keep the weight matmuls' outputs,
  recompute the rest)."""
  if not config.model.remat:
    return False
  policy = config.model.remat_policy
  if policy and not callable(getattr(jax.checkpoint_policies, policy, None)):
    raise ConfigError(f"model.remat_policy={policy!r} is not in jax.checkpoint_policies; use '' (save nothing), "
                      "'dots_saveable' or 'dots_with_no_batch_dims_saveable'")
  return policy or True


def build_predictor(config, encoder, rngs, *, num_mask_tokens=1, cond_dim=0, cond_mode="feature",
                    zero_init_mask_tokens=False):
  pred = config.model.predictor
  _, _, enc_heads, _ = encoder_dims(config.model.encoder)
  heads = pred.heads or enc_heads
  # An explicit count may exceed the method's (the method then uses the first ones), never fall short of it.
  configured = pred.num_mask_tokens
  if configured and configured < num_mask_tokens:
    raise ConfigError(f"model.predictor.num_mask_tokens={configured} is fewer than the {num_mask_tokens} mask "
                      "tokens this method uses; set 0 (the method's count) or more")
  num_mask_tokens = configured or num_mask_tokens
  if pred.width % heads:
    raise ConfigError(f"model.predictor.width={pred.width} is not divisible by model.predictor.heads={heads}; "
                      "set --config.model.predictor.heads to a divisor")
  return predictor_lib.Predictor(grid=encoder.grid, embed_dim=encoder.width, width=pred.width,
                                 depth=pred.depth, heads=heads, num_mask_tokens=num_mask_tokens,
                                 pos_embedding=config.model.pos_embedding, cond_dim=cond_dim,
                                 cond_mode=cond_mode,
                                 zero_init_mask_tokens=zero_init_mask_tokens, remat=remat_setting(config),
                                 backward_cut=backward_cut.setting(config.model.backward_cut),
                                 dtype=compute_dtype(config.dtype), rngs=rngs)
