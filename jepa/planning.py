r"""Latent-space model-predictive control: CEM and MPPI over action sequences, and a receding-horizon loop.

A world model gives ``rollout_fn(z0, actions [H, A]) -> latents [H, ...]``, the predicted latents after each
action. A candidate plan a_{0:H} is scored by its distance to the goal latent z_g (EB-JEPA's
`ReprTargetDistMPCObjective`: squared error averaged over the latent's entries; ``distance='sq'``, the default),

  cost 'sum':  C(a) = sum_{t < h} w_t mean((z_hat_{t+1} - z_g)^2),   w_t = 1      (EB-JEPA's default)
  cost 'last': C(a) = mean((z_hat_h - z_g)^2)                                      (its "last-step" ablation)

with h = min(H, steps_left) (the reference shortens the horizon to the steps the episode has left; here the
shapes stay fixed and the steps past h get weight 0). ``distance='l1'`` puts the absolute error in place of
the squared one, mean(|z_hat - z_g|): V-JEPA 2-AC's energy (vjepa2 notebooks/utils/mpc_utils.py `l1`), which
with cost 'last' is exactly that planner's. Each of `num_iterations` rounds draws `num_samples`
sequences a = clip(mu + sigma * eps), each action's norm clipped to `action_bound`, scores them and keeps the
`num_elites` cheapest, e_1..e_K (costs c_1 <= ... <= c_K). eps is white, N(0, I) (the references), or with
``noise_beta = beta > 0`` coloured along the horizon as in iCEM (Pinneri et al. 2020, "Sample-efficient
Cross-Entropy Method for Real-time Planning"): each action coordinate is a stationary Gaussian sequence of unit
variance whose power spectrum falls as 1/f^beta (:func:`colored_normal`), so a sample keeps a heading for many
steps, as a path to a door does, instead of averaging out to a standstill:

  CEM:   mu' = mean_k e_k,            sigma' = std_k e_k (unbiased)                        -> returns mu
  MPPI:  w_k = softmax_k(-lambda (c_k - c_1)),  mu' = sum_k w_k e_k,
         sigma' = sqrt(sum_k w_k (e_k - mu')^2)                                            -> returns one e_k ~ w

then mu <- m mu + (1 - m) mu', sigma <- m sigma + (1 - m) sigma' (momentum m; EB-JEPA uses m = 0, V-JEPA 2-AC
0.15). lambda = 0.005 is an inverse temperature. Everything is a pure function of the key, jit- and
vmap-able; :data:`plan_jit` is `plan` jitted with `rollout_fn` and `cfg` static, and
:func:`make_batched_planner` and :func:`make_episode_runner` return jitted functions vmapped over episodes.

Source: facebookresearch/eb_jepa @ 966e61e, ``eb_jepa/planning.py`` (CEMPlanner, MPPIPlanner,
ReprTargetDistMPCObjective) and ``examples/ac_video_jepa/cfgs/planning_{cem,mppi}.yaml``; read, not copied.
Choices where this module and the reference differ, and why:

* MPPI samples are norm-clipped too (the reference clips only in CEM, and its env clips nothing); the
  Two Rooms env here clips at 2.45, so unclipped plans would be scored on moves the env never makes. Set
  ``action_bound=float('inf')`` for the reference's unclipped MPPI.
* MPPI's output: the reference returns one elite drawn with probability w_k (with numpy's global RNG);
  ``mppi_output='sample'`` does that from the key, ``'mean'`` returns mu instead.
* The cost omits the reference's t = 0 term (the distance of the *current* latent to the goal), a constant
  that changes neither the elite ranking nor the MPPI weights.
* `run_episode` can warm-start each plan's mean with the previous mean shifted by the executed steps
  (``warm_start=True``); the reference restarts from mu = 0 every time, which is the default here.
* Success is judged as the reference does, at the end of the episode (||p_T - p_goal|| < radius); the first
  step within the radius is reported as well.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jepa.errors import ConfigError

KINDS = ("cem", "mppi")
COSTS = ("sum", "last")
DISTANCES = ("sq", "l1")
MPPI_OUTPUTS = ("sample", "mean")


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
  """Planner hyper-parameters (frozen, hashable: a static argument). Defaults: EB-JEPA's MPPI (planning_mppi.yaml
  and MPPIPlanner); :meth:`ebjepa` gives either reference planner."""
  kind: str = "mppi"  # 'cem' | 'mppi' (planner_name).
  horizon: int = 90  # plan_length.
  num_samples: int = 200  # num_samples.
  num_iterations: int = 20  # n_iters.
  num_elites: int = 20  # num_elites.
  init_std: float = 2.0  # Initial sigma: MPPIPlanner max_std = 2 (it ignores var_scale); CEM var_scale = 1.5.
  temperature: float = 0.005  # MPPI inverse temperature lambda (MPPIPlanner temperature).
  action_bound: float = 2.45  # max_norms: each action's L2 norm is clipped to this.
  momentum: float = 0.0  # Smoothing of mu and sigma between iterations (the reference has none).
  cost: str = "sum"  # 'sum' (sum_all_diffs: true) | 'last' (last predicted latent only).
  action_dim: int = 2  # Two Rooms: a 2-D displacement.
  mppi_output: str = "sample"  # 'sample' (reference: one elite drawn by weight) | 'mean'.
  distance: str = "sq"  # 'sq' (squared error, EB-JEPA) | 'l1' (absolute error, V-JEPA 2-AC).
  noise_beta: float = 0.0  # Exponent of the samples' 1/f^beta spectrum over the horizon: 0 white (references).

  @classmethod
  def ebjepa(cls, kind: str = "mppi", **overrides) -> 'PlannerConfig':
    """EB-JEPA's planner `kind` ('cem': sigma 1.5; 'mppi': sigma 2), with `overrides` applied."""
    init_std = {"cem": 1.5, "mppi": 2.0}.get(kind, 2.0)
    return cls(**{"kind": kind, "init_std": init_std, **overrides})


