"""IWM, Image World Models (Garrido et al., 2024): predict the target view's latents from a masked, degraded
source view and the action that relates them.

  x, y, a, U = IWMViews(image)                        source, target, action, masked positions (iwm_views.py)
  h    = layer_norm(target_encoder(y))[U]             EMA target on the whole target view   (no gradient)
  z    = encoder(x[outside U])                        context encoder on the visible source tokens
  p    = predictor(z, U, cond=a)                      [B, 1, Ku, D]: mask tokens at U, conditioned on a
  loss = mean_{valid u in U, k} (p_{u,k} - h_{u,k})^2  (losses.prediction_loss, kind 'l2')

`iwm.conditioning` picks how a enters the predictor: 'feature' (concatenated to every position-embedded mask
token, a 3-layer MLP back to the width), 'sequence' (one extra token per action component) or 'none' (the
ablation: the predictor never sees a, so it can only learn an invariant mapping). The predictor's capacity
decides the regime (on ImageNet, per the paper): 12 x 384 stays invariant (IWM-Inv), 18 x 384 becomes
equivariant (IWM-Equi), which the mean reciprocal rank (jepa/evaluation/mrr.py) measures. The target encoder
follows the encoder by EMA.
"""
import jax
import jax.numpy as jnp
import ml_collections

from jepa import losses
from jepa import plots
from jepa.data import iwm_views
from jepa.evaluation import mrr as mrr_lib
from jepa.methods import base
from jepa.methods import masked

CONDITIONINGS = ("feature", "sequence", "none")


def config_sections():
  """The masked methods' `masks` (the source view's blocks) and `loss`, and IWM's own `iwm` (views in
  jepa/data/iwm_views.py, MRR in jepa/evaluation/mrr.py)."""
  return {**masked.config_sections(), "iwm": ml_collections.ConfigDict(dict(
      conditioning="feature",     # feature (paper default) | sequence (action tokens) | none (ablation)
      jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,  # both views, independent draws
      blur_p=0.2, grayscale_p=0.2, solarize_p=0.2,                          # source view only
      mrr_bank_size=16,           # augmented versions per image in the MRR bank (256 in the paper)
      mrr_images=64,              # eval images scored by MRR (0 = no MRR)
      mrr_batch_size=8,           # images per MRR step (x bank size target-encoder passes)
  ))}


