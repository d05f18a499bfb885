r"""Two Rooms: EB-JEPA's point-agent navigation task (from PLDM) as a pure-JAX, jit- and vmap-able environment.

The agent is a point p = (x, y) in pixel coordinates (x = column, y = row) of a 65 x 65 image. A one-pixel
border wall is drawn at x, y in {4, 60} and a vertical wall 3 px thick is centred at column `wall_x`, with a
door over the rows |y - door_y| <= 4. An observation has two channels, ``obs[y, x, c]``:

  obs[..., 0] = exp(-((x - p_x)^2 + (y - p_y)^2) / (2 sigma^2)),   sigma = 1.3      (the agent, a Gaussian dot)
  obs[..., 1] = 1 on the border and wall pixels, 0 elsewhere                        (the walls)

An action is a displacement a in R^2. `step` clips its norm to 2.45 and moves the agent to p + a unless the
segment [p, p + a] hits a wall, in which case the agent stops at the first wall it meets, pushed back off it
by |N(0, 0.5^2)| (the reference's "bounce" noise; free moves have no noise). Evaluation episodes put the
start and the goal uniformly in opposite rooms; success is ||p_T - p_goal|| < 4.5 after 200 steps.

Source: facebookresearch/eb_jepa @ 966e61e, ``eb_jepa/datasets/two_rooms/{env.py, utils.py,
data_config.yaml, normalizer.py}`` and ``examples/ac_video_jepa/cfgs/eval.yaml``. The code was read, not
copied; each constant in :class:`EnvConfig` names where it comes from. Choices where this module and the
reference differ, and why:

* Collision geometry follows ``utils.check_wall_intersect`` (door-edge hits first, then the nearest of the
  border / wall-face crossings, bounce noise, clamp, 0.3 px margin), but intersections are computed in
  parametric form x = p_x + (Y - p_y) d_x / d_y rather than slope-intercept: the reference divides by
  d_x = 0 for an exactly vertical move and then lets the agent walk into the wall's end through the door
  edge (a NaN comparison); here such a move is blocked like any other.
* `step` clips the action norm to `max_step_norm`. The reference env only *declares* a +-2.45 action box and
  relies on the planner to clip (its CEM clips norms to 2.45, its MPPI does not clip at all); clipping in the
  env makes the bound hold for every caller and is a no-op for already clipped plans.
* Observations are float32 in [0, 1] with the exact Gaussian; the reference quantises to uint8
  (floor(255 v)) before its min-max normalisation, a difference below 1/255. :func:`normalize_observation`
  is the reference's ``Normalizer.normalize_state`` for channel-last arrays.
* The bounce noise uses one N(0, I) draw per step whichever wall is hit (the reference draws one per
  candidate wall and uses one of them): the same distribution.

The trajectory *generator* used for training (``jepa/data/trajectories.py``) uses the reference dataset's
simpler rule, "a blocked move leaves the agent where it was", as ``wall_dataset.py`` does; this module is the
evaluation environment (``env.py``).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jepa.errors import ConfigError

# Evaluation protocol (examples/ac_video_jepa/cfgs/eval.yaml: env.n_allowed_steps, meta.num_eval_episodes;
# env.py eval_state: succes_treshold).
EVAL_MAX_STEPS = 200
EVAL_NUM_EPISODES = 20
SUCCESS_RADIUS = 4.5

# normalizer.py: per-channel mean / std of the min-max normalised observations (dot, walls).
STATE_MEAN = (0.0026, 0.0989)
STATE_STD = (0.0369, 0.2986)


@dataclasses.dataclass(frozen=True)
class EnvConfig:
  """Two Rooms constants (frozen, hashable: pass it as a static argument). Sources in the comments."""
  img_size: int = 65  # data_config.yaml img_size.
  dot_std: float = 1.3  # data_config.yaml dot_std: sigma of the agent's Gaussian dot, px.
  border_wall_loc: int = 5  # data_config.yaml: border lines at pixel border_wall_loc - 1 = 4 and img - 5 = 60.
  wall_width: int = 3  # data_config.yaml wall_width: columns wall_x - 1 .. wall_x + 1.
  door_space: int = 4  # data_config.yaml door_space: the door is |y - door_y| <= 4 (9 rows).
  wall_padding: int = 20  # data_config.yaml: wall_x uniform in range(20, 65 - 20) = {20, ..., 44} (utils.py).
  door_padding: int = 10  # data_config.yaml: door_y uniform in range(10, 65 - 10) = {10, ..., 54} (utils.py).
  fixed_wall: bool = False  # data_config.yaml fix_wall: False = wall and door redrawn every episode.
  fixed_wall_x: int = 32  # data_config.yaml fix_wall_location.
  fixed_door_y: int = 18  # data_config.yaml fix_door_location (the dataclass default, 10, is overridden).
  max_step_norm: float = 2.45  # env.py max_step_norm; planning_{cem,mppi}.yaml max_norms.
  collision_noise_std: float = 0.5  # utils.check_wall_intersect: torch.randn(2) * 0.5 on a wall hit.
  collision_margin: float = 0.3  # utils.check_wall_intersect: a clamped point is moved 0.3 px off the wall.
  success_radius: float = SUCCESS_RADIUS  # env.py eval_state (from DINO-WM's wall env).
  max_episode_steps: int = EVAL_MAX_STEPS  # eval.yaml env.n_allowed_steps.
  level: str = "normal"  # eval.yaml env.level: 'normal' (anywhere in the rooms) or 'easy' (near the door).
  # 'easy' level: start / goal within [1/4, 3/4] of this distance from the door (env.py: n_steps *
  # action_step_mean). The reference's default n_steps = 200 fails its own assertion; 18 is the largest
  # distance that passes it with the default walls (wall_padding - 1 - border_wall_loc >= ceil(0.75 d)).
  easy_distance: float = 18.0

  def __post_init__(self):
    if self.level not in ("normal", "easy"):
      raise ConfigError(f"EnvConfig.level={self.level!r} is unknown: use 'normal' or 'easy'")
    if self.level == "easy":
      room = self.wall_padding - self.wall_width // 2 - self.border_wall_loc
      if room < math.ceil(0.75 * self.easy_distance):
        raise ConfigError(f"EnvConfig.easy_distance={self.easy_distance} does not fit the {room} px room: set "
                          f"easy_distance <= {room / 0.75:.1f}")

  @property
  def border_lo(self) -> int:
    """Coordinate of the top / left border line (4)."""
    return self.border_wall_loc - 1

  @property
  def border_hi(self) -> int:
    """Coordinate of the bottom / right border line (60)."""
    return self.img_size - self.border_wall_loc

  @property
  def half_wall(self) -> int:
    """Wall half thickness: the wall covers wall_x - half_wall .. wall_x + half_wall (reference: width // 2)."""
    return self.wall_width // 2


class Layout(NamedTuple):
  """Where the inner wall and its door are (float32 scalars holding integer pixel coordinates)."""
  wall_x: jax.Array
  door_y: jax.Array


class EnvState(NamedTuple):
  """One episode: agent position [2], goal position [2] (x, y in px), layout, and steps taken (int32)."""
  position: jax.Array
  goal: jax.Array
  layout: Layout
  t: jax.Array


def normalize_observation(obs):
  """The reference `Normalizer.normalize_state` for channel-last observations [..., H, W, 2].

  Each channel of each frame is min-max scaled, u = (o - min) / (max(o - min) + 1e-6), then standardised,
  (u - mean_c) / (std_c + 1e-6), with the reference's dataset statistics STATE_MEAN / STATE_STD.
  """
  obs = jnp.asarray(obs, jnp.float32)
  u = obs - obs.min(axis=(-3, -2), keepdims=True)
  u = u / (u.max(axis=(-3, -2), keepdims=True) + 1e-6)
  return (u - jnp.asarray(STATE_MEAN)) / (jnp.asarray(STATE_STD) + 1e-6)


@functools.partial(jax.jit, static_argnames="cfg")
def sample_layout(key, cfg: EnvConfig = EnvConfig()) -> Layout:
  """Draws the inner wall column in [20, 44] and the door centre row in [10, 54], uniformly and independently.

  The reference draws uniformly from a dict of (wall, door) layouts that holds every pair twice (a 'v' and an
  'h' entry, both rendered as a vertical wall), which is the same product of uniforms. With
  ``cfg.fixed_wall`` the layout is (32, 18) and `key` is unused.
  """
  if cfg.fixed_wall:
    return Layout(jnp.float32(cfg.fixed_wall_x), jnp.float32(cfg.fixed_door_y))
  k_wall, k_door = jax.random.split(key)
  wall_x = jax.random.randint(k_wall, (), cfg.wall_padding, cfg.img_size - cfg.wall_padding)
  door_y = jax.random.randint(k_door, (), cfg.door_padding, cfg.img_size - cfg.door_padding)
  return Layout(wall_x.astype(jnp.float32), door_y.astype(jnp.float32))


def _start_goal_ranges(layout: Layout, cfg: EnvConfig):
  """(x range in the left room, x range in the right room, y range) for evaluation start / goal points."""
  left_face = layout.wall_x - cfg.half_wall
  right_face = layout.wall_x + cfg.half_wall
  pad = 2 * cfg.dot_std  # env.py: keep the whole dot (2 sigma) off the walls.
  border_pad = cfg.border_lo + pad
  if cfg.level == "normal":
    left = (border_pad, left_face - pad)
    right = (right_face + pad, cfg.img_size - 1 - border_pad)
    ys = (jnp.float32(border_pad), jnp.float32(cfg.img_size - 1 - border_pad))
  else:  # 'easy': within [d/4, 3d/4] of the wall and 3d/4 of the door row (env.py).
    near, far = math.ceil(0.25 * cfg.easy_distance), math.ceil(0.75 * cfg.easy_distance)
    left = (left_face - far, left_face - near)
    right = (right_face + near, right_face + far)
    ys = (jnp.maximum(layout.door_y - far, border_pad), jnp.minimum(layout.door_y + far, cfg.img_size - 1 - border_pad))
  return left, right, ys


@functools.partial(jax.jit, static_argnames="cfg")
def sample_episode(key, cfg: EnvConfig = EnvConfig(), layout: Layout | None = None) -> EnvState:
  """An evaluation episode: a layout (drawn unless given), start and goal uniform in opposite rooms.

  x_start ~ U[6.6, wall_x - 1 - 2.6], x_goal ~ U[wall_x + 1 + 2.6, 57.4], y_start, y_goal ~ U[6.6, 57.4]
  (level 'normal'; 6.6 = border line 4 + 2 sigma), then start and goal are swapped with probability 1/2 so
  that either room can hold the start (env.py `_generate_start_and_target`).
  """
  k_layout, k_sx, k_gx, k_sy, k_gy, k_swap = jax.random.split(key, 6)
  if layout is None:
    layout = sample_layout(k_layout, cfg)
  layout = Layout(jnp.asarray(layout.wall_x, jnp.float32), jnp.asarray(layout.door_y, jnp.float32))
  (l_lo, l_hi), (r_lo, r_hi), (y_lo, y_hi) = _start_goal_ranges(layout, cfg)
  start_x = jax.random.uniform(k_sx, (), minval=l_lo, maxval=l_hi)
  goal_x = jax.random.uniform(k_gx, (), minval=r_lo, maxval=r_hi)
  start = jnp.stack([start_x, jax.random.uniform(k_sy, (), minval=y_lo, maxval=y_hi)])
  goal = jnp.stack([goal_x, jax.random.uniform(k_gy, (), minval=y_lo, maxval=y_hi)])
  swap = jax.random.bernoulli(k_swap)
  start, goal = jnp.where(swap, goal, start), jnp.where(swap, start, goal)
  return EnvState(position=start, goal=goal, layout=layout, t=jnp.int32(0))


def reference_episodes(num_episodes: int = EVAL_NUM_EPISODES, cfg: EnvConfig = EnvConfig()) -> EnvState:
  """The reference's own evaluation episodes, replayed: a batched EnvState of its first `num_episodes`.

  EB-JEPA's ``main_eval`` builds its env without an rng, so ``DotWall`` falls back to
  ``np.random.default_rng(0)``; it calls ``reset()`` once before the loop and then plays the next 20 resets.
  Every published success rate (97 +- 2% MPPI) is therefore over these same 20 episodes. Each reset draws
  ``rng.choice`` over its 2 x 25 x 45 layout names (wall 20..44 outer, door 10..54 inner, a 'v' and an 'h'
  entry per pair), then start x, goal x, start y, goal y and the swap, in that order (env.py `reset`,
  `_generate_wall`, `_generate_start_and_target`). They come from the same distribution as
  :func:`sample_episode`'s, but this fixed sample of 20 has shorter detours through the door (3.7 px over the
  straight line on average, 7.9 px over many uniform episodes). More than 20 continue the same stream. Level
  'normal', random walls only.
  """
  if cfg.fixed_wall or cfg.level != "normal":
    raise ConfigError("reference_episodes replays the reference's random-wall, level 'normal' stream: use "
                      "EnvConfig(fixed_wall=False, level='normal')")
  walls = range(cfg.wall_padding, cfg.img_size - cfg.wall_padding)
  doors = range(cfg.door_padding, cfg.img_size - cfg.door_padding)
  codes = [(w, d) for w in walls for d in doors for _ in ("v", "h")]
  rng = np.random.default_rng(0)
  rows = []
  for _ in range(num_episodes + 1):  # The first reset is discarded (planning.py main_eval).
    wall_x, door_y = codes[int(rng.choice(len(codes)))]
    (l_lo, l_hi), (r_lo, r_hi), (y_lo, y_hi) = (
        (float(lo), float(hi)) for lo, hi in _start_goal_ranges(Layout(wall_x, door_y), cfg))
    start_x = l_lo + rng.random() * (l_hi - l_lo)
    goal_x = r_lo + rng.random() * (r_hi - r_lo)
    start_y = y_lo + rng.random() * (y_hi - y_lo)
    goal_y = y_lo + rng.random() * (y_hi - y_lo)
    if rng.random() < 0.5:  # The reference swaps the x coordinates only.
      start_x, goal_x = goal_x, start_x
    rows.append(((start_x, start_y), (goal_x, goal_y), wall_x, door_y))
  start, goal, wall_x, door_y = (np.asarray(v, np.float32) for v in zip(*rows[1:]))
  return EnvState(position=jnp.asarray(start), goal=jnp.asarray(goal),
                  layout=Layout(jnp.asarray(wall_x), jnp.asarray(door_y)), t=jnp.zeros(num_episodes, jnp.int32))


def goal_state(state: EnvState) -> EnvState:
  """The state with the agent at the goal: what the goal observation shows (and what `run_episode` encodes)."""
  return state._replace(position=state.goal)


def clip_norm(action, max_norm):
  """a * min(1, max_norm / ||a||) over the last axis (the reference planner's norm clip)."""
  norm = jnp.linalg.norm(action, axis=-1, keepdims=True)
  return action * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))


