"""Config defaults and validation shared by every config file in configs/.

Every `configs/<method>_<model>.py` starts from `method_config(method)`: `base_config()` (the keys every run
shares: data, model, optim, ema, train, eval, mesh, distributed) plus the sections its method declares in
jepa/methods/<method>.py (`config_sections()`: LeJEPA's `lejepa`, IWM's `iwm`, the masked methods' `masks`
and `loss`, the world model's `world_model` and `planner`). `validate()` checks every key's name and type
against those defaults and the shared values before anything compiles; each method checks its own sections'
values in `Method.validate`, with the helpers below (`check_length`, `check_choice`).
"""
import importlib

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
      source="digits",            # digits|tfds|folder|npz|idx; video: moving_digits|video_csv|tfds_video|
                                  # two_rooms_video; two_rooms (trajectories); synthetic (random pixels of
                                  # this shape: compiling and timing only)
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
      backward_cut="auto",        # auto | on | off: materialise the residual gradient per block (on for CPU:
                                  # XLA's CPU fusion otherwise recomputes it; jepa/models/backward_cut.py)
      conv="auto",                # ResNet and IMPALA (world model) convolutions: auto | xla | im2col (auto =
                                  # im2col on the CPU for strided convs, maps <= 3 x 3 and stems on <= 4
                                  # channels, where XLA's CPU convs are slow; jepa/models/conv.py)
      tubelet_size=2,             # frames per video patch (V-JEPA: 2 x p x p tubelets)
      # drop_path: stochastic depth of the trained encoder's last block (linear from 0 over the blocks).
      encoder=ml_collections.ConfigDict(dict(size="tiny", width=0, depth=0, heads=0, mlp_ratio=0.0,
                                             drop_path=0.0)),
      # heads 0 = the encoder's heads; num_mask_tokens 0 = the method's count (V-JEPA: one per mask group),
      # more keeps extra learned tokens (released V-JEPA 2 predictors hold 10; see jepa/convert.py).
      predictor=ml_collections.ConfigDict(dict(width=384, depth=12, heads=0, num_mask_tokens=0)),
  ))

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
      # What jepa/evaluation/suite.py runs on the frozen features (jepa/evaluation/evaluators.py), for the trained and
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

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, fsdp_min_size=2**18))
  # Multi-host: explicit coordinator (coordinator_address, num_processes, process_id); or initialize=True,
  # which lets JAX find the hosts itself (Cloud TPU VM metadata, Slurm, Open MPI; tpu/launch.sh sets it); or
  # auto, which initialises when the environment names a multi-process job (Slurm, GKE TPU, Megascale).
  # initialization_timeout: seconds to wait for all num_processes processes to join the coordinator; then the
  # run ends with one line (jepa/parallel.py).
  c.distributed = ml_collections.ConfigDict(dict(auto=True, coordinator_address="", num_processes=1,
                                                 process_id=0, initialize=False, initialization_timeout=300))
  return c


FORMER_SHARED_SECTIONS = ("masks", "loss", "lejepa", "iwm")


def method_sections(method):
  """{section name: ConfigDict} that `method` declares (jepa/methods/<method>.py `config_sections`)."""
  from jepa import methods  # pylint: disable=import-outside-toplevel  (the method modules import JAX)
  if method not in methods.available():
    raise ConfigError(f"method={method!r} is unknown; choose one of {methods.available()}")
  module = importlib.import_module(f"jepa.methods.{method}")
  return getattr(module, "config_sections", dict)()


def method_config(method):
  """base_config() with `method` set and its sections added: where every configs/ file starts."""
  c = base_config()
  c.method = method
  for name, section in method_sections(method).items():
    c[name] = section
  return c


def reference_config(config):
  """The defaults `config` is checked and completed against: method_config of its method."""
  return method_config(config.method) if "method" in config else base_config()


