r"""Import of the official I-JEPA, V-JEPA and V-JEPA 2 PyTorch checkpoints into a jepa workdir.

  python -m jepa.convert --format=ijepa --checkpoint=IN1K-vit.h.14-300e.pth.tar --workdir=runs/ijepa_h14
  python -m jepa.convert --format=vjepa --checkpoint=vitl16.pth.tar --workdir=runs/vjepa_l16
  python -m jepa.convert --format=vjepa2 --checkpoint=vitg.pt --workdir=runs/vjepa2_g --num_frames=64
  python -m jepa.evaluate --workdir=runs/ijepa_h14 [--config.data.source=...] [--probe=linear|attentive]
  python -m jepa.main --config=jepa/run_config.py:runs/ijepa_h14 --workdir=runs/ijepa_h14   # train on from it

Reading the file and mapping its tensors (what is read, inferred and checked, and the layouts) is
jepa/official_weights.py.

What it writes: an Orbax checkpoint at step 0 in the train state's layout (jepa/train_state.py: params =
encoder + predictor, ema = target_encoder, a fresh optimizer state and data-iterator position) and
WORKDIR/config.json, so that `jepa.evaluate` probes it and `jepa.main` with the same --workdir trains on from
it. The config is --config if given, else `default_config(format)` (the format's recipe on the embedded digits
/ moving digits), with any `--config.*` overrides, and its model fields replaced by the inferred ones. torch
is not needed: the file is read by `jepa.torch_pickle` (tensors, dicts and numbers only; any other object in
the pickle is refused, so no code from the file runs); `convert_state_dicts` works on NumPy arrays.
"""
import dataclasses
import os
import sys

from absl import app
from absl import flags

from jepa import cli
from jepa import config as config_lib
from jepa import run_config
from jepa.errors import CheckpointError, ConfigError, JepaError
from jepa.models import vit as vit_lib
from jepa.official_weights import FORMATS, convert_state_dicts, load_torch_checkpoint


# --- the config ---------------------------------------------------------------------------------------------
def default_config(fmt):
  """A config to train on / probe an imported model of format `fmt` on the embedded data (CPU-sized runs).

  Optimizer and EMA follow the format's recipe (configs/ijepa_vit.py, configs/vjepa_vit.py); pass --config for
  another recipe or data.
  """
  c = config_lib.method_config(FORMATS[fmt].method)
  c.train.update(batch_size=16, num_steps=100, log_every=10, checkpoint_every=50)
  c.eval.update(batch_size=32, max_train_examples=1000, max_eval_examples=500)
  if fmt == "ijepa":
    c.ema.update(momentum=0.996, final_momentum=1.0)
    return c
  c.data.update(source="moving_digits", crop_scale=(0.3, 1.0), crop_ratio=(0.75, 1.35), flip=True)
  c.masks.update(video_blocks=(8, 2), video_spatial_scale=(0.15, 0.7), video_temporal_scale=(1.0, 1.0),
                 target_aspect=(0.75, 1.5))
  c.loss.update(kind="l1")
  if fmt == "vjepa":
    c.optim.update(lr=6.25e-4, start_lr=2e-4, final_lr=1e-6, schedule_scale=1.25, grad_clip=10.0,
                   clip_after_warmup=True)
    c.ema.update(momentum=0.998, final_momentum=1.0)
    c.eval.attentive.update(variant="vjepa")
  else:
    c.optim.update(lr=5.25e-4, start_lr=1e-4, final_lr=5.25e-4, weight_decay=0.04, final_weight_decay=0.04)
    c.ema.update(momentum=0.99925, final_momentum=0.99925)
    c.eval.attentive.update(variant="vjepa2")
  return c


def get_config(arg=""):
  """ml_collections entry point, `--config=jepa/convert.py:FORMAT`: `default_config(FORMAT)`.

  The CLI passes it when no --config is given, so that `--config.*` overrides apply to the default too.
  """
  if arg not in FORMATS:
    raise ConfigError(f"jepa/convert.py as a config needs a format after the colon, one of {sorted(FORMATS)}")
  return default_config(arg)


def apply_spec(config, spec):
  """Sets the model fields of `config` (and the input size they imply) to those of `spec`; returns it."""
  method = FORMATS[spec.format].method
  if config.method != method:
    raise ConfigError(f"--config has method={config.method!r}, but a {spec.format} checkpoint is trained by "
                      f"method {method!r}; pass a configs/{method}_*.py config")
  config.model.patch_size = spec.patch_size
  config.model.pos_embedding = FORMATS[spec.format].pos_embedding
  if spec.tubelet_size:
    config.model.tubelet_size = spec.tubelet_size
  dims = (spec.width, spec.depth, spec.heads)
  named = [name for name, (w, d, h, _) in vit_lib.VIT_SIZES.items() if (w, d, h) == dims]
  if named:
    config.model.encoder.size = named[0]
  config.model.encoder.update(width=spec.width, depth=spec.depth, heads=spec.heads, mlp_ratio=spec.mlp_ratio)
  config.model.predictor.update(width=spec.predictor_width, depth=spec.predictor_depth,
                                heads=spec.predictor_heads, num_mask_tokens=spec.num_mask_tokens)
  config.data.image_size = spec.image_size
  config.data.num_frames = spec.num_frames
  return config


# --- the workdir --------------------------------------------------------------------------------------------
def _check_tree(expected, actual, what):
  """Raises a CheckpointError naming the first path where `actual` differs from the abstract `expected`."""
  import jax  # pylint: disable=import-outside-toplevel  (keeps `--help` fast)
  want = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  got = dict(jax.tree_util.tree_flatten_with_path(actual)[0])
  for path, leaf in want.items():
    if path not in got:
      raise CheckpointError(f"{what}{jax.tree_util.keystr(path)} is not produced by the converter")
    if tuple(got[path].shape) != tuple(leaf.shape):
      raise CheckpointError(f"{what}{jax.tree_util.keystr(path)} has shape {tuple(got[path].shape)}, the "
                            f"model built from the config needs {tuple(leaf.shape)}")
  for path in got:
    if path not in want:
      raise CheckpointError(f"{what}{jax.tree_util.keystr(path)} is not in the model built from the config")