def _safe_div(num, den):
  """num / den with den = 0 replaced by 1; every use is masked by a `den != 0` (or sign) condition."""
  return num / jnp.where(den == 0, 1.0, den)


def _crosses(c1, c2, line):
  """The segment's coordinate goes from c1 to c2 across or onto `line` (reference: sign * sign <= 0)."""
  return jnp.sign(c1 - line) * jnp.sign(c2 - line) <= 0


def _resolve_move(p1, p2, layout: Layout, noise, cfg: EnvConfig):
  """Where the agent ends when it tries to move from p1 to p2 (utils.check_wall_intersect's rule).

  1. Door edges: a move that crosses the door's top edge y = door_y + 4 upwards (or its bottom edge
     downwards) at a column inside the wall's thickness ends on that edge, pushed back into the door by
     |n_y|, with n_x added along it.
  2. Otherwise the two vertical lines bounding the agent's room (the border and the near wall face, the
     face with the door) and the two horizontal border lines are tested; a crossing of a face line outside
     the door, or of any border line, is a hit. The hit nearest to p1 wins; the agent is put there, pushed
     back by |n| perpendicular to the wall, clamped to its room and kept 0.3 px off any line it reaches.
  3. No hit: the agent moves to p2.
  """
  p1x, p1y = p1[0], p1[1]
  p2x, p2y = p2[0], p2[1]
  dx, dy = p2x - p1x, p2y - p1y
  left_face, right_face = layout.wall_x - cfg.half_wall, layout.wall_x + cfg.half_wall
  door_top, door_bot = layout.door_y + cfg.door_space, layout.door_y - cfg.door_space  # top = larger y.

  # 1. The ends of the wall segments above and below the door.
  x_top = p1x + (door_top - p1y) * _safe_div(dx, dy)
  hit_top = (dy > 0) & (p2y > door_top) & (p1y < door_top) & (left_face <= x_top) & (x_top <= right_face)
  x_bot = p1x + (door_bot - p1y) * _safe_div(dx, dy)
  hit_bot = (dy < 0) & (p2y < door_bot) & (p1y > door_bot) & (left_face <= x_bot) & (x_bot <= right_face)
  edge_point = jnp.where(hit_top, jnp.stack([x_top + noise[0], door_top - jnp.abs(noise[1])]),
                         jnp.stack([x_bot + noise[0], door_bot + jnp.abs(noise[1])]))

  # 2. The room's bounding lines. Left of the wall's centre the room is [4, left_face] (the face has the door);
  # at or right of it, [right_face, 60].
  in_left_room = layout.wall_x > p1x
  lo_x = jnp.where(in_left_room, cfg.border_lo, right_face)
  hi_x = jnp.where(in_left_room, left_face, cfg.border_hi)

  def vertical_hit(x_line, has_door):
    y = p1y + (x_line - p1x) * _safe_div(dy, dx)
    through_door = has_door & (door_bot <= y) & (y <= door_top)
    return (dx != 0) & _crosses(p1x, p2x, x_line) & ~through_door, jnp.stack([x_line, y])

  def horizontal_hit(y_line):
    x = p1x + (y_line - p1y) * _safe_div(dx, dy)
    return (dy != 0) & _crosses(p1y, p2y, y_line), jnp.stack([x, jnp.float32(y_line)])

  v_lo, v_lo_point = vertical_hit(lo_x, ~in_left_room)
  v_hi, v_hi_point = vertical_hit(hi_x, in_left_room)
  h_lo, h_lo_point = horizontal_hit(cfg.border_lo)
  h_hi, h_hi_point = horizontal_hit(cfg.border_hi)
  v_hit, v_point = v_lo | v_hi, jnp.where(v_lo, v_lo_point, v_hi_point)  # The reference tests lo first.
  h_hit, h_point = h_lo | h_hi, jnp.where(h_lo, h_lo_point, h_hi_point)
  use_v = v_hit & (~h_hit | (jnp.linalg.norm(p1 - v_point) < jnp.linalg.norm(p1 - h_point)))
  v_bounced = v_point + jnp.stack([jnp.abs(noise[0]) * jnp.sign(p1x - v_point[0]), noise[1]])
  h_bounced = h_point + jnp.stack([noise[0], jnp.abs(noise[1]) * jnp.sign(p1y - h_point[1])])
  point = jnp.where(use_v, v_bounced, h_bounced)
  x = jnp.clip(point[0], lo_x, hi_x)
  y = jnp.clip(point[1], cfg.border_lo, cfg.border_hi)
  m = cfg.collision_margin
  x = jnp.where(x <= lo_x, lo_x + m, jnp.where(x >= hi_x, hi_x - m, x))
  y = jnp.where(y <= cfg.border_lo, cfg.border_lo + m, jnp.where(y >= cfg.border_hi, cfg.border_hi - m, y))
  wall_point = jnp.stack([x, y])

  return jnp.where(hit_top | hit_bot, edge_point, jnp.where(v_hit | h_hit, wall_point, p2))


