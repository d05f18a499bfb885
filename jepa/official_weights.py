r"""Official I-JEPA, V-JEPA and V-JEPA 2 PyTorch checkpoints as jepa parameter trees (NumPy), for jepa.convert.

What it reads: the torch dict's `encoder`, `predictor` and `target_encoder` state dicts (other entries, e.g.
`opt`, are ignored). Keys may carry the DDP prefix `module.` (I-JEPA) or `module.backbone.` (V-JEPA, V-JEPA 2;
the multi-mask wrapper's child); both are stripped.

What it infers from the tensor shapes:
  width, patch size, tubelet size   patch_embed.proj.weight [D, 3, p, p] or [D, 3, kt, p, p]
  depth                              the number of blocks.{i} indices
  MLP ratio                          blocks.*.mlp.fc1.weight [hidden, D]
  image size, frames                 pos_embed [1, N, D]: the grid whose regenerated sin-cos table equals it
                                     (V-JEPA 2 has no table: --image_size, default 256, and --num_frames, 16)
  predictor width, depth, tokens     predictor_embed.weight, predictor_blocks.{i}, mask_token(s.{k})
Heads cannot be read from a fused qkv weight: they come from --heads / --predictor_heads or the reference size
table (VIT_HEADS below; V-JEPA 2 predictors use 12 heads and its 1408-wide ViT-g 22).

What it checks (each failure is one line, a `jepa.errors.CheckpointError` naming the key; the CLI prints it
and exits with status 2): every tensor of the inferred model is present with its shape, no tensor is left
over, and the stored `pos_embed` / `predictor_pos_embed` equal the tables this code regenerates (I-JEPA's
column-first 2D layout, V-JEPA's [t | h | w] uniform-power 3D layout), since our models never store them.
V-JEPA 2 state dicts still hold a stale `pos_embed` that the RoPE model does not use; it is skipped.

Layouts (jepa/models/vit.py documents the Flax side): Linear weight [out, in] -> kernel [in, out]; Conv2d
[D, C, p, p] -> [p, p, C, D]; Conv3d [D, C, kt, p, p] -> [kt, p, p, C, D]; the fused qkv keeps its
(3, heads, head_dim) output order, so a transpose suffices; LayerNorm weight -> scale; the predictor's
mask tokens [1, 1, W] each -> rows of `mask_tokens` [K, W]. V-JEPA 2's RoPE runs in the 'reference' layout
(tiled frequencies), the one its weights were trained with.
"""
import collections
import dataclasses
import json
import math
import os
import re

import numpy as np

from jepa import run_config
from jepa import torch_pickle
from jepa.errors import CheckpointError, ConfigError
from jepa.models import posemb
from jepa.models import vit as vit_lib


@dataclasses.dataclass(frozen=True)
class Format:
  """What distinguishes the three official checkpoint families."""
  method: str           # jepa method that trains such a model
  pos_embedding: str    # model.pos_embedding of the encoder and predictor
  video: bool           # Conv3d tubelets (V-JEPA) or Conv2d patches (I-JEPA)
  single_mask_token: bool  # I-JEPA's `mask_token`; V-JEPA's list `mask_tokens.{k}`


FORMATS = {
    "ijepa": Format(method="ijepa", pos_embedding="sincos_ijepa", video=False, single_mask_token=True),
    "vjepa": Format(method="vjepa", pos_embedding="sincos_vjepa", video=True, single_mask_token=False),
    "vjepa2": Format(method="vjepa", pos_embedding="rope", video=True, single_mask_token=False),
}

# Official state-dict names (the encoder, the EMA target encoder and the predictor).
ENCODER, TARGET, PREDICTOR = "encoder", "target_encoder", "predictor"
PREFIXES = ("module.backbone.", "module.", "backbone.")

