"""V-JEPA's 3D multi-block ("tube") masks on a (T', H, W) tubelet grid.

Each mask group draws `num_blocks` equal-sized 3D blocks per example; their union is the target and its
complement the context. The conventions are those of `jepa/masks.py` (flat `(t * H + row) * W + col`
indices, fixed Kc / Kt slots with `*_valid` padding, all randomness from the example's generator), and so are
the helpers: block sizes, the per-patch coverage probabilities behind the K rule, fixed-length lists and the
config checks. How this differs from the reference (facebookresearch/jepa) is in `docs/masks.md`; here the
block size is drawn per example instead of per batch (quirk Q7), and lists are randomly subsampled or padded
to a fixed K instead of truncated to the batch minimum (Q5, Q8).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jepa import masks
from jepa.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class BlockGroup:
  """One V-JEPA mask generator: the target is the union of `num_blocks` equal-sized 3D blocks.

  Attributes:
    num_blocks: blocks per example.
    spatial_scale: range of the fraction of the H x W plane covered by a block.
    temporal_scale: range of the fraction of the T' frames covered by a block (1.0: all frames).
    aspect: range of a block's height / width.
  """
  num_blocks: int
  spatial_scale: tuple[float, float]
  temporal_scale: tuple[float, float] = (1.0, 1.0)
  aspect: tuple[float, float] = (0.75, 1.5)


# V-JEPA's two generators (configs/pretrain/*.yaml): "short-range" and "long-range".
SHORT_RANGE = BlockGroup(num_blocks=8, spatial_scale=(0.15, 0.15))
LONG_RANGE = BlockGroup(num_blocks=2, spatial_scale=(0.7, 0.7))


@dataclasses.dataclass(frozen=True)
class MultiBlock3D:
  """V-JEPA 3D multi-block masks on a (T', H, W) tubelet grid, one mask per group, with fixed sizes.

  Per example and group: one block size (t, h, w) is drawn (scale, aspect and temporal scale independent,
  as in the reference, but per example: quirk Q7); `num_blocks` positions are drawn uniformly (inclusive
  bounds); the target is the union of the blocks and the context its complement. A draw whose context has
  fewer than `min_context` patches is redrawn, at most `max_tries` times; the fallback keeps the last draw's
  blocks in order while the context keeps >= min_context patches (the first block always does).

  Output sizes, common to all groups so the arrays stack (see docs/masks.md): for each group the expected
  context size E[#complement] and target size E[#union], computed exactly from per-patch coverage
  probabilities with a midpoint rule over the size ranges; Kc = max over groups of max(min_context,
  round(E[#complement])), Kt = max over groups of max(1, round(E[#union])). Longer lists are randomly
  subsampled, shorter ones padded with invalid slots.

  Attributes:
    grid: (T', H, W) tubelets.
    groups: the mask generators (BlockGroup, or mappings with its fields).
    min_context: least number of valid context patches per group.
    max_tries: draws per group before the fallback.
    context_keep: overrides Kc when set.
    target_keep: overrides Kt when set.
    prefix: config path of this object, used to name keys in error messages.
  """
  grid: tuple[int, int, int]
  groups: tuple[BlockGroup, ...] = (SHORT_RANGE, LONG_RANGE)
  min_context: int = 1
  max_tries: int = 20
  context_keep: int | None = None
  target_keep: int | None = None
  prefix: str = "masks"

  def __post_init__(self):
    object.__setattr__(self, "grid", masks.check_grid(self.grid, 3, self._k("grid")))
    if isinstance(self.groups, (BlockGroup, Mapping)) or not isinstance(self.groups, Sequence):
      raise ConfigError(f"{self._k('groups')}={self.groups!r} must be a sequence of BlockGroup "
                        "(num_blocks, spatial_scale, temporal_scale, aspect)")
    groups = []
    for i, g in enumerate(self.groups):
      key = self._gk(i, "")[:-1]
      if isinstance(g, Mapping):
        try:
          g = BlockGroup(**g)
        except TypeError as e:
          raise ConfigError(f"{key}={dict(g)!r} has bad fields ({e}): use num_blocks, spatial_scale, "
                            "temporal_scale, aspect") from None
      elif not isinstance(g, BlockGroup):
        raise ConfigError(f"{key}={g!r} must be a BlockGroup or a mapping with its fields")
      groups.append(dataclasses.replace(
          g, spatial_scale=masks.as_pair(g.spatial_scale, self._gk(i, "spatial_scale")),
          temporal_scale=masks.as_pair(g.temporal_scale, self._gk(i, "temporal_scale")),
          aspect=masks.as_pair(g.aspect, self._gk(i, "aspect"))))
    object.__setattr__(self, "groups", tuple(groups))
    self.validate()

  def _k(self, name: str) -> str:
    return masks.config_key(self.prefix, name)

  def _gk(self, i: int, name: str) -> str:
    return self._k(f"groups[{i}].{name}")

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1] * self.grid[2]

  @property
  def num_groups(self) -> int:
    return len(self.groups)

  def _temporal_len(self, ts):
    """t = max(1, floor(T' * temporal_scale)), as in the reference; vectorised."""
    t = np.floor(self.grid[0] * np.asarray(ts, dtype=np.float64)).astype(np.int64)
    return np.clip(t, 1, self.grid[0])

  def block_volume_range(self, group: BlockGroup) -> tuple[int, int]:
    """(smallest, largest) number of patches in one block of `group`."""
    a_min, a_max = masks.block_area_range(*self.grid[1:], group.spatial_scale, group.aspect)
    t_min, t_max = self._temporal_len(group.temporal_scale)
    return int(t_min * a_min), int(t_max * a_max)

  @functools.cached_property
  def expected_sizes(self) -> tuple[tuple[float, float], ...]:
    """Per group (E[#context], E[#target]) ignoring redraws; blocks of one example share their size."""
    gt, gh, gw = self.grid
    out = []
    for g in self.groups:
      ts, ss, a = np.meshgrid(masks.midpoints(*g.temporal_scale), masks.midpoints(*g.spatial_scale),
                              masks.midpoints(*g.aspect), indexing="ij")
      h, w = masks.block_hw(gh, gw, ss.ravel(), a.ravel())
      sizes = np.stack([self._temporal_len(ts.ravel()), h, w], axis=1)
      p_free = np.zeros(self.grid)
      for (t, bh, bw), p in masks.size_weights(sizes):
        cover = (masks.axis_coverage(gt, t)[:, None, None] * masks.axis_coverage(gh, bh)[None, :, None]
                 * masks.axis_coverage(gw, bw)[None, None, :])
        p_free += p * (1.0 - cover) ** g.num_blocks
      free = float(p_free.sum())
      out.append((free, self.num_patches - free))
    return tuple(out)

  @functools.cached_property
  def group_sizes(self) -> tuple[tuple[int, int], ...]:
    """Per group (Kc_g, Kt_g) from the K rule, before taking the max over groups."""
    return tuple((int(max(self.min_context, masks.round_half_up(c))), int(max(1, masks.round_half_up(t))))
                 for c, t in self.expected_sizes)

  @functools.cached_property
  def num_context(self) -> int:
    """Kc: context slots per group (common to all groups)."""
    if self.context_keep is not None:
      return int(self.context_keep)
    return max(c for c, _ in self.group_sizes)

  @functools.cached_property
  def num_target(self) -> int:
    """Kt: target slots per group (common to all groups)."""
    if self.target_keep is not None:
      return int(self.target_keep)
    return max(t for _, t in self.group_sizes)

  def validate(self) -> None:
    """Raises ConfigError (one line naming the key and the fix) when the masks cannot fit the grid."""
    k = self._k
    n = self.num_patches
    grid_txt = "x".join(str(g) for g in self.grid)
    if not self.groups:
      raise ConfigError(f"{k('groups')} is empty: add at least one BlockGroup (V-JEPA uses 8 blocks at 0.15 "
                        "and 2 at 0.7)")
    masks.check_int(self.min_context, k("min_context"), 1, "the encoder needs at least one visible patch")
    masks.check_int(self.max_tries, k("max_tries"), 1, "set how many draws to try before the fallback (e.g. 20)")
    for i, g in enumerate(self.groups):
      masks.check_int(g.num_blocks, self._gk(i, "num_blocks"), 1, "set the number of blocks in this group")
      masks.check_range(g.spatial_scale, self._gk(i, "spatial_scale"), 1.0, "scale")
      masks.check_range(g.temporal_scale, self._gk(i, "temporal_scale"), 1.0, "scale")
      masks.check_range(g.aspect, self._gk(i, "aspect"), None, "aspect")
      v_min, v_max = self.block_volume_range(g)
      if v_min < 1:
        need = masks.min_scale_for_one_patch(self.grid[1] * self.grid[2], g.aspect)
        raise ConfigError(f"{self._gk(i, 'spatial_scale')}={g.spatial_scale} gives empty blocks on the "
                          f"{grid_txt} grid: raise its lower bound to at least {need:.3g}")
      if n - v_max < self.min_context:
        if n - v_max >= 1:
          raise ConfigError(f"{k('min_context')}={self.min_context} cannot be met: a block of group {i} can "
                            f"cover {v_max} of the {n} patches of the {grid_txt} grid; lower "
                            f"{k('min_context')} to <= {n - v_max} or lower {self._gk(i, 'spatial_scale')}")
        raise ConfigError(f"{self._gk(i, 'spatial_scale')}={g.spatial_scale} lets one block cover the whole "
                          f"{grid_txt} grid, leaving no context: lower its upper bound or the temporal_scale")
    if self.target_keep is not None:
      masks.check_int(self.target_keep, k("target_keep"), 1, "set target slots per group or leave it None")
    if self.context_keep is not None:
      masks.check_int(self.context_keep, k("context_keep"), self.min_context,
                      f"context slots must hold min_context={self.min_context} patches; or leave it None")

  def _draw_group(self, rng: np.random.Generator, g: BlockGroup) -> tuple[np.ndarray, list, bool]:
    """Returns (target union [T', H, W] bool, boxes as (t0, top, left, t, h, w), fallback used)."""
    gt, gh, gw = self.grid
    for _ in range(self.max_tries):
      ts = rng.uniform(*g.temporal_scale)
      ss = rng.uniform(*g.spatial_scale)
      a = rng.uniform(*g.aspect)
      t = int(self._temporal_len(ts))
      h, w = (max(1, int(v)) for v in masks.block_hw(gh, gw, ss, a))
      # Inclusive upper bounds, as in the reference: blocks can reach the last frame, row and column.
      starts = rng.integers(0, (gt - t + 1, gh - h + 1, gw - w + 1), size=(g.num_blocks, 3))
      boxes = [tuple(int(v) for v in st) + (t, h, w) for st in starts]
      union = np.zeros(self.grid, dtype=bool)
      for b in boxes:
        union |= masks.box_mask(self.grid, b[:3], b[3:])
      if self.num_patches - int(union.sum()) >= self.min_context:
        return union, boxes, False
    # Fallback: keep blocks in order while the context keeps min_context patches (the first always does).
    kept = []
    union = np.zeros(self.grid, dtype=bool)
    for b in boxes:
      grown = union | masks.box_mask(self.grid, b[:3], b[3:])
      if not kept or self.num_patches - grown.sum() >= self.min_context:
        kept.append(b)
        union = grown
    return union, kept, True

  def sample(self, rng: np.random.Generator, debug: bool = False) -> dict[str, Any]:
    """Draws the masks of one example, one per group.

    Args:
      rng: the example's generator; the only source of randomness.
      debug: also return the drawn boxes and whether the fallback was used, per group.

    Returns:
      context_idx [G, Kc] int32, context_valid [G, Kc] bool, target_idx [G, Kt] int32,
      target_valid [G, Kt] bool; with debug also boxes (a list per group of (t0, top, left, t, h, w)) and
      fallback [G] bool.
    """
    n_groups = self.num_groups
    context_idx = np.empty((n_groups, self.num_context), dtype=np.int32)
    context_valid = np.empty((n_groups, self.num_context), dtype=bool)
    target_idx = np.empty((n_groups, self.num_target), dtype=np.int32)
    target_valid = np.empty((n_groups, self.num_target), dtype=bool)
    all_boxes, fallbacks = [], []
    for i, g in enumerate(self.groups):
      union, boxes, fallback = self._draw_group(rng, g)
      context_idx[i], context_valid[i] = masks.fix_length(rng, np.flatnonzero(~union), self.num_context)
      target_idx[i], target_valid[i] = masks.fix_length(rng, np.flatnonzero(union), self.num_target)
      all_boxes.append(boxes)
      fallbacks.append(fallback)
    out = dict(context_idx=context_idx, context_valid=context_valid, target_idx=target_idx,
               target_valid=target_valid)
    if debug:
      out.update(boxes=all_boxes, fallback=np.array(fallbacks))
    return out