@functools.partial(jax.jit, static_argnames="cfg")
def step(state: EnvState, action, key, cfg: EnvConfig = EnvConfig()) -> EnvState:
  """One environment step: clip ||action|| to 2.45, move, stop at walls (see `_resolve_move`), t += 1.

  `key` draws the bounce noise n ~ N(0, 0.5^2 I), used only when the move hits a wall.
  """
  p1 = jnp.asarray(state.position, jnp.float32)
  action = clip_norm(jnp.asarray(action, jnp.float32), cfg.max_step_norm)
  noise = cfg.collision_noise_std * jax.random.normal(key, (2,), jnp.float32)
  position = _resolve_move(p1, p1 + action, state.layout, noise, cfg)
  return state._replace(position=position, t=state.t + 1)


def wall_mask(layout: Layout, cfg: EnvConfig = EnvConfig()):
  """float32 [H, W]: 1 on the border lines (rows / columns 4 and 60) and the inner wall outside the door."""
  rows = jnp.arange(cfg.img_size, dtype=jnp.float32)[:, None]
  cols = jnp.arange(cfg.img_size, dtype=jnp.float32)[None, :]
  in_wall = jnp.abs(cols - layout.wall_x) <= cfg.half_wall
  in_door = jnp.abs(rows - layout.door_y) <= cfg.door_space
  border = ((rows == cfg.border_lo) | (rows == cfg.border_hi) | (cols == cfg.border_lo) | (cols == cfg.border_hi))
  return ((in_wall & ~in_door) | border).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames="cfg")
