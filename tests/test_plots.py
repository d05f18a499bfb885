"""Pictures: mask panels read back from the PNG cell by cell, PCA colours, curve sizes, the methods' hooks, the
world model's episodes on their maps and its planning success over training."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from jepa import metrics
from jepa import plots
from jepa.methods import get_method
from jepa.methods import world_model as wm
from tests.helpers import load_config


def _read(path):
  with Image.open(path) as im:
    assert im.format == "PNG"
    return np.asarray(im.convert("RGB"))


def _layout(rows, scale, title=""):
  """Panel corners and the canvas size from the documented layout (plots.py), computed independently."""
  names = {name for row in rows for p in row for name, _ in p.layers}
  width = max(plots.PAD + sum(plots.swatch_width(n) for n in names),
              plots.PAD + plots.TITLE_CHAR * len(title))
  corners, y = [], plots.HEADER
  for row in rows:
    x = plots.PAD
    corners.append([])
    for p in row:
      corners[-1].append((x, y + plots.TITLE))
      x += max(p.image.shape[1] * scale, plots.PANEL_CHAR * len(p.title)) + plots.PAD
    width = max(width, x)
    y += plots.TITLE + max(p.image.shape[0] for p in row) * scale + plots.PAD
  return corners, (y + plots.PAD, width)


def _check_cells(pixels, panel, corner, scale, colours_by_name):
  """Every patch of a layered panel: border pixels in the colour of the last layer holding it, or none."""
  h, w = panel.image.shape[:2]
  gw = w // panel.cell
  s = panel.cell * scale
  owner = {}
  for name, idx in panel.layers:
    for i in np.asarray(idx).reshape(-1):
      owner[int(i)] = name
  layer_colours = {tuple(c) for c in colours_by_name.values()}
  x0, y0 = corner
  for i in range((h // panel.cell) * gw):
    r, c = divmod(i, gw)
    top, left = y0 + r * s, x0 + c * s
    edge = [pixels[top, left + s // 2], pixels[top + s - 1, left + s // 2], pixels[top + s // 2, left],
            pixels[top + s // 2, left + s - 1]]
    if i in owner:
      for px in edge:
        assert tuple(px) == tuple(colours_by_name[owner[i]]), (panel.title, i, owner[i], px)
    else:
      assert all(tuple(px) not in layer_colours for px in edge), (panel.title, i)


def test_mask_picture_pixels_match_the_indices(tmp_path):
  rng = np.random.default_rng(0)
  a = rng.uniform(size=(16, 12, 3))
  b = rng.uniform(size=(8, 8))
  rows = [[plots.Panel(a, "an input with a title wider than the panel"),
           plots.Panel(a, "masks", cell=4, layers=(("context", [0, 1, 2, 4]), ("target 1", [5, 6, 9]),
                                                   ("target 2", [9, 10, 11])))],
          [plots.Panel(b, "video frame", cell=2, layers=(("target 1", [0, 15]), ("context", [5])))]]
  path = str(tmp_path / "m.png")
  plots.save_panels(rows, path, title="test", scale=3)
  pixels = _read(path)
  corners, size = _layout(rows, 3, "test")
  assert pixels.shape[:2] == size
  colours = {"context": plots.CONTEXT_COLOUR, "target 1": plots.PALETTE[0], "target 2": plots.PALETTE[1]}
  # The unmasked panel is the image enlarged 3x by repetition, pixel for pixel (no interpolation).
  x0, y0 = corners[0][0]
  expected = np.repeat(np.repeat(np.round(a * 255).astype(np.uint8), 3, 0), 3, 1)
  np.testing.assert_array_equal(pixels[y0:y0 + 48, x0:x0 + 36], expected)
  _check_cells(pixels, rows[0][1], corners[0][1], 3, colours)
  _check_cells(pixels, rows[1][0], corners[1][0], 3, colours)
  with pytest.raises(ValueError, match="out of range"):
    plots.save_panels([[plots.Panel(b, "x", cell=2, layers=(("context", [16]),))]], path)


@pytest.mark.parametrize("name", ["ijepa_vit", "vjepa_vit", "iwm_vit", "lejepa_vit"])
def test_method_pictures_draw_their_masks(name, tmp_path):
  """Each method's `pictures` hook on a real example: the PNG shows exactly the indices it returned."""
  config = load_config(name, "tiny")
  method = get_method(config)
  from jepa.data import sources  # pylint: disable=import-outside-toplevel
  example = dict(sources.get_source(config.data, "eval")[0])
  rows = method.pictures(example, np.random.default_rng(5))
  assert rows and all(rows)
  path = str(tmp_path / f"{name}.png")
  plots.save_panels(rows, path, scale=2)
  pixels = _read(path)
  corners, size = _layout(rows, 2)
  assert pixels.shape[:2] == size
  colours = plots.layer_colours(rows)
  layered = [(p, corners[i][j]) for i, row in enumerate(rows) for j, p in enumerate(row) if p.layers]
  if name == "lejepa_vit":
    assert not layered and len(rows[0]) == 1 + config.lejepa.num_global + config.lejepa.num_local
  else:
    assert layered
  for panel, corner in layered:
    _check_cells(pixels, panel, corner, 2, colours)
  if name == "vjepa_vit":  # one row per mask group, one panel per frame
    assert len(rows) == len(config.masks.video_blocks) and len(rows[0]) == config.data.num_frames
  # LiDAR's views have the eval input's shape.
  view = method.view_fn()(example, np.random.default_rng(1))["image"]
  assert view.shape == method.example_fn(train=False)(example, None)["image"].shape


