r"""LeJEPA (Balestriero & LeCun, 2025): multi-crop invariance plus SIGReg, with no teacher.

Each image gives V_g global views (lejepa.global_size, default data.image_size; crop scale
lejepa.global_scale) and V_l local views (lejepa.local_size, lejepa.local_scale), all with the same
photometric augmentations. With z_{v,n} the projector output of view v of sample n (V = V_g + V_l views,
N samples, K features):

  mu_n   = (1/V_g) sum_{g < V_g} z_{g,n}                                   (centre of the global views)
  inv    = mean_{v,n,k} (mu_{n,k} - z_{v,n,k})^2                            (every view predicts the centre)
  SIGReg = (1/V) sum_v (1/M) sum_m EP({a_m^T z_{v,n}}_n),  a_m uniform unit directions, redrawn every step
  L      = (1 - lam) inv + lam SIGReg            (form 'convex', the paper's, lam = 0.05)
         |       inv + lam SIGReg                (form 'additive', stable-pretraining's)

EP is the N-scaled Epps-Pulley statistic against N(0, 1) (`jepa.losses.epps_pulley`), N the global batch. No
EMA, no stop-gradient, no predictor: SIGReg alone keeps the embedding from collapsing. The directions come
from the step key fold_in(key(seed), step), so they change every step, agree on every device and are
reproduced after a restart.

Model: backbone (a ViT whose tokens are mean-pooled, or a ResNet) -> BN-MLP projector with a small output. The
loss sees the projector output; the probes read the backbone embedding (pre-projector), as in the paper.

Slices: lejepa.num_slices defaults to 1024, the paper's recommended starting point (more slices help slightly:
4096 beats 1024 by 0.3-0.8 points; MINIMAL.md uses 256, as does the CPU default config, whose projector
output is only 32-d). The directions are redrawn every step, so even few slices cover many directions over
a run. SIGReg costs O(N V M knots); `chunk_size` bounds its memory for large N * M.

A ViT sees two token counts (global and local views). It is run once per view size; its fixed sin-cos table is
regenerated for each grid (jepa/models/vit.py), so no interpolation is involved.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jepa import config as config_lib
from jepa import losses
from jepa.data import augment
from jepa.evaluation import collapse
from jepa.methods import base
from jepa.models import factory
from jepa.models import heads
from jepa.models import resnet as resnet_lib

BACKBONES = ("vit", "resnet18", "resnet34", "resnet50")


class LeJEPAModel(nnx.Module):
  """Backbone + projector; `embed` gives the pooled backbone embedding [B, D]."""

  def __init__(self, backbone, projector, *, pool_tokens):
    self.backbone = backbone
    self.projector = projector
    self.pool_tokens = pool_tokens  # ViT: [B, N, D] tokens -> mean over N; a ResNet pools itself.

  def embed(self, images, rng=None):
    """`rng`: the ViT's drop-path key in training (None in evaluation; a ResNet has no drop-path)."""
    out = self.backbone(images, rng=rng) if self.pool_tokens else self.backbone(images)
    return out.mean(axis=1) if self.pool_tokens else out


def _check_scale(name, scale):
  lo, hi = scale
  if not 0.0 < lo <= hi <= 1.0:
    raise base.ConfigError(f"lejepa.{name}={tuple(scale)} must satisfy 0 < min <= max <= 1")


def _check_prob(name, p):
  if not 0.0 <= p <= 1.0:
    raise base.ConfigError(f"lejepa.{name}={p} is a probability; use a value in [0, 1]")


def config_sections():
  """LeJEPA's section: views, backbone + projector, SIGReg."""
  return {"lejepa": ml_collections.ConfigDict(dict(
      backbone="vit",             # vit (model.encoder, model.patch_size; tokens mean-pooled) | resnet18|34|50
      resnet_width=64,            # ResNet stem / first-stage width (64 = the standard models)
      resnet_stage_widths=(),     # ResNet: width of each stage; () = resnet_width * 2**i
      cifar_stem=True,            # ResNet: 3x3 stride-1 stem, no max-pool (small images)
      num_global=2, num_local=6,  # views per image; global ones at data.image_size, local at local_size
      global_scale=(0.3, 1.0), local_scale=(0.05, 0.3), local_size=16,
      global_size=0,              # training size of the global views (0 = data.image_size; ResNet only)
      flip=0.5, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale=0.2, blur=0.5,
      blur_sigma=(0.1, 2.0), solarize=0.2,
      lam=0.05, form="convex",    # convex: (1-lam)*inv + lam*SIGReg (paper) | additive: inv + lam*SIGReg
      num_slices=1024, quadrature="library", num_knots=17, chunk_size=0,  # SIGReg; chunk 0 = unchunked
      proj_hidden=2048, proj_dim=64, proj_layers=3,
  ))}