# Heads of the reference constructors by encoder width (`vit.VIT_SIZES`); width 1408 is ViT-g: 16 heads in
# I-JEPA / V-JEPA (`vit_giant`), 22 in V-JEPA 2 (`vit_giant_xformers`).
VIT_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}
VJEPA2_GIANT_HEADS = 22
VJEPA2_PREDICTOR_HEADS = 12
# V-JEPA 2's RoPE models hold no grid; these are its pretraining clips (256 px, 16 frames).
VJEPA2_IMAGE_SIZE, VJEPA2_NUM_FRAMES = 256, 16
PREDICTOR_MLP_RATIO = 4.0  # Every reference predictor; model.predictor has no key for another ratio.
# Stored tables are float32 copies of float64 sin-cos values; a wrong layout or grid differs by O(1).
TABLE_ATOL = 1e-3


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The model an official checkpoint holds, as inferred from its tensors (and flags)."""
  format: str
  width: int
  depth: int
  heads: int
  mlp_ratio: float
  patch_size: int
  tubelet_size: int      # 0 for images
  image_size: int
  num_frames: int        # 0 for images
  predictor_width: int
  predictor_depth: int
  predictor_heads: int
  num_mask_tokens: int

  @property
  def grid(self):
    side = self.image_size // self.patch_size
    return (side, side) if not self.num_frames else (self.num_frames // self.tubelet_size, side, side)


@dataclasses.dataclass
class Converted:
  """Flax parameter trees (nested dicts of float32 arrays, block indices as int keys) and the spec."""
  spec: ModelSpec
  encoder: dict
  predictor: dict
  target_encoder: dict


# --- reading ------------------------------------------------------------------------------------------------
def load_torch_checkpoint(path):
  """{state-dict name: {key: float32 ndarray}} for encoder / predictor / target_encoder of a torch file.

  Entries that are not one of these three are ignored (and, memory-mapped, never read from disk). The file is
  read by `jepa.torch_pickle`, without torch and without running code from it.
  """
  flag = f"--checkpoint={path}"
  if os.path.isdir(path):
    raise CheckpointError(_directory_message(path))
  if not os.path.exists(path):
    raise CheckpointError(f"{flag} does not exist; pass the path of an official .pth / .pth.tar / .pt file")
  try:
    raw = torch_pickle.load(path, name=flag)
  except CheckpointError:
    workdir = _jepa_workdir(os.path.dirname(os.path.abspath(path)))
    if workdir:  # A file inside an Orbax checkpoint, e.g. checkpoints/0/_CHECKPOINT_METADATA.
      raise CheckpointError(_directory_message(path, workdir)) from None
    raise
  if not isinstance(raw, dict):
    raise CheckpointError(f"{flag} holds a {type(raw).__name__}, not the dict of state dicts "
                          f"({ENCODER!r}, {PREDICTOR!r}, {TARGET!r}) that the official training code saves")
  for name in (ENCODER, PREDICTOR, TARGET):
    if name not in raw:
      raise CheckpointError(f"{flag} has no {name!r} state dict (it holds {_key_list(raw)}); the official "
                            "pretraining checkpoints hold encoder, predictor and target_encoder")
  out = {}
  for name in (ENCODER, PREDICTOR, TARGET):
    if not isinstance(raw[name], dict):
      raise CheckpointError(f"{name!r} in {path} is of type {type(raw[name]).__name__}, not a state dict (a dict "
                            "of tensors)")
    out[name] = {}
    for key, value in raw[name].items():
      if not (isinstance(value, np.ndarray) and (value.dtype.kind == "f" or value.dtype.name == "bfloat16")):
        what = f"a tensor of {value.dtype}" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
        raise CheckpointError(f"{name}[{key!r}] in {path} is {what}, not a floating-point tensor")
      out[name][key] = np.array(value, np.float32)  # A copy: the file's memory map is not kept.
  return out


def _key_list(mapping, limit=8):
  """`['a', 'b', ...]` for messages: the first `limit` keys and how many there are in all."""
  keys = sorted(mapping, key=str)
  if len(keys) <= limit:
    return str(keys)
  return f"{str(keys[:limit])[:-1]}, ... ({len(keys)} keys)]"


def _jepa_workdir(path):
  """The jepa workdir the folder `path` is or lies in (its checkpoints/, a step, an Orbax item), or None."""
  path = os.path.abspath(path)
  for _ in range(4):  # WORKDIR / checkpoints / <step> / <item>
    if os.path.isdir(os.path.join(path, "checkpoints")):
      return path
    try:
      with open(os.path.join(path, run_config.CONFIG_FILE), encoding="utf-8") as f:
        saved = json.load(f)
      if isinstance(saved, dict) and {"method", "model", "train"} <= set(saved):
        return path
    except (OSError, ValueError):
      pass
    try:
      entries = set(os.listdir(path))
    except OSError:
      entries = set()
    orbax = ({"_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt"} & entries
             or os.path.basename(path) == "checkpoints")
    if not orbax:
      return None
    path = os.path.dirname(path)
  return None


def _directory_message(path, workdir=None):
  workdir = workdir or _jepa_workdir(path)
  if workdir is None:
    return (f"--checkpoint={path} is a directory, not a PyTorch checkpoint file; pass the official .pth / "
            ".pth.tar / .pt file itself")
  rel = _short(workdir)
  return (f"--checkpoint={path} is a jepa workdir/checkpoint, not a PyTorch checkpoint; use it as it is: "
          f"python -m jepa.evaluate --workdir={rel}, or train on with python -m jepa.main "
          f"--config={_short(run_config.__file__)}:{rel} --workdir={rel} (jepa.convert imports only official "
          ".pth / .pt files)")


def _short(path):
  """`path` relative to the working directory if it lies below it, else absolute."""
  rel = os.path.relpath(path)
  return rel if not rel.startswith(os.pardir) else os.path.abspath(path)


class StateDict:
  """One official state dict with its prefixes stripped; errors name the original keys."""

  def __init__(self, name, tensors):
    self.name = name
    self.arrays, self.original = {}, {}
    prefixes = collections.Counter()
    for key, value in tensors.items():
      short = key
      for prefix in PREFIXES:
        if key.startswith(prefix):
          short = key[len(prefix):]
          break
      if short in self.arrays:
        raise CheckpointError(f"{name}[{self.original[short]!r}] and {name}[{key!r}] are the same tensor "
                              f"{short!r} once the prefixes are removed; keep one")
      self.arrays[short] = np.asarray(value, np.float32)
      self.original[short] = key
      prefixes[key[:len(key) - len(short)]] += 1
    # Missing keys are named with the prefix the others carry.
    self.prefix = prefixes.most_common(1)[0][0] if prefixes else ""

  def key(self, short):
    """`name['original key']`, for messages."""
    return f"{self.name}[{self.original.get(short, self.prefix + short)!r}]"

  def get(self, short, needed_for):
    if short not in self.arrays:
      raise CheckpointError(f"{self.key(short)} is missing (needed for {needed_for})")
    return self.arrays[short]

  def count(self, prefix):
    """1 + the largest index i of keys `{prefix}{i}.…` (0 if none)."""
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)(\.|$)")
    indices = [int(m.group(1)) for m in map(pattern.match, self.arrays) if m]
    return max(indices) + 1 if indices else 0


# --- inference ----------------------------------------------------------------------------------------------
def _mlp_ratio(hidden, width):
  """A ratio r with int(width * r) == hidden, as the reference's `int(dim * mlp_ratio)` (e.g. ViT-g 48/11)."""
  ratio = hidden / width
  return ratio if int(width * ratio) == hidden else (hidden + 0.5) / width


