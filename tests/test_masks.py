"""Invariants of the mask samplers in jepa/masks.py and jepa/masks_video.py, over many seeds and grid sizes."""
import time

import numpy as np
import pytest

from jepa import masks
from jepa import masks_video
from jepa.errors import ConfigError

SEEDS = range(300)

# Grid -> MultiBlock2D overrides that make the config fit (the defaults fit from 8x8 up).
GRIDS_2D = {
    (2, 2): dict(num_targets=2, min_context=1),
    (3, 3): dict(min_context=2),
    (4, 4): dict(min_context=4),
    (8, 8): {},
    (14, 14): {},
    (16, 16): {},
    (7, 12): {},
}


def _box_mask(grid, box):
  """Mask of a (top, left, h, w) or (t0, top, left, t, h, w) box."""
  d = len(grid)
  m = np.zeros(grid, dtype=bool)
  m[tuple(slice(box[i], box[i] + box[d + i]) for i in range(d))] = True
  return m


def _samples(sampler, seeds=SEEDS, **kwargs):
  return [sampler.sample(np.random.default_rng(s), **kwargs) for s in seeds]


# ------------------------------------------------------------------------------------------------------------
# MultiBlock2D.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", list(GRIDS_2D), ids=lambda g: f"{g[0]}x{g[1]}")
def test_multiblock2d_invariants(grid):
  mb = masks.MultiBlock2D(grid, **GRIDS_2D[grid])
  n = grid[0] * grid[1]
  kc, kt, m = mb.num_context, mb.num_target, mb.num_targets
  assert 1 <= kt <= n and mb.min_context <= kc <= n
  for out in _samples(mb, debug=True):
    assert out["context_idx"].shape == (kc,) and out["context_idx"].dtype == np.int32
    assert out["context_valid"].shape == (kc,) and out["context_valid"].dtype == bool
    assert out["target_idx"].shape == (m, kt) and out["target_idx"].dtype == np.int32
    assert out["target_valid"].shape == (m, kt) and out["target_valid"].dtype == bool
    # Every slot, padding included, is a safe gather index.
    for key in ("context_idx", "target_idx"):
      assert out[key].min() >= 0 and out[key].max() < n
    ctx = out["context_idx"][out["context_valid"]]
    assert len(np.unique(ctx)) == len(ctx) >= mb.min_context
    union = np.zeros(grid, dtype=bool)
    for i, box in enumerate(out["target_boxes"]):
      block = _box_mask(grid, box)
      union |= block
      tgt = out["target_idx"][i][out["target_valid"][i]]
      assert len(np.unique(tgt)) == len(tgt)
      assert block.ravel()[tgt].all(), "target slots outside their block"
      # Kt is the smallest block area, so every target slot is valid.
      assert out["target_valid"][i].all()
    assert not union.ravel()[ctx].any(), "valid context overlaps a target block"
    if not out["fallback"]:
      assert _box_mask(grid, out["context_box"]).ravel()[ctx].all()


def test_multiblock2d_block_sizes_follow_scale_and_aspect():
  grid = (14, 14)
  n = 196
  mb = masks.MultiBlock2D(grid)
  lo, hi = mb.target_area_range
  areas, ratios = [], []
  for out in _samples(mb, debug=True):
    for (top, left, h, w), s, a in zip(out["target_boxes"], out["target_scale"], out["target_aspect"]):
      assert top >= 0 and left >= 0 and top + h <= 14 and left + w <= 14
      assert 0.15 <= s <= 0.2 and 0.75 <= a <= 1.5
      # h and w are sqrt(N s a) and sqrt(N s / a) rounded (never capped on this grid).
      assert (h - 0.5) ** 2 <= n * s * a < (h + 0.5) ** 2
      assert (w - 0.5) ** 2 <= n * s / a < (w + 0.5) ** 2
      assert lo <= h * w <= hi
      areas.append(h * w)
      ratios.append(h / w)
  areas = np.array(areas) / n
  assert 0.15 <= areas.mean() <= 0.2
  assert areas.min() < 0.15 + 0.02 and areas.max() > 0.2 - 0.02
  assert min(ratios) < 0.9 and max(ratios) > 1.3