def render(position, layout: Layout, cfg: EnvConfig = EnvConfig()):
  """float32 [65, 65, 2]: channel 0 the agent's Gaussian dot exp(-||(x, y) - p||^2 / (2 sigma^2)), 1 the walls."""
  position = jnp.asarray(position, jnp.float32)
  rows = jnp.arange(cfg.img_size, dtype=jnp.float32)[:, None]
  cols = jnp.arange(cfg.img_size, dtype=jnp.float32)[None, :]
  sq_dist = (cols - position[0]) ** 2 + (rows - position[1]) ** 2
  dot = jnp.exp(-sq_dist / (2 * cfg.dot_std ** 2))
  return jnp.stack([dot, wall_mask(layout, cfg)], axis=-1)


def observe(state: EnvState, cfg: EnvConfig = EnvConfig()):
  """The current observation [65, 65, 2]."""
  return render(state.position, state.layout, cfg)


def goal_observation(state: EnvState, cfg: EnvConfig = EnvConfig()):
  """The goal observation [65, 65, 2]: the dot at the goal, the same walls (env.py `get_target_obs`)."""
  return render(state.goal, state.layout, cfg)


def distance(position, goal):
  """Euclidean distance ||position - goal|| over the last axis."""
  return jnp.linalg.norm(jnp.asarray(position) - jnp.asarray(goal), axis=-1)


def success(position, goal, cfg: EnvConfig = EnvConfig()):
  """||position - goal|| < 4.5 px (strict, env.py `eval_state`)."""
  return distance(position, goal) < cfg.success_radius
