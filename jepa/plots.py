r"""Pictures of a run, drawn with matplotlib's Agg backend (no display): panels of images with patch masks,
PCA of patch features as RGB, and metric curves from metrics.jsonl.

Panels (masks, PCA) are composed pixel-exactly in NumPy and placed unresampled on the figure, so a PNG can be
read back and checked cell by cell:

  - every panel image [h, w, 3] in [0, 1] is enlarged `scale` times by pixel repetition (no interpolation);
  - a panel with `cell` > 0 has a grid of (h / cell) x (w / cell) patches; patch (r, c) has the row-major
    index r * (w / cell) + c and covers canvas pixels [y0 + r * S, y0 + (r + 1) * S) x [x0 + c * S, ...),
    S = cell * scale, where (x0, y0) is the panel's corner (`compose` returns it);
  - each layer (e.g. 'context', 'target 1') lists the patch indices it holds; its patches get a solid border
    of `border(S)` pixels in the layer's colour and a 40% tint inside. Layers are drawn in order, so a patch
    in several layers shows the last one. 'context' is always blue; other names get `PALETTE` colours in
    order of first appearance in the figure, so one name has one colour in every panel;
  - in a panel with layers, patches in no layer (neither seen nor predicted) are washed out to light grey.

Layout: rows of panels start at y = HEADER; each row has a TITLE strip, then its panels side by side from
x = PAD, each in a slot as wide as the larger of the panel and its title (`PANEL_CHAR` pixels per character),
with PAD pixels between slots, then PAD pixels. The canvas is as wide as the widest row plus PAD, and
at least as wide as the legend (`swatch_width` per layer name and per extra `legend` entry, after PAD) and the
title (`TITLE_CHAR` pixels per character, after PAD). Titles and the legend are drawn as text in strips that
hold no panel pixels.

Maps (`draw_path`, `draw_disk`, `draw_circle`) draw points of a map of cells onto its image enlarged `scale`
times: the point (x, y), x the column and y the row in cells with cell centres at integers, falls on the
canvas pixel (row, col) = (floor((y + 0.5) scale), floor((x + 0.5) scale)) (`map_pixel`), so a test can look a
drawn point up.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

CONTEXT_COLOUR = (31, 119, 180)
PALETTE = ((255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (227, 119, 194), (188, 189, 34),
           (23, 190, 207), (140, 86, 75), (255, 215, 0), (0, 0, 0))
PAD = 8          # pixels between panels and around the canvas
TITLE = 14       # pixel height of the title strip above each row of panels
HEADER = 30      # pixel height of the strip at the top (figure title, then the legend)
TITLE_CHAR = 6   # pixels reserved per character of the figure title
PANEL_CHAR = 5   # pixels reserved per character of a panel title
DPI = 100
CURVE_COLUMNS, CURVE_W, CURVE_H = 4, 300, 240   # metric curves: 4 subplots per row, 300 x 240 px each


@dataclasses.dataclass
class Panel:
  """One image of a picture.

  Attributes:
    image: [h, w, 3] (or [h, w]) floats in [0, 1].
    title: text above the panel.
    cell: image pixels per patch side; 0 = no patch grid (layers are then not allowed).
    layers: ((name, patch indices), ...), drawn in order; indices are row-major over the patch grid.
  """
  image: np.ndarray
  title: str = ""
  cell: int = 0
  layers: tuple = ()


def border(cell_px):
  """Border thickness, in pixels, of a patch of cell_px pixels."""
  return max(1, cell_px // 8)


def layer_colours(rows: Sequence[Sequence[Panel]]):
  """{layer name: RGB uint8 triple}: 'context' blue, the others PALETTE colours by first appearance."""
  colours, k = {}, 0
  for row in rows:
    for panel in row:
      for name, _ in panel.layers:
        if name in colours:
          continue
        if name == "context":
          colours[name] = CONTEXT_COLOUR
        else:
          colours[name] = PALETTE[k % len(PALETTE)]
          k += 1
  return colours


def _to_uint8(image):
  image = np.asarray(image, np.float32)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def draw_panel(panel: Panel, scale: int, colours) -> np.ndarray:
  """The panel's pixels [h * scale, w * scale, 3] uint8 (see the module docstring)."""
  img = np.repeat(np.repeat(_to_uint8(panel.image), scale, axis=0), scale, axis=1).astype(np.float32)
  if not panel.layers:
    return img.astype(np.uint8)
  if panel.cell <= 0:
    raise ValueError(f"panel {panel.title!r} has layers but no patch grid (cell={panel.cell})")
  h, w = panel.image.shape[:2]
  gh, gw = h // panel.cell, w // panel.cell
  s = panel.cell * scale
  owner = np.full(gh * gw, -1)
  for k, (_, idx) in enumerate(panel.layers):
    idx = np.asarray(idx, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= gh * gw):
      raise ValueError(f"panel {panel.title!r}: patch index out of range for a {gh} x {gw} grid")
    owner[idx] = k
  b = border(s)
  for cell_index in range(gh * gw):
    r, c = divmod(cell_index, gw)
    block = img[r * s:(r + 1) * s, c * s:(c + 1) * s]
    k = owner[cell_index]
    if k < 0:
      block[:] = 0.3 * block + 0.7 * 220.0
      continue
    colour = np.asarray(colours[panel.layers[k][0]], np.float32)
    block[:] = 0.6 * block + 0.4 * colour
    block[:b], block[-b:], block[:, :b], block[:, -b:] = colour, colour, colour, colour
  return np.round(img).astype(np.uint8)


