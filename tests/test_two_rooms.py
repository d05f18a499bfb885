"""Tests for jepa.envs.two_rooms: hand-computed moves, rendering, layouts, episodes, jit / vmap agreement."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa.envs import two_rooms as tr

# Fixed layout: the wall covers columns 31..33, the door rows 14..22; borders at 4 and 60.
FIXED = tr.EnvConfig(fixed_wall=True)
QUIET = tr.EnvConfig(fixed_wall=True, collision_noise_std=0.0)  # No bounce noise: exact positions.
LAYOUT = tr.Layout(jnp.float32(32), jnp.float32(18))


def _move(position, action, cfg=QUIET, seed=0, layout=LAYOUT):
  state = tr.EnvState(jnp.asarray(position, jnp.float32), jnp.zeros(2), layout, jnp.int32(0))
  return np.asarray(tr.step(state, jnp.asarray(action, jnp.float32), jax.random.key(seed), cfg).position)


def test_config_constants_and_layout_bounds():
  cfg = tr.EnvConfig()
  assert (cfg.img_size, cfg.dot_std, cfg.border_lo, cfg.border_hi, cfg.half_wall) == (65, 1.3, 4, 60, 1)
  assert (cfg.max_step_norm, cfg.success_radius, cfg.max_episode_steps) == (2.45, 4.5, 200)
  layouts = jax.vmap(lambda k: tr.sample_layout(k, cfg))(jax.random.split(jax.random.key(0), 3000))
  walls, doors = np.asarray(layouts.wall_x), np.asarray(layouts.door_y)
  assert np.all(walls == np.round(walls)) and np.all(doors == np.round(doors))
  assert set(walls.astype(int)) == set(range(20, 45)) and set(doors.astype(int)) == set(range(10, 55))
  fixed = tr.sample_layout(jax.random.key(1), FIXED)
  assert (float(fixed.wall_x), float(fixed.door_y)) == (32.0, 18.0)


def test_free_move_is_exact():
  np.testing.assert_allclose(_move((40, 30), (1.0, -2.0)), (41.0, 28.0), atol=1e-6)


def test_wall_hit_stops_at_the_wall_face():
  # Left face at x = 31. Moving right from x = 30 at row 40 (outside the door) meets it at (31, 40); with no
  # noise the point is clamped onto the face and moved 0.3 px back into the room.
  np.testing.assert_allclose(_move((30, 40), (2, 0)), (30.7, 40.0), atol=1e-5)
  # Diagonal: the face is met half-way, at y = 40.5.
  np.testing.assert_allclose(_move((30, 40), (2, 1)), (30.7, 40.5), atol=1e-5)
  # From the right room towards the right face (x = 33).
  np.testing.assert_allclose(_move((34, 50), (-2, 0)), (33.3, 50.0), atol=1e-5)


def test_wall_hit_with_noise_stays_in_the_room():
  for seed in range(20):
    x, y = _move((30, 40), (2, 1), cfg=FIXED, seed=seed)
    assert 4 < x < 31 and abs(y - 40.5) < 3  # Pushed back by |n_x|, moved along the wall by n_y.


def test_door_passage():
  # Rows 14..22 are the door: the agent walks through the wall in two steps.
  np.testing.assert_allclose(_move((30, 18), (2.4, 0)), (32.4, 18.0), atol=1e-5)
  np.testing.assert_allclose(_move((32.4, 18), (2.4, 0)), (34.8, 18.0), atol=1e-5)
  # Meeting the face (x = 31) at row 21.5, inside the door, is allowed; at row 22.5 it is not.
  np.testing.assert_allclose(_move((29, 21), (2, 0.5)), (31.0, 21.5), atol=1e-5)
  np.testing.assert_allclose(_move((29, 22), (2, 0.5)), (30.7, 22.5), atol=1e-5)
  # Entering through the door and leaving it upwards in the same move: stopped on the door's edge y = 22.
  np.testing.assert_allclose(_move((30, 21), (2, 2)), (31.0, 22.0), atol=1e-5)


def test_door_edge_blocks_moves_into_the_wall_end():
  # Inside the door, moving up (larger y) across its edge y = 22 within the wall's columns: stop on the edge.
  np.testing.assert_allclose(_move((32, 21), (0.5, 2)), (32.25, 22.0), atol=1e-5)
  np.testing.assert_allclose(_move((32, 15), (0, -2)), (32.0, 14.0), atol=1e-5)  # Exactly vertical, too.


def test_border():
  np.testing.assert_allclose(_move((6, 40), (-2.4, 0)), (4.3, 40.0), atol=1e-5)
  np.testing.assert_allclose(_move((40, 5), (0, -2)), (40.0, 4.3), atol=1e-5)
  np.testing.assert_allclose(_move((59, 30), (2, 0)), (59.7, 30.0), atol=1e-5)
  np.testing.assert_allclose(_move((40, 59), (0, 2)), (40.0, 59.7), atol=1e-5)
  # Corner: the vertical border is met first (at t = 1/2, (4, 4.5)), before the horizontal one (t = 1).
  np.testing.assert_allclose(_move((5, 5), (-2, -1)), (4.3, 4.5), atol=1e-5)


def test_action_norm_is_clipped():
  out = _move((40, 30), (30, 40))  # ||a|| = 50 -> 2.45 * (0.6, 0.8).
  np.testing.assert_allclose(out, (40 + 1.47, 30 + 1.96), atol=1e-5)
  np.testing.assert_allclose(_move((40, 30), (1.5, 1.5)), (41.5, 31.5), atol=1e-6)  # ||a|| < 2.45: as is.


def test_no_path_through_the_wall_in_random_walks():
  """Random walks with noise never end inside the wall band outside the door, nor beyond the borders."""
  cfg = tr.EnvConfig()
  keys = jax.random.split(jax.random.key(3), 64)

  def walk(key):
    k_ep, k_act, k_env = jax.random.split(key, 3)
    state = tr.sample_episode(k_ep, cfg)
    actions = 2.0 * jax.random.normal(k_act, (300, 2))

    def body(s, xs):
      s = tr.step(s, xs[0], xs[1], cfg)
      return s, s.position
    _, positions = jax.lax.scan(body, state, (actions, jax.random.split(k_env, 300)))
    return positions, state.layout

  positions, layouts = jax.jit(jax.vmap(walk))(keys)
  positions = np.asarray(positions)
  wall, door = np.asarray(layouts.wall_x)[:, None], np.asarray(layouts.door_y)[:, None]
  in_wall = (np.abs(positions[..., 0] - wall) <= 1) & (np.abs(positions[..., 1] - door) > 4)
  assert not in_wall.any()
  assert positions.min() > 4 and positions.max() < 60
  side = np.sign(positions[..., 0] - wall)
  assert (side[:, 0] != side[:, -1]).any()  # Some walks do get through the door.


def test_success_radius_rule():
  goal = jnp.array([30.0, 30.0])
  assert bool(tr.success(jnp.array([30.0 + 4.49, 30.0]), goal))
  assert not bool(tr.success(jnp.array([30.0 + 4.5, 30.0]), goal))  # Strict: distance < 4.5.
  assert bool(tr.success(jnp.array([33.0, 33.0]), goal))  # 4.243 px
  assert not bool(tr.success(jnp.array([34.0, 33.0]), goal))  # 5 px


def test_render_dot_peak_and_values():
  obs = np.asarray(tr.render(jnp.array([20.0, 30.0]), LAYOUT))
  assert obs.shape == (65, 65, 2) and obs.dtype == np.float32
  dot = obs[..., 0]
  assert np.unravel_index(dot.argmax(), dot.shape) == (30, 20)  # obs[y, x]
  assert dot[30, 20] == pytest.approx(1.0)
  assert dot[30, 21] == pytest.approx(math.exp(-1 / (2 * 1.3 ** 2)), rel=1e-6)
  assert dot[32, 21] == pytest.approx(math.exp(-5 / (2 * 1.3 ** 2)), rel=1e-5)
  sub = np.asarray(tr.render(jnp.array([20.3, 29.6]), LAYOUT))[..., 0]  # Sub-pixel position.
  assert sub[30, 20] == pytest.approx(math.exp(-(0.09 + 0.16) / (2 * 1.69)), rel=1e-5)
  assert np.unravel_index(sub.argmax(), sub.shape) == (30, 20)


def test_render_wall_channel_layout():
  walls = np.asarray(tr.render(jnp.array([40.0, 40.0]), LAYOUT))[..., 1]
  expected = np.zeros((65, 65), np.float32)
  for y in range(65):
    for x in range(65):
      border = x in (4, 60) or y in (4, 60)
      wall = 31 <= x <= 33 and not 14 <= y <= 22
      expected[y, x] = float(border or wall)
  np.testing.assert_array_equal(walls, expected)
  # The lines span the whole image (as in the reference), so only the corners outside them are empty.
  assert walls[:4, :4].sum() == 0 and walls[61:, 61:].sum() == 0 and walls[:4, 31:34].sum() == 12


def test_normalize_observation_matches_its_definition():
  obs = np.asarray(tr.render(jnp.array([25.3, 40.7]), LAYOUT))
  out = np.asarray(tr.normalize_observation(obs))
  for c, (mean, std) in enumerate(zip(tr.STATE_MEAN, tr.STATE_STD)):
    u = (obs[..., c] - obs[..., c].min()) / (obs[..., c].max() - obs[..., c].min() + 1e-6)
    np.testing.assert_allclose(out[..., c], (u - mean) / (std + 1e-6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("level", ["normal", "easy"])
def test_episodes_start_and_goal_in_opposite_rooms(level):
  cfg = tr.EnvConfig(level=level)
  states = jax.vmap(lambda k: tr.sample_episode(k, cfg))(jax.random.split(jax.random.key(5), 2000))
  start, goal = np.asarray(states.position), np.asarray(states.goal)
  wall, door = np.asarray(states.layout.wall_x), np.asarray(states.layout.door_y)
  start_left, goal_left = start[:, 0] < wall - 1 - 2.6 + 1e-4, goal[:, 0] < wall - 1 - 2.6 + 1e-4
  assert np.all(start_left != goal_left)
  assert np.all(np.minimum(start[:, 0], goal[:, 0]) <= wall - 3.6 + 1e-4)
  assert np.all(np.maximum(start[:, 0], goal[:, 0]) >= wall + 3.6 - 1e-4)
  both = np.concatenate([start, goal])
  assert both[:, 1].min() >= 6.6 - 1e-4 and both[:, 1].max() <= 57.4 + 1e-4  # 4 + 2 sigma .. 64 - (4 + 2 sigma)
  x_pad = 6.6 if level == "normal" else 5.0  # 'easy' x ranges ignore the dot padding (env.py).
  assert both[:, 0].min() >= x_pad - 1e-4 and both[:, 0].max() <= 64 - x_pad + 1e-4
  assert 0.45 < start_left.mean() < 0.55  # Either room holds the start half of the time.
  assert np.all(np.asarray(states.t) == 0)
  if level == "easy":  # Within [ceil(18/4), ceil(3 * 18/4)] = [5, 14] px of the wall, 14 rows of the door.
    gap = np.where(start_left, wall - 1 - start[:, 0], start[:, 0] - wall - 1)
    assert gap.min() >= 5 - 1e-4 and gap.max() <= 14 + 1e-4
    assert np.abs(start[:, 1] - door).max() <= 14 + 1e-4
  else:  # 'normal' uses the whole room: some starts are far from the wall.
    gap = np.where(start_left, wall - 1 - start[:, 0], start[:, 0] - wall - 1)
    assert gap.max() > 20


def test_easy_level_validation():
  with pytest.raises(ValueError, match="easy_distance"):
    tr.EnvConfig(level="easy", easy_distance=40.0)
  with pytest.raises(ValueError, match="level"):
    tr.EnvConfig(level="hard")


def test_jit_and_vmap_match_unbatched():
  cfg = tr.EnvConfig()
  keys = jax.random.split(jax.random.key(7), 16)
  states = jax.vmap(lambda k: tr.sample_episode(k, cfg))(keys)
  # Aim every agent straight at the wall so that many moves collide (and draw bounce noise).
  actions = jnp.stack([jnp.sign(states.layout.wall_x - states.position[:, 0]) * 2.4, jnp.zeros(16)], axis=1)
  step_keys = jax.random.split(jax.random.key(8), 16)
  batched = jax.vmap(lambda s, a, k: tr.step(s, a, k, cfg))(states, actions, step_keys)
  for i in range(16):
    state_i = jax.tree.map(lambda x, i=i: x[i], states)
    eager = tr.step(state_i, actions[i], step_keys[i], cfg)
    np.testing.assert_allclose(np.asarray(batched.position[i]), np.asarray(eager.position), atol=1e-5)
    episode_i = tr.sample_episode(keys[i], cfg)
    np.testing.assert_allclose(np.asarray(episode_i.goal), np.asarray(states.goal[i]), atol=1e-6)
  obs = jax.vmap(lambda s: tr.observe(s, cfg))(states)
  np.testing.assert_allclose(np.asarray(obs[3]), np.asarray(tr.observe(jax.tree.map(lambda x: x[3], states), cfg)),
                             atol=1e-6)
  goal_obs = tr.goal_observation(jax.tree.map(lambda x: x[0], states), cfg)
  assert np.unravel_index(np.asarray(goal_obs[..., 0]).argmax(), (65, 65)) == tuple(
      np.round(np.asarray(states.goal[0]))[::-1].astype(int))
  assert int(batched.t[0]) == 1


def test_reference_episodes_replay_the_reference_stream():
  """EB-JEPA's 20 evaluation episodes as its own env.py produced them: DotWall(level='normal') with its default
  np.random.default_rng(0), one reset discarded, then (wall_x, door_y, start, goal) of each reset (printed from
  the reference checkout with torch and gymnasium installed, to 4 decimals)."""
  eps = tr.reference_episodes(20)
  assert eps.position.shape == (20, 2) and eps.t.shape == (20,)
  expected = [
      (35, 51, (21.6446, 34.2161), (52.3145, 54.1017)), (36, 44, (28.7210, 43.6665), (40.1978, 15.5233)),
      (20, 13, (33.7303, 28.0725), (11.9063, 8.0386)), (20, 19, (12.9425, 26.0908), (44.4000, 57.2583)),
      (36, 44, (51.1782, 41.5731), (24.2870, 26.3572)), (34, 31, (19.1034, 31.2804), (43.7428, 51.7860)),
      (38, 11, (50.6302, 22.9510), (16.5467, 36.7904)), (39, 10, (32.2399, 38.2579), (45.9619, 10.8680)),
      (29, 45, (38.5364, 51.1254), (21.3974, 9.5753)), (34, 25, (53.3672, 18.3166), (17.3181, 9.2427)),
      (23, 44, (9.1410, 36.0809), (29.3952, 21.7738)), (42, 21, (36.5592, 11.9592), (49.9083, 38.5587)),
      (24, 54, (12.6772, 31.9947), (56.0468, 28.2016)), (28, 43, (23.4912, 45.0926), (43.4692, 31.8691)),
      (44, 49, (33.1596, 43.9118), (51.6636, 42.7261)), (24, 37, (16.6604, 55.7706), (55.2372, 7.3471)),
      (22, 49, (18.1781, 14.1572), (56.0393, 56.0095)), (29, 36, (38.3628, 47.3355), (15.6238, 53.5153)),
      (40, 35, (22.6602, 53.8957), (49.7100, 8.6579)), (24, 36, (6.9914, 7.4124), (49.0327, 45.1039))]
  for i, (wall, door, start, goal) in enumerate(expected):
    assert (float(eps.layout.wall_x[i]), float(eps.layout.door_y[i])) == (wall, door), i
    np.testing.assert_allclose(np.asarray(eps.position[i]), start, atol=1e-3, err_msg=str(i))
    np.testing.assert_allclose(np.asarray(eps.goal[i]), goal, atol=1e-3, err_msg=str(i))
  # Every episode is a valid evaluation episode: start and goal on opposite sides of the wall, inside the rooms.
  side = lambda x: np.sign(np.asarray(x) - np.asarray(eps.layout.wall_x))  # noqa: E731
  assert np.all(side(eps.position[:, 0]) == -side(eps.goal[:, 0]))
  cfg = tr.EnvConfig()
  assert np.all((np.asarray(eps.position) > cfg.border_lo) & (np.asarray(eps.position) < cfg.border_hi))
  # A prefix of the stream: episode i does not depend on how many are asked for.
  np.testing.assert_array_equal(np.asarray(tr.reference_episodes(5).goal), np.asarray(eps.goal[:5]))
  with pytest.raises(tr.ConfigError, match="random-wall"):
    tr.reference_episodes(2, tr.EnvConfig(fixed_wall=True))