class IWM(masked.MaskedMethod):

  # --- pieces built from the config -------------------------------------------------------------------------
  def mask(self):
    return iwm_views.UnionMask(iwm_views.union_mask_sampler(self.grid(), self.config.masks))

  def jitter(self):
    c = self.config.iwm
    return iwm_views.Jitter(p=c.jitter_p, brightness=c.brightness, contrast=c.contrast,
                            saturation=c.saturation, hue=c.hue)

  @property
  def conditioned(self):
    return self.config.iwm.conditioning != "none"

  def validate(self):
    super().validate()
    c = self.config.iwm
    if c.conditioning not in CONDITIONINGS:
      raise base.ConfigError(f"iwm.conditioning={c.conditioning!r} is not one of {list(CONDITIONINGS)}")
    for key in ("jitter_p", "blur_p", "grayscale_p", "solarize_p"):
      if not 0.0 <= c[key] <= 1.0:
        raise base.ConfigError(f"iwm.{key}={c[key]} is a probability; set it in [0, 1]")
    for key in ("brightness", "contrast", "saturation"):
      if c[key] < 0:
        raise base.ConfigError(f"iwm.{key}={c[key]} must be >= 0")
    if not 0.0 <= c.hue <= 0.5:
      raise base.ConfigError(f"iwm.hue={c.hue} must be in [0, 0.5] (turns of the colour wheel)")
    if c.mrr_images < 0 or c.mrr_bank_size < 2:
      raise base.ConfigError(f"iwm.mrr_images={c.mrr_images} must be >= 0 and iwm.mrr_bank_size="
                             f"{c.mrr_bank_size} >= 2 (a rank needs at least two candidates)")
    if c.mrr_images and (c.mrr_batch_size < 1 or c.mrr_batch_size % jax.device_count()):
      raise base.ConfigError(f"iwm.mrr_batch_size={c.mrr_batch_size} must be a positive multiple of the "
                             f"{jax.device_count()} devices")
    self.mask()  # Raises a ConfigError naming the masks.* key if the blocks cannot fit the grid.

  # --- Method interface -------------------------------------------------------------------------------------
  def predictor_kwargs(self):
    return {"cond_dim": iwm_views.ACTION_DIM if self.conditioned else 0,
            "cond_mode": self.config.iwm.conditioning if self.conditioned else "feature"}

  def example_fn(self, train):
    if not train:
      return self.eval_example_fn()
    data, c = self.config.data, self.config.iwm
    return iwm_views.IWMViews(image_size=data.image_size, mask=self.mask(), jitter=self.jitter(),
                              blur_p=c.blur_p, grayscale_p=c.grayscale_p, solarize_p=c.solarize_p,
                              crop_scale=tuple(data.crop_scale), crop_ratio=tuple(data.crop_ratio),
                              flip=data.flip, mean=tuple(data.mean), std=tuple(data.std))

  def predict(self, model, source, context_idx, context_valid, target_idx, target_valid, action, rng=None):
    """The world model: encode the visible source tokens, predict the latents at target_idx under `action`.

    `rng` is the encoder's drop-path key in training (None in evaluation). Returns (prediction, the context
    encoder's tokens)."""
    z = model.encoder(source, idx=context_idx, valid=context_valid, rng=rng)
    cond = action if self.conditioned else None
    return model.predictor(z, context_idx, context_valid, target_idx, target_valid, cond=cond), z

  def loss(self, model, target, batch, rng):
    # Views, actions and masks come from the data pipeline; rng: drop-path and optional SIGReg directions.
    h = jax.lax.stop_gradient(target(batch["image"]))                   # [B, N, D]
    h = masked.gather_tokens(h, batch["target_idx"])                    # [B, 1, Ku, D]
    pred, z = self.predict(model, batch["source"], batch["context_idx"], batch["context_valid"],
                           batch["target_idx"], batch["target_valid"], batch["action"],
                           rng=self.step_key(rng, self.DROP_PATH))
    return masked.prediction_objective(self, pred, h, z, batch, rng)

  # --- pictures ---------------------------------------------------------------------------------------------
  def pictures(self, example, rng):
    """The target view y with the predicted positions, and the source view x with the context the encoder
    sees and the same positions (masked there); the action is in the title."""
    out = self.example_fn(train=True)(example, rng)
    p = self.config.model.patch_size
    ctx = ("context", out["context_idx"][out["context_valid"]])
    tgt = ("target", out["target_idx"][0][out["target_valid"][0]])
    action = " ".join(f"{v:+.2f}" for v in out["action"][:4])
    flags = " ".join(name for name, v in zip(iwm_views.ACTION_NAMES[4:], out["action"][4:]) if v)
    return [[plots.Panel(self.display(out["image"]), "target view y", cell=p, layers=(tgt,)),
             plots.Panel(self.display(out["source"]), f"source x, a=({action}) {flags}", cell=p,
                         layers=(ctx, tgt))]]

  # --- MRR --------------------------------------------------------------------------------------------------
  def mrr_outputs(self, model, target, batch):
    """(predictions, bank latents, valid) for mrr.reciprocal_ranks: [B, N, Ku, D] twice and [B, Ku].

    Each of the N bank actions is applied to the clean image's context latents; the bank is encoded by the
    target encoder and layer-normed (the training targets).
    """
    bank = batch["bank"]
    b, n = bank.shape[:2]
    h = target(bank.reshape(b * n, *bank.shape[2:]))                   # [B*N, T, D]
    h = losses.layer_norm(h).reshape(b, n, *h.shape[1:])                # [B, N, T, D]
    tgt_idx = batch["target_idx"][:, 0]                                 # [B, Ku]
    h = jax.vmap(lambda hi, idx: hi[:, idx])(h, tgt_idx)                # [B, N, Ku, D]

    def rep(x):  # [B, ...] -> [B * N, ...]: one copy per action.
      return jnp.repeat(x, n, axis=0)

    z = model.encoder(batch["source"], idx=batch["context_idx"], valid=batch["context_valid"])
    cond = batch["action"].reshape(b * n, -1) if self.conditioned else None
    pred = model.predictor(rep(z), rep(batch["context_idx"]), rep(batch["context_valid"]),
                           rep(batch["target_idx"]), rep(batch["target_valid"]), cond=cond)
    pred = pred.reshape(b, n, *pred.shape[2:])                          # [B, N, Ku, D]
    return pred, h, batch["target_valid"][:, 0]

  def extra_evaluations(self, state, models, mesh):
    c = self.config.iwm
    if not c.mrr_images:
      return {}
    views = iwm_views.MRRViews(image_size=self.config.data.image_size, mask=self.mask(),
                               bank_size=c.mrr_bank_size, jitter=self.jitter(),
                               mean=tuple(self.config.data.mean), std=tuple(self.config.data.std))
    return {"mrr": mrr_lib.evaluate_mrr(state, models, mesh, self.config, example_fn=views,
                                        outputs_fn=self.mrr_outputs, num_images=c.mrr_images,
                                        batch_size=c.mrr_batch_size)}


METHOD = IWM