@pytest.mark.parametrize("name", ["ijepa_vit", "lejepa_vit"])
def test_patch_tokens_follow_the_grid(name):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  config = load_config(name, "tiny")
  method = get_method(config)
  model = method.init_model(nnx.Rngs(0))
  target = getattr(model, method.ema_target) if method.ema_target else None
  images = np.zeros((2, config.data.image_size, config.data.image_size, 3), np.float32)
  tokens = method.patch_tokens(model, target, images)
  assert tokens.shape[:2] == (2, math.prod(method.token_grid()))


def test_pca_rgb_recovers_the_principal_axes():
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
  # Zero-mean, mutually orthogonal coordinates: the sample's principal axes are exactly q's first columns.
  a = rng.standard_normal((400, 3))
  coords = np.linalg.qr(a - a.mean(0))[0] * [10.0, 3.0, 1.0]
  tokens = (coords @ q[:, :3].T + 5.0).reshape(4, 10, 10, 8)      # 3 axes of decreasing variance
  rgb = plots.pca_rgb(tokens)
  assert rgb.shape == (4, 10, 10, 3) and rgb.min() >= 0 and rgb.max() <= 1
  flat = rgb.reshape(-1, 3)
  for k in range(3):
    inside = (flat[:, k] > 0) & (flat[:, k] < 1)                   # not clipped at the percentiles
    corr = np.corrcoef(flat[inside, k], coords[inside, k])[0, 1]
    assert abs(corr) > 0.9999


def test_curves_and_evaluations_sizes(tmp_path):
  rows = [{"step": s, "loss": 1.0 / s, "lr": 1e-3, "target_feature_std": 0.4 - 0.01 * s, "steps_per_s": 3.0}
          for s in range(1, 6)]
  rows.append({"step": 5, "probe/knn/trained": 0.5, "probe/knn/random_init": 0.4, "probe/lidar/trained": 3.0})
  rows.append({"step": 5, "alarm/target_feature_std": 0.35})
  keys = plots.plot_curves(rows, str(tmp_path / "c.png"),
                           alarms=[{"metric": "loss", "step": 3, "threshold": 0.2}])
  assert sorted(keys) == ["loss", "lr", "target_feature_std"]
  assert _read(tmp_path / "c.png").shape[:2] == (plots.CURVE_H, plots.CURVE_COLUMNS * plots.CURVE_W)
  names = plots.plot_evaluations(rows, str(tmp_path / "e.png"))
  assert names == ["knn", "lidar"]
  assert _read(tmp_path / "e.png").shape[:2] == (plots.CURVE_H, plots.CURVE_COLUMNS * plots.CURVE_W)
  many = [dict({"step": 1}, **{f"m{i}": float(i) for i in range(9)})]
  plots.plot_curves(many, str(tmp_path / "d.png"))
  assert _read(tmp_path / "d.png").shape[:2] == (3 * plots.CURVE_H, plots.CURVE_COLUMNS * plots.CURVE_W)


