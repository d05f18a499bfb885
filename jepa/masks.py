"""Mask samplers for masked-prediction methods: the shared block geometry and I-JEPA's 2D multi-block masks.

The samplers run in the NumPy data pipeline, once per example, and take all their randomness from the
`np.random.Generator` that the pipeline derives from (seed, example index). Every output array has a size
fixed by the config (Kc context slots, Kt target slots), so the jitted training step compiles once; a
`*_valid` array marks the padding slots. Padding slots repeat an in-range index so that gathers stay safe.

Indices are flat raster indices over the patch grid: `row * W + col` for images and
`(t * H + row) * W + col` for videos, i.e. `np.ravel_multi_index` order.

This module holds what both samplers share (block sizes, the per-patch coverage probabilities behind the K
rule, fixed-length index lists, config checks), the 2D sampler `MultiBlock2D` and `mask_stats`. V-JEPA's 3D
sampler `MultiBlock3D`, built on the same helpers, is in `jepa/masks_video.py`.

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
from collections.abc import Sequence
from typing import Any

import numpy as np

from jepa.errors import ConfigError

# Points per axis of the midpoint rule used to average over the (scale, aspect) distribution when deriving
# the expected mask sizes. Deterministic, so K depends only on the config.
_QUADRATURE_POINTS = 32


# ----------------------------------------------------------------------------------------------------------
# Shared helpers.
# ----------------------------------------------------------------------------------------------------------


def round_half_up(x):
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
  h = round_half_up(np.sqrt(keep * aspect))
  w = round_half_up(np.sqrt(keep / aspect))
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


def midpoints(lo: float, hi: float, n: int = _QUADRATURE_POINTS) -> np.ndarray:
  """Midpoint-rule nodes of a uniform distribution on [lo, hi] (one node when the range is a point)."""
  if lo == hi:
    return np.array([lo], dtype=np.float64)
  return lo + (np.arange(n) + 0.5) / n * (hi - lo)


def axis_coverage(n: int, k: int) -> np.ndarray:
  """P(cell i lies in a segment of length k whose start is uniform on {0, ..., n - k}), for every i."""
  if k <= 0:
    return np.zeros(n)
  i = np.arange(n)
  first = np.maximum(0, i - k + 1)
  last = np.minimum(i, n - k)
  return np.maximum(0, last - first + 1) / (n - k + 1)


def size_weights(sizes: np.ndarray) -> list[tuple[tuple[int, ...], float]]:
  """Groups equal rows of `sizes` ([n, d] ints) into (size, probability) pairs."""
  uniq, counts = np.unique(sizes, axis=0, return_counts=True)
  return [(tuple(int(v) for v in u), c / len(sizes)) for u, c in zip(uniq, counts)]


def fix_length(rng: np.random.Generator, idx: np.ndarray, k: int,
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


def box_mask(shape: tuple[int, ...], starts: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
  """Boolean array of `shape` that is True inside the box [starts, starts + sizes)."""
  mask = np.zeros(shape, dtype=bool)
  mask[tuple(slice(s, s + n) for s, n in zip(starts, sizes))] = True
  return mask


def config_key(prefix: str, name: str) -> str:
  return f"{prefix}.{name}" if prefix else name


def as_pair(value, key: str) -> tuple[float, float]:
  """Coerces a config value (tuple, list, scalar) to a float pair; a scalar means a point range."""
  try:
    if isinstance(value, (int, float, np.number)):
      return (float(value), float(value))
    lo, hi = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ConfigError(f"{key}={value!r} must be a (low, high) pair of numbers") from None
  return (lo, hi)


def check_range(value: tuple[float, float], key: str, upper: float | None, what: str) -> None:
  """Raises ConfigError unless 0 < low <= high (<= upper)."""
  lo, hi = value
  finite = math.isfinite(lo) and math.isfinite(hi)
  if not finite or lo <= 0 or lo > hi or (upper is not None and hi > upper):
    bound = f" <= {upper:g}" if upper is not None else ""
    raise ConfigError(f"{key}={value} is not a valid {what} range: set it to (low, high) with "
                      f"0 < low <= high{bound}")


def check_grid(grid, ndim: int, key: str) -> tuple[int, ...]:
  try:
    out = tuple(int(g) for g in grid)
  except (TypeError, ValueError):
    out = ()
  if len(out) != ndim or min(out) < 1 or any(int(g) != g for g in grid):
    names = "(T', H, W) tubelets" if ndim == 3 else "(H, W) patches"
    raise ConfigError(f"{key}={grid!r} must be {ndim} positive integers {names}: set it from the input size "
                      "divided by the patch size")
  return out


def check_int(value, key: str, low: int, fix: str) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
    raise ConfigError(f"{key}={value!r} must be an integer >= {low}: {fix}")


def min_scale_for_one_patch(n_patches: int, aspect: tuple[float, float]) -> float:
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
  truncation: str = "random"  # how lists longer than their slots are cut: see fix_length
  prefix: str = "masks"

  def __post_init__(self):
    # Configs may hand over lists; store tuples so the object stays hashable and comparable.
    object.__setattr__(self, "grid", check_grid(self.grid, 2, self._k("grid")))
    for name in ("target_scale", "target_aspect", "context_scale", "context_aspect"):
      object.__setattr__(self, name, as_pair(getattr(self, name), self._k(name)))
    self.validate()

  def _k(self, name: str) -> str:
    return config_key(self.prefix, name)

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
      s, a = np.meshgrid(midpoints(*scale), midpoints(*aspect), indexing="ij")
      h, w = block_hw(gh, gw, s.ravel(), a.ravel())
      cov = np.zeros(self.grid)
      for (bh, bw), p in size_weights(np.stack([h, w], axis=1)):
        cov += p * np.outer(axis_coverage(gh, bh), axis_coverage(gw, bw))
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
    return int(min(self.num_patches, max(self.min_context, round_half_up(self.expected_context))))

  def validate(self) -> None:
    """Raises ConfigError (one line naming the key and the fix) when the masks cannot fit the grid."""
    k = self._k
    gh, gw = self.grid
    n = self.num_patches
    check_int(self.num_targets, k("num_targets"), 1, "set the number of target blocks (I-JEPA uses 4)")
    check_int(self.min_context, k("min_context"), 1,
              "the encoder needs at least one visible patch (I-JEPA uses 10)")
    check_int(self.max_tries, k("max_tries"), 1, "set how many draws to try before the fallback (e.g. 20)")
    check_range(self.target_scale, k("target_scale"), 1.0, "scale")
    check_range(self.context_scale, k("context_scale"), 1.0, "scale")
    check_range(self.target_aspect, k("target_aspect"), None, "aspect")
    check_range(self.context_aspect, k("context_aspect"), None, "aspect")

    t_min, t_max = self.target_area_range
    if t_min < 1:
      need = min_scale_for_one_patch(n, self.target_aspect)
      raise ConfigError(f"{k('target_scale')}={self.target_scale} gives empty target blocks on the {gh}x{gw} "
                        f"grid: raise its lower bound to at least {need:.3g} or use a finer patch grid")
    c_min, _ = self.context_area_range
    if c_min < 1:
      need = min_scale_for_one_patch(n, self.context_aspect)
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
      check_int(self.target_keep, k("target_keep"), 1, "set target slots per block or leave it None")
    if self.context_keep is not None:
      check_int(self.context_keep, k("context_keep"), self.min_context,
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
        union |= box_mask(self.grid, b[:2], b[2:])
      context = box_mask(self.grid, context_box[:2], context_box[2:])
      if not self.allow_overlap:
        context &= ~union
      if context.sum() >= self.min_context:
        fallback = False
        break
    else:
      fallback = True
      kept = [boxes[0]]
      union = box_mask(self.grid, boxes[0][:2], boxes[0][2:])
      for b in boxes[1:]:
        grown = union | box_mask(self.grid, b[:2], b[2:])
        if self.allow_overlap or self.num_patches - grown.sum() >= self.min_context:
          kept.append(b)
          union = grown
      boxes = [kept[i % len(kept)] for i in range(m)]
      context_box = np.array((0, 0) + self.grid)
      context = np.ones(self.grid, dtype=bool) if self.allow_overlap else ~union

    context_idx, context_valid = fix_length(rng, np.flatnonzero(context), self.num_context, self.truncation)
    target_idx = np.empty((m, self.num_target), dtype=np.int32)
    target_valid = np.empty((m, self.num_target), dtype=bool)
    for i, b in enumerate(boxes):
      block = np.flatnonzero(box_mask(self.grid, b[:2], b[2:]))
      target_idx[i], target_valid[i] = fix_length(rng, block, self.num_target, self.truncation)
    out = dict(context_idx=context_idx, context_valid=context_valid, target_idx=target_idx,
               target_valid=target_valid)
    if debug:
      out.update(target_boxes=np.array(boxes, dtype=np.int32), context_box=np.array(context_box, np.int32),
                 target_scale=scales, target_aspect=aspects, fallback=fallback)
    return out


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