def with_defaults(config):
  """`config` with the keys it lacks taken from its method's defaults (a config.json saved before they
  existed).

  Returns `config` itself when nothing is missing, else an unlocked copy with the missing keys added.
  """
  reference, values = _flatten(reference_config(config)), _flatten(config)
  missing = [k for k in reference if k not in values]
  # config.json files written before the method sections moved to their methods carry every method's sections;
  # those this method does not declare were never read, so they are dropped.
  stale = [k for k in FORMER_SHARED_SECTIONS if k in config and not any(r.startswith(k + ".") for r in reference)]
  if not missing and not stale:
    return config
  out = ml_collections.ConfigDict({k: v for k, v in config.to_dict().items() if k not in stale})
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
DTYPES = ("float32", "bfloat16")  # Compute dtypes (jepa/models/factory.py maps them).
KNN_VOTES = ("weighted", "majority")  # jepa/evaluation/knn.py's votes.
# jepa/data/video.py's sources, and Two Rooms windows as clips (jepa/data/trajectories.py TwoRoomsClips).
VIDEO_SOURCES = ("moving_digits", "video_csv", "tfds_video", "two_rooms_video")
_CHOICES = {
    "dtype": DTYPES,
    "data.source": ("digits", "tfds", "folder", "npz", "idx", "two_rooms", "synthetic") + VIDEO_SOURCES,
    "train.nan_policy": ("skip", "stop"),
    "eval.knn.vote": KNN_VOTES,
}
_POSITIVE = ("train.batch_size", "train.num_steps", "train.log_every", "data.image_size", "model.patch_size",
             "eval.batch_size", "train.keep_checkpoints", "eval.knn.k", "eval.knn.temperature",
             "eval.few_shot.trials", "eval.picture_examples", "train.collapse_alarm_logs")
# 0 is meaningful for these (no periodic checkpoints / evals, reading in the main thread, no decay, ...).
_NON_NEGATIVE = ("train.checkpoint_every", "eval.every", "data.num_threads", "data.num_workers", "data.prefetch",
                 "optim.lr", "optim.start_lr", "optim.final_lr", "optim.warmup_steps", "optim.weight_decay",
                 "optim.final_weight_decay", "optim.grad_clip")


# Pairs (and the 4 jitter strengths): exactly that many numbers, so that `lo, hi = ...` cannot fail later.
_FIXED_LENGTH = (("data.crop_scale", 2, "min, max"), ("data.crop_ratio", 2, "min, max"),
                 # Images are converted to RGB before normalisation.
                 ("data.mean", 3, "one per RGB channel"), ("data.std", 3, "one per RGB channel"))


def _flatten(cfg, prefix=""):
  out = {}
  for key, value in cfg.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_flatten(value, name + "."))
    else:
      out[name] = value
  return out


def same_type(value, default):
  """Whether `value` may replace `default` (ints for floats, lists for tuples; bools only for bools)."""
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(default))


def check_length(config, name, size, what):
  """A one-line ConfigError unless config key `name` holds `size` numbers (`what` names them)."""
  value = _flatten(config)[name]
  if len(value) != size or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
    example = ",".join(str(v) for v in _flatten(reference_config(config))[name])
    raise ConfigError(f"{name}={tuple(value)} must have {size} entries, numbers ({what}); e.g. "
                      f"--config.{name}=({example})")


def check_choice(config, name, choices):
  """A one-line ConfigError unless config key `name` is one of `choices`."""
  value = _flatten(config)[name]
  if value not in choices:
    raise ConfigError(f"{name}={value!r} is not one of {list(choices)}")


def validate(config, *, num_devices, process_count=1):
  """Checks keys, types and sizes before anything compiles; raises a one-line ConfigError naming the key."""
  reference = _flatten(reference_config(config))
  values = _flatten(config)
  for name, value in values.items():
    if name not in reference:
      close = [k for k in reference if k.split(".")[-1] == name.split(".")[-1]]
      hint = f"; did you mean {close[0]}?" if close else "; remove it or fix its spelling"
      raise ConfigError(f"config key {name} is unknown{hint}")
    default = reference[name]
    if not same_type(value, default):
      raise ConfigError(f"config key {name}={value!r} has type {type(value).__name__}, expected "
                        f"{type(default).__name__} (like the default {default!r})")
  for name, choices in _CHOICES.items():
    check_choice(config, name, choices)
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
    check_length(config, name, size, what)
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

  Kept out of `validate` (which every run, evaluation included, calls): a schedule that does not fit the run
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
