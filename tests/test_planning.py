"""Tests for jepa.planning: CEM / MPPI on linear latent models with closed-form optima, and the MPC loop."""
import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa import planning as P
from jepa.envs import two_rooms as tr

BOUND = 2.45
ANGLE = math.radians(30)
# Latent model z_{t+1} = z_t + B a_t with B = 0.5 R(30 deg): rotated and scaled, so that the optimum is not
# simply the latent displacement.
B = 0.5 * np.array([[math.cos(ANGLE), -math.sin(ANGLE)], [math.sin(ANGLE), math.cos(ANGLE)]], np.float32)
Z0 = np.array([1.0, -2.0], np.float32)


def linear_rollout(z0, actions):
  """[H, 2] latents after each action of z_{t+1} = z_t + B a_t."""
  return z0 + jnp.cumsum(actions @ jnp.asarray(B).T, axis=0)


def greedy_optimum(goal, horizon):
  """Optimal plan for the 'sum' cost under ||a_t|| <= BOUND: full speed along the straight line, then stop.

  Every term ||z_t - g||^2 is at least max(0, d - t s b)^2 (d = ||g - z0||, s b the latent speed limit) and
  the greedy plan reaches all these bounds at once, so it is the unique minimiser. Returns (plan, cost).
  """
  s = 0.5  # ||B a|| = 0.5 ||a||.
  delta = goal - Z0
  d = np.linalg.norm(delta)
  direction = np.linalg.solve(B, delta / d) * s  # Unit-norm action moving the latent along delta.
  plan = np.zeros((horizon, 2))
  remaining = d
  for t in range(horizon):
    step = min(BOUND * s, remaining)
    plan[t] = direction * step / s
    remaining -= step
  latents = Z0 + np.cumsum(plan @ B.T, axis=0)
  return plan, np.sum(np.mean((latents - goal) ** 2, axis=-1))


# Goal 2.5 full latent steps away: two full steps, a half step, then rest.
GOAL = (Z0 + 2.5 * BOUND * 0.5 * np.array([0.6, 0.8])).astype(np.float32)
# Shared configs, so that `plan_jit` compiles each once for the whole file.
CFGS = {kind: P.PlannerConfig.ebjepa(kind, horizon=5, num_samples=300, num_iterations=20) for kind in ("cem", "mppi")}


def _plan(kind, key, goal=GOAL, **kw):
  return P.plan_jit(jax.random.key(key), Z0, goal, linear_rollout, kw.pop("cfg", CFGS[kind]), **kw)


def _cost(actions, goal=GOAL):
  """Independent 'sum' cost of a plan under the linear model."""
  latents = Z0 + np.cumsum(np.asarray(actions, np.float64) @ B.T, axis=0)
  return np.sum(np.mean((latents - goal) ** 2, axis=-1))


@pytest.mark.parametrize("kind", ["cem", "mppi"])
def test_sum_cost_reaches_the_closed_form_optimum(kind):
  actions, info = _plan(kind, 0)
  optimum, optimal_cost = greedy_optimum(GOAL, 5)
  assert optimal_cost == pytest.approx(((1.5 * 1.225) ** 2 + (0.5 * 1.225) ** 2) / 2, rel=1e-6)
  # CEM returns the mean; MPPI one elite drawn by weight (its mean is in info): both near the optimum.
  assert float(info["cost"]) == pytest.approx(_cost(actions), rel=1e-4)
  assert optimal_cost <= _cost(actions) + 1e-4 and _cost(actions) < 1.02 * optimal_cost
  assert _cost(info["mean"]) < 1.01 * optimal_cost
  np.testing.assert_allclose(np.asarray(info["mean"]), optimum, atol=0.2)
  np.testing.assert_allclose(np.asarray(actions), optimum, atol=0.3)
  if kind == "cem":
    np.testing.assert_array_equal(np.asarray(actions), np.asarray(info["mean"]))
  assert np.all(np.linalg.norm(np.asarray(actions), axis=-1) <= BOUND + 1e-4)
  assert info["min_cost"].shape == (20,) and info["min_cost"][-1] <= info["min_cost"][0]


