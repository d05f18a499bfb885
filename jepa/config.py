"""Config defaults and validation shared by every config file in configs/.

Every `configs/<method>_<model>.py` starts from `base_config()` and changes what its method needs. Keys that
a method does not use keep their defaults; `validate()` below checks them all before anything compiles.
"""
import ml_collections

from jepa.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def base_config():
  c = ml_collections.ConfigDict()
  c.method = "ijepa"
  c.seed = 0
  c.dtype = "float32"  # Compute dtype; parameters and optimizer state stay float32.

  c.data = ml_collections.ConfigDict(dict(
      source="digits",            # digits|tfds|folder|npz|idx; video: moving_digits|video_csv|tfds_video;
                                  # synthetic (random pixels of this shape: compiling and timing only)
      synthetic_examples=4096,    # synthetic: number of examples
      name="",                    # tfds dataset name
      data_dir="",                # tfds data_dir
      path="",                    # folder / npz / idx images path
      labels_path="",             # idx labels path
      train_split="train",
      eval_split="",              # '' -> a fixed carve-out of train (eval_fraction)
      eval_fraction=0.1,
      image_size=32,
      crop_scale=(0.3, 1.0),
      crop_ratio=(0.75, 4.0 / 3.0),
      flip=False,
      mean=IMAGENET_MEAN,
      std=IMAGENET_STD,
      num_threads=2,
      num_workers=0,              # worker processes for reads + augmentation (grain mp_prefetch); 0 = threads
      prefetch=2,
      skip_corrupt=False,
      # Video (V-JEPA): clips of num_frames frames taken every frame_step frames; 0 frames = images.
      num_frames=0,
      frame_step=4,
      label="",                   # moving_digits: 'motion' (default) | 'digit'
      video_key="video",          # tfds_video: feature holding the frames
  ))

  c.model = ml_collections.ConfigDict(dict(
      patch_size=4,
      pos_embedding="sincos_ijepa",
      remat=False,
      remat_policy="",            # with remat: '' recomputes everything; or a jax.checkpoint_policies name
      tubelet_size=2,             # frames per video patch (V-JEPA: 2 x p x p tubelets)
      # drop_path: stochastic depth of the trained encoder's last block (linear from 0 over the blocks).
      encoder=ml_collections.ConfigDict(dict(size="tiny", width=0, depth=0, heads=0, mlp_ratio=0.0,
                                             drop_path=0.0)),
      # heads 0 = the encoder's heads; num_mask_tokens 0 = the method's count (V-JEPA: one per mask group),
      # more keeps extra learned tokens (released V-JEPA 2 predictors hold 10; see jepa/convert.py).
      predictor=ml_collections.ConfigDict(dict(width=384, depth=12, heads=0, num_mask_tokens=0)),
  ))

  c.masks = ml_collections.ConfigDict(dict(
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

  # sigreg_weight > 0 adds w * SIGReg(mean-pooled context-encoder tokens) to a predictive JEPA's loss (I-JEPA,
  # V-JEPA, IWM): LeJEPA's anti-collapse term inside a masked JEPA (jepa/methods/base.py context_sigreg).
  c.loss = ml_collections.ConfigDict(dict(kind="smooth_l1", beta=1.0, sigreg_weight=0.0, sigreg_slices=256))

  c.optim = ml_collections.ConfigDict(dict(
      lr=1e-3, start_lr=2e-4, final_lr=1e-6, warmup_steps=100,
      weight_decay=0.04, final_weight_decay=0.4,
      b1=0.9, b2=0.999, eps=1e-8,
      grad_clip=0.0, clip_after_warmup=False,
      schedule_scale=1.0,  # V-JEPA's ipe_scale: schedules laid over schedule_scale * num_steps.
  ))
  c.ema = ml_collections.ConfigDict(dict(momentum=0.996, final_momentum=1.0))

  c.train = ml_collections.ConfigDict(dict(
      batch_size=128,             # Global batch, split over all devices.
      num_steps=1000,
      log_every=50,
      checkpoint_every=500,
      keep_checkpoints=3,
      nan_policy="skip",          # skip | stop
      # Micro-batches per step: the step scans over grad_accum_steps slices of the global batch and averages
      # their gradients, then updates params, EMA and schedules once (the step counts effective batches).
      grad_accum_steps=1,
      # Collapse alarm: a WARNING line and an alarm/<metric> row in the logs when a collapse monitor (the
      # method's `collapse_monitors`, e.g. target_feature_std, embedding_std, rankme, and the in-loop
      # probe/rankme, probe/lidar) falls below this fraction of its early value, the mean of its first
      # collapse_alarm_logs logged values (jepa/metrics.py CollapseAlarm). 0 = off.
      collapse_alarm=0.25,
      collapse_alarm_logs=3,
  ))

  c.eval = ml_collections.ConfigDict(dict(
      every=0,                    # 0 = only at the end
      probe=True,
      random_baseline=True,       # Also probe a randomly initialised encoder, side by side.
      batch_size=256,
      max_train_examples=20000,
      max_eval_examples=10000,
      # Attentive probe (methods with probes=('attentive',)): AttentiveClassifier on frozen tokens.
      attentive=ml_collections.ConfigDict(dict(
          variant="vjepa",        # vjepa (cross-attention only) | vjepa2 (3 self-attention blocks first)
          depth=0,                # 0 = the variant's reference depth (1 / 4)
          heads=0,                # 0 = width // 64 (head_dim 64, as ViT-S/B/L)
          epochs=20, batch_size=64, lr=1e-3, weight_decay=0.01)),
      # What Trainer.evaluate runs on the frozen features (jepa/evaluation/evaluators.py), for the trained and
      # the random-init state: 'probes' = the method's own probes (Method.probes), then any of linear,
      # attentive, knn, few_shot, rankme, lidar. The method's extra evaluations (IWM: MRR) always run.
      evaluators="probes,knn,few_shot,rankme,lidar",
      knn=ml_collections.ConfigDict(dict(
          k=20,                   # neighbours (capped at the number of training features)
          temperature=0.07,       # the weighted vote's T (DINO)
          vote="weighted")),      # weighted: sum of exp(cos / T) per class | majority: neighbour count
      few_shot=ml_collections.ConfigDict(dict(
          shots=(1, 10, 0),       # labels per class; 0 = all of them
          trials=3,               # fixed-seed subsets per shot count (accuracies averaged)
          l2=1e-3)),              # fixed L2 strength (no hold-out to select it from with 1 label per class)
      lidar=ml_collections.ConfigDict(dict(
          samples=128,            # eval images (surrogate classes)
          views=4)),              # views of each from the method's training augmentation (Method.view_fn)
      # End of run (process 0): PNG pictures in WORKDIR/pictures (curves, masks on inputs, PCA of patch
      # features; jepa/pictures.py) of picture_examples eval images, and WORKDIR/report.md (jepa/report.py).
      pictures=True,
      picture_examples=3,
      report=True,
  ))

  # --- method sections: each method adds its own section here (keys it alone reads) ---------------------------
  # LeJEPA (jepa/methods/lejepa.py): multi-crop views, backbone + BN-MLP projector, (1-lam)*inv + lam*SIGReg.
  c.lejepa = ml_collections.ConfigDict(dict(
      backbone="vit",             # vit (model.encoder, model.patch_size; tokens mean-pooled) | resnet18|34|50
      resnet_width=64,            # ResNet stem / first-stage width (64 = the standard models)
      cifar_stem=True,            # ResNet: 3x3 stride-1 stem, no max-pool (small images)
      num_global=2, num_local=6,  # views per image; global ones at data.image_size, local at local_size
      global_scale=(0.3, 1.0), local_scale=(0.05, 0.3), local_size=16,
      global_size=0,              # training size of the global views (0 = data.image_size; ResNet only)
      flip=0.5, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale=0.2, blur=0.5,
      blur_sigma=(0.1, 2.0), solarize=0.2,
      lam=0.05, form="convex",    # convex: (1-lam)*inv + lam*SIGReg (paper) | additive: inv + lam*SIGReg
      num_slices=1024, quadrature="library", num_knots=17, chunk_size=0,  # SIGReg; chunk 0 = unchunked
      proj_hidden=2048, proj_dim=64, proj_layers=3,
  ))

  # IWM (jepa/methods/iwm.py, views in jepa/data/iwm_views.py); masks.* give the source view's blocks.
  c.iwm = ml_collections.ConfigDict(dict(
      conditioning="feature",     # feature (paper default) | sequence (action tokens) | none (ablation)
      jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,  # both views, independent draws
      blur_p=0.2, grayscale_p=0.2, solarize_p=0.2,                          # source view only
      mrr_bank_size=16,           # augmented versions per image in the MRR bank (256 in the paper)
      mrr_images=64,              # eval images scored by MRR (0 = no MRR)
      mrr_batch_size=8,           # images per MRR step (x bank size target-encoder passes)
  ))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, fsdp_min_size=2**18))
  # Multi-host: explicit coordinator (coordinator_address, num_processes, process_id); or initialize=True,
  # which lets JAX find the hosts itself (Cloud TPU VM metadata, Slurm, Open MPI; tpu/launch.sh sets it); or
  # auto, which initialises when the environment names a multi-process job (Slurm, GKE TPU, Megascale).
  # initialization_timeout: seconds to wait for all num_processes processes to join the coordinator; then the
  # run ends with one line (jepa/parallel.py).
  c.distributed = ml_collections.ConfigDict(dict(auto=True, coordinator_address="", num_processes=1,
                                                 process_id=0, initialize=False, initialization_timeout=300))
  return c