def write_workdir(config, workdir, converted, *, source=""):
  """Saves `converted` as step 0 of a run of `config` in `workdir` (Orbax state, data, meta; config.json)."""
  # pylint: disable=import-outside-toplevel  (JAX and the training stack load only when writing)
  import jax
  from jepa import checkpoint as checkpoint_lib
  from jepa import config as config_lib
  from jepa import train_state
  from jepa.data import sources

  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if os.path.isdir(directory) and os.listdir(directory):
    raise ConfigError(f"--workdir={workdir} already holds checkpoints; convert into a new --workdir")
  config = config_lib.with_defaults(config)
  state_def = train_state.define(config)
  abstract = state_def.abstract
  params = {"encoder": converted.encoder, "predictor": converted.predictor}
  _check_tree(abstract["params"], params, "params")
  _check_tree(abstract["ema"], converted.target_encoder, "ema")
  state = train_state.from_weights(state_def, params, converted.target_encoder, config.seed)
  _check_tree(abstract, state, "state")

  # The data position of a run that has not started, so that jepa.main resumes from here like from any run.
  iterator = train_state.train_iterator(config, state_def.method, sources.get_source(config.data, "train"))
  meta = train_state.meta(config, 0,
                          converted_from={"checkpoint": source, **dataclasses.asdict(converted.spec)})
  ckpt = checkpoint_lib.Checkpointer(directory, max_to_keep=config.train.keep_checkpoints)
  try:
    ckpt.save(0, state, iterator, meta)
  finally:
    ckpt.close()
  if jax.process_index() == 0:
    run_config.save(config, workdir)
  return state


def convert(fmt, checkpoint_path, workdir, *, config=None, **flags_):
  """Reads an official checkpoint file and writes a workdir; returns the `Converted` trees.

  `config` defaults to `default_config(fmt)`; `flags_` are `convert_state_dicts`' heads, predictor_heads,
  image_size and num_frames.
  """
  converted = convert_state_dicts(load_torch_checkpoint(checkpoint_path), fmt, **flags_)
  config = apply_spec(config if config is not None else default_config(fmt), converted.spec)
  write_workdir(config, workdir, converted, source=os.path.abspath(checkpoint_path))
  return converted


# --- command line -------------------------------------------------------------------------------------------
def _define_flags():
  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags
  flags.DEFINE_enum("format", None, sorted(FORMATS), "Checkpoint family: ijepa, vjepa or vjepa2.")
  flags.DEFINE_string("checkpoint", None, "Official PyTorch checkpoint file (.pth.tar / .pt).")
  flags.DEFINE_string("workdir", None, "New directory for the converted run (checkpoints/, config.json).")
  flags.DEFINE_integer("heads", 0, "Encoder heads; 0 = the reference size table (needed for other widths).")
  flags.DEFINE_integer("predictor_heads", 0, "Predictor heads; 0 = the encoder's (V-JEPA 2: 12).")
  flags.DEFINE_integer("image_size", 0, "Input size; 0 = read off pos_embed (V-JEPA 2: 256).")
  flags.DEFINE_integer("num_frames", 0, "Frames per clip (video); 0 = read off pos_embed (V-JEPA 2: 16).")
  config_flags.DEFINE_config_file("config", None, "Config (data, optimizer, eval) for the converted run; "
                                  "its model fields are replaced by the checkpoint's. Default: "
                                  "`default_config` of --format; --config.* overrides apply either way.",
                                  lock_config=True)
  flags.mark_flags_as_required(["format", "checkpoint", "workdir"])


def main(argv):
  cli.start(argv)
  f = flags.FLAGS
  config = cli.loaded_config(f.config)
  try:
    converted = convert(f.format, f.checkpoint, f.workdir, config=config, heads=f.heads,
                        predictor_heads=f.predictor_heads, image_size=f.image_size, num_frames=f.num_frames)
  except JepaError as e:
    cli.fail(str(e))
  s = converted.spec
  grid = "x".join(map(str, s.grid))
  print(f"converted {f.format} checkpoint {f.checkpoint}: ViT width {s.width} depth {s.depth} "
        f"heads {s.heads} patch {s.patch_size}{f' tubelet {s.tubelet_size}' if s.tubelet_size else ''} "
        f"at {s.image_size} px"
        f"{f' x {s.num_frames} frames' if s.num_frames else ''} (grid {grid}); predictor width "
        f"{s.predictor_width} depth {s.predictor_depth} heads {s.predictor_heads}, {s.num_mask_tokens} mask "
        f"token(s)", flush=True)
  print(f"wrote step 0 to {f.workdir}; probe it: python -m jepa.evaluate --workdir={f.workdir}; train on: "
        f"python -m jepa.main --config={run_config.__file__}:{f.workdir} --workdir={f.workdir}", flush=True)


def with_default_config(argv):
  """argv with `--config=<this file>:FORMAT` added when it has --format but no --config."""
  fmt = cli.flag_value(argv, "format")
  if fmt not in FORMATS or cli.flag_value(argv, "config") is not None:
    return argv
  return [argv[0], f"--config={os.path.abspath(__file__)}:{fmt}", *argv[1:]]


def entry():
  _define_flags()
  app.run(main, argv=with_default_config(sys.argv), flags_parser=cli.parse_flags)


if __name__ == "__main__":
  entry()