@pytest.mark.parametrize("kind", ["cem", "mppi"])
def test_last_step_cost_reaches_the_goal(kind):
  # Goal 5 latent units away in 5 steps: the constant action B^-1 (g - z0) / 5 has norm (5 / 0.5) / 5 = 2,
  # within the bound; it, like any plan with sum_t a_t = B^-1 (g - z0), is optimal (cost 0).
  goal = (Z0 + np.array([3.0, 4.0])).astype(np.float32)
  total = np.linalg.solve(B, goal - Z0)
  assert np.linalg.norm(total / 5) == pytest.approx(2.0, rel=1e-5)
  cfg = dataclasses.replace(CFGS[kind], cost="last", mppi_output="mean")
  actions, info = _plan(kind, 2, goal=goal, cfg=cfg)
  final = Z0 + np.asarray(actions, np.float64).sum(axis=0) @ B.T
  assert float(info["cost"]) == pytest.approx(np.mean((final - goal) ** 2), abs=1e-5)
  assert float(info["cost"]) < 0.02
  np.testing.assert_allclose(np.asarray(actions).sum(axis=0), total, atol=0.3)


def test_l1_energy_cem_with_momentum_reaches_the_goal():
  # V-JEPA 2-AC's planner (CEM, momentum 0.15, energy mean |z_H - g| on the last step): on the linear model any
  # plan with sum_t a_t = B^-1 (g - z0) is optimal (energy 0), and the constant one is within the bound.
  goal = (Z0 + np.array([3.0, 4.0])).astype(np.float32)
  total = np.linalg.solve(B, goal - Z0)
  cfg = dataclasses.replace(CFGS["cem"], cost="last", distance="l1", momentum=0.15)
  actions, info = _plan("cem", 5, goal=goal, cfg=cfg)
  final = Z0 + np.asarray(actions, np.float64).sum(axis=0) @ B.T
  assert float(info["cost"]) == pytest.approx(np.mean(np.abs(final - goal)), abs=1e-5)
  assert float(info["cost"]) < 0.05
  np.testing.assert_allclose(np.asarray(actions).sum(axis=0), total, atol=0.3)


@pytest.mark.parametrize("kind", ["cem", "mppi"])
def test_determinism_from_the_key(kind):
  a, b, c = _plan(kind, 3)[0], _plan(kind, 3)[0], _plan(kind, 4)[0]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_batched_planner_matches_single_episodes():
  cfg = CFGS["cem"]
  planner = P.make_batched_planner(linear_rollout, cfg)
  keys = jax.random.split(jax.random.key(5), 3)
  z0 = jnp.stack([jnp.asarray(Z0)] * 3) + jnp.arange(3.0)[:, None]
  goals = jnp.stack([jnp.asarray(GOAL)] * 3)
  actions, info = planner(keys, z0, goals)
  assert actions.shape == (3, 5, 2) and info["cost"].shape == (3,)
  for i in range(3):
    single, _ = P.plan_jit(keys[i], z0[i], goals[i], linear_rollout, cfg)
    np.testing.assert_allclose(np.asarray(actions[i]), np.asarray(single), atol=1e-4)


def test_horizon_weights_and_steps_left():
  cfg = P.PlannerConfig(horizon=5)
  np.testing.assert_array_equal(np.asarray(P.horizon_weights(cfg)), [1, 1, 1, 1, 1])
  np.testing.assert_array_equal(np.asarray(P.horizon_weights(cfg, 2)), [1, 1, 0, 0, 0])
  last = P.PlannerConfig(horizon=5, cost="last")
  np.testing.assert_array_equal(np.asarray(P.horizon_weights(last)), [0, 0, 0, 0, 1])
  np.testing.assert_array_equal(np.asarray(P.horizon_weights(last, 2)), [0, 1, 0, 0, 0])
  np.testing.assert_array_equal(np.asarray(P.horizon_weights(last, 9)), [0, 0, 0, 0, 1])
  # With 2 steps left only the first two actions are scored: the optimum of a 2-step episode.
  actions, info = _plan("cem", 6, steps_left=2)
  optimum, optimal_cost = greedy_optimum(GOAL, 2)
  np.testing.assert_allclose(np.asarray(actions[:2]), optimum, atol=0.2)
  assert float(info["cost"]) < 1.01 * optimal_cost