def with_defaults(config):
  """`config` with the keys it lacks taken from base_config() (a config.json saved before they existed).

  Returns `config` itself when nothing is missing, else an unlocked copy with the missing keys added.
  """
  reference, values = _flatten(base_config()), _flatten(config)
  missing = [k for k in reference if k not in values]
  if not missing:
    return config
  out = ml_collections.ConfigDict(config.to_dict())
  for name in missing:
    *parents, leaf = name.split(".")
    node = out
    for i, p in enumerate(parents):
      if p not in node:
        node[p] = ml_collections.ConfigDict()
      elif not isinstance(node[p], ml_collections.ConfigDict):
        raise ConfigError(f"config key {'.'.join(parents[:i + 1])} must be a section (it holds {node[p]!r})")
      node = node[p]
    node[leaf] = reference[name]
  return out


def apply_preset(config, arg, presets):
  """Applies `presets[arg]` (a function mutating the config); '' is the default."""
  if arg not in presets:
    raise ValueError(f"unknown config argument {arg!r}; choose one of {sorted(k for k in presets if k)}")
  presets[arg](config)
  return config


# --- validation ------------------------------------------------------------------------------------------------
_CHOICES = {
    "dtype": ("float32", "bfloat16"),
    "data.source": ("digits", "tfds", "folder", "npz", "idx", "moving_digits", "video_csv", "tfds_video",
                    "two_rooms", "synthetic"),
    "train.nan_policy": ("skip", "stop"),
    "loss.kind": ("smooth_l1", "l1", "l2"),
    "masks.truncation": ("random", "raster"),
    "eval.knn.vote": ("weighted", "majority"),
}
_POSITIVE = ("train.batch_size", "train.num_steps", "train.log_every", "data.image_size", "model.patch_size",
             "eval.batch_size", "train.keep_checkpoints", "eval.knn.k", "eval.knn.temperature",
             "eval.few_shot.trials", "eval.picture_examples", "train.collapse_alarm_logs",
             "loss.sigreg_slices")