def validate(cfg: PlannerConfig) -> PlannerConfig:
  """Raises :class:`jepa.errors.ConfigError` (a ValueError) with one line naming the key and the fix."""
  def fail(msg):
    raise ConfigError(f"PlannerConfig.{msg}")
  if cfg.kind not in KINDS:
    fail(f"kind={cfg.kind!r} is unknown: use 'cem' or 'mppi'")
  if cfg.cost not in COSTS:
    fail(f"cost={cfg.cost!r} is unknown: use 'sum' or 'last'")
  if cfg.distance not in DISTANCES:
    fail(f"distance={cfg.distance!r} is unknown: use 'sq' or 'l1'")
  if cfg.mppi_output not in MPPI_OUTPUTS:
    fail(f"mppi_output={cfg.mppi_output!r} is unknown: use 'sample' or 'mean'")
  for name in ("horizon", "num_samples", "num_iterations", "num_elites", "action_dim"):
    value = getattr(cfg, name)
    if not isinstance(value, int) or value <= 0:
      fail(f"{name}={value!r} must be a positive integer: set {name} >= 1")
  if cfg.num_elites > cfg.num_samples:
    fail(f"num_elites={cfg.num_elites} exceeds num_samples={cfg.num_samples}: set num_elites <= num_samples")
  if not cfg.init_std > 0:
    fail(f"init_std={cfg.init_std} must be > 0: set a positive initial standard deviation")
  if not cfg.action_bound > 0:
    fail(f"action_bound={cfg.action_bound} must be > 0: set the action norm bound (float('inf') for none)")
  if not cfg.temperature > 0 or math.isinf(cfg.temperature):
    fail(f"temperature={cfg.temperature} must be finite and > 0: set the MPPI inverse temperature (0.005)")
  if not 0.0 <= cfg.momentum < 1.0:
    fail(f"momentum={cfg.momentum} must be in [0, 1): set 0 for no smoothing")
  if not 0.0 <= cfg.noise_beta <= 4.0:
    fail(f"noise_beta={cfg.noise_beta} must be in [0, 4]: set 0 for white noise (iCEM uses 2-3)")
  return cfg


