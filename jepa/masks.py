"""Mask samplers for masked-prediction methods (I-JEPA multi-block, V-JEPA 3D multi-block, random).

The samplers run in the NumPy data pipeline, once per example, and take all their randomness from the
`np.random.Generator` that the pipeline derives from (seed, example index). Every output array has a size
fixed by the config (Kc context slots, Kt target slots), so the jitted training step compiles once; a
`*_valid` array marks the padding slots. Padding slots repeat an in-range index so that gathers stay safe.

Indices are flat raster indices over the patch grid: `row * W + col` for images and
`(t * H + row) * W + col` for videos, i.e. `np.ravel_multi_index` order.

How this differs from the reference collators (facebookresearch/ijepa and jepa), and why, is in
`docs/masks.md`. In short: blocks can reach the last row and column (Q1) and the whole grid (Q2), scale and
aspect are drawn independently (Q3), retries are bounded with a fallback that still keeps `min_context`
patches (Q4), lists are randomly subsampled or padded to a fixed K instead of truncated in raster order to
the batch minimum (Q5, Q8), everything comes from the per-example generator (Q6), and block sizes are drawn
per example rather than per batch (Q7).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jepa.errors import ConfigError

# Points per axis of the midpoint rule used to average over the (scale, aspect) distribution when deriving
# the expected mask sizes. Deterministic, so K depends only on the config.
_QUADRATURE_POINTS = 32


# ----------------------------------------------------------------------------------------------------------
# Shared helpers.
# ----------------------------------------------------------------------------------------------------------


def _round_half_up(x):
  """Rounds halves up (np.round rounds halves to even, which makes block sizes jump non-monotonically)."""
  return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def block_hw(grid_h: int, grid_w: int, scale, aspect):
  """Height and width of a block covering `scale` of the grid with aspect ratio `aspect` = h / w.

  keep = H * W * scale; h = round(sqrt(keep * aspect)); w = round(sqrt(keep / aspect)), each capped at the
  grid side (the I-JEPA reference caps at side - 1: quirk Q2). The result can be 0 for tiny scales; the
  samplers' `validate()` rejects configs where that can happen. Vectorised over `scale` and `aspect`.

  Args:
    grid_h: number of patch rows H.
    grid_w: number of patch columns W.
    scale: fraction(s) of the grid the block should cover.
    aspect: height / width ratio(s).

  Returns:
    (h, w) as int64 arrays broadcast from the inputs.
  """
  keep = (grid_h * grid_w) * np.asarray(scale, dtype=np.float64)
  aspect = np.asarray(aspect, dtype=np.float64)
  h = _round_half_up(np.sqrt(keep * aspect))
  w = _round_half_up(np.sqrt(keep / aspect))
  return np.minimum(h, grid_h), np.minimum(w, grid_w)


def _aspect_points(k: float, grid_h: int, grid_w: int, aspect: tuple[float, float]) -> np.ndarray:
  """Aspect values that visit every (h, w) that `block_hw` can give at keep = k over the aspect range.

  h is a step function of the aspect with jumps where sqrt(k * a) = n + 1/2, w one with jumps where
  sqrt(k / a) = m + 1/2; between consecutive jumps (h, w) is constant, so the range ends, the jumps and the
  midpoints between them cover every value.
  """
  a_lo, a_hi = aspect
  if a_lo == a_hi:
    return np.array([a_lo])
  jumps = [(n + 0.5) ** 2 / k for n in range(grid_h + 1)] + [k / (m + 0.5) ** 2 for m in range(grid_w + 1)]
  pts = np.array(sorted({a_lo, a_hi, *(j for j in jumps if a_lo < j < a_hi)}))
  return np.concatenate([pts, (pts[:-1] + pts[1:]) / 2])


def block_area_range(grid_h: int, grid_w: int, scale: tuple[float, float],
                     aspect: tuple[float, float]) -> tuple[int, int]:
  """Smallest and largest h * w that `block_hw` gives for any scale and aspect in the (closed) ranges.

  Both h and w are non-decreasing in the scale, so the smallest area is reached at the lowest scale and the
  largest at the highest; over the aspect the areas are enumerated exactly (see `_aspect_points`).
  """
  areas = []
  for s in (scale[0], scale[1]):
    a = _aspect_points(grid_h * grid_w * s, grid_h, grid_w, aspect)
    h, w = block_hw(grid_h, grid_w, s, a)
    areas.append(h * w)
  return int(areas[0].min()), int(areas[1].max())


def _midpoints(lo: float, hi: float, n: int = _QUADRATURE_POINTS) -> np.ndarray:
  """Midpoint-rule nodes of a uniform distribution on [lo, hi] (one node when the range is a point)."""
  if lo == hi:
    return np.array([lo], dtype=np.float64)
  return lo + (np.arange(n) + 0.5) / n * (hi - lo)


def _axis_coverage(n: int, k: int) -> np.ndarray:
  """P(cell i lies in a segment of length k whose start is uniform on {0, ..., n - k}), for every i."""
  if k <= 0:
    return np.zeros(n)
  i = np.arange(n)
  first = np.maximum(0, i - k + 1)
  last = np.minimum(i, n - k)
  return np.maximum(0, last - first + 1) / (n - k + 1)


def _size_weights(sizes: np.ndarray) -> list[tuple[tuple[int, ...], float]]:
  """Groups equal rows of `sizes` ([n, d] ints) into (size, probability) pairs."""
  uniq, counts = np.unique(sizes, axis=0, return_counts=True)
  return [(tuple(int(v) for v in u), c / len(sizes)) for u, c in zip(uniq, counts)]


TRUNCATIONS = ("random", "raster")


def _fix_length(rng: np.random.Generator, idx: np.ndarray, k: int,
                truncation: str = "random") -> tuple[np.ndarray, np.ndarray]:
  """Brings a sorted index list to exactly k entries.

  Longer lists are subsampled uniformly at random (then sorted again), so no region of the grid is
  systematically dropped; with truncation='raster' they keep their first k entries in raster order, as the
  references' truncation to the batch minimum does (quirk Q5: the context then lies in the top rows, far from
  most targets). Shorter lists are padded by repeating their first index, marked invalid, so a gather with the
  padded list stays in bounds.
  """
  n = idx.size
  out = np.empty(k, dtype=np.int32)
  valid = np.zeros(k, dtype=bool)
  if n > k and truncation == "raster":
    out[:] = idx[:k]
    valid[:] = True
  elif n > k:
    out[:] = np.sort(rng.choice(idx, size=k, replace=False, shuffle=False))
    valid[:] = True
  else:
    out[:n] = idx
    out[n:] = idx[0] if n else 0
    valid[:n] = True
  return out, valid


def _box_mask(shape: tuple[int, ...], starts: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
  """Boolean array of `shape` that is True inside the box [starts, starts + sizes)."""
  mask = np.zeros(shape, dtype=bool)
  mask[tuple(slice(s, s + n) for s, n in zip(starts, sizes))] = True
  return mask


def _key(prefix: str, name: str) -> str:
  return f"{prefix}.{name}" if prefix else name


def _as_pair(value, key: str) -> tuple[float, float]:
  """Coerces a config value (tuple, list, scalar) to a float pair; a scalar means a point range."""
  try:
    if isinstance(value, (int, float, np.number)):
      return (float(value), float(value))
    lo, hi = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ConfigError(f"{key}={value!r} must be a (low, high) pair of numbers") from None
  return (lo, hi)


def _check_range(value: tuple[float, float], key: str, upper: float | None, what: str) -> None:
  """Raises ConfigError unless 0 < low <= high (<= upper)."""
  lo, hi = value
  finite = math.isfinite(lo) and math.isfinite(hi)
  if not finite or lo <= 0 or lo > hi or (upper is not None and hi > upper):
    bound = f" <= {upper:g}" if upper is not None else ""
    raise ConfigError(f"{key}={value} is not a valid {what} range: set it to (low, high) with "
                      f"0 < low <= high{bound}")


def _check_grid(grid, ndim: int, key: str) -> tuple[int, ...]:
  try:
    out = tuple(int(g) for g in grid)
  except (TypeError, ValueError):
    out = ()
  if len(out) != ndim or min(out) < 1 or any(int(g) != g for g in grid):
    names = "(T', H, W) tubelets" if ndim == 3 else "(H, W) patches"
    raise ConfigError(f"{key}={grid!r} must be {ndim} positive integers {names}: set it from the input size "
                      "divided by the patch size")
  return out


def _check_int(value, key: str, low: int, fix: str) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
    raise ConfigError(f"{key}={value!r} must be an integer >= {low}: {fix}")


def _min_scale_for_one_patch(n_patches: int, aspect: tuple[float, float]) -> float:
  """Smallest scale for which every aspect in range rounds both sides up to at least one patch."""
  # Both sqrt(N s a) and sqrt(N s / a) must reach 1/2 for every allowed aspect.
  return 0.25 * max(1.0 / aspect[0], aspect[1]) / n_patches


# ----------------------------------------------------------------------------------------------------------
# I-JEPA: 2D multi-block.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MultiBlock2D:
  """I-JEPA multi-block masks on an (H, W) patch grid, with fixed output sizes.

  Per example: `num_targets` target blocks (scale and aspect drawn independently per block) and one context
  block; the context keeps the context block's patches that lie in no target block (unless
  `allow_overlap`). A draw whose context keeps fewer than `min_context` patches is redrawn, at most
  `max_tries` times, after which a fallback that always satisfies `min_context` is used (see `sample`).

  Output sizes (fixed by the config, see docs/masks.md):
    num_target (Kt): the smallest block area any allowed (scale, aspect) gives on this grid, so every
      target block has at least Kt patches: a larger block is randomly subsampled to Kt and every target
      slot is valid. `target_keep` overrides it (a larger value pads small blocks with invalid slots).
    num_context (Kc): the expected number of context patches, max(min_context, round(E[#context])), with
      the expectation computed exactly from per-patch coverage probabilities (positions are uniform and
      independent) and a midpoint rule over the scale and aspect ranges. Larger contexts are randomly
      subsampled to Kc, smaller ones padded with invalid slots, so the encoder's cost equals that of
      variable-length masks on average. `context_keep` overrides it.

  Attributes:
    grid: (H, W) number of patch rows and columns.
    num_targets: number of target blocks M.
    target_scale: range of the fraction of the grid covered by one target block.
    target_aspect: range of a target block's height / width.
    context_scale: range of the fraction of the grid covered by the context block.
    context_aspect: range of the context block's height / width.
    min_context: least number of valid context patches in every sample (the reference's min_keep = 10,
      which it tests with a strict '>').
    allow_overlap: keep context patches that fall inside target blocks.
    max_tries: draws before the fallback; bounds the work per example.
    context_keep: overrides Kc when set.
    target_keep: overrides Kt when set.
    prefix: config path of this object, used to name keys in error messages.
  """
  grid: tuple[int, int]
  num_targets: int = 4
  target_scale: tuple[float, float] = (0.15, 0.2)
  target_aspect: tuple[float, float] = (0.75, 1.5)
  context_scale: tuple[float, float] = (0.85, 1.0)
  context_aspect: tuple[float, float] = (1.0, 1.0)
  min_context: int = 10
  allow_overlap: bool = False
  max_tries: int = 20
  context_keep: int | None = None
  target_keep: int | None = None
  truncation: str = "random"  # how lists longer than their slots are cut: see _fix_length
  prefix: str = "masks"

  def __post_init__(self):
    # Configs may hand over lists; store tuples so the object stays hashable and comparable.
    object.__setattr__(self, "grid", _check_grid(self.grid, 2, self._k("grid")))
    for name in ("target_scale", "target_aspect", "context_scale", "context_aspect"):
      object.__setattr__(self, name, _as_pair(getattr(self, name), self._k(name)))
    self.validate()

  def _k(self, name: str) -> str:
    return _key(self.prefix, name)

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  @functools.cached_property
  def target_area_range(self) -> tuple[int, int]:
    """(smallest, largest) number of patches in one target block."""
    return block_area_range(*self.grid, self.target_scale, self.target_aspect)

  @functools.cached_property
  def context_area_range(self) -> tuple[int, int]:
    """(smallest, largest) number of patches in the context block, before targets are removed."""
    return block_area_range(*self.grid, self.context_scale, self.context_aspect)

  @functools.cached_property
  def expected_context(self) -> float:
    """E[#context patches] ignoring redraws: sum over patches of P(in context block) * P(in no target)^M."""
    gh, gw = self.grid

    def coverage(scale, aspect):
      s, a = np.meshgrid(_midpoints(*scale), _midpoints(*aspect), indexing="ij")
      h, w = block_hw(gh, gw, s.ravel(), a.ravel())
      cov = np.zeros(self.grid)
      for (bh, bw), p in _size_weights(np.stack([h, w], axis=1)):
        cov += p * np.outer(_axis_coverage(gh, bh), _axis_coverage(gw, bw))
      return cov

    p_context = coverage(self.context_scale, self.context_aspect)
    if self.allow_overlap:
      return float(p_context.sum())
    p_free = (1.0 - coverage(self.target_scale, self.target_aspect)) ** self.num_targets
    return float((p_context * p_free).sum())

  @functools.cached_property
  def num_target(self) -> int:
    """Kt: target slots per block."""
    if self.target_keep is not None:
      return int(self.target_keep)
    return self.target_area_range[0]

  @functools.cached_property
  def num_context(self) -> int:
    """Kc: context slots."""
    if self.context_keep is not None:
      return int(self.context_keep)
    return int(min(self.num_patches, max(self.min_context, _round_half_up(self.expected_context))))

  def validate(self) -> None:
    """Raises ConfigError (one line naming the key and the fix) when the masks cannot fit the grid."""
    k = self._k
    gh, gw = self.grid
    n = self.num_patches
    _check_int(self.num_targets, k("num_targets"), 1, "set the number of target blocks (I-JEPA uses 4)")
    _check_int(self.min_context, k("min_context"), 1,
               "the encoder needs at least one visible patch (I-JEPA uses 10)")
    _check_int(self.max_tries, k("max_tries"), 1, "set how many draws to try before the fallback (e.g. 20)")
    _check_range(self.target_scale, k("target_scale"), 1.0, "scale")
    _check_range(self.context_scale, k("context_scale"), 1.0, "scale")
    _check_range(self.target_aspect, k("target_aspect"), None, "aspect")
    _check_range(self.context_aspect, k("context_aspect"), None, "aspect")

    t_min, t_max = self.target_area_range
    if t_min < 1:
      need = _min_scale_for_one_patch(n, self.target_aspect)
      raise ConfigError(f"{k('target_scale')}={self.target_scale} gives empty target blocks on the {gh}x{gw} "
                        f"grid: raise its lower bound to at least {need:.3g} or use a finer patch grid")
    c_min, _ = self.context_area_range
    if c_min < 1:
      need = _min_scale_for_one_patch(n, self.context_aspect)
      raise ConfigError(f"{k('context_scale')}={self.context_scale} gives an empty context block on the "
                        f"{gh}x{gw} grid: raise its lower bound to at least {need:.3g}")
    if self.allow_overlap:
      # The context is the context block itself: its smallest area must reach min_context.
      if c_min < self.min_context:
        raise ConfigError(f"{k('min_context')}={self.min_context} cannot be met: the context block can be "
                          f"as small as {c_min} patches on the {gh}x{gw} grid; lower {k('min_context')} to "
                          f"<= {c_min} or raise {k('context_scale')}")
    elif n - t_max < self.min_context:
      # The fallback keeps at least one target block and makes its complement the context, so one block
      # must always leave min_context patches free.
      if n - t_max >= 1:
        raise ConfigError(f"{k('min_context')}={self.min_context} cannot be met once targets are removed: a "
                          f"target block can cover {t_max} of the {n} patches of the {gh}x{gw} grid; lower "
                          f"{k('min_context')} to <= {n - t_max} or lower {k('target_scale')}")
      raise ConfigError(f"{k('target_scale')}={self.target_scale} lets one target block cover the whole "
                        f"{gh}x{gw} grid, leaving no context: lower its upper bound")
    if self.target_keep is not None:
      _check_int(self.target_keep, k("target_keep"), 1, "set target slots per block or leave it None")
    if self.context_keep is not None:
      _check_int(self.context_keep, k("context_keep"), self.min_context,
                 f"context slots must hold min_context={self.min_context} patches; or leave it None")
      if self.context_keep > n:
        raise ConfigError(f"{k('context_keep')}={self.context_keep} exceeds the {n} patches of the grid: "
                          "lower it or leave it None")

  def _draw_blocks(self, rng: np.random.Generator, n: int, scale, aspect):
    """Draws n blocks: (scales [n], aspects [n], boxes [n, 4] as (top, left, h, w)).

    Scale and aspect are independent draws (the reference uses one uniform for both: quirk Q3). One
    vectorised call per quantity keeps the per-example cost low even when tiny grids need many redraws.
    """
    s = rng.uniform(*scale, size=n)
    a = rng.uniform(*aspect, size=n)
    h, w = block_hw(*self.grid, s, a)
    h, w = np.maximum(h, 1), np.maximum(w, 1)  # Already >= 1 by validate(); guards float ties.
    # Inclusive upper bounds: a block can touch the last row and column (quirk Q1).
    top = rng.integers(0, self.grid[0] - h + 1)
    left = rng.integers(0, self.grid[1] - w + 1)
    return s, a, np.stack([top, left, h, w], axis=1)

  def sample(self, rng: np.random.Generator, debug: bool = False) -> dict[str, Any]:
    """Draws the masks of one example.

    Up to `max_tries` times: draw M target blocks and a context block; the context is the context block
    minus the targets (unless allow_overlap); accept once it has >= min_context patches. Fallback after
    `max_tries` failures (only plausible on tiny grids; never loops): keep the last draw's target blocks in
    order while their union leaves >= min_context patches free (the first always does, by `validate`),
    replace the others by copies of the kept ones, and make the context all patches outside the targets.

    Args:
      rng: the example's generator; the only source of randomness.
      debug: also return the drawn blocks, scales and aspects (for tests and plots).

    Returns:
      context_idx [Kc] int32, context_valid [Kc] bool, target_idx [M, Kt] int32, target_valid [M, Kt] bool;
      with debug also target_boxes [M, 4] and context_box [4] as (top, left, h, w), target_scale [M],
      target_aspect [M] and fallback (bool).
    """
    m = self.num_targets
    for _ in range(self.max_tries):
      scales, aspects, boxes = self._draw_blocks(rng, m, self.target_scale, self.target_aspect)
      context_box = self._draw_blocks(rng, 1, self.context_scale, self.context_aspect)[2][0]
      boxes = [tuple(int(v) for v in b) for b in boxes]
      union = np.zeros(self.grid, dtype=bool)
      for b in boxes:
        union |= _box_mask(self.grid, b[:2], b[2:])
      context = _box_mask(self.grid, context_box[:2], context_box[2:])
      if not self.allow_overlap:
        context &= ~union
      if context.sum() >= self.min_context:
        fallback = False
        break
    else:
      fallback = True
      kept = [boxes[0]]
      union = _box_mask(self.grid, boxes[0][:2], boxes[0][2:])
      for b in boxes[1:]:
        grown = union | _box_mask(self.grid, b[:2], b[2:])
        if self.allow_overlap or self.num_patches - grown.sum() >= self.min_context:
          kept.append(b)
          union = grown
      boxes = [kept[i % len(kept)] for i in range(m)]
      context_box = np.array((0, 0) + self.grid)
      context = np.ones(self.grid, dtype=bool) if self.allow_overlap else ~union

    context_idx, context_valid = _fix_length(rng, np.flatnonzero(context), self.num_context, self.truncation)
    target_idx = np.empty((m, self.num_target), dtype=np.int32)
    target_valid = np.empty((m, self.num_target), dtype=bool)
    for i, b in enumerate(boxes):
      block = np.flatnonzero(_box_mask(self.grid, b[:2], b[2:]))
      target_idx[i], target_valid[i] = _fix_length(rng, block, self.num_target, self.truncation)
    out = dict(context_idx=context_idx, context_valid=context_valid, target_idx=target_idx,
               target_valid=target_valid)
    if debug:
      out.update(target_boxes=np.array(boxes, dtype=np.int32), context_box=np.array(context_box, np.int32),
                 target_scale=scales, target_aspect=aspects, fallback=fallback)
    return out


# ----------------------------------------------------------------------------------------------------------
# V-JEPA: 3D multi-block (tubes).
# ----------------------------------------------------------------------------------------------------------


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
    object.__setattr__(self, "grid", _check_grid(self.grid, 3, _key(self.prefix, "grid")))
    if isinstance(self.groups, (BlockGroup, Mapping)) or not isinstance(self.groups, Sequence):
      raise ConfigError(f"{_key(self.prefix, 'groups')}={self.groups!r} must be a sequence of BlockGroup "
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
          g, spatial_scale=_as_pair(g.spatial_scale, self._gk(i, "spatial_scale")),
          temporal_scale=_as_pair(g.temporal_scale, self._gk(i, "temporal_scale")),
          aspect=_as_pair(g.aspect, self._gk(i, "aspect"))))
    object.__setattr__(self, "groups", tuple(groups))
    self.validate()

  def _gk(self, i: int, name: str) -> str:
    return _key(self.prefix, f"groups[{i}].{name}")

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
    a_min, a_max = block_area_range(*self.grid[1:], group.spatial_scale, group.aspect)
    t_min, t_max = self._temporal_len(group.temporal_scale)
    return int(t_min * a_min), int(t_max * a_max)

  @functools.cached_property
  def expected_sizes(self) -> tuple[tuple[float, float], ...]:
    """Per group (E[#context], E[#target]) ignoring redraws; blocks of one example share their size."""
    gt, gh, gw = self.grid
    out = []
    for g in self.groups:
      ts, ss, a = np.meshgrid(_midpoints(*g.temporal_scale), _midpoints(*g.spatial_scale),
                              _midpoints(*g.aspect), indexing="ij")
      h, w = block_hw(gh, gw, ss.ravel(), a.ravel())
      sizes = np.stack([self._temporal_len(ts.ravel()), h, w], axis=1)
      p_free = np.zeros(self.grid)
      for (t, bh, bw), p in _size_weights(sizes):
        cover = (_axis_coverage(gt, t)[:, None, None] * _axis_coverage(gh, bh)[None, :, None]
                 * _axis_coverage(gw, bw)[None, None, :])
        p_free += p * (1.0 - cover) ** g.num_blocks
      free = float(p_free.sum())
      out.append((free, self.num_patches - free))
    return tuple(out)

  @functools.cached_property
  def group_sizes(self) -> tuple[tuple[int, int], ...]:
    """Per group (Kc_g, Kt_g) from the K rule, before taking the max over groups."""
    return tuple((int(max(self.min_context, _round_half_up(c))), int(max(1, _round_half_up(t))))
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
    k = functools.partial(_key, self.prefix)
    n = self.num_patches
    grid_txt = "x".join(str(g) for g in self.grid)
    if not self.groups:
      raise ConfigError(f"{k('groups')} is empty: add at least one BlockGroup (V-JEPA uses 8 blocks at 0.15 "
                        "and 2 at 0.7)")
    _check_int(self.min_context, k("min_context"), 1, "the encoder needs at least one visible patch")
    _check_int(self.max_tries, k("max_tries"), 1, "set how many draws to try before the fallback (e.g. 20)")
    for i, g in enumerate(self.groups):
      _check_int(g.num_blocks, self._gk(i, "num_blocks"), 1, "set the number of blocks in this group")
      _check_range(g.spatial_scale, self._gk(i, "spatial_scale"), 1.0, "scale")
      _check_range(g.temporal_scale, self._gk(i, "temporal_scale"), 1.0, "scale")
      _check_range(g.aspect, self._gk(i, "aspect"), None, "aspect")
      v_min, v_max = self.block_volume_range(g)
      if v_min < 1:
        need = _min_scale_for_one_patch(self.grid[1] * self.grid[2], g.aspect)
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
      _check_int(self.target_keep, k("target_keep"), 1, "set target slots per group or leave it None")
    if self.context_keep is not None:
      _check_int(self.context_keep, k("context_keep"), self.min_context,
                 f"context slots must hold min_context={self.min_context} patches; or leave it None")

  def _draw_group(self, rng: np.random.Generator, g: BlockGroup) -> tuple[np.ndarray, list, bool]:
    """Returns (target union [T', H, W] bool, boxes as (t0, top, left, t, h, w), fallback used)."""
    gt, gh, gw = self.grid
    for _ in range(self.max_tries):
      ts = rng.uniform(*g.temporal_scale)
      ss = rng.uniform(*g.spatial_scale)
      a = rng.uniform(*g.aspect)
      t = int(self._temporal_len(ts))
      h, w = (max(1, int(v)) for v in block_hw(gh, gw, ss, a))
      # Inclusive upper bounds, as in the reference: blocks can reach the last frame, row and column.
      starts = rng.integers(0, (gt - t + 1, gh - h + 1, gw - w + 1), size=(g.num_blocks, 3))
      boxes = [tuple(int(v) for v in st) + (t, h, w) for st in starts]
      union = np.zeros(self.grid, dtype=bool)
      for b in boxes:
        union |= _box_mask(self.grid, b[:3], b[3:])
      if self.num_patches - int(union.sum()) >= self.min_context:
        return union, boxes, False
    # Fallback: keep blocks in order while the context keeps min_context patches (the first always does).
    kept = []
    union = np.zeros(self.grid, dtype=bool)
    for b in boxes:
      grown = union | _box_mask(self.grid, b[:3], b[3:])
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
      context_idx[i], context_valid[i] = _fix_length(rng, np.flatnonzero(~union), self.num_context)
      target_idx[i], target_valid[i] = _fix_length(rng, np.flatnonzero(union), self.num_target)
      all_boxes.append(boxes)
      fallbacks.append(fallback)
    out = dict(context_idx=context_idx, context_valid=context_valid, target_idx=target_idx,
               target_valid=target_valid)
    if debug:
      out.update(boxes=all_boxes, fallback=np.array(fallbacks))
    return out


# ----------------------------------------------------------------------------------------------------------
# Random-masking baseline.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RandomMask2D:
  """Random masks (I-JEPA's `random.py` baseline): a random fraction of patches is context, the rest target.

  Per example: ratio r ~ U(context_ratio); a random permutation of the patches is split into
  n_c = clip(round(r * N), 1, N - 1) context patches and N - n_c targets (one target group, M = 1).
  Sizes: Kc = the largest possible n_c, Kt = the largest possible N - n_c; shorter lists are padded with
  invalid slots. Nothing is ever subsampled, so the drawn ratio is exactly what the model sees.

  Attributes:
    grid: (H, W) number of patch rows and columns.
    context_ratio: range of the context fraction (the reference draws it per batch, here per example).
    prefix: config path of this object, used to name keys in error messages.
  """
  grid: tuple[int, int]
  context_ratio: tuple[float, float] = (0.4, 0.6)
  prefix: str = "masks"

  def __post_init__(self):
    object.__setattr__(self, "grid", _check_grid(self.grid, 2, _key(self.prefix, "grid")))
    object.__setattr__(self, "context_ratio",
                       _as_pair(self.context_ratio, _key(self.prefix, "context_ratio")))
    self.validate()

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  @property
  def num_targets(self) -> int:
    return 1

  def _num_context(self, ratio):
    return np.clip(_round_half_up(np.asarray(ratio) * self.num_patches), 1, self.num_patches - 1)

  @property
  def num_context(self) -> int:
    """Kc: the context size at the largest ratio."""
    return int(self._num_context(self.context_ratio[1]))

  @property
  def num_target(self) -> int:
    """Kt: the target size at the smallest ratio."""
    return int(self.num_patches - self._num_context(self.context_ratio[0]))

  def validate(self) -> None:
    """Raises ConfigError (one line naming the key and the fix) when the masks cannot fit the grid."""
    key = _key(self.prefix, "context_ratio")
    if self.num_patches < 2:
      raise ConfigError(f"{_key(self.prefix, 'grid')}={self.grid} has one patch: random masks need at least "
                        "two (one context, one target)")
    lo, hi = self.context_ratio
    if not (0 < lo <= hi < 1):
      raise ConfigError(f"{key}={self.context_ratio} is not a valid ratio range: set 0 < low <= high < 1")

  def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draws the masks of one example; same layout as MultiBlock2D with M = 1."""
    n_context = int(self._num_context(rng.uniform(*self.context_ratio)))
    perm = rng.permutation(self.num_patches)
    context_idx, context_valid = _fix_length(rng, np.sort(perm[:n_context]), self.num_context)
    target_idx, target_valid = _fix_length(rng, np.sort(perm[n_context:]), self.num_target)
    return dict(context_idx=context_idx, context_valid=context_valid, target_idx=target_idx[None],
                target_valid=target_valid[None])


def mask_stats(sampler, rng: np.random.Generator | int, n: int = 256) -> dict[str, float]:
  """Mean, min and max numbers of valid context and target patches over `n` samples (for logs and docs).

  Target counts are per target row (per block for MultiBlock2D, per group for MultiBlock3D).
  """
  rng = np.random.default_rng(rng)  # Returns a Generator unchanged.
  ctx, tgt = [], []
  for _ in range(n):
    s = sampler.sample(rng)
    ctx.append(np.asarray(s["context_valid"]).sum(-1).ravel())
    tgt.append(np.asarray(s["target_valid"]).sum(-1).ravel())
  ctx, tgt = np.concatenate(ctx), np.concatenate(tgt)
  return dict(num_context=sampler.num_context, num_target=sampler.num_target,
              context_mean=float(ctx.mean()), context_min=float(ctx.min()), context_max=float(ctx.max()),
              target_mean=float(tgt.mean()), target_min=float(tgt.min()), target_max=float(tgt.max()),
              context_fill=float(ctx.mean() / sampler.num_context),
              target_fill=float(tgt.mean() / sampler.num_target))