def swatch_width(name):
  """Pixels the legend entry of a layer name takes."""
  return 7 * len(name) + 20


def compose(rows: Sequence[Sequence[Panel]], scale: int, title: str = "", legend=()):
  """(canvas [H, W, 3] uint8, placements [(row, col, x0, y0, panel)], colours) of rows of panels.

  `legend` adds ((name, RGB), ...) entries after the layers' (for what a panel draws itself, e.g. a path)."""
  colours = {**layer_colours(rows), **dict(legend)}
  drawn = [[draw_panel(p, scale, colours) for p in row] for row in rows]
  slots = [[max(d.shape[1], PANEL_CHAR * len(p.title)) for p, d in zip(row, pixels)]
           for row, pixels in zip(rows, drawn)]
  width = max(PAD + sum(s + PAD for s in row) for row in slots) if drawn else 2 * PAD
  width = max(width, PAD + sum(swatch_width(name) for name in colours), PAD + TITLE_CHAR * len(title))
  height = HEADER + sum(TITLE + max(d.shape[0] for d in row) + PAD for row in drawn if row) + PAD
  canvas = np.full((height, width, 3), 255, np.uint8)
  placements = []
  y = HEADER
  for i, (row, pixels, widths) in enumerate(zip(rows, drawn, slots)):
    if not row:
      continue
    x = PAD
    for j, (panel, d, slot) in enumerate(zip(row, pixels, widths)):
      canvas[y + TITLE:y + TITLE + d.shape[0], x:x + d.shape[1]] = d
      placements.append((i, j, x, y + TITLE, panel))
      x += slot + PAD
    y += TITLE + max(d.shape[0] for d in pixels) + PAD
  return canvas, placements, colours


def _figure(width, height):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg", force=True)
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt, plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)


def save_panels(rows: Sequence[Sequence[Panel]], path: str, *, title: str = "", scale: int = 4, legend=()):
  """Writes the composed panels to `path` (PNG of exactly the canvas size); returns the placements."""
  canvas, placements, colours = compose(rows, scale, title, legend)
  height, width = canvas.shape[:2]
  # Legend swatches on the header's second line (pixels), their names as text beside them.
  x = PAD
  swatches = []
  for name, colour in colours.items():
    canvas[17:27, x:x + 10] = colour
    swatches.append((x + 13, name))
    x += swatch_width(name)
  plt, fig = _figure(width, height)
  fig.figimage(canvas, xo=0, yo=0, origin="upper", resize=False)
  fig.text(PAD / width, 1 - 2 / height, title, fontsize=8, va="top", ha="left")
  for tx, name in swatches:
    fig.text(tx / width, 1 - 16 / height, name, fontsize=7, va="top", ha="left")
  for _, _, x0, y0, panel in placements:
    if panel.title:
      fig.text(x0 / width, 1 - (y0 - TITLE + 2) / height, panel.title, fontsize=6.5, va="top", ha="left")
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  return placements