def test_sequence_cost_definition():
  latents = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  goal = jnp.array([1.0, 0.0])
  assert float(P.sequence_cost(latents, goal, jnp.array([1.0, 1.0]))) == pytest.approx((0 + 4) / 2 + (4 + 16) / 2)
  assert float(P.sequence_cost(latents, goal, jnp.array([0.0, 1.0]))) == pytest.approx(10.0)
  # distance='l1': mean |latents[t] - goal| = (0 + 2) / 2 and (2 + 4) / 2.
  assert float(P.sequence_cost(latents, goal, jnp.array([1.0, 1.0]), "l1")) == pytest.approx(1.0 + 3.0)


@pytest.mark.parametrize("overrides, key", [
    ({"num_elites": 300, "num_samples": 200}, "num_elites"),
    ({"horizon": 0}, "horizon"),
    ({"num_samples": 0}, "num_samples"),
    ({"num_iterations": -1}, "num_iterations"),
    ({"action_bound": 0.0}, "action_bound"),
    ({"action_bound": -1.0}, "action_bound"),
    ({"init_std": 0.0}, "init_std"),
    ({"temperature": 0.0}, "temperature"),
    ({"momentum": 1.0}, "momentum"),
    ({"kind": "ilqr"}, "kind"),
    ({"cost": "mean"}, "cost"),
    ({"mppi_output": "best"}, "mppi_output"),
    ({"noise_beta": -1.0}, "noise_beta"),
    ({"noise_beta": 5.0}, "noise_beta"),
])
def test_validate_errors_name_the_key(overrides, key):
  with pytest.raises(ValueError) as err:
    P.validate(P.PlannerConfig(**overrides))
  message = str(err.value)
  assert f"PlannerConfig.{key}=" in message and "\n" not in message and ": " in message
  with pytest.raises(ValueError):
    P.plan(jax.random.key(0), Z0, GOAL, linear_rollout, P.PlannerConfig(**overrides))


def test_validate_accepts_reference_configs():
  for kind in ("cem", "mppi"):
    cfg = P.validate(P.PlannerConfig.ebjepa(kind))
    assert (cfg.horizon, cfg.num_samples, cfg.num_iterations, cfg.num_elites) == (90, 200, 20, 20)
    assert cfg.init_std == {"cem": 1.5, "mppi": 2.0}[kind]
  P.validate(P.PlannerConfig(action_bound=float("inf")))


class PointState(NamedTuple):
  position: jax.Array
  t: jax.Array


def point_step(state, action, key):
  del key
  return PointState(state.position + P.clip_norm(action, BOUND), state.t + 1)


def point_rollout(z0, actions):
  return z0 + jnp.cumsum(P.clip_norm(actions, BOUND), axis=0)


def test_run_episode_reaches_a_free_space_goal():
  cfg = P.PlannerConfig.ebjepa("cem", horizon=12, num_samples=100, num_iterations=10)
  start = PointState(jnp.array([10.0, 10.0]), jnp.int32(0))
  goal = PointState(jnp.array([22.0, 26.0]), jnp.int32(0))  # 20 px away: within 4.5 px after 7 full steps.
  run = jax.jit(functools.partial(P.run_episode, encode_fn=lambda s: s.position, rollout_fn=point_rollout,
                                  env_step_fn=point_step, cfg=cfg, max_steps=12))
  result = run(jax.random.key(0), start, goal)
  assert result.positions.shape == (13, 2) and result.actions.shape == (12, 2) and result.plan_costs.shape == (12,)
  assert bool(result.success) and bool(result.reached)
  assert int(result.steps_to_goal) in (7, 8)  # ceil((20 - 4.5) / 2.45) = 7 at full speed.
  d = np.linalg.norm(np.asarray(result.positions) - np.array([22.0, 26.0]), axis=-1)
  np.testing.assert_allclose(np.asarray(result.distances), d, atol=1e-5)
  assert int(np.argmax(d < 4.5)) == int(result.steps_to_goal)
  again = run(jax.random.key(0), start, goal)
  np.testing.assert_array_equal(np.asarray(again.positions), np.asarray(result.positions))