# --- the world model's planning pictures ---------------------------------------------------------------------
def _episode():
  """A hand-made Two Rooms episode: wall at column 32 with its door at row 30, 12 steps of 3 px along row 30
  from (10, 30) to (46, 30) through the door, goal (50, 30); the last plan asks 6 times for (3, 4)."""
  positions = np.stack([10.0 + 3.0 * np.arange(13), np.full(13, 30.0)], axis=-1)
  return positions, np.array([50.0, 30.0]), (32.0, 30.0), np.tile([3.0, 4.0], (6, 1))


def _at(canvas, point, scale=wm.EPISODE_SCALE):
  return tuple(canvas[plots.map_pixel(point, scale)])


def test_intended_path_integrates_the_clipped_scored_actions():
  positions, _, _, plan = _episode()
  # 12 steps, re-planning every 4: plans at steps 0, 4, 8; the last, at (34, 30), has 12 - 8 = 4 steps left of its
  # 6, and each (3, 4) (norm 5) is clipped to norm 2.45: (1.47, 1.96).
  path = wm.intended_path(positions, plan, replan_every=4, max_norm=2.45)
  expected = np.array([[34.0 + 1.47 * k, 30.0 + 1.96 * k] for k in range(5)])
  np.testing.assert_allclose(path, expected, atol=1e-12)
  # Re-planning every step: the last plan (step 11) has one step left.
  np.testing.assert_allclose(wm.intended_path(positions, plan, 1, 2.45), [[43.0, 30.0], [44.47, 31.96]])


def test_episode_image_draws_walls_circle_paths_and_dots():
  positions, goal, layout, plan = _episode()
  plan_path = wm.intended_path(positions, plan, 4, 2.45)
  canvas = wm.episode_image(positions, goal, layout, plan_path)
  assert canvas.shape == (65 * wm.EPISODE_SCALE, 65 * wm.EPISODE_SCALE, 3) and canvas.dtype == np.uint8
  assert _at(canvas, positions[0]) == wm.START and _at(canvas, goal) == wm.GOAL
  assert _at(canvas, positions[-1]) == wm.END
  assert _at(canvas, (20.5, 30.0)) == wm.PATH                          # on the executed path, between steps 3 and 4
  assert _at(canvas, (34.0 + 2 * 1.47, 30.0 + 2 * 1.96)) == wm.PLAN  # the plan's second intended point
  # The success circle: the goal's colour beyond its dot lies 4.5 px from the goal, all around it.
  rows, cols = np.nonzero((canvas == wm.GOAL).all(axis=-1))
  dx, dy = cols + 0.5 - (goal[0] + 0.5) * wm.EPISODE_SCALE, rows + 0.5 - (goal[1] + 0.5) * wm.EPISODE_SCALE
  ring = np.hypot(dx, dy) > 2 * wm.EPISODE_SCALE
  assert np.all(np.abs(np.hypot(dx, dy)[ring] - 4.5 * wm.EPISODE_SCALE) <= 1.5)
  assert len(np.unique(np.floor(np.arctan2(dy[ring], dx[ring]) / (np.pi / 6)))) == 12
  assert _at(canvas, (32.0, 10.0)) == wm.WALL and _at(canvas, (33.0, 20.0)) == wm.WALL  # the wall, off the door
  assert _at(canvas, (32.0, 27.0)) == wm.FREE                         # the door (rows 26-34), off the path
  assert _at(canvas, (4.0, 40.0)) == wm.WALL and _at(canvas, (1.0, 1.0)) == wm.OUTSIDE  # border, beyond it
  no_plan = wm.episode_image(positions, goal, layout)
  assert _at(no_plan, (34.0 + 2 * 1.47, 30.0 + 2 * 1.96)) == wm.FREE