def test_block_area_range_matches_brute_force():
  for grid, scale, aspect in [((14, 14), (0.15, 0.2), (0.75, 1.5)), ((7, 12), (0.15, 0.2), (0.75, 1.5)),
                              ((16, 16), (0.85, 1.0), (1.0, 1.0)), ((4, 4), (0.3, 0.6), (0.5, 2.0))]:
    s, a = np.meshgrid(np.linspace(*scale, 301), np.linspace(*aspect, 301))
    h, w = masks.block_hw(*grid, s, a)
    lo, hi = masks.block_area_range(*grid, scale, aspect)
    assert lo == (h * w).min() and hi == (h * w).max()


def test_multiblock2d_blocks_reach_last_row_and_column():
  # Quirk Q1: the reference never places a block on the last row or column.
  for grid in [(14, 14), (7, 12)]:
    mb = masks.MultiBlock2D(grid)
    n = grid[0] * grid[1]
    outs = _samples(mb, debug=True)
    boxes = np.concatenate([o["target_boxes"] for o in outs])
    assert (boxes[:, 0] + boxes[:, 2] == grid[0]).any()
    assert (boxes[:, 1] + boxes[:, 3] == grid[1]).any()
    assert (boxes[:, 0] == 0).any() and (boxes[:, 1] == 0).any()
    assert any((o["target_idx"] == n - 1).any() for o in outs)
  # The context block is not pinned at (0, 0) (quirk Q1) and can cover the whole grid (quirk Q2).
  mb = masks.MultiBlock2D((14, 14))
  boxes = np.stack([o["context_box"] for o in _samples(mb, debug=True)])
  assert (boxes[:, 2] == 14).any() and (boxes[:, 0] > 0).any() and (boxes[:, 1] > 0).any()


def test_multiblock2d_scale_and_aspect_are_independent():
  # Quirk Q3: the reference draws one uniform for both.
  mb = masks.MultiBlock2D((14, 14))
  outs = _samples(mb, range(1000), debug=True)
  s = np.concatenate([o["target_scale"] for o in outs])
  a = np.concatenate([o["target_aspect"] for o in outs])
  assert abs(np.corrcoef(s, a)[0, 1]) < 0.05
  # Each covers its whole range.
  assert s.min() < 0.155 and s.max() > 0.195 and a.min() < 0.8 and a.max() > 1.45