def test_run_episode_chunks_and_warm_start():
  cfg = P.PlannerConfig.ebjepa("mppi", horizon=8, num_samples=100, num_iterations=8, mppi_output="mean")
  start = PointState(jnp.array([0.0, 0.0]), jnp.int32(0))
  goal = PointState(jnp.array([30.0, 0.0]), jnp.int32(0))
  # 16 steps in plans of 3: 6 plans, the last one executes only 1 step.
  result = P.run_episode(jax.random.key(1), start, goal, lambda s: s.position, point_rollout, point_step, cfg,
                         max_steps=16, replan_every=3, warm_start=True)
  assert result.positions.shape == (17, 2) and result.actions.shape == (16, 2) and result.plan_costs.shape == (6,)
  np.testing.assert_allclose(np.asarray(result.positions[1:] - result.positions[:-1]),
                             np.asarray(P.clip_norm(result.actions, BOUND)), atol=1e-5)
  assert float(result.positions[-1, 0]) > 25.0 and bool(result.success)
  with pytest.raises(ValueError, match="replan_every"):
    P.run_episode(jax.random.key(1), start, goal, lambda s: s.position, point_rollout, point_step, cfg,
                  max_steps=16, replan_every=9)
  np.testing.assert_array_equal(np.asarray(P.shift_plan(jnp.arange(6.0).reshape(3, 2), 1)), [[2, 3], [4, 5], [0, 0]])


def test_two_rooms_episodes_vmapped():
  """Oracle latents (the position) and a wall-blind model: through the door works, into the wall does not."""
  env_cfg = tr.EnvConfig(fixed_wall=True)
  layout = tr.Layout(jnp.float32(32), jnp.float32(18))
  starts = jnp.array([[20.0, 18.0], [20.0, 40.0]])
  goals = jnp.array([[44.0, 18.0], [44.0, 40.0]])  # Level with the door; behind the wall.
  states = tr.EnvState(starts, goals, tr.Layout(jnp.full(2, 32.0), jnp.full(2, 18.0)), jnp.zeros(2, jnp.int32))
  goal_states = jax.vmap(tr.goal_state)(states)
  cfg = P.PlannerConfig.ebjepa("cem", horizon=12, num_samples=100, num_iterations=8)
  runner = P.make_episode_runner(lambda s: s.position, point_rollout, functools.partial(tr.step, cfg=env_cfg), cfg,
                                 max_steps=20)
  result = runner(jax.random.split(jax.random.key(2), 2), states, goal_states)
  assert result.positions.shape == (2, 21, 2)
  assert bool(result.success[0]) and 8 <= int(result.steps_to_goal[0]) <= 10  # ceil(19.5 / 2.45) = 8.
  assert not bool(result.reached[1])
  assert float(result.positions[1, :, 0].max()) < 31.0  # Stopped at the wall's left face.
  assert layout.wall_x == 32


def _colored_autocovariance(h, beta):
  """NumPy: Cov(x_t, x_{t+lag}) for lag 0..h-1 of colored_normal's sequence, from its spectrum's definition
  (s_k = f_k^(-beta/2), f_0 raised to f_1; weight 1 at k = 0 and k = h/2, 2 between), normalised to lag 0."""
  f = np.fft.rfftfreq(h)
  f[0] = f[1]
  power = f ** (-beta)
  weight = np.full(len(f), 2.0)
  weight[0] = 1.0
  if h % 2 == 0:
    weight[-1] = 1.0
  lags = np.arange(h)
  cov = (weight * power * np.cos(2 * np.pi * np.outer(lags, np.arange(len(f))) / h)).sum(axis=1)
  return cov / cov[0]