def _hidden(sd, prefix, depth):
  """The MLP hidden size most blocks have (so that one odd block is reported as mis-shaped, not the rest)."""
  keys = (f"{prefix}{i}.mlp.fc1.weight" for i in range(depth))
  shapes = collections.Counter(sd.arrays[k].shape[0] for k in keys
                               if k in sd.arrays and sd.arrays[k].ndim == 2)
  if not shapes:
    sd.get(f"{prefix}0.mlp.fc1.weight", "the MLP size")
  return shapes.most_common(1)[0][0]


def _default_heads(fmt, width):
  if fmt == "vjepa2" and width == 1408:
    return VJEPA2_GIANT_HEADS
  return VIT_HEADS.get(width, 0)


def _table(kind, grid, width):
  return posemb.table(kind, tuple(grid), width, True)


def _candidate_grids(num_tokens, video, patch, tubelet, image_size, num_frames):
  """Square grids (h, w) or (t, h, w) with num_tokens tokens, restricted to the given sizes if any."""
  grids = []
  for side in range(1, math.isqrt(num_tokens) + 1):
    if num_tokens % (side * side):
      continue
    t = num_tokens // (side * side)
    if not video and t != 1:
      continue
    if image_size and side * patch != image_size:
      continue
    if video and num_frames and t * tubelet != num_frames:
      continue
    grids.append((t, side, side) if video else (side, side))
  return grids