def test_multiblock2d_subsampling_has_no_raster_bias():
  # Quirk Q5: raster-order truncation drops the bottom-right patches; random subsampling does not.
  mb = masks.MultiBlock2D((14, 14))
  rows_ctx, rel_rows_tgt = [], []
  for out in _samples(mb, debug=True):
    ctx = out["context_idx"][out["context_valid"]]
    rows_ctx.append(ctx // 14)
    for box, idx in zip(out["target_boxes"], out["target_idx"]):
      rel_rows_tgt.append((idx // 14 - box[0]) / max(1, box[2] - 1))
  rows_ctx = np.concatenate(rows_ctx)
  rel = np.concatenate(rel_rows_tgt)
  assert abs(rows_ctx.mean() - 6.5) < 0.5
  assert (rows_ctx == 13).mean() > 0.03
  assert abs(rel.mean() - 0.5) < 0.05 and (rel == 1.0).mean() > 0.1


def test_multiblock2d_deterministic_per_seed():
  mb = masks.MultiBlock2D((14, 14))
  a = mb.sample(np.random.default_rng(7))
  b = mb.sample(np.random.default_rng(7))
  c = mb.sample(np.random.default_rng(8))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["context_idx"], c["context_idx"])


def test_multiblock2d_k_rule():
  mb = masks.MultiBlock2D((14, 14))
  assert mb.num_target == mb.target_area_range[0] == 25
  assert mb.num_context == max(mb.min_context, int(np.floor(mb.expected_context + 0.5)))
  # The expectation is exact up to the quadrature: compare with the sampler without a cap.
  wide = masks.MultiBlock2D((14, 14), context_keep=196)
  counts = [o["context_valid"].sum() for o in _samples(wide, range(2000))]
  assert abs(np.mean(counts) - mb.expected_context) < 0.02 * mb.expected_context
  # Overrides pad with invalid, in-range slots.
  big = masks.MultiBlock2D((14, 14), target_keep=60)
  out = big.sample(np.random.default_rng(0))
  assert out["target_idx"].shape == (4, 60) and not out["target_valid"].all()
  assert out["target_idx"].max() < 196
  assert (out["target_valid"].sum(1) >= 25).all()


def test_multiblock2d_allow_overlap():
  mb = masks.MultiBlock2D((14, 14), allow_overlap=True)
  overlapped = False
  for out in _samples(mb, range(50), debug=True):
    ctx = out["context_idx"][out["context_valid"]]
    assert len(np.unique(ctx)) == len(ctx) >= mb.min_context
    assert _box_mask((14, 14), out["context_box"]).ravel()[ctx].all()
    overlapped |= np.isin(ctx, out["target_idx"]).any()
  assert overlapped


def test_multiblock2d_never_hangs_on_tiny_grids():
  # Quirk Q4: the reference loops (nearly) forever when the targets leave too little context.
  hard = [((2, 2), dict(num_targets=4, min_context=3)),
          ((3, 3), dict(num_targets=6, target_scale=(0.3, 0.45), min_context=4)),
          ((4, 4), dict(num_targets=8, target_scale=(0.2, 0.25), min_context=9, max_tries=5))]
  for grid, kw in hard:
    mb = masks.MultiBlock2D(grid, **kw)
    start = time.perf_counter()
    outs = _samples(mb, debug=True)
    assert time.perf_counter() - start < 5.0
    assert any(o["fallback"] for o in outs), "these configs should need the fallback"
    for out in outs:
      ctx = out["context_idx"][out["context_valid"]]
      assert len(np.unique(ctx)) == len(ctx) >= mb.min_context
      assert not np.isin(ctx, out["target_idx"][out["target_valid"]]).any()
      assert out["target_valid"].all()


@pytest.mark.parametrize("kwargs, key", [
    (dict(grid=(14, 14), target_scale=(0.15, 1.2)), "masks.target_scale"),
    (dict(grid=(14, 14), target_scale=(0.3, 0.2)), "masks.target_scale"),
    (dict(grid=(2, 2), target_scale=(0.01, 0.02), min_context=1), "masks.target_scale"),
    (dict(grid=(4, 4), target_scale=(0.9, 1.0), min_context=1), "masks.target_scale"),
    (dict(grid=(4, 4), min_context=13), "masks.min_context"),
    (dict(grid=(8, 8), target_scale=(0.7, 0.8)), "masks.min_context"),
    (dict(grid=(14, 14), min_context=0), "masks.min_context"),
    (dict(grid=(14, 14), num_targets=0), "masks.num_targets"),
    (dict(grid=(14, 14), max_tries=0), "masks.max_tries"),
    (dict(grid=(14, 14), context_scale=(0.0, 1.0)), "masks.context_scale"),
    (dict(grid=(3, 3), context_scale=(0.01, 0.02), min_context=1), "masks.context_scale"),
    (dict(grid=(14, 14), context_aspect=(-1.0, 1.0)), "masks.context_aspect"),
    (dict(grid=(14, 14), target_aspect="wide"), "masks.target_aspect"),
    (dict(grid=(4, 4), allow_overlap=True, context_scale=(0.2, 0.3), min_context=10), "masks.min_context"),
    (dict(grid=(14, 14), context_keep=5), "masks.context_keep"),
    (dict(grid=(14, 14), target_keep=0), "masks.target_keep"),
    (dict(grid=(14, 0)), "masks.grid"),
    (dict(grid=(14, 14, 2)), "masks.grid"),
])
def test_multiblock2d_impossible_configs_raise(kwargs, key):
  with pytest.raises(ConfigError) as info:
    masks.MultiBlock2D(**kwargs)
  msg = str(info.value)
  assert msg.startswith(key + "=") and "\n" not in msg


def test_error_prefix_names_the_config_path():
  with pytest.raises(ConfigError, match=r"^data\.masks\.min_context="):
    masks.MultiBlock2D((4, 4), min_context=13, prefix="data.masks")


def test_config_lists_are_accepted():
  mb = masks.MultiBlock2D([14, 14], target_scale=[0.15, 0.2])
  assert mb == masks.MultiBlock2D((14, 14))
  assert hash(mb) == hash(masks.MultiBlock2D((14, 14)))


# ------------------------------------------------------------------------------------------------------------
# MultiBlock3D.
# ------------------------------------------------------------------------------------------------------------


GRIDS_3D = {
    (8, 14, 14): {},
    (4, 7, 12): {},
    (2, 4, 4): {},
    (1, 3, 3): dict(groups=(masks_video.BlockGroup(3, (0.2, 0.3)), masks_video.BlockGroup(1, (0.5, 0.6)))),
}


@pytest.mark.parametrize("grid", list(GRIDS_3D), ids=lambda g: "x".join(map(str, g)))
def test_multiblock3d_invariants(grid):
  mb = masks_video.MultiBlock3D(grid, **GRIDS_3D[grid])
  n = int(np.prod(grid))
  g, kc, kt = mb.num_groups, mb.num_context, mb.num_target
  assert kc == max(c for c, _ in mb.group_sizes) and kt == max(t for _, t in mb.group_sizes)
  for out in _samples(mb, range(100), debug=True):
    assert out["context_idx"].shape == (g, kc) and out["context_idx"].dtype == np.int32
    assert out["context_valid"].shape == (g, kc) and out["context_valid"].dtype == bool
    assert out["target_idx"].shape == (g, kt) and out["target_idx"].dtype == np.int32
    assert out["target_valid"].shape == (g, kt) and out["target_valid"].dtype == bool
    for key in ("context_idx", "target_idx"):
      assert out[key].min() >= 0 and out[key].max() < n
    for i in range(g):
      union = np.zeros(grid, dtype=bool)
      for box in out["boxes"][i]:
        # Temporal scale 1: every block spans all frames.
        assert box[0] == 0 and box[3] == grid[0]
        union |= _box_mask(grid, box)
      ctx = out["context_idx"][i][out["context_valid"][i]]
      tgt = out["target_idx"][i][out["target_valid"][i]]
      assert len(np.unique(ctx)) == len(ctx) >= mb.min_context
      assert len(np.unique(tgt)) == len(tgt) >= 1
      assert not union.ravel()[ctx].any() and union.ravel()[tgt].all()


def test_multiblock3d_context_is_complement_of_union():
  grid = (4, 7, 12)
  n = 4 * 7 * 12
  mb = masks_video.MultiBlock3D(grid, context_keep=n, target_keep=n)
  for out in _samples(mb, range(100), debug=True):
    for i in range(mb.num_groups):
      ctx = np.zeros(n, dtype=bool)
      tgt = np.zeros(n, dtype=bool)
      ctx[out["context_idx"][i][out["context_valid"][i]]] = True
      tgt[out["target_idx"][i][out["target_valid"][i]]] = True
      union = np.zeros(grid, dtype=bool)
      for box in out["boxes"][i]:
        union |= _box_mask(grid, box)
      np.testing.assert_array_equal(tgt, union.ravel())
      np.testing.assert_array_equal(ctx, ~union.ravel())
      # Targets span all frames: the mask is the same in every frame.
      assert (tgt.reshape(grid) == tgt.reshape(grid)[:1]).all()


def test_multiblock3d_expected_sizes_match_sampling():
  grid = (8, 14, 14)
  n = int(np.prod(grid))
  mb = masks_video.MultiBlock3D(grid, context_keep=n, target_keep=n)
  outs = _samples(mb, range(600))
  for i, (e_ctx, e_tgt) in enumerate(mb.expected_sizes):
    ctx = np.mean([o["context_valid"][i].sum() for o in outs])
    tgt = np.mean([o["target_valid"][i].sum() for o in outs])
    assert abs(ctx - e_ctx) < 0.05 * e_ctx + 5 and abs(tgt - e_tgt) < 0.05 * e_tgt + 5
    assert abs(e_ctx + e_tgt - n) < 1e-6


def test_multiblock3d_temporal_blocks_and_last_positions():
  grid = (8, 6, 6)
  mb = masks_video.MultiBlock3D(grid, groups=(masks_video.BlockGroup(2, (0.2, 0.3), temporal_scale=(0.25, 0.5)),))
  boxes = np.array([b for o in _samples(mb, debug=True) for b in o["boxes"][0]])
  assert (boxes[:, 3] >= 2).all() and (boxes[:, 3] <= 4).all()
  assert (boxes[:, 0] + boxes[:, 3] == 8).any() and (boxes[:, 0] > 0).any()
  assert (boxes[:, 1] + boxes[:, 4] == 6).any() and (boxes[:, 2] + boxes[:, 5] == 6).any()


def test_multiblock3d_deterministic_and_never_hangs():
  mb = masks_video.MultiBlock3D((8, 14, 14))
  a = mb.sample(np.random.default_rng(3))
  b = mb.sample(np.random.default_rng(3))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  # 2 long-range blocks on a 4x4 plane can cover it entirely: redraws, then the fallback.
  tiny = masks_video.MultiBlock3D((2, 4, 4), groups=(masks_video.BlockGroup(3, (0.7, 0.75)),), min_context=2,
                                  max_tries=3)
  start = time.perf_counter()
  outs = _samples(tiny, debug=True)
  assert time.perf_counter() - start < 5.0
  assert any(o["fallback"][0] for o in outs)
  for out in outs:
    assert out["context_valid"].sum() >= 2


def test_multiblock3d_groups_from_mappings():
  mb = masks_video.MultiBlock3D([8, 14, 14], groups=[dict(num_blocks=8, spatial_scale=[0.15, 0.15]),
                                               dict(num_blocks=2, spatial_scale=0.7)])
  assert mb == masks_video.MultiBlock3D((8, 14, 14))


@pytest.mark.parametrize("kwargs, key", [
    (dict(grid=(1, 2, 2)), "masks.groups[1].spatial_scale"),
    (dict(grid=(8, 14, 14), groups=(masks_video.BlockGroup(1, (1.0, 1.0)),)), "masks.groups[0].spatial_scale"),
    (dict(grid=(8, 14, 14), groups=(masks_video.BlockGroup(1, (0.5, 0.5), temporal_scale=(0.0, 1.0)),)),
     "masks.groups[0].temporal_scale"),
    (dict(grid=(8, 2, 2), groups=(masks_video.BlockGroup(1, (0.01, 0.01)),)), "masks.groups[0].spatial_scale"),
    (dict(grid=(8, 14, 14), groups=(masks_video.BlockGroup(0, (0.5, 0.5)),)), "masks.groups[0].num_blocks"),
    (dict(grid=(8, 14, 14), groups=(masks_video.BlockGroup(1, (0.5, 0.5), aspect=(2.0, 1.0)),)),
     "masks.groups[0].aspect"),
    (dict(grid=(2, 4, 4), groups=(masks_video.BlockGroup(1, (0.5, 0.5)),), min_context=20), "masks.min_context"),
    (dict(grid=(8, 14, 14), groups=()), "masks.groups"),
    (dict(grid=(8, 14, 14), groups=(dict(blocks=3),)), "masks.groups[0]"),
    (dict(grid=(14, 14)), "masks.grid"),
])
def test_multiblock3d_impossible_configs_raise(kwargs, key):
  with pytest.raises(ConfigError) as info:
    masks_video.MultiBlock3D(**kwargs)
  msg = str(info.value)
  assert msg.startswith(key) and "\n" not in msg


# ------------------------------------------------------------------------------------------------------------
# mask_stats and raster truncation.
# ------------------------------------------------------------------------------------------------------------


def test_mask_stats():
  stats = masks.mask_stats(masks.MultiBlock2D((14, 14)), 0, n=32)
  assert stats["num_target"] == 25 and stats["target_fill"] == 1.0
  assert 10 <= stats["context_min"] <= stats["context_mean"] <= stats["context_max"] <= stats["num_context"]


def test_raster_truncation_keeps_the_first_indices_in_raster_order():
  """masks.truncation='raster' (the references' cut): a context longer than its slots keeps its first entries in
  raster order; 'random' keeps a sorted uniform subset (so it differs from the first entries in most draws).
  Checked against the context rebuilt from the sampler's debug boxes."""
  common = dict(grid=(8, 8), num_targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
                context_scale=(0.85, 1.0), min_context=4, context_keep=12)

  def full_context(out):
    r0, c0, h, w = out["context_box"]
    context = np.zeros((8, 8), bool)
    context[r0:r0 + h, c0:c0 + w] = True
    for r, c, bh, bw in out["target_boxes"]:
      context[r:r + bh, c:c + bw] = False
    return np.flatnonzero(context)

  rng = np.random.default_rng(0)
  checked, differs = 0, 0
  for truncation in ("raster", "random"):
    sampler = masks.MultiBlock2D(**common, truncation=truncation)
    for _ in range(30):
      out = sampler.sample(rng, debug=True)
      context = full_context(out)
      if len(context) <= 12:
        continue
      assert np.isin(out["context_idx"], context).all() and out["context_valid"].all()
      if truncation == "raster":
        np.testing.assert_array_equal(out["context_idx"], context[:12])
        checked += 1
      else:
        differs += not np.array_equal(out["context_idx"], context[:12])
  assert checked >= 20 and differs >= 20, (checked, differs)