# 0 is meaningful for these (no periodic checkpoints / evals, reading in the main thread, no decay, ...).
_NON_NEGATIVE = ("train.checkpoint_every", "eval.every", "data.num_threads", "data.num_workers", "data.prefetch",
                 "optim.lr", "optim.start_lr", "optim.final_lr", "optim.warmup_steps", "optim.weight_decay",
                 "optim.final_weight_decay", "optim.grad_clip", "loss.sigreg_weight")


# Pairs (and the 4 jitter strengths): exactly that many numbers, so that `lo, hi = ...` cannot fail later.
_FIXED_LENGTH = (("data.crop_scale", 2, "min, max"), ("data.crop_ratio", 2, "min, max"),
                 ("masks.target_scale", 2, "min, max"), ("masks.target_aspect", 2, "min, max"),
                 ("masks.context_scale", 2, "min, max"), ("lejepa.global_scale", 2, "min, max"),
                 ("lejepa.local_scale", 2, "min, max"), ("lejepa.blur_sigma", 2, "min, max"),
                 ("lejepa.jitter", 4, "brightness, contrast, saturation, hue"),
                 # Images are converted to RGB before normalisation.
                 ("data.mean", 3, "one per RGB channel"), ("data.std", 3, "one per RGB channel"))
# Methods that cut the patch grid into context and target blocks (jepa/masks.py).
_MASKED_METHODS = ("ijepa", "iwm", "vjepa")


def _flatten(cfg, prefix=""):
  out = {}
  for key, value in cfg.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_flatten(value, name + "."))
    else:
      out[name] = value
  return out


def _same_type(value, default):
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(default))