class LeJEPA(base.Method):
  ema_target = None

  # --- model ------------------------------------------------------------------------------------------------
  def init_model(self, rngs):
    cfg = self.config.lejepa
    dtype = factory.compute_dtype(self.config.dtype)
    if cfg.backbone == "vit":
      backbone = factory.build_encoder(self.config, rngs)
      dim = backbone.width
    else:
      backbone = resnet_lib.resnet(cfg.backbone, width=cfg.resnet_width,
                                   stage_widths=tuple(cfg.resnet_stage_widths), cifar_stem=cfg.cifar_stem,
                                   conv=self.config.model.conv,
                                   dtype=None if dtype == jnp.float32 else dtype, rngs=rngs)
      dim = backbone.embed_dim
    projector = heads.Projector(in_dim=dim, hidden_dim=cfg.proj_hidden, out_dim=cfg.proj_dim,
                                num_layers=cfg.proj_layers, dtype=None if dtype == jnp.float32 else dtype,
                                rngs=rngs)
    return LeJEPAModel(backbone, projector, pool_tokens=cfg.backbone == "vit")

  def validate(self):
    cfg, data = self.config.lejepa, self.config.data
    if cfg.backbone not in BACKBONES:
      raise base.ConfigError(f"lejepa.backbone={cfg.backbone!r} is unknown; use one of {list(BACKBONES)}")
    if cfg.num_global < 1:
      raise base.ConfigError(f"lejepa.num_global={cfg.num_global} must be >= 1 (the invariance centre is the "
                             "mean of the global views; the paper uses 2)")
    if cfg.num_local < 0:
      raise base.ConfigError(f"lejepa.num_local={cfg.num_local} must be >= 0")
    if cfg.backbone == "vit":
      p = self.config.model.patch_size
      if data.image_size % p:
        raise base.ConfigError(f"data.image_size={data.image_size} is not divisible by model.patch_size={p}; "
                               "change one of them")
      if cfg.num_local and cfg.local_size % p:
        raise base.ConfigError(f"lejepa.local_size={cfg.local_size} is not divisible by "
                               f"model.patch_size={p}; use a multiple of {p}")
    if cfg.global_size < 0 or (cfg.global_size and cfg.backbone == "vit" and cfg.global_size != data.image_size):
      raise base.ConfigError(f"lejepa.global_size={cfg.global_size} must be 0 (data.image_size) or, with a "
                             "ResNet backbone, a positive size (a ViT's position table fits one grid)")
    if cfg.num_local and cfg.local_size <= 0:
      raise base.ConfigError(f"lejepa.local_size={cfg.local_size} must be positive")
    for name, size, what in (("lejepa.global_scale", 2, "min, max"), ("lejepa.local_scale", 2, "min, max"),
                             ("lejepa.blur_sigma", 2, "min, max"),
                             ("lejepa.jitter", 4, "brightness, contrast, saturation, hue")):
      config_lib.check_length(self.config, name, size, what)
    _check_scale("global_scale", cfg.global_scale)
    _check_scale("local_scale", cfg.local_scale)
    for name in ("flip", "jitter_p", "grayscale", "blur", "solarize"):
      _check_prob(name, cfg[name])
    if cfg.form not in ("convex", "additive"):
      raise base.ConfigError(f"lejepa.form={cfg.form!r} is unknown; use 'convex' ((1-lam)*inv + lam*SIGReg) "
                             "or 'additive' (inv + lam*SIGReg)")
    if cfg.lam < 0 or (cfg.form == "convex" and cfg.lam > 1):
      raise base.ConfigError(f"lejepa.lam={cfg.lam} is out of range; use 0 <= lam (<= 1 for form='convex')")
    if cfg.num_slices < 1 or cfg.proj_dim < 1 or cfg.proj_hidden < 1 or cfg.chunk_size < 0:
      raise base.ConfigError("lejepa.num_slices, proj_dim and proj_hidden must be >= 1 and chunk_size >= 0 "
                             f"(got {cfg.num_slices}, {cfg.proj_dim}, {cfg.proj_hidden}, {cfg.chunk_size})")
    if cfg.proj_layers < 1:
      raise base.ConfigError(f"lejepa.proj_layers={cfg.proj_layers} must be >= 1 (1 = a single Linear)")
    try:
      losses.quadrature_rule(cfg.quadrature, cfg.num_knots)
    except ValueError as e:
      raise base.ConfigError(f"lejepa.quadrature / lejepa.num_knots: {e}") from None
    if self.config.train.batch_size < 2:
      raise base.ConfigError("train.batch_size must be >= 2: SIGReg and BatchNorm are batch statistics")

  # --- views ------------------------------------------------------------------------------------------------
  def _view(self, image, rng, size, scale):
    """One augmented view: crop, flip, colour jitter, grayscale, blur, solarize, normalise -> float32."""
    cfg, data = self.config.lejepa, self.config.data
    view, _ = augment.random_resized_crop(image, rng, size, scale=tuple(scale), ratio=tuple(data.crop_ratio))
    view, _ = augment.hflip(view, rng, p=cfg.flip)
    b, c, s, h = cfg.jitter
    view, _ = augment.color_jitter(view, rng, brightness=b, contrast=c, saturation=s, hue=h, p=cfg.jitter_p)
    view, _ = augment.grayscale(view, rng, p=cfg.grayscale)
    view, _ = augment.gaussian_blur(view, rng, p=cfg.blur, sigma=tuple(cfg.blur_sigma))
    view, _ = augment.solarize(view, rng, p=cfg.solarize)
    return augment.normalize(view, data.mean, data.std).astype(np.float32)

  def example_fn(self, train):
    """Train: {'global_views' [Vg, H, W, C], 'local_views' [Vl, h, w, C] (only if Vl > 0), 'label'}."""
    if not train:
      return self.eval_example_fn()
    cfg, data = self.config.lejepa, self.config.data

    def fn(example, rng):
      image = augment.to_rgb(example["image"])
      size = cfg.global_size or data.image_size
      out = {"global_views": np.stack([self._view(image, rng, size, cfg.global_scale)
                                       for _ in range(cfg.num_global)])}
      if cfg.num_local:
        out["local_views"] = np.stack([self._view(image, rng, cfg.local_size, cfg.local_scale)
                                       for _ in range(cfg.num_local)])
      out["label"] = np.int32(example["label"])
      return out

    return fn

  # --- loss -------------------------------------------------------------------------------------------------
  def embed_views(self, model, batch, rng=None):
    """Backbone embeddings of all views, [B, V, D], global views first; one backbone call per view size.

    Views stay batch-major ([B, V, ...] -> [B * V, ...]) so that a batch sharded over devices on its leading
    axis needs no resharding. A ResNet's BatchNorm updates its running statistics once per call; the global
    views go last so that they weigh most in the statistics the probe (which sees global-size images) uses.
    """
    groups = [batch["global_views"]]
    if "local_views" in batch:
      groups.insert(0, batch["local_views"])
    embs = []
    for i, views in enumerate(groups):
      b, v = views.shape[:2]
      key = None if rng is None else jax.random.fold_in(rng, i)
      embs.append(model.embed(views.reshape(b * v, *views.shape[2:]), key).reshape(b, v, -1))
    return jnp.concatenate(embs[::-1], axis=1)

  def project(self, model, batch, rng=None):
    """(z [V, B, K] projector outputs, global views first; emb [B, V, D] backbone embeddings)."""
    emb = self.embed_views(model, batch, rng)
    b, v, d = emb.shape
    # One projector call over every view: its BatchNorm statistics are those of all views (as the reference).
    z = model.projector(emb.reshape(b * v, d)).reshape(b, v, -1)
    return jnp.swapaxes(z, 0, 1), emb

  def loss(self, model, target, batch, rng):
    del target  # No teacher.
    cfg = self.config.lejepa
    # rng draws the SIGReg directions; a key folded from it drives the ViT's drop-path.
    z, emb = self.project(model, batch, jax.random.fold_in(rng, 1))
    loss, metrics = losses.lejepa_loss(
        z, num_global=cfg.num_global, key=rng, lam=cfg.lam, form=cfg.form, num_slices=cfg.num_slices,
        quadrature=cfg.quadrature, num_knots=cfg.num_knots, chunk_size=cfg.chunk_size or None)
    z0 = jax.lax.stop_gradient(z[0])
    metrics["rankme"] = collapse.rankme(z0)  # Collapse monitor, from 1 (collapsed) to min(B, K).
    metrics["embedding_std"] = jnp.std(jax.lax.stop_gradient(emb[:, 0]), axis=0).mean()
    return loss, metrics

  def features(self, model, target, images):
    """The backbone embedding (pre-projector) of the eval images: mean-pooled ViT tokens or ResNet pool."""
    del target
    return model.embed(images)

  # --- pictures and LiDAR's views (hooks of jepa/methods/base.py) -------------------------------------------
  def view_fn(self):
    """One global view (crop and photometric augmentations at data.image_size) per call."""
    data, cfg = self.config.data, self.config.lejepa
    return lambda example, rng: {"image": self._view(augment.to_rgb(example["image"]), rng, data.image_size,
                                                     cfg.global_scale), "label": np.int32(example["label"])}

  def pictures(self, example, rng):
    """The eval view, then the global and the local views of the training example (at their own sizes)."""
    out = self.example_fn(train=True)(example, rng)
    row = [base.plots.Panel(self.display(self.eval_example_fn()(example, None)["image"]), "image")]
    row += [base.plots.Panel(self.display(v), f"global {i + 1}") for i, v in enumerate(out["global_views"])]
    row += [base.plots.Panel(self.display(v), f"local {i + 1}")
            for i, v in enumerate(out.get("local_views", []))]
    return [row]

  def token_grid(self):
    side = self.config.data.image_size // self.config.model.patch_size
    return (side, side) if self.config.lejepa.backbone == "vit" else None

  def patch_tokens(self, model, target, images):
    del target
    return model.backbone(images)


METHOD = LeJEPA