def _check_table(sd, key, kind, grids, width):
  """The grid in `grids` whose regenerated table equals the stored `key`; a CheckpointError if none does."""
  stored = sd.arrays[key][0]
  best = None
  for grid in grids:
    diff = float(np.max(np.abs(stored - _table(kind, grid, width))))
    if diff <= TABLE_ATOL:
      return grid
    if best is None or diff < best[1]:
      best = (grid, diff)
  if best is None:
    raise CheckpointError(f"{sd.key(key)} has {stored.shape[0]} tokens, which fit no square grid of the "
                          "given --image_size / --num_frames; pass the sizes the model was trained at")
  grid, diff = best
  raise CheckpointError(f"{sd.key(key)} differs from the regenerated {kind} table for grid "
                        f"{'x'.join(map(str, grid))} (max abs difference {diff:.3g}); only the references' "
                        "fixed sin-cos tables can be converted (pass --image_size / --num_frames if the grid "
                        "is not square)")


def infer_spec(fmt, encoder, predictor, *, heads=0, predictor_heads=0, image_size=0, num_frames=0):
  """The ModelSpec read off the tensor shapes of `encoder` and `predictor` (StateDicts); see the module."""
  form = FORMATS[fmt]
  weight = encoder.get("patch_embed.proj.weight", "the width and patch size")
  ndim = 5 if form.video else 4
  if weight.ndim != ndim or weight.shape[-1] != weight.shape[-2]:
    layout = "[D, 3, kt, p, p] (Conv3d tubelets)" if form.video else "[D, 3, p, p] (Conv2d patches)"
    raise CheckpointError(f"{encoder.key('patch_embed.proj.weight')} has shape {weight.shape}; a {fmt} "
                          f"checkpoint has {layout}")
  width, channels, patch = weight.shape[0], weight.shape[1], weight.shape[-1]
  if channels != 3:
    raise CheckpointError(f"{encoder.key('patch_embed.proj.weight')} takes {channels} input channels; the "
                          "models here take RGB (3)")
  tubelet = weight.shape[2] if form.video else 0
  depth = encoder.count("blocks.")
  if not depth:
    encoder.get("blocks.0.norm1.weight", "the depth")
  mlp_ratio = _mlp_ratio(_hidden(encoder, "blocks.", depth), width)

  heads = heads or _default_heads(fmt, width)
  if not heads:
    raise ConfigError(f"the encoder width {width} is not in the reference size table {sorted(VIT_HEADS)}, so "
                      "its head count is unknown: pass --heads")
  vit_lib.check_heads(width, heads, key="--heads", width_key="the checkpoint's width",
                      rope=form.pos_embedding == "rope")

  if form.pos_embedding == "rope":
    image_size = image_size or VJEPA2_IMAGE_SIZE
    num_frames = num_frames or VJEPA2_NUM_FRAMES
    if image_size % patch or num_frames % tubelet:
      raise ConfigError(f"--image_size={image_size} / --num_frames={num_frames} are not multiples of the "
                        f"checkpoint's patch {patch} / tubelet {tubelet}")
    grid = (num_frames // tubelet, image_size // patch, image_size // patch)
  else:
    pos = encoder.get("pos_embed", "the image size and frames")
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != width:
      raise CheckpointError(f"{encoder.key('pos_embed')} has shape {pos.shape}, expected [1, N, {width}]")
    grids = _candidate_grids(pos.shape[1], form.video, patch, tubelet, image_size, num_frames)
    grid = _check_table(encoder, "pos_embed", form.pos_embedding, grids, width)
    image_size = grid[-1] * patch
    num_frames = grid[0] * tubelet if form.video else 0

  embed = predictor.get("predictor_embed.weight", "the predictor width")
  if embed.ndim != 2 or embed.shape[1] != width:
    raise CheckpointError(f"{predictor.key('predictor_embed.weight')} has shape {embed.shape}, expected "
                          f"[predictor width, {width}]")
  pred_width = embed.shape[0]
  pred_depth = predictor.count("predictor_blocks.")
  if not pred_depth:
    predictor.get("predictor_blocks.0.norm1.weight", "the predictor depth")
  pred_hidden = _hidden(predictor, "predictor_blocks.", pred_depth)
  if pred_hidden != int(pred_width * PREDICTOR_MLP_RATIO):
    raise CheckpointError(f"{predictor.key('predictor_blocks.0.mlp.fc1.weight')} gives the predictor an MLP "
                          f"ratio of {pred_hidden / pred_width:.3g}; the predictors here use "
                          f"{PREDICTOR_MLP_RATIO:g}, as every reference")
  if form.single_mask_token:
    predictor.get("mask_token", "the predictor's mask token")
    tokens = 1
  else:
    tokens = predictor.count("mask_tokens.")
    if not tokens:
      predictor.get("mask_tokens.0", "the predictor's mask tokens")
  if not predictor_heads:
    predictor_heads = VJEPA2_PREDICTOR_HEADS if fmt == "vjepa2" else heads  # I-JEPA / V-JEPA: the encoder's.
  vit_lib.check_heads(pred_width, predictor_heads, key="--predictor_heads", width_key="the predictor width",
                      rope=form.pos_embedding == "rope")
  return ModelSpec(format=fmt, width=width, depth=depth, heads=heads, mlp_ratio=mlp_ratio, patch_size=patch,
                   tubelet_size=tubelet, image_size=image_size, num_frames=num_frames,
                   predictor_width=pred_width, predictor_depth=pred_depth, predictor_heads=predictor_heads,
                   num_mask_tokens=tokens)


# --- layouts ------------------------------------------------------------------------------------------------
# A layout maps each official key (prefix stripped) to (torch shape, Flax path or None, NumPy transform).
# A None path marks a tensor that is checked but not stored (the fixed position tables).
def _transpose(x):
  return x.T


def _linear(key, path, din, dout):
  return {f"{key}.weight": ((dout, din), (*path, "kernel"), _transpose),
          f"{key}.bias": ((dout,), (*path, "bias"), None)}


def _norm(key, path, dim):
  return {f"{key}.weight": ((dim,), (*path, "scale"), None), f"{key}.bias": ((dim,), (*path, "bias"), None)}


def _blocks(key, path, depth, dim, hidden):
  out = {}
  for i in range(depth):
    k, p = f"{key}.{i}", (*path, i)
    out.update(_norm(f"{k}.norm1", (*p, "norm1"), dim))
    out.update(_linear(f"{k}.attn.qkv", (*p, "attn", "qkv"), dim, 3 * dim))
    out.update(_linear(f"{k}.attn.proj", (*p, "attn", "proj"), dim, dim))
    out.update(_norm(f"{k}.norm2", (*p, "norm2"), dim))
    out.update(_linear(f"{k}.mlp.fc1", (*p, "mlp", "fc1"), dim, hidden))
    out.update(_linear(f"{k}.mlp.fc2", (*p, "mlp", "fc2"), hidden, dim))
  return out


def encoder_layout(spec):
  """Layout of an official encoder state dict for `spec`."""
  d = spec.width
  if spec.tubelet_size:
    conv = (d, 3, spec.tubelet_size, spec.patch_size, spec.patch_size)
    to_flax = lambda w: w.transpose(2, 3, 4, 1, 0)  # [D, C, kt, p, p] -> [kt, p, p, C, D]
  else:
    conv = (d, 3, spec.patch_size, spec.patch_size)
    to_flax = lambda w: w.transpose(2, 3, 1, 0)  # [D, C, p, p] -> [p, p, C, D]
  out = {"patch_embed.proj.weight": (conv, ("patch_embed", "kernel"), to_flax),
         "patch_embed.proj.bias": ((d,), ("patch_embed", "bias"), None)}
  if FORMATS[spec.format].pos_embedding != "rope":
    out["pos_embed"] = ((1, math.prod(spec.grid), d), None, None)
  out.update(_blocks("blocks", ("blocks",), spec.depth, d, int(d * spec.mlp_ratio)))
  out.update(_norm("norm", ("norm",), d))
  return out


def predictor_layout(spec):
  """Layout of an official predictor state dict for `spec` (mask tokens become rows of one array)."""
  w = spec.predictor_width
  out = _linear("predictor_embed", ("embed",), spec.width, w)
  if FORMATS[spec.format].single_mask_token:
    out["mask_token"] = ((1, 1, w), ("mask_tokens", 0), None)
  else:
    for k in range(spec.num_mask_tokens):
      out[f"mask_tokens.{k}"] = ((1, 1, w), ("mask_tokens", k), None)
  if FORMATS[spec.format].pos_embedding != "rope":
    out["predictor_pos_embed"] = ((1, math.prod(spec.grid), w), None, None)
  out.update(_blocks("predictor_blocks", ("blocks",), spec.predictor_depth, w, int(w * PREDICTOR_MLP_RATIO)))
  out.update(_norm("predictor_norm", ("norm",), w))
  out.update(_linear("predictor_proj", ("proj",), w, spec.width))
  return out


def _ignored(spec, name):
  """Keys that official files hold and the model does not use: V-JEPA 2's stale tables (module doc)."""
  if FORMATS[spec.format].pos_embedding != "rope":
    return ()
  return ("predictor_pos_embed",) if name == PREDICTOR else ("pos_embed",)


def _apply_layout(sd, layout, ignored):
  """Checks `sd` against `layout` (missing, extra, mis-shaped: first one named) and returns the Flax tree."""
  for key, (shape, _, _) in layout.items():
    if key not in sd.arrays:
      raise CheckpointError(f"{sd.key(key)} is missing (expected shape {list(shape)})")
  for key in sd.arrays:
    if key not in layout and key not in ignored:
      raise CheckpointError(f"{sd.key(key)} is unexpected: the {len(layout)}-tensor model inferred from this "
                            "state dict has no such tensor")
  tree, tokens = {}, {}
  for key, (shape, path, transform) in layout.items():
    value = sd.arrays[key]
    if value.shape != shape:
      raise CheckpointError(f"{sd.key(key)} has shape {list(value.shape)}, expected {list(shape)} for the "
                            "model inferred from the other tensors")
    if path is None:
      continue
    value = transform(value) if transform else value
    if path[0] == "mask_tokens":
      tokens[path[1]] = value.reshape(-1)
      continue
    node = tree
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = np.ascontiguousarray(value, np.float32)
  if tokens:
    tree["mask_tokens"] = np.stack([tokens[k] for k in sorted(tokens)]).astype(np.float32)
  return tree


def convert_state_dicts(checkpoint, fmt, *, heads=0, predictor_heads=0, image_size=0, num_frames=0):
  """Converts official state dicts ({name: {key: array}}, as `load_torch_checkpoint` returns) to Flax trees.

  Args:
    checkpoint: mapping with 'encoder', 'predictor' and 'target_encoder' state dicts of NumPy arrays.
    fmt: 'ijepa', 'vjepa' or 'vjepa2'.
    heads, predictor_heads: head counts (0 = the reference's, see the module docstring).
    image_size, num_frames: the input the model was trained at (0 = read off pos_embed; V-JEPA 2: 256, 16).

  Returns:
    A `Converted` (spec, encoder, predictor and target-encoder trees in the layout of jepa.models).

  Raises:
    CheckpointError: a state dict or tensor is missing, extra, mis-shaped, or a position table is not ours.
    ConfigError: a flag is invalid, or heads cannot be determined.
  """
  if fmt not in FORMATS:
    raise ConfigError(f"--format={fmt!r} is unknown; use one of {sorted(FORMATS)}")
  for name in (ENCODER, PREDICTOR, TARGET):
    if name not in checkpoint:
      raise CheckpointError(f"the checkpoint has no {name!r} state dict (it holds {_key_list(checkpoint)}); the "
                            "official pretraining checkpoints hold encoder, predictor and target_encoder")
  dicts = {name: StateDict(name, checkpoint[name]) for name in (ENCODER, PREDICTOR, TARGET)}
  spec = infer_spec(fmt, dicts[ENCODER], dicts[PREDICTOR], heads=heads, predictor_heads=predictor_heads,
                    image_size=image_size, num_frames=num_frames)
  layouts = {ENCODER: encoder_layout(spec), TARGET: encoder_layout(spec), PREDICTOR: predictor_layout(spec)}
  trees = {name: _apply_layout(sd, layouts[name], _ignored(spec, name)) for name, sd in dicts.items()}
  # The fixed tables are not in our models: they must be exactly the ones our models regenerate.
  pos_kind = FORMATS[fmt].pos_embedding
  if pos_kind != "rope":
    for name in (ENCODER, TARGET):
      _check_table(dicts[name], "pos_embed", pos_kind, [spec.grid], spec.width)
    _check_table(dicts[PREDICTOR], "predictor_pos_embed", pos_kind, [spec.grid], spec.predictor_width)
  return Converted(spec=spec, encoder=trees[ENCODER], predictor=trees[PREDICTOR],
                   target_encoder=trees[TARGET])