@pytest.mark.parametrize("h", [35, 36])
def test_colored_normal_statistics(h):
  n = 20000
  white = np.asarray(P.colored_normal(jax.random.key(0), (n, h, 2), 0.0), np.float64)
  # beta = 0 is white noise: identity covariance over the horizon (standard error of an entry ~ 1 / sqrt(n)).
  np.testing.assert_allclose(np.cov(white[:, :, 0].T), np.eye(h), atol=6 / np.sqrt(n))
  lag1 = []
  for beta in (1.0, 2.0):
    x = np.asarray(P.colored_normal(jax.random.key(1), (n, h, 2), beta), np.float64)
    np.testing.assert_allclose(x.var(axis=0), 1.0, atol=0.06)  # Unit variance at every step, both coordinates.
    # The stationary autocovariance of the definition, at every pair (t, t + lag), for the first coordinate.
    expected = _colored_autocovariance(h, beta)
    cov = np.cov(x[:, :, 0].T)
    for lag in (1, 2, 5, h // 2):
      np.testing.assert_allclose(np.diagonal(cov, lag), expected[lag], atol=0.06)
    # The two action coordinates are uncorrelated (at equal steps; the spectra are drawn independently per axis).
    assert abs(np.mean(x[:, :, 0] * x[:, :, 1])) < 6 / np.sqrt(n)
    lag1.append(expected[1])
  assert 0.5 < lag1[0] < lag1[1] < 1.0  # Redder noise keeps a heading longer.


@pytest.mark.parametrize("h", [1, 2, 3, 4])
def test_colored_normal_short_horizons(h):
  # The DC and Nyquist bins weigh most at short horizons: a wrong weight there moves the variance by > 10%.
  n = 40000
  for beta in (0.0, 2.0):
    raw = P.colored_normal(jax.random.key(2), (n, h, 3), beta)
    assert raw.shape == (n, h, 3) and raw.dtype == jnp.float32
    x = np.asarray(raw, np.float64)
    cov = np.cov(x[:, :, 1].T).reshape(h, h)
    expected = _colored_autocovariance(h, beta) if h > 1 else np.ones(1)
    np.testing.assert_allclose(np.diag(cov), 1.0, atol=0.03)
    for lag in range(1, h):
      np.testing.assert_allclose(np.diagonal(cov, lag), expected[lag], atol=0.03)
    if beta == 0.0:
      np.testing.assert_allclose(cov, np.eye(h), atol=0.03)


def test_colored_noise_planner_reaches_the_closed_form_optimum():
  cfg = dataclasses.replace(CFGS["cem"], noise_beta=2.0)
  actions, info = _plan("cem", 0, cfg=cfg)
  optimum, optimal_cost = greedy_optimum(GOAL, 5)
  # Within 3% of the optimum (white noise: 0.5%): samples correlated over the horizon explore headings and
  # fine-tune single steps less, here the optimum's stop after 2.5 steps.
  assert optimal_cost <= _cost(actions) + 1e-4 and _cost(actions) < 1.03 * optimal_cost
  np.testing.assert_allclose(np.asarray(actions).sum(axis=0), optimum.sum(axis=0), atol=0.3)
  assert np.all(np.linalg.norm(np.asarray(actions), axis=-1) <= BOUND + 1e-4)
  # The noise is drawn from the key: the same key gives the same plan, and another plan than white noise's.
  np.testing.assert_array_equal(np.asarray(actions), np.asarray(_plan("cem", 0, cfg=cfg)[0]))
  assert not np.array_equal(np.asarray(actions), np.asarray(_plan("cem", 0)[0]))
  assert float(info["cost"]) == pytest.approx(_cost(actions), rel=1e-4)