def _planned(success, with_plan=True):
  """run_planning's output for len(success) copies of the hand-made episode."""
  positions, goal, layout, plan = _episode()
  n = len(success)
  out = {"positions": np.stack([positions] * n), "goals": np.stack([goal] * n), "wall_x": np.full(n, layout[0]),
         "door_y": np.full(n, layout[1]), "success": np.asarray(success), "steps_to_goal": np.full(n, 12),
         "final_distance": np.full(n, 4.0), "kind": "mppi"}
  if with_plan:
    out["last_plan"] = np.stack([plan] * n)
  return out


def test_episode_picture_png_panels_and_selection(tmp_path):
  planner = load_config("world_model", "tiny").planner
  planner.replan_every = 4
  # Failures 0, 2, 3 and successes 1, 4: count 4 draws the first two successes and the first two failures.
  assert list(wm.episodes_to_draw([False, True, False, False, True], 4)) == [0, 1, 2, 4]
  assert list(wm.episodes_to_draw([True] * 5 + [False], 4)) == [0, 1, 2, 5]  # 3 successes: one failure only
  assert list(wm.episodes_to_draw([False, True], 6)) == [0, 1]
  path = str(tmp_path / "episodes.png")
  drawn = wm.write_episodes(_planned([False, True, False, False, True]), planner, path, count=4)
  assert list(drawn) == [0, 1, 2, 4]
  pixels = _read(path)
  side = 65 * wm.EPISODE_SCALE
  # Two rows (3 panels, then 1), each a title strip and the unresampled map.
  assert pixels.shape[0] == plots.HEADER + 2 * (plots.TITLE + side + plots.PAD) + plots.PAD
  assert pixels.shape[1] >= plots.PAD + 3 * (side + plots.PAD)
  positions, goal, _, _ = _episode()
  for k in range(4):
    row, col = divmod(k, 3)
    top = plots.HEADER + row * (plots.TITLE + side + plots.PAD) + plots.TITLE
    left = plots.PAD + col * (side + plots.PAD)
    for point, colour in ((positions[0], wm.START), (goal, wm.GOAL), ((34 + 2 * 1.47, 30 + 2 * 1.96), wm.PLAN)):
      r, c = plots.map_pixel(point, wm.EPISODE_SCALE)
      assert tuple(pixels[top + r, left + c]) == colour, (k, colour)
  # Without the last plan (planning.EpisodeResult without last_plan) the picture draws none, nowhere.
  wm.write_episodes(_planned([True, False], with_plan=False), planner, path)
  assert not (_read(path) == wm.PLAN).all(axis=-1).any()


def test_plan_success_picture_from_metrics_jsonl(tmp_path):
  path = tmp_path / "metrics.jsonl"
  written = [{"step": s, "loss": 1.0 / s} for s in range(1, 31)]
  evaluations = {10: (0.25, 20.0), 20: (0.5, 9.5), 30: (0.75, 4.0)}
  written += [{"step": s, "probe/plan_success/trained": a, "probe/plan_final_distance/trained": d,
               "probe/plan_steps/trained": 150.0} for s, (a, d) in evaluations.items()]
  written.append({"step": 30, "probe/plan_success/random_init": 0.0, "probe/plan_final_distance/random_init": 30.0})
  path.write_text("".join(json.dumps(r) + "\n" for r in written) + '{"step": 31, "probe/pl', encoding="utf-8")
  series = plots.plot_planning(metrics.read_jsonl(str(path)), str(tmp_path / "p.png"))
  assert series == {"plan_success/trained": [[10, 0.25], [20, 0.5], [30, 0.75]],
                    "plan_final_distance/trained": [[10, 20.0], [20, 9.5], [30, 4.0]],
                    "plan_success/random_init": [[30, 0.0]], "plan_final_distance/random_init": [[30, 30.0]]}
  assert _read(tmp_path / "p.png").shape[:2] == (plots.CURVE_H, 2 * plots.CURVE_W)
  assert plots.plot_planning(written[:30], str(tmp_path / "none.png")) == {}
  assert not (tmp_path / "none.png").exists()