def colored_normal(key, shape, beta: float):
  r"""Gaussian noise of `shape` [..., H, A], independent over every axis but H, along which each sequence is
  stationary with unit variance and power spectrum S(f) proportional to 1/f^beta (beta = 0: exactly N(0, I)).

  With f_k = k / H (k = 0..H//2, rfft frequencies; f_0 is raised to f_1 so that the mean's power stays finite, as
  the `colorednoise` package does) and s_k = f_k^(-beta/2), the spectrum X_k = s_k (u_k + i v_k) has
  u_k, v_k ~ N(0, 1/2) for 0 < k < H/2 and a real X_k ~ N(0, s_k^2) at k = 0 and at k = H/2 (H even): the
  variances the DFT of white noise has, so that beta = 0 gives white noise. x = irfft(X) then has
  Var(x_t) = (s_0^2 + 2 sum_{0<k<H/2} s_k^2 + [H even] s_{H/2}^2) / H^2 for every t, and is divided by its root.
  """
  h = shape[-2]
  k = jnp.arange(h // 2 + 1)
  s = jnp.maximum(k, 1).astype(jnp.float32) / h  # f_k, with f_0 raised to f_1 (1 / H).
  s = s ** (-beta / 2.0)
  edge = (k == 0) | (2 * k == h)  # The real bins: DC, and Nyquist for even H.
  k_re, k_im = jax.random.split(key)
  spec_shape = tuple(shape[:-2]) + (len(k), shape[-1])
  re_std = jnp.where(edge, 1.0, math.sqrt(0.5)) * s
  im_std = jnp.where(edge, 0.0, math.sqrt(0.5)) * s
  spectrum = (jax.random.normal(k_re, spec_shape) * re_std[:, None]
              + 1j * jax.random.normal(k_im, spec_shape) * im_std[:, None])
  x = jnp.fft.irfft(spectrum, n=h, axis=-2)
  var = jnp.sum(jnp.where(edge, 1.0, 2.0) * s ** 2) / h ** 2
  return (x / jnp.sqrt(var)).astype(jnp.float32)


def clip_norm(actions, bound):
  """a * min(1, bound / ||a||) over the last axis."""
  norm = jnp.linalg.norm(actions, axis=-1, keepdims=True)
  return actions * jnp.minimum(1.0, bound / jnp.maximum(norm, 1e-12))


def horizon_weights(cfg: PlannerConfig, steps_left=None):
  """[H] weights w_t of the per-step costs: 1 on t < h ('sum') or on t = h - 1 only ('last'), h = min(H, steps_left)."""
  h = cfg.horizon if steps_left is None else jnp.clip(steps_left, 1, cfg.horizon)
  t = jnp.arange(cfg.horizon)
  return (t < h).astype(jnp.float32) if cfg.cost == "sum" else (t == h - 1).astype(jnp.float32)


def sequence_cost(latents, z_goal, weights, distance="sq"):
  """sum_t w_t mean((latents[t] - z_goal)^2) ('sq'), or with |.| ('l1'): latents [H, ...], z_goal [...], weights [H]."""
  diff = latents - z_goal[None]
  err = jnp.square(diff) if distance == "sq" else jnp.abs(diff)
  per_step = err.reshape(err.shape[0], -1).mean(axis=-1)
  return jnp.sum(weights * per_step)


class _Search(NamedTuple):
  mean: jax.Array  # [H, A]
  std: jax.Array  # [H, A]
  elites: jax.Array  # [K, H, A], cheapest first
  weights: jax.Array  # [K]


def plan(key, z0, z_goal, rollout_fn: Callable, cfg: PlannerConfig, init_mean=None, steps_left=None):
  """Optimises an action sequence from latent `z0` towards `z_goal` with CEM or MPPI (module docstring).

  Parameters
  ----------
  key : PRNG key; the result is a pure function of it (and of the inputs).
  z0, z_goal : the current and goal latents (any shape, the same for both).
  rollout_fn : ``(z0, actions [H, A]) -> latents [H, ...]``, pure and traceable; it is vmapped over samples.
  cfg : :class:`PlannerConfig` (static).
  init_mean : optional [H, A] initial mean (warm start); zeros otherwise.
  steps_left : optional int (or traced int) limiting the horizon that is scored to min(H, steps_left).

  Returns
  -------
  actions : [H, A] the plan (CEM: the final mean; MPPI: one final elite drawn by weight, or the mean).
  info : dict with 'mean', 'std' [H, A]; 'cost' (of `actions`); 'min_cost', 'elite_cost' [iterations]
    (the cheapest sample's cost and the elites' mean cost in each round).
  """
  validate(cfg)
  h, a, n, k = cfg.horizon, cfg.action_dim, cfg.num_samples, cfg.num_elites
  z0, z_goal = jnp.asarray(z0), jnp.asarray(z_goal)
  weights = horizon_weights(cfg, steps_left)
  batched_rollout = jax.vmap(rollout_fn, in_axes=(None, 0))
  cost_fn = functools.partial(sequence_cost, distance=cfg.distance)
  batched_cost = jax.vmap(cost_fn, in_axes=(0, None, None))

  mean = jnp.zeros((h, a), jnp.float32) if init_mean is None else jnp.asarray(init_mean, jnp.float32)
  start = _Search(mean, jnp.full((h, a), cfg.init_std, jnp.float32), jnp.zeros((k, h, a), jnp.float32),
                  jnp.full((k,), 1.0 / k, jnp.float32))

  def iteration(search: _Search, it_key):
    eps = (colored_normal(it_key, (n, h, a), cfg.noise_beta) if cfg.noise_beta
           else jax.random.normal(it_key, (n, h, a)))
    samples = clip_norm(search.mean + search.std * eps, cfg.action_bound)
    costs = batched_cost(batched_rollout(z0, samples), z_goal, weights)
    neg_elite_costs, idx = jax.lax.top_k(-costs, k)  # The k cheapest, cheapest first.
    elite_costs, elites = -neg_elite_costs, samples[idx]
    if cfg.kind == "cem":
      w = jnp.full((k,), 1.0 / k, jnp.float32)
      new_mean = elites.mean(axis=0)
      new_std = elites.std(axis=0, ddof=1 if k > 1 else 0)  # torch.std is unbiased.
    else:
      w = jax.nn.softmax(-cfg.temperature * (elite_costs - elite_costs[0]))
      new_mean = jnp.einsum("k,kha->ha", w, elites)
      new_std = jnp.sqrt(jnp.einsum("k,kha->ha", w, jnp.square(elites - new_mean[None])))
    m = cfg.momentum
    search = _Search(m * search.mean + (1 - m) * new_mean, m * search.std + (1 - m) * new_std, elites, w)
    return search, (elite_costs[0], elite_costs.mean())

  key, out_key = jax.random.split(key)
  search, (min_cost, elite_cost) = jax.lax.scan(iteration, start, jax.random.split(key, cfg.num_iterations))

  if cfg.kind == "mppi" and cfg.mppi_output == "sample":
    actions = search.elites[jax.random.choice(out_key, k, p=search.weights)]
  else:
    actions = search.mean
  cost = cost_fn(rollout_fn(z0, actions), z_goal, weights)
  info = {"mean": search.mean, "std": search.std, "cost": cost, "min_cost": min_cost, "elite_cost": elite_cost}
  return actions, info


# `plan` compiled once per (rollout_fn, cfg, input shapes): pass a stable callable (a module-level function or one
# built once), since a fresh lambda per call is a new static argument and recompiles.
plan_jit = jax.jit(plan, static_argnames=("rollout_fn", "cfg"))


def make_batched_planner(rollout_fn: Callable, cfg: PlannerConfig):
  """Jitted ``(keys [B], z0 [B, ...], z_goal [B, ...], init_mean [B, H, A] | None, steps_left [B] | None)
  -> (actions [B, H, A], info)``: :func:`plan` vmapped over B episodes. Build it once and reuse it."""
  validate(cfg)

  def one(key, z0, z_goal, init_mean, steps_left):
    return plan(key, z0, z_goal, rollout_fn, cfg, init_mean=init_mean, steps_left=steps_left)

  batched = jax.jit(jax.vmap(one))

  def planner(keys, z0, z_goal, init_mean=None, steps_left=None):
    return batched(keys, z0, z_goal, init_mean, steps_left)
  return planner


def shift_plan(mean, num_steps: int):
  """The plan after executing its first `num_steps` actions: mean[num_steps:] followed by zeros."""
  return jnp.concatenate([mean[num_steps:], jnp.zeros_like(mean[:num_steps])], axis=0)


class EpisodeResult(NamedTuple):
  """What `run_episode` returns (T = max_steps)."""
  positions: jax.Array  # [T + 1, ...] position_fn of the start and of the state after each step.
  actions: jax.Array  # [T, A] executed actions (as planned; the env may clip them).
  distances: jax.Array  # [T + 1] ||position - goal position||.
  success: jax.Array  # bool: distances[T] < radius (EB-JEPA's criterion, judged at the end).
  reached: jax.Array  # bool: some distances[t] < radius.
  steps_to_goal: jax.Array  # int32: first t with distances[t] < radius, -1 if none.
  plan_costs: jax.Array  # [ceil(T / replan_every)] cost of each executed plan, as the model predicted it.
  last_plan: jax.Array  # [H, A] the last plan's actions (its first ones executed, the rest what it intended).


def _position(state):
  return state.position


def run_episode(key, env_state, goal, encode_fn: Callable, rollout_fn: Callable, env_step_fn: Callable,
                cfg: PlannerConfig, max_steps: int, replan_every: int = 1, warm_start: bool = False,
                success_radius: float = 4.5, position_fn: Callable = _position) -> EpisodeResult:
  """Receding-horizon control: plan, execute the first `replan_every` actions, re-plan, for `max_steps` steps.

  Parameters
  ----------
  key : PRNG key; planner and environment noise are split from it, so the episode is a function of the key.
  env_state : the environment state (a pytree, e.g. :class:`jepa.envs.two_rooms.EnvState`).
  goal : a state of the same kind showing the goal (for Two Rooms, ``two_rooms.goal_state(state)``).
  encode_fn : ``state -> latent`` (observe, normalise, encode); applied to `goal` once and to the current
    state before every plan.
  rollout_fn : the world model, ``(z0, actions [H, A]) -> latents [H, ...]``.
  env_step_fn : ``(state, action, key) -> state``, e.g. ``functools.partial(two_rooms.step, cfg=env_cfg)``.
  cfg : :class:`PlannerConfig`.
  max_steps : environment steps (EB-JEPA: 200). Static.
  replan_every : actions executed per plan (EB-JEPA: 1; its "easy" task: 2). Static, in [1, horizon].
  warm_start : start each plan's mean from the previous mean shifted by `replan_every` (reference: False).
  success_radius : success is ||position_fn(state) - position_fn(goal)|| < radius (4.5 px).
  position_fn : ``state -> position`` (default ``state.position``).

  The loop is a `lax.scan` over plans with an inner scan over the executed steps, so it jits and vmaps (no
  `lax.cond`, which vmap would turn into planning at every step). Steps past `max_steps` in the last plan's
  chunk are not executed.
  """
  validate(cfg)
  if max_steps < 1:
    raise ConfigError(f"run_episode max_steps={max_steps} must be >= 1: set the episode length (EB-JEPA: 200)")
  if not 1 <= replan_every <= cfg.horizon:
    raise ConfigError(f"run_episode replan_every={replan_every} must be in [1, horizon={cfg.horizon}]: execute "
                      "at most one plan before re-planning")
  num_plans = -(-max_steps // replan_every)
  z_goal = encode_fn(goal)
  goal_position = position_fn(goal)

  def one_plan(carry, plan_key):
    state, prev_mean, t = carry
    k_plan, k_env = jax.random.split(plan_key)
    init_mean = shift_plan(prev_mean, replan_every) if warm_start else None
    actions, info = plan(k_plan, encode_fn(state), z_goal, rollout_fn, cfg, init_mean=init_mean,
                         steps_left=max_steps - t)

    def one_step(inner, xs):
      state, t = inner
      action, step_key = xs
      active = t < max_steps
      stepped = env_step_fn(state, action, step_key)
      state = jax.tree.map(lambda new, old: jnp.where(active, new, old), stepped, state)
      return (state, t + active.astype(t.dtype)), (position_fn(state), action)

    (state, t), (positions, executed) = jax.lax.scan(
        one_step, (state, t), (actions[:replan_every], jax.random.split(k_env, replan_every)))
    return (state, info["mean"], t), (positions, executed, info["cost"], actions)

  start = (env_state, jnp.zeros((cfg.horizon, cfg.action_dim), jnp.float32), jnp.int32(0))
  _, (positions, executed, plan_costs, plans) = jax.lax.scan(one_plan, start, jax.random.split(key, num_plans))
  positions = positions.reshape((-1,) + positions.shape[2:])[:max_steps]
  executed = executed.reshape((-1, cfg.action_dim))[:max_steps]
  positions = jnp.concatenate([position_fn(env_state)[None], positions], axis=0)
  distances = jnp.linalg.norm((positions - goal_position[None]).reshape(max_steps + 1, -1), axis=-1)
  within = distances < success_radius
  reached = within.any()
  return EpisodeResult(positions=positions, actions=executed, distances=distances, success=within[-1],
                       reached=reached, steps_to_goal=jnp.where(reached, jnp.argmax(within), -1).astype(jnp.int32),
                       plan_costs=plan_costs, last_plan=plans[-1])


def make_episode_runner(encode_fn: Callable, rollout_fn: Callable, env_step_fn: Callable, cfg: PlannerConfig,
                        max_steps: int, replan_every: int = 1, warm_start: bool = False, success_radius: float = 4.5,
                        position_fn: Callable = _position) -> Callable[[Any, Any, Any], EpisodeResult]:
  """Jitted ``(keys [B], env_states [B], goals [B]) -> EpisodeResult`` with a leading B axis: `run_episode`
  vmapped over B episodes. Build it once and reuse it (it compiles on the first call)."""
  fn = functools.partial(run_episode, encode_fn=encode_fn, rollout_fn=rollout_fn, env_step_fn=env_step_fn, cfg=cfg,
                         max_steps=max_steps, replan_every=replan_every, warm_start=warm_start,
                         success_radius=success_radius, position_fn=position_fn)
  return jax.jit(jax.vmap(fn))