def pca_rgb(tokens, *, eps=1e-8):
  """Patch tokens [..., D] -> [..., 3] in [0, 1]: the first 3 principal components as R, G, B.

  The components are those of all given tokens together (centred; SVD), each scaled to [0, 1] between its
  1st and 99th percentile over the tokens and clipped, so the colours are comparable across the images.
  """
  tokens = np.asarray(tokens, np.float64)
  flat = tokens.reshape(-1, tokens.shape[-1])
  flat = flat - flat.mean(0)
  _, _, vt = np.linalg.svd(flat, full_matrices=False)
  k = min(3, vt.shape[0])
  proj = flat @ vt[:k].T
  if k < 3:
    proj = np.concatenate([proj, np.zeros((len(proj), 3 - k))], axis=1)
  lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
  rgb = np.clip((proj - lo) / np.maximum(hi - lo, eps), 0.0, 1.0)
  return rgb.reshape(*tokens.shape[:-1], 3)


# --- maps ---------------------------------------------------------------------------------------------------
def map_pixel(point, scale):
  """The canvas pixel (row, col) of the map point (x, y) (module docstring)."""
  x, y = point
  return int(math.floor((y + 0.5) * scale)), int(math.floor((x + 0.5) * scale))


def _paint(canvas, points, colour, scale, width):
  """Paints a `width`-pixel square at the canvas pixel of each map point [M, 2] (clipped to the canvas)."""
  points = np.asarray(points, np.float64).reshape(-1, 2)
  cols = np.floor((points[:, 0] + 0.5) * scale).astype(np.int64) - (width - 1) // 2
  rows = np.floor((points[:, 1] + 0.5) * scale).astype(np.int64) - (width - 1) // 2
  h, w = canvas.shape[:2]
  for dr in range(width):
    for dc in range(width):
      r, c = rows + dr, cols + dc
      inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
      canvas[r[inside], c[inside]] = colour


def draw_path(canvas, points, colour, scale, *, width=2):
  """Draws the polyline through the map points [K, 2] (x, y) on `canvas` [H, W, 3] in place, sampled every
  half canvas pixel along each segment (a single point is one square)."""
  points = np.asarray(points, np.float64).reshape(-1, 2)
  samples = [points[:1]]
  for a, b in zip(points[:-1], points[1:]):
    n = max(1, int(math.ceil(2 * scale * np.linalg.norm(b - a))))
    samples.append(a + (b - a) * (np.arange(1, n + 1) / n)[:, None])
  _paint(canvas, np.concatenate(samples), colour, scale, width)


def draw_disk(canvas, centre, radius, colour, scale):
  """Fills the canvas pixels whose centres lie within `radius` map cells of `centre`, and the centre's own."""
  h, w = canvas.shape[:2]
  u, v = (np.asarray(centre, np.float64) + 0.5) * scale
  rows, cols = np.mgrid[0:h, 0:w]
  canvas[(cols + 0.5 - u) ** 2 + (rows + 0.5 - v) ** 2 <= (radius * scale) ** 2] = colour
  _paint(canvas, [centre], colour, scale, 1)


def draw_circle(canvas, centre, radius, colour, scale, *, width=1):
  """Draws the circle of `radius` map cells around `centre`, sampled every half canvas pixel."""
  n = max(8, int(math.ceil(4 * math.pi * radius * scale)))
  angles = 2 * math.pi * np.arange(n) / n
  centre = np.asarray(centre, np.float64)
  _paint(canvas, centre + radius * np.stack([np.cos(angles), np.sin(angles)], -1), colour, scale, width)


# --- curves -------------------------------------------------------------------------------------------------
_SKIP = ("steps_per_s",)  # img_per_s says the same


def _series(rows, key):
  pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
  return np.asarray(pts, np.float64).reshape(-1, 2)


def _grid_figure(n):
  cols = CURVE_COLUMNS
  nrows = max(1, math.ceil(n / cols))
  plt, fig = _figure(cols * CURVE_W, nrows * CURVE_H)
  return plt, fig, [fig.add_subplot(nrows, cols, i + 1) for i in range(n)]