def validate(config, *, num_devices, process_count=1):
  """Checks keys, types and sizes before anything compiles; raises a one-line ConfigError naming the key."""
  reference = _flatten(base_config())
  values = _flatten(config)
  for name, value in values.items():
    if "." in name and name.split(".")[0] not in {k.split(".")[0] for k in reference}:
      continue  # A section base_config lacks is its method's: its config file declares it, Method.validate checks it.
    if name not in reference:
      close = [k for k in reference if k.split(".")[-1] == name.split(".")[-1]]
      hint = f"; did you mean {close[0]}?" if close else "; remove it or fix its spelling"
      raise ConfigError(f"config key {name} is unknown{hint}")
    default = reference[name]
    if not _same_type(value, default):
      raise ConfigError(f"config key {name}={value!r} has type {type(value).__name__}, expected "
                        f"{type(default).__name__} (like the default {default!r})")
  for name, choices in _CHOICES.items():
    if values[name] not in choices:
      raise ConfigError(f"{name}={values[name]!r} is not one of {list(choices)}")
  for name in _POSITIVE:
    if values[name] <= 0:
      raise ConfigError(f"{name}={values[name]} must be positive")
  batch = config.train.batch_size
  if batch % num_devices:
    raise ConfigError(f"train.batch_size={batch} is not divisible by the {num_devices} devices; use a multiple "
                      f"of {num_devices} (e.g. --config.train.batch_size={max(1, batch // num_devices) * num_devices})")
  accum = config.train.grad_accum_steps
  if accum < 1:
    raise ConfigError(f"train.grad_accum_steps={accum} must be >= 1 (1 = no accumulation)")
  if batch % (accum * num_devices):
    raise ConfigError(f"train.batch_size={batch} does not split into train.grad_accum_steps={accum} "
                      f"micro-batches over {num_devices} devices; use a multiple of {accum * num_devices}")
  if batch % process_count:
    raise ConfigError(f"train.batch_size={batch} is not divisible by the {process_count} processes")
  if config.eval.batch_size % num_devices:
    raise ConfigError(f"eval.batch_size={config.eval.batch_size} is not divisible by the {num_devices} devices; "
                      f"use a multiple of {num_devices}")
  if not 0.0 < config.data.eval_fraction < 1.0:
    raise ConfigError(f"data.eval_fraction={config.data.eval_fraction} must be in (0, 1)")
  for name, size, what in _FIXED_LENGTH:
    value = values[name]
    if len(value) != size or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
      example = ",".join(str(v) for v in reference[name])
      raise ConfigError(f"{name}={tuple(value)} must have {size} entries, numbers ({what}); e.g. "
                        f"--config.{name}=({example})")
  lo, hi = config.data.crop_scale
  if not 0.0 < lo <= hi <= 1.0:
    raise ConfigError(f"data.crop_scale={tuple(config.data.crop_scale)} must satisfy 0 < min <= max <= 1")
  for name in _NON_NEGATIVE:
    if values[name] < 0:
      raise ConfigError(f"{name}={values[name]} must be >= 0")
  if min(config.data.std) <= 0:
    raise ConfigError(f"data.std={tuple(config.data.std)} must be positive")
  for name in ("ema.momentum", "ema.final_momentum"):
    if not 0.0 <= values[name] <= 1.0:
      raise ConfigError(f"{name}={values[name]} must be in [0, 1]: the EMA target keeps that fraction of itself "
                        "each step (e.g. 0.996; 1.0 freezes it)")
  if config.method in _MASKED_METHODS:
    side = config.data.image_size // config.model.patch_size
    if side < 2:
      # No mask setting fits a 1x1 grid (a target block would leave no context), so the fix is the grid.
      need = 2 * config.model.patch_size
      raise ConfigError(f"data.image_size={config.data.image_size} with model.patch_size="
                        f"{config.model.patch_size} gives a {side}x{side} patch grid, too small for context and "
                        f"target blocks; use --config.data.image_size={need} or more (a multiple of "
                        f"{config.model.patch_size}), or a smaller model.patch_size")
  if not 0.0 <= config.train.collapse_alarm < 1.0:
    raise ConfigError(f"train.collapse_alarm={config.train.collapse_alarm} must be in [0, 1): a fraction of "
                      "the early value (0 turns the alarm off)")
  shots = tuple(config.eval.few_shot.shots)
  if not shots or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in shots):
    raise ConfigError(f"eval.few_shot.shots={shots} must be labels per class, integers >= 0 (0 = all)")
  if config.eval.few_shot.l2 < 0:
    raise ConfigError(f"eval.few_shot.l2={config.eval.few_shot.l2} must be >= 0")
  if config.eval.lidar.samples < 2 or config.eval.lidar.views < 2:
    raise ConfigError(f"eval.lidar.samples={config.eval.lidar.samples} and eval.lidar.views="
                      f"{config.eval.lidar.views} must both be >= 2 (LiDAR compares views of several images)")


def check_training(config):
  """Checks of a config that only a training run needs (jepa.main calls it before anything starts); one line
  naming the key and the fix.

  Kept out of `validate` (which every Trainer runs, evaluation included): a schedule that does not fit the run
  matters only when training.
  """
  try:
    steps, warmup = config.train.num_steps, config.optim.warmup_steps
  except (AttributeError, KeyError):
    return  # A missing section is reported by validate(), with the key.
  numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (steps, warmup))
  if numbers and steps > 0 and warmup > steps:
    raise ConfigError(f"optim.warmup_steps={warmup} is longer than the run (train.num_steps={steps}): the "
                      "learning rate would never reach optim.lr; use --config.optim.warmup_steps="
                      f"{min(steps, max(1, steps // 10))} (at most train.num_steps) or raise "
                      f"--config.train.num_steps to {warmup} or more")
