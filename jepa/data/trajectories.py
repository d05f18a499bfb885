r"""EB-JEPA's Two Rooms trajectory generator as a deterministic random-access source (NumPy, ~1 ms / example).

Every example is one random 91-step trajectory of the point agent of :mod:`jepa.envs.two_rooms`, of which a
random window of 17 frames is returned. Example ``i`` of a source with seed ``s`` is a pure function of
(s, i): its generator is ``np.random.default_rng([s, i])`` (a SeedSequence over both), so any worker can
produce any example in any order, as grain's random-access sources require.

Generative model (per example, in this order of draws):

1. Layout: wall column ~ U{20..44}, door row ~ U{10..54} (or the fixed (32, 18)).
2. With probability 0.35 the trajectory is *door-steered* (step 4), else *free* (step 3).
3. Free: the start is uniform on [4, 60]^2 (moved to a uniform column of the left or right room if it fell in
   the wall outside the door); the headings follow a von Mises random walk started at theta_0 ~ U[0, 2 pi),

     theta_t = theta_{t-1} + eps_t,   eps_t ~ VonMises(0, kappa = 5),

   and the step lengths are i.i.d. truncated normals, l_t ~ N(1, 0.4^2) restricted to [0.2, 1.8]; the
   commanded action is a_t = l_t (cos theta_t, sin theta_t), t = 0..89.
4. Door-steered: a door point q (x ~ U[wall_x - 1, wall_x + 1], y ~ N(door_y, 1.4^2) truncated to the door
   rows), a crossing step k ~ U{1..90}, and two such walks, one with theta_0 = pi + U(-pi/4, pi/4) (pointing
   left) and one pointing the opposite way. Reversed and negated, the first k steps of the left walk lead
   from the left room to q, and the right walk continues into the right room; with probability 1/2 the whole
   path is reversed (right to left). The start is q minus the actions taken before the door, clipped to
   [4.01, 59.99].
5. Physics (wall_dataset.py `generate_transitions`): a move that crosses or touches a border line, crosses a
   door edge inside the wall's thickness, or crosses a wall face outside the door leaves the agent where it
   was. The stored action is the commanded one either way.
6. Window: start w ~ U{0..73} (reference: randint(0, n_steps - sample_length)); the example holds positions
   p_w..p_{w+16} and actions a_w..a_{w+15}, action t moving frame t to frame t + 1.

Constants: see :class:`GeneratorConfig` (and :class:`jepa.envs.two_rooms.EnvConfig` for the geometry). Source:
facebookresearch/eb_jepa @ 966e61e, ``eb_jepa/datasets/two_rooms/{dot_dataset.py, wall_dataset.py, utils.py,
data_config.yaml}``; read, not copied. Choices where this module and the reference differ, and why:

* 17 frames and 16 actions per window (the reference returns 17 actions; its last one leads out of the
  window, so it carries nothing a model can be trained on).
* When a door-steered path is reversed, the reference places the start one action too early (it sums
  ``n_steps - step`` actions where ``n_steps - 1 - step`` lie before the door), so the reversed path misses
  its door point by one step; here both directions pass through q.
* Frames are rendered straight from the positions as float32 in [0, 1] (the exact Gaussian, the walls as 1),
  identical to :func:`jepa.envs.two_rooms.render`, or, with ``frames_dtype='uint8'``, as the reference stores
  them, floor(255 v). The reference then min-max normalises and standardises each frame; that is
  :func:`jepa.envs.two_rooms.normalize_observation`, left to the model's input pipeline so that training
  frames and planning observations go through the same code. Positions are raw pixels (the reference
  standardises them too).
* Kept from the reference: a door-steered start, computed back from q and clipped to the borders, can land
  inside the wall band outside the door (~2% of steered paths); moves that stay inside the band are not blocked,
  and the agent is stuck in it until it leaves through a face at the door rows.
* The door-steered choice is a per-example Bernoulli(0.35); the reference draws it per batch of one, which is
  the same thing.

Video clips for an encoder (``data.source='two_rooms_video'``, :class:`TwoRoomsClips`): a V-JEPA-style video
encoder reads 3-channel frames whose side is a multiple of its patch size, so :func:`as_rgb_clip` quantises a
window as the reference stores it (floor(255 v)), keeps rows and columns 0..63 and appends a zero third channel.
Row and column 64 lie outside the border wall (x, y = 60): in the walls channel they repeat row and column 63
(the border lines and the inner wall run over the whole image), and the dot channel holds only the tail of
the Gaussian more than 4 px from the agent, at most 2 / 255 after quantisation, so the crop loses nothing
about the layout and next to nothing about the agent. The third channel is constant, so the encoder's channel
statistics (mean 0, std 1 for it) leave it 0.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from jepa.data import video
from jepa.envs.two_rooms import EnvConfig
from jepa.errors import ConfigError

# Reference window and trajectory lengths (data_config.yaml sample_length, n_steps).
WINDOW = 17
LENGTH = 91
CLIP_SIZE = 64  # The side of an encoder clip frame (as_rgb_clip).


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """Trajectory statistics (sources in the comments; file names under eb_jepa/datasets/two_rooms/)."""
  step_mean: float = 1.0  # data_config.yaml action_step_mean.
  step_std: float = 0.4  # data_config.yaml action_step_std (the README's "uniform" is wrong).
  step_min: float = 0.2  # data_config.yaml action_lower_bd.
  step_max: float = 1.8  # data_config.yaml action_upper_bd.
  heading_kappa: float = 5.0  # dot_dataset.py: VonMises(concentration = 1 / action_angle_noise = 1 / 0.2).
  cross_wall_rate: float = 0.35  # data_config.yaml cross_wall_rate.
  door_y_std: float = 1.4  # utils.sample_truncated_norm's default std, used for the door crossing row.
  door_heading_spread: float = math.pi / 2  # wall_dataset.py: pi + (U - 0.5) * pi / 2.
  start_margin: float = 0.01  # wall_dataset.py: door-steered starts clipped to [4 + 0.01, 60 - 0.01].


def truncated_normal(rng: np.random.Generator, size: int, mean: float, std: float, lo: float, hi: float):
  """`size` draws of N(mean, std^2) conditioned on [lo, hi], by rejection (exact; ~5% rejected at +-2 sd)."""
  out = np.empty(0)
  while out.size < size:
    z = rng.normal(mean, std, 2 * size + 8)
    out = np.concatenate([out, z[(z >= lo) & (z <= hi)]])
  return out[:size]


def heading_walk_actions(rng: np.random.Generator, num: int, theta0: float, cfg: GeneratorConfig):
  """[num, 2] actions l_t (cos theta_t, sin theta_t): theta_0 given, von Mises increments, truncated-normal l_t."""
  increments = rng.vonmises(0.0, cfg.heading_kappa, num - 1)
  theta = theta0 + np.concatenate([[0.0], np.cumsum(increments)])
  lengths = truncated_normal(rng, num, cfg.step_mean, cfg.step_std, cfg.step_min, cfg.step_max)
  return lengths[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=-1)


def _sign(v: float) -> float:
  return (v > 0) - (v < 0)


def _segments_intersect(a0, a1, b0, b1) -> bool:
  """Strict intersection of segments a0-a1 and b0-b1 (each one's ends on opposite sides of the other)."""
  def cross(u, v):
    return u[0] * v[1] - u[1] * v[0]
  da, db = (a1[0] - a0[0], a1[1] - a0[1]), (b1[0] - b0[0], b1[1] - b0[1])
  side_b = cross(da, (b0[0] - a0[0], b0[1] - a0[1])) * cross(da, (b1[0] - a0[0], b1[1] - a0[1]))
  side_a = cross(db, (a0[0] - b0[0], a0[1] - b0[1])) * cross(db, (a1[0] - b0[0], a1[1] - b0[1]))
  return side_b < 0 and side_a < 0


def move_is_blocked(p1, p2, wall_x: float, door_y: float, env_cfg: EnvConfig = EnvConfig()) -> bool:
  """The dataset's collision test for a move p1 -> p2 (wall_dataset.py `generate_transitions`).

  Blocked if the move crosses or touches a border line (x or y = 4 or 60), crosses a door edge
  (y = door_y +- 4 within the wall's columns) in the direction leading into the wall, or enters, leaves or
  jumps over the wall band [wall_x - 1, wall_x + 1] through a face at a row outside the door.
  """
  (x1, y1), (x2, y2) = p1, p2
  lo, hi = env_cfg.border_lo, env_cfg.border_hi
  for c1, c2 in ((x1, x2), (y1, y2)):
    for line in (lo, hi):
      if _sign(c1 - line) * _sign(c2 - line) <= 0:
        return True
  left, right = wall_x - env_cfg.half_wall, wall_x + env_cfg.half_wall
  top, bot = door_y + env_cfg.door_space, door_y - env_cfg.door_space
  dx, dy = x2 - x1, y2 - y1
  if dy > 0 and _segments_intersect(p1, p2, (left, top), (right, top)):
    return True
  if dy < 0 and _segments_intersect(p1, p2, (left, bot), (right, bot)):
    return True
  in1, in2 = left <= x1 <= right, left <= x2 <= right
  jumps = ((x1 <= right) != (x2 <= right)) and ((x1 >= left) != (x2 >= left))
  if in1 != in2 or jumps:
    for face in (left, right):
      if _sign(face - x1) * _sign(face - x2) < 0:  # Strictly crosses this face: it must do so in the door.
        y = y1 + (face - x1) * dy / dx
        if not bot <= y <= top:
          return True
  return False


def simulate(start, actions, wall_x: float, door_y: float, env_cfg: EnvConfig = EnvConfig()):
  """[T + 1, 2] positions from `start` under `actions` [T, 2], blocked moves leaving the agent in place."""
  positions = np.empty((len(actions) + 1, 2))
  x, y = float(start[0]), float(start[1])
  positions[0] = x, y
  for t, (ax, ay) in enumerate(actions.tolist()):
    if not move_is_blocked((x, y), (x + ax, y + ay), wall_x, door_y, env_cfg):
      x, y = x + ax, y + ay
    positions[t + 1] = x, y
  return positions


def render_frames(positions, wall_x: float, door_y: float, env_cfg: EnvConfig = EnvConfig()):
  """float32 [T, H, W, 2]: the NumPy twin of :func:`jepa.envs.two_rooms.render` for a batch of positions."""
  n = env_cfg.img_size
  coords = np.arange(n, dtype=np.float32)
  pos = np.asarray(positions, np.float32)
  sq = (coords[None, None, :] - pos[:, 0, None, None]) ** 2 + (coords[None, :, None] - pos[:, 1, None, None]) ** 2
  dot = np.exp(-sq / np.float32(2 * env_cfg.dot_std ** 2))
  rows, cols = coords[:, None], coords[None, :]
  in_wall = np.abs(cols - wall_x) <= env_cfg.half_wall
  in_door = np.abs(rows - door_y) <= env_cfg.door_space
  border = (rows == env_cfg.border_lo) | (rows == env_cfg.border_hi) | (cols == env_cfg.border_lo) | (
      cols == env_cfg.border_hi)
  walls = ((in_wall & ~in_door) | border).astype(np.float32)
  return np.stack([dot, np.broadcast_to(walls, dot.shape)], axis=-1)


class TwoRoomsTrajectories:
  """Random-access source of Two Rooms training windows, deterministic per (seed, index).

  ``src[i]`` is a dict of NumPy arrays:

  * ``'frames'``: [window, 65, 65, 2] float32 in [0, 1] (or uint8 floor(255 v), see ``frames_dtype``);
  * ``'actions'``: [window - 1, 2] float32, action t moves frame t to frame t + 1 (commanded; a blocked move
    leaves the agent in place);
  * ``'positions'``: [window, 2] float32 agent (x, y) in pixels;
  * ``'wall_x'``, ``'door_y'``: float32 scalars, the layout; ``'door_steered'``: bool scalar.

  Parameters
  ----------
  seed : int >= 0. Examples of different seeds are independent.
  num_examples : int, the length of the source (the reference draws 100,000 fresh trajectories per epoch).
  window : frames per example (17, data_config.yaml sample_length).
  length : positions per trajectory (91, data_config.yaml n_steps); the window starts in [0, length - window).
  env_cfg : geometry, :class:`jepa.envs.two_rooms.EnvConfig`.
  fixed_wall : overrides ``env_cfg.fixed_wall`` when True (the wall at 32, the door at 18).
  gen_cfg : :class:`GeneratorConfig`.
  frames_dtype : 'float32' (default) or 'uint8'.
  """

  def __init__(self, seed: int, num_examples: int, window: int = WINDOW, length: int = LENGTH,
               env_cfg: EnvConfig = EnvConfig(), fixed_wall: bool = False, gen_cfg: GeneratorConfig = GeneratorConfig(),
               frames_dtype: str = "float32"):
    if int(seed) < 0:
      raise ConfigError(f"TwoRoomsTrajectories seed={seed} is negative: use a seed >= 0")
    if int(num_examples) < 0:
      raise ConfigError(f"TwoRoomsTrajectories num_examples={num_examples} is negative: use >= 0")
    if window < 2 or length <= window:
      raise ConfigError(f"TwoRoomsTrajectories window={window}, length={length}: need 2 <= window < length")
    if frames_dtype not in ("float32", "uint8"):
      raise ConfigError(f"TwoRoomsTrajectories frames_dtype={frames_dtype!r}: use 'float32' or 'uint8'")
    self.seed, self.num_examples = int(seed), int(num_examples)
    self.window, self.length = int(window), int(length)
    self.env_cfg = dataclasses.replace(env_cfg, fixed_wall=True) if fixed_wall else env_cfg
    self.gen_cfg = gen_cfg
    self.frames_dtype = frames_dtype

  def __len__(self) -> int:
    return self.num_examples

  def __repr__(self) -> str:
    return (f"TwoRoomsTrajectories(seed={self.seed}, num_examples={self.num_examples}, window={self.window}, "
            f"length={self.length}, fixed_wall={self.env_cfg.fixed_wall})")

  def _check_index(self, index) -> int:
    index = int(index)
    if not 0 <= index < self.num_examples:
      raise IndexError(f"TwoRoomsTrajectories index {index} is out of range [0, {self.num_examples})")
    return index

  def _layout(self, rng: np.random.Generator):
    cfg = self.env_cfg
    if cfg.fixed_wall:
      return float(cfg.fixed_wall_x), float(cfg.fixed_door_y)
    wall_x = rng.integers(cfg.wall_padding, cfg.img_size - cfg.wall_padding)  # {20..44}
    door_y = rng.integers(cfg.door_padding, cfg.img_size - cfg.door_padding)  # {10..54}
    return float(wall_x), float(door_y)

  def _free_start(self, rng: np.random.Generator, wall_x: float, door_y: float):
    """Uniform on [4, 60]^2, moved to a room if it landed in the wall outside the door (dot_dataset.py)."""
    cfg = self.env_cfg
    lo, hi = cfg.border_lo, cfg.border_hi
    x, y = rng.uniform(lo, hi, 2)
    left, right = wall_x - cfg.half_wall, wall_x + cfg.half_wall
    if left <= x <= right and abs(y - door_y) > cfg.door_space:
      x = rng.uniform(lo, left) if rng.random() < 0.5 else rng.uniform(right, hi)
    return np.array([x, y])

  def _door_steered(self, rng: np.random.Generator, wall_x: float, door_y: float):
    """(start [2], actions [length - 1, 2]) of a path through a door point q (step 4 of the module doc)."""
    cfg, g = self.env_cfg, self.gen_cfg
    num = self.length - 1
    q = np.array([rng.uniform(wall_x - cfg.half_wall, wall_x + cfg.half_wall),
                  truncated_normal(rng, 1, door_y, g.door_y_std, door_y - cfg.door_space, door_y + cfg.door_space)[0]])
    k = int(rng.integers(1, self.length))  # The door is reached after k actions: k in {1..length-1}.
    theta_left = math.pi + (rng.random() - 0.5) * g.door_heading_spread
    left_walk = heading_walk_actions(rng, num, theta_left, g)
    right_walk = heading_walk_actions(rng, num, theta_left - math.pi, g)  # The reference's -(cos, sin).
    actions = np.concatenate([-left_walk[:k][::-1], right_walk[1:self.length - k]])  # num actions, q after k.
    before_door = k
    if rng.random() < 0.5:  # Travel right to left instead.
      actions, before_door = -actions[::-1], num - k
    start = q - actions[:before_door].sum(axis=0)
    start = np.clip(start, cfg.border_lo + g.start_margin, cfg.border_hi - g.start_margin)
    return start, actions

  def trajectory(self, index) -> dict:
    """The whole trajectory behind example `index`: positions [length, 2] (float64), actions [length - 1, 2],
    'wall_x', 'door_y', 'door_steered' and 'window_start' (the window `__getitem__` returns)."""
    index = self._check_index(index)
    rng = np.random.default_rng([self.seed, index])
    wall_x, door_y = self._layout(rng)
    steered = bool(rng.random() < self.gen_cfg.cross_wall_rate)
    if steered:
      start, actions = self._door_steered(rng, wall_x, door_y)
    else:
      start = self._free_start(rng, wall_x, door_y)
      actions = heading_walk_actions(rng, self.length - 1, rng.uniform(0.0, 2 * math.pi), self.gen_cfg)
    positions = simulate(start, actions, wall_x, door_y, self.env_cfg)
    window_start = int(rng.integers(0, self.length - self.window))
    return {"positions": positions, "actions": actions, "wall_x": wall_x, "door_y": door_y,
            "door_steered": steered, "window_start": window_start}

  def __getitem__(self, index) -> dict:
    traj = self.trajectory(index)
    w, n = traj["window_start"], self.window
    positions = traj["positions"][w:w + n].astype(np.float32)
    frames = render_frames(positions, traj["wall_x"], traj["door_y"], self.env_cfg)
    if self.frames_dtype == "uint8":
      frames = np.floor(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
    return {
        "frames": frames,
        "actions": traj["actions"][w:w + n - 1].astype(np.float32),
        "positions": positions,
        "wall_x": np.float32(traj["wall_x"]),
        "door_y": np.float32(traj["door_y"]),
        "door_steered": np.bool_(traj["door_steered"]),
    }


def as_rgb_clip(frames, xp=np):
  """Frames [..., 65, 65, 2] in [0, 1] -> [..., 64, 64, 3] of values floor(255 v) in 0..255 (module docstring).

  `xp` is numpy (the data source, which stores uint8) or jax.numpy (jepa/methods/vjepa2_ac.py, which encodes
  planning observations the same way), so that both sides run this one definition.
  """
  q = xp.floor(xp.clip(frames, 0.0, 1.0) * 255.0)[..., :CLIP_SIZE, :CLIP_SIZE, :]
  return xp.concatenate([q, xp.zeros(q.shape[:-1] + (1,), q.dtype)], axis=-1)


class TwoRoomsClips:
  """Two Rooms windows as video examples for an encoder (``data.source='two_rooms_video'``).

  ``src[i]`` is ``{'video': ArrayClipReader of uint8 [17, 64, 64, 3], 'label': room}``: window ``i`` of
  :class:`TwoRoomsTrajectories` (same seed, same index) through :func:`as_rgb_clip`; the reader takes
  ``num_frames`` frames ``frame_step`` apart (a random window in training, the central one in evaluation,
  :func:`jepa.data.video.clip_indices`). The label is the agent's room at the window's middle frame (0 left
  of the wall's centre column, 1 right of it), a 2-class target for the encoder's probe.
  """

  num_classes = 2

  def __init__(self, seed: int, num_examples: int, num_frames: int, frame_step: int):
    self.windows = TwoRoomsTrajectories(seed=seed, num_examples=num_examples)
    self.num_frames, self.frame_step = int(num_frames), int(frame_step)
    self.name = "two_rooms_video"

  def __len__(self) -> int:
    return len(self.windows)

  def __repr__(self) -> str:
    return f"TwoRoomsClips({self.windows!r}, num_frames={self.num_frames}, frame_step={self.frame_step})"

  def __getitem__(self, index) -> dict:
    window = self.windows[index]
    clip = as_rgb_clip(window["frames"]).astype(np.uint8)
    room = int(window["positions"][WINDOW // 2, 0] > window["wall_x"])
    return {"video": video.ArrayClipReader(clip, self.num_frames, self.frame_step), "label": room}