def plot_curves(rows, path, *, alarms=()):
  """Training metrics (rows without probe/ or alarm/ keys) against the step, one subplot each.

  The PNG is CURVE_COLUMNS * CURVE_W pixels wide and CURVE_H per row of subplots. Alarms are drawn as red
  dashed lines on their metric. Returns the plotted keys.
  """
  train_rows = [r for r in rows if not any(k.startswith(("probe/", "alarm/")) for k in r)]
  keys = []
  for r in train_rows:
    keys += [k for k, v in r.items() if k != "step" and k not in keys and k not in _SKIP
             and isinstance(v, (int, float))]
  keys.sort(key=lambda k: (k != "loss", k))
  if not keys:
    return []
  plt, fig, axes = _grid_figure(len(keys))
  for ax, key in zip(axes, keys):
    pts = _series(train_rows, key)
    ax.plot(pts[:, 0], pts[:, 1], marker="." if len(pts) < 30 else None, lw=1.2)
    for a in alarms:
      if a["metric"] == key:
        ax.axvline(a["step"], color="red", ls="--", lw=1)
        ax.axhline(a["threshold"], color="red", ls=":", lw=0.8)
    ax.set_title(key, fontsize=9)
    ax.tick_params(labelsize=7)
    if key == "loss" and len(pts) and np.all(pts[:, 1] > 0):
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  return keys


def plot_evaluations(rows, path):
  """Evaluator results over steps (probe/<name>/<candidate> keys), one subplot per evaluator, a line per
  candidate (trained, random_init); the same size rule as `plot_curves`. Returns the evaluator names."""
  names, candidates = [], {}
  for r in rows:
    for k in r:
      parts = k.split("/")
      if parts[0] == "probe" and len(parts) == 3:
        if parts[1] not in names:
          names.append(parts[1])
        candidates.setdefault(parts[1], [])
        if parts[2] not in candidates[parts[1]]:
          candidates[parts[1]].append(parts[2])
  if not names:
    return []
  plt, fig, axes = _grid_figure(len(names))
  for ax, name in zip(axes, names):
    for cand in candidates[name]:
      pts = _series(rows, f"probe/{name}/{cand}")
      ax.plot(pts[:, 0], pts[:, 1], marker="o", lw=1.2, label=cand)
    ax.set_title(name, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  return names


# The planning evaluator's results that `plot_planning` draws, with their subplot titles.
PLANNING = {"plan_success": "planning success rate", "plan_final_distance": "final distance to the goal"}


def plot_planning(rows, path):
  """The planning evaluator over training: plan_success and plan_final_distance (probe/<name>/<candidate> rows
  of metrics.jsonl) against the step, a subplot each (success on [0, 1]), a line per candidate; the size
  rule of `plot_curves` with 2 columns. Nothing is written without plan_success rows.

  Returns {'<name>/<candidate>': [[step, value], ...]}, what was plotted.
  """
  keys = {}  # '<name>/<candidate>' in order of first appearance (a dict as an ordered set).
  for r in rows:
    for k in r:
      parts = k.split("/")
      if len(parts) == 3 and parts[0] == "probe" and parts[1] in PLANNING:
        keys[f"{parts[1]}/{parts[2]}"] = None
  series = {key: _series(rows, f"probe/{key}").tolist() for key in keys}
  if not any(k.startswith("plan_success/") for k in series):
    return {}
  plt, fig = _figure(len(PLANNING) * CURVE_W, CURVE_H)
  for i, name in enumerate(PLANNING):
    ax = fig.add_subplot(1, len(PLANNING), i + 1)
    drawn = [(key, np.asarray(pts).reshape(-1, 2)) for key, pts in series.items() if key.startswith(f"{name}/")]
    for key, pts in drawn:
      ax.plot(pts[:, 0], pts[:, 1], marker="o", lw=1.2, label=key.split("/")[1])
    if name == "plan_success":
      ax.set_ylim(-0.03, 1.03)
    else:
      ax.set_ylim(bottom=0)
    ax.set_title(PLANNING[name], fontsize=9)
    ax.set_xlabel("training step", fontsize=8)
    ax.tick_params(labelsize=7)
    if drawn:
      ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  return series
