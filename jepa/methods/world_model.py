r"""EB-JEPA's action-conditioned world model (Two Rooms): IMPALA encoder, GRU predictor, latent planning.

Data: windows of T = world_model.frames (<= 17) frames o_0..o_{T-1} [65, 65, 2] and the T - 1 actions a_t in R^2
between them (data.source='two_rooms', jepa/data/trajectories.py); action t moves frame t to frame t + 1.

Model (jepa/models/world_model.py, with the equations and the initialisation): z_t = encode(o_t), an IMPALA
CNN on the normalised frame ending in a LayerNorm, z_t in R^D (D = latent_dim); zhat_{t+1} = step(zhat_t, a_t),
a GRU whose hidden state is the latent, followed by the encoder's LayerNorm; ahat_t = idm(z_t, z_{t+1}), an MLP.

Loss (K = rollout_steps = 8; B trajectories; N = B T latents; D features; no EMA, no stop-gradient anywhere):

  pred = (1/K) sum_{k=1..K} mean_{b,d} (zhat_{b,k} - z_{b,k})^2            autoregressive rollout from frame 0
  var  = (1/D) sum_d relu(1 - sqrt(Var_n(z_{n,d}) + 1e-4))                 variance hinge (unbiased variance)
  cov  = sum_{i != j} C_ij^2 / (D (D - 1)),   C = Zc^T Zc / (N - 1)         covariance off-diagonal
  temp = mean_{b,t,d} (z_{b,t+1,d} - z_{b,t,d})^2                           temporal smoothness
  idm  = mean_{b,t,i} (ahat_{b,t,i} - a_{b,t,i})^2                          inverse dynamics
  L    = pred + 16 var + 8 cov + 12 temp + 1 idm                            (world_model.regularizer='vc')
  L    = pred + w SIGReg({z_{b,t}}_b, views t) + 12 temp + 1 idm            (world_model.regularizer='sigreg')

The SIGReg alternative (jepa.losses.sigreg: N-scaled Epps-Pulley, directions redrawn every step from the step
key) replaces var + cov; each frame index t is one view, a batch of B independent trajectories, and the
statistic is averaged over the T views. Its weight world_model.sigreg_weight (0.05) is LeJEPA's lambda, not
tuned here: EB-JEPA's world model has no SIGReg variant (its image SIGReg, "BCS", is lambda = 10 without the
x N factor, about 10 / N with it).

Planning (`extra_evaluations`, `run_planning`, and the CLI jepa/plan.py): planner.episodes held-out Two Rooms
episodes (start and goal in opposite rooms, `two_rooms.sample_episode`; episode i is a function of
(planner.seed, i)) are run with CEM or MPPI (jepa/planning.py) in latent space: z = encode(observe(state)),
z_g = encode(goal observation), rollout_fn = the predictor, re-planning every planner.replan_every steps for
planner.max_steps steps. Results: plan_success (fraction within 4.5 px of the goal at the end, EB-JEPA's
criterion), plan_steps (mean first step within 4.5 px, an episode that never gets there counted as
max_steps), plan_final_distance (px) and plan_seconds_per_episode (the episodes run as one vmapped batch: its
execution time, compilation excluded, divided by their number; EB-JEPA's ~37 s is one episode at a time on a
GPU).

Source: facebookresearch/eb_jepa @ 966e61e: eb_jepa/losses.py (HingeStdLoss, CovarianceLoss,
TemporalSimilarityLoss, InverseDynamicsLoss, VC_IDM_Sim_Regularizer), eb_jepa/jepa.py (JEPA.unroll,
'autoregressive'), examples/ac_video_jepa/{main.py, cfgs/train.yaml}; read, not copied (the networks'
source, eb_jepa/architectures.py, is cited in jepa/models/world_model.py). Choices where this method and the
reference differ, and why:

* One global gradient-norm clip (optim.grad_clip = 2) over all parameters; the reference clips encoder and
  predictor separately at 2 and the inverse-dynamics head not at all.
* Weight decay (1e-5) skips biases and 1-D parameters (jepa/optim.py's rule); the reference decays all.
* The latent-position probe the reference trains beside the model (an MLP reading (x, y) from z_0, used only
  for its logs) is not built; the planning evaluator measures what the model is for.
* world_model.frames can use fewer than the 17 frames of a window (the CPU default uses 9 = 1 + rollout_steps);
  the regularisers then see those frames only. The reference uses all 17.
* The evaluation (jepa/evaluation/suite.py) extracts frozen features for its probes even when no probe runs: the eval
  transform gives the encoder's latent of frame 0 with a dummy label -1 (trajectories have none; only RankMe,
  which needs no label, may be listed in eval.evaluators).
"""
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jepa import config as config_lib
from jepa import losses
from jepa import planning
from jepa.data import trajectories
from jepa.envs import two_rooms
from jepa.evaluation import collapse
from jepa.methods import base
from jepa.models import factory
from jepa.models import world_model as world_model_lib

ACTION_DIM = world_model_lib.ACTION_DIM  # Two Rooms' actions (dx, dy); the planner's action_dim.
REGULARIZERS = ("vc", "sigreg")
STD_MARGIN = 1.0  # HingeStdLoss(std_margin=1.0).
STD_EPS = 1e-4  # HingeStdLoss: sqrt(var + 1e-4).
# Evaluators that need no labels (trajectories have none); 'probes' expands to the method's, which are none.
LABEL_FREE_EVALUATORS = ("probes", "rankme")
# The EB-JEPA initial standard deviation of each planner (planning.PlannerConfig.ebjepa), used for init_std=0.
INIT_STD = {"cem": 1.5, "mppi": 2.0}

def config_sections():
  """The method's `world_model` (model and loss) and `planner` sections, documented in configs/world_model.py."""
  return {
      "world_model": ml_collections.ConfigDict(dict(
          latent_dim=512, channels=(16, 32, 32), blocks=2, idm_hidden=256, rollout_steps=8, frames=17,
          regularizer="vc", std_weight=16.0, cov_weight=8.0, temporal_weight=12.0, idm_weight=1.0,
          sigreg_weight=0.05, sigreg_slices=256)),
      "planner": ml_collections.ConfigDict(dict(
          kind="mppi", horizon=90, num_samples=200, num_iterations=20, num_elites=20, init_std=0.0,
          temperature=0.005, action_bound=2.45, momentum=0.0, cost="sum", mppi_output="sample", noise_beta=0.0,
          episodes=20, seed=0, max_steps=200, replan_every=1, level="normal", warm_start=False,
          episodes_from="random")),
  }


# --- loss terms (each checked against NumPy in tests/test_world_model.py) -------------------------------------
def variance_hinge(x, margin=STD_MARGIN, eps=STD_EPS):
  """x [N, D] -> (1/D) sum_d relu(margin - sqrt(Var_n x_{n,d} + eps)), unbiased variance (HingeStdLoss)."""
  std = jnp.sqrt(jnp.var(x, axis=0, ddof=1) + eps)
  return jnp.mean(jax.nn.relu(margin - std))


def covariance_offdiag(x):
  """x [N, D] -> sum_{i != j} C_ij^2 / (D (D - 1)), C = (x - mean)^T (x - mean) / (N - 1) (CovarianceLoss)."""
  n, d = x.shape
  xc = x - x.mean(axis=0, keepdims=True)
  cov = xc.T @ xc / (n - 1)
  off = cov - jnp.diag(jnp.diag(cov))
  return jnp.sum(off ** 2) / (d * (d - 1))


def temporal_smoothness(z):
  """z [B, T, D] -> mean_{b,t,d} (z_{b,t+1,d} - z_{b,t,d})^2 (TemporalSimilarityLoss); 0 for T = 1."""
  if z.shape[1] < 2:
    return jnp.zeros([], jnp.float32)
  return jnp.mean(jnp.square(z[:, 1:] - z[:, :-1]))


def rollout_loss(predicted, targets):
  """predicted, targets [B, K, D] -> (1/K) sum_k mean_{b,d} (predicted - targets)^2, and the per-step MSEs [K]."""
  per_step = jnp.mean(jnp.square(predicted - targets), axis=(0, 2))
  return per_step.mean(), per_step


def world_model_loss(model, frames, actions, *, cfg, key=None):
  """(loss, metrics) of a batch: frames [B, T, 65, 65, 2] raw, actions [B, T - 1, 2]; cfg = config.world_model.

  `key` draws the SIGReg directions (regularizer='sigreg' only).
  """
  b, t = frames.shape[:2]
  k = cfg.rollout_steps
  z = model.encode(frames)                                        # [B, T, D]
  predicted = model.rollout(z[:, 0], actions[:, :k])              # [B, K, D]
  pred, per_step = rollout_loss(predicted, z[:, 1:k + 1])
  temp = temporal_smoothness(z)
  a_hat = model.idm(z[:, :-1], z[:, 1:])                          # [B, T - 1, 2]
  idm = jnp.mean(jnp.square(a_hat - actions.astype(jnp.float32)))
  metrics = {"pred_loss": pred, "pred_loss_first": per_step[0], "pred_loss_last": per_step[-1],
             "temporal_loss": temp, "idm_loss": idm}
  loss = pred + cfg.temporal_weight * temp + cfg.idm_weight * idm
  if cfg.regularizer == "vc":
    flat = z.reshape(b * t, -1)
    var, cov = variance_hinge(flat), covariance_offdiag(flat)
    loss = loss + cfg.std_weight * var + cfg.cov_weight * cov
    metrics.update(std_loss=var, cov_loss=cov)
  else:
    reg = losses.sigreg(jnp.swapaxes(z, 0, 1), key=key, num_slices=cfg.sigreg_slices)
    loss = loss + cfg.sigreg_weight * reg
    metrics["sigreg"] = reg
  z0 = jax.lax.stop_gradient(z[:, 0])
  metrics["embedding_std"] = jnp.std(z0, axis=0).mean()
  metrics["rankme"] = collapse.rankme(z0)
  return loss, metrics


# --- planning -------------------------------------------------------------------------------------------------
def planner_config(planner_cfg, kind=None):
  """planning.PlannerConfig from the config's `planner` section (`kind` overrides planner.kind), validated.

  planner.init_std = 0 takes the kind's EB-JEPA value (CEM 1.5, MPPI 2). A bad value raises a one-line
  ConfigError naming the config key (planner.<field>) and the fix.
  """
  kind = kind or planner_cfg.kind
  init_std = float(planner_cfg.init_std) or INIT_STD.get(kind, 2.0)
  cfg = planning.PlannerConfig(
      kind=kind, horizon=planner_cfg.horizon, num_samples=planner_cfg.num_samples,
      num_iterations=planner_cfg.num_iterations, num_elites=planner_cfg.num_elites, init_std=init_std,
      temperature=float(planner_cfg.temperature), action_bound=float(planner_cfg.action_bound),
      momentum=float(planner_cfg.momentum), cost=planner_cfg.cost, action_dim=ACTION_DIM,
      mppi_output=planner_cfg.mppi_output, noise_beta=float(planner_cfg.noise_beta))
  try:
    return planning.validate(cfg)
  except base.ConfigError as e:
    raise base.ConfigError(str(e).replace("PlannerConfig.", "planner.", 1)) from None


def env_config(planner_cfg):
  """The evaluation environment: random walls, planner.level, success radius 4.5 px."""
  return two_rooms.EnvConfig(level=planner_cfg.level, max_episode_steps=planner_cfg.max_steps)


def episode_keys(seed, num_episodes):
  """(environment keys, planner keys) [N]: episode i's are fold_in(fold_in(key(seed), 0 or 1), i), so episode i
  is the same whatever the number of episodes."""
  root = jax.random.key(seed)
  idx = jnp.arange(num_episodes)
  env = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, 0), i))(idx)
  plan = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, 1), i))(idx)
  return env, plan


def evaluation_episodes(episodes_from, seed, num_episodes, env_cfg):
  """(start states [N], planner keys [N]): fresh episodes drawn from `seed` ('random'), or EB-JEPA's own
  evaluation episodes replayed ('reference', two_rooms.reference_episodes); the planner keys come from `seed`
  either way."""
  env_keys, plan_keys = episode_keys(seed, num_episodes)
  if episodes_from == "reference":
    return two_rooms.reference_episodes(num_episodes, env_cfg), plan_keys
  return jax.vmap(lambda k: two_rooms.sample_episode(k, env_cfg))(env_keys), plan_keys


@functools.partial(jax.jit, static_argnames=("graphdef", "plan_cfg", "env_cfg", "max_steps", "replan_every",
                                             "warm_start"))
def _run_episodes(params, env_states, plan_keys, *, graphdef, plan_cfg, env_cfg, max_steps, replan_every,
                  warm_start):
  """planning.run_episode vmapped over episodes, with the world model rebuilt from (graphdef, params)."""
  model = nnx.merge(graphdef, params)

  def encode_fn(state):
    return model.encode(two_rooms.observe(state, env_cfg))

  def one(key, state):
    return planning.run_episode(key, state, two_rooms.goal_state(state), encode_fn, model.rollout,
                                functools.partial(two_rooms.step, cfg=env_cfg), plan_cfg, max_steps,
                                replan_every=replan_every, warm_start=warm_start,
                                success_radius=env_cfg.success_radius)

  return jax.vmap(one)(plan_keys, env_states)


def run_planning(model, planner_cfg, *, episodes=None, kind=None, seed=None, distance=None):
  """Plans `episodes` held-out Two Rooms episodes with `model` (a WorldModel); see the module docstring.

  Args:
    model: the trained WorldModel (e.g. StateDef.models(state)[0]), or any module with its `encode(frames)`
      and `rollout(z0, actions)` (jepa/models/ac_predictor.py ACWorldModel).
    planner_cfg: the config's `planner` section.
    episodes, kind, seed: override planner.episodes, planner.kind, planner.seed.
    distance: the energy's distance (planning.PlannerConfig.distance); None keeps the default 'sq'.

  Returns:
    dict: 'success', 'reached', 'steps_to_goal' (-1 if never within the radius), 'final_distance' (NumPy
    arrays over episodes), 'seconds_per_episode', 'compile_seconds', 'episodes', 'kind', 'seed', and what the
    episode pictures draw (`episode_record`).
  """
  plan_cfg = planner_config(planner_cfg, kind)
  if distance is not None:
    plan_cfg = planning.validate(dataclasses.replace(plan_cfg, distance=distance))
  env_cfg = env_config(planner_cfg)
  episodes = planner_cfg.episodes if episodes is None else int(episodes)
  seed = planner_cfg.seed if seed is None else int(seed)
  if episodes < 1:
    raise base.ConfigError(f"planner.episodes={episodes} must be >= 1 to plan (0 turns the evaluator off)")
  states, plan_keys = evaluation_episodes(planner_cfg.episodes_from, seed, episodes, env_cfg)
  graphdef, params = nnx.split(model)
  static = dict(graphdef=graphdef, plan_cfg=plan_cfg, env_cfg=env_cfg, max_steps=int(planner_cfg.max_steps),
                replan_every=int(planner_cfg.replan_every), warm_start=bool(planner_cfg.warm_start))
  t0 = time.perf_counter()
  compiled = _run_episodes.lower(params, states, plan_keys, **static).compile()
  t1 = time.perf_counter()
  result = jax.block_until_ready(compiled(params, states, plan_keys))
  t2 = time.perf_counter()
  return {"success": np.asarray(result.success), "reached": np.asarray(result.reached),
          "steps_to_goal": np.asarray(result.steps_to_goal), "final_distance": np.asarray(result.distances[:, -1]),
          "seconds_per_episode": (t2 - t1) / episodes, "compile_seconds": t1 - t0, "episodes": episodes,
          "kind": plan_cfg.kind, "seed": seed, **episode_record(states, result)}


def summarize(out, max_steps):
  """The evaluator's numbers from `run_planning`'s output (plan_steps counts a never-reached episode as max_steps)."""
  steps = np.where(out["steps_to_goal"] >= 0, out["steps_to_goal"], max_steps)
  return {"plan_success": float(np.mean(out["success"])), "plan_steps": float(np.mean(steps)),
          "plan_final_distance": float(np.mean(out["final_distance"])),
          "plan_seconds_per_episode": float(out["seconds_per_episode"])}


# --- config checks --------------------------------------------------------------------------------------------
def check_section(config, name):
  """One-line ConfigErrors for a missing section, a missing / unknown key or a value of the wrong type (against
  `config_sections`); jepa.plan checks a workdir's config with it before anything is built."""
  if name not in config:
    raise base.ConfigError(f"config section {name} is missing; start from configs/world_model.py, which declares "
                           "it")
  section, defaults = config[name], config_sections()[name]
  for key in section:
    if key not in defaults:
      raise base.ConfigError(f"config key {name}.{key} is unknown; use one of {sorted(defaults)}")
  for key, default in defaults.items():
    if key not in section:
      raise base.ConfigError(f"config key {name}.{key} is missing; add it (configs/world_model.py has its default)")
    if not config_lib.same_type(section[key], default):
      raise base.ConfigError(f"config key {name}.{key}={section[key]!r} has type {type(section[key]).__name__}, "
                             f"expected {type(default).__name__}")


def check_data(config):
  """A world model trains on trajectories: data.source must be 'two_rooms'."""
  if config.data.source != "two_rooms":
    raise base.ConfigError(f"data.source={config.data.source!r} is an image dataset, but method={config.method} "
                           "trains on action-labelled trajectories: use --config.data.source=two_rooms")


def check_planner(config):
  """The planner section: keys, types and ranges (planning.validate for the planner's own fields)."""
  check_section(config, "planner")
  p = config.planner
  planner_config(p)
  if p.episodes < 0:
    raise base.ConfigError(f"planner.episodes={p.episodes} must be >= 0 (0 = no planning evaluation)")
  if p.max_steps < 1:
    raise base.ConfigError(f"planner.max_steps={p.max_steps} must be >= 1 (EB-JEPA: {two_rooms.EVAL_MAX_STEPS})")
  if not 1 <= p.replan_every <= p.horizon:
    raise base.ConfigError(f"planner.replan_every={p.replan_every} must be in [1, planner.horizon={p.horizon}]: "
                           "execute at most one plan before re-planning")
  if p.level not in ("normal", "easy"):
    raise base.ConfigError(f"planner.level={p.level!r} is unknown; use 'normal' (anywhere in the rooms, EB-JEPA's "
                           "task) or 'easy' (start and goal near the door)")
  if p.seed < 0:
    raise base.ConfigError(f"planner.seed={p.seed} must be >= 0")
  if p.episodes_from not in ("random", "reference"):
    raise base.ConfigError(f"planner.episodes_from={p.episodes_from!r} is unknown; use 'random' (fresh episodes "
                           "drawn from planner.seed) or 'reference' (EB-JEPA's own 20 evaluation episodes, replayed)")
  if p.episodes_from == "reference" and p.level != "normal":
    raise base.ConfigError(f"planner.episodes_from='reference' replays level 'normal' episodes, but planner.level="
                           f"{p.level!r}: set --config.planner.level=normal")


# --- episode pictures (pictures/episodes.png at every evaluation, the jepa.plan picture) -----------------------
EPISODES_DRAWN = 6  # Panels of an episode picture, 3 per row.
EPISODE_SCALE = 4  # Canvas pixels per map pixel: a 65 x 65 map drawn at 260 x 260.
FREE, OUTSIDE, WALL = (255, 255, 255), (225, 225, 225), (90, 90, 90)  # The map: rooms, beyond the border, walls.
START, GOAL, PATH, END, PLAN = (44, 160, 44), (214, 39, 40), (31, 119, 180), (0, 0, 0), (255, 127, 14)


def episode_record(states, result):
  """What the episode pictures draw, as NumPy arrays over N episodes: 'positions' [N, T + 1, 2] (the start and
  the position after each step), 'goals' [N, 2], 'wall_x' and 'door_y' [N], and 'last_plan' [N, H, 2] (the
  last plan's actions)."""
  return {"positions": np.asarray(result.positions), "goals": np.asarray(states.goal),
          "wall_x": np.asarray(states.layout.wall_x), "door_y": np.asarray(states.layout.door_y),
          "last_plan": np.asarray(result.last_plan)}


def intended_path(positions, plan_actions, replan_every, max_norm):
  """The path the last plan intends, [k + 1, 2]: from the position where it was made, its first k actions,
  each norm-clipped to `max_norm` as the environment clips them, summed up (walls and noise ignored).

  positions [T + 1, 2] are an episode's; the last plan is made at step t = (ceil(T / r) - 1) r (r =
  replan_every) and k = min(H, T - t): the planner scores only the steps the episode has left
  (planning.horizon_weights), so the actions after them are not part of what it intends.
  """
  positions = np.asarray(positions, np.float64)
  steps = len(positions) - 1
  made_at = (steps - 1) // replan_every * replan_every
  actions = np.asarray(plan_actions, np.float64)[:steps - made_at]
  norms = np.linalg.norm(actions, axis=-1, keepdims=True)
  actions = actions * np.minimum(1.0, max_norm / np.maximum(norms, 1e-12))
  return positions[made_at] + np.concatenate([np.zeros((1, 2)), np.cumsum(actions, axis=0)])


def episode_image(positions, goal, layout, plan_path=None, env_cfg=two_rooms.EnvConfig(), scale=EPISODE_SCALE):
  """uint8 [65 scale, 65 scale, 3]: one episode on its map (jepa.plots.map_pixel's coordinates): walls, the
  goal's success circle, the executed path, the last plan's intended path (if given), the end, start and goal
  dots, drawn in this order."""
  size = env_cfg.img_size
  cells = np.arange(size)
  inside = ((cells[:, None] > env_cfg.border_lo) & (cells[:, None] < env_cfg.border_hi)
            & (cells[None, :] > env_cfg.border_lo) & (cells[None, :] < env_cfg.border_hi))
  walls = np.asarray(two_rooms.wall_mask(two_rooms.Layout(*map(jnp.float32, layout)), env_cfg)) > 0
  image = np.where(walls[..., None], WALL, np.where(inside[..., None], FREE, OUTSIDE)).astype(np.uint8)
  canvas = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
  base.plots.draw_circle(canvas, goal, env_cfg.success_radius, GOAL, scale)
  base.plots.draw_path(canvas, positions, PATH, scale)
  if plan_path is not None:
    base.plots.draw_path(canvas, plan_path, PLAN, scale)
  base.plots.draw_disk(canvas, positions[-1], 1.0, END, scale)
  base.plots.draw_disk(canvas, positions[0], 1.5, START, scale)
  base.plots.draw_disk(canvas, goal, 1.5, GOAL, scale)
  return canvas


def episodes_to_draw(success, count=EPISODES_DRAWN):
  """Indices of the episodes a picture shows, in order: the first count // 2 successes and failures for the
  rest (more successes when the failures run out)."""
  success = np.asarray(success, bool)
  wins, losses = np.flatnonzero(success), np.flatnonzero(~success)
  num_wins = min(len(wins), max(count // 2, count - len(losses)))
  return np.sort(np.concatenate([wins[:num_wins], losses[:count - num_wins]]))


def write_episodes(out, planner_cfg, path, count=EPISODES_DRAWN):
  """Draws `count` episodes of `run_planning`'s output `out` (`episodes_to_draw`) into the PNG `path`, one panel
  each with success or failure in its title; returns the drawn indices."""
  env_cfg = env_config(planner_cfg)
  drawn = episodes_to_draw(out["success"], count)
  panels = []
  for i in drawn:
    plan_path = None
    if "last_plan" in out:
      plan_path = intended_path(out["positions"][i], out["last_plan"][i], planner_cfg.replan_every,
                                env_cfg.max_step_norm)
    image = episode_image(out["positions"][i], out["goals"][i], (out["wall_x"][i], out["door_y"][i]), plan_path,
                          env_cfg)
    outcome = (f"success, first within {env_cfg.success_radius:g} px at step {out['steps_to_goal'][i]}"
               if out["success"][i] else f"failure, ends {out['final_distance'][i]:.1f} px from the goal")
    panels.append(base.plots.Panel(image.astype(np.float32) / 255.0, f"episode {i}: {outcome}"))
  legend = [("start", START), (f"goal ({env_cfg.success_radius:g} px success circle)", GOAL),
            ("executed path", PATH), ("end", END)]
  if "last_plan" in out:
    legend.append(("last plan, as intended (its actions integrated)", PLAN))
  n = len(out["success"])
  title = (f"{out['kind']} planning: {int(np.sum(out['success']))} of {n} held-out episodes end within "
           f"{env_cfg.success_radius:g} px of the goal; {len(drawn)} drawn")
  base.plots.save_panels([panels[k:k + 3] for k in range(0, len(panels), 3)], path, title=title, scale=1,
                         legend=legend)
  return drawn


class PlanningMethod(base.Method):
  """A method whose model (models(state)[0]) plans on Two Rooms through its `encode(frames)` and
  `rollout(z0, actions)`: the planning evaluator (`extra_evaluations`), `plan` (also what jepa.plan runs) and the
  episode pictures. The world model here and V-JEPA 2-AC (jepa/methods/vjepa2_ac.py) are ones."""
  planning_distance = None  # The energy's distance (planning.PlannerConfig.distance); None = its default, 'sq'.

  def __init__(self, config):
    super().__init__(config)
    # (step, params checksum, run_planning output) of the last two states planned with (an evaluation's trained
    # state and its random init), so that the pictures draw the episodes of the evaluation they follow without
    # planning again. Only the episodes are kept, not the states.
    self._planned = []

  def check_label_free_evaluators(self):
    """Trajectories have no labels: eval.evaluators may name only LABEL_FREE_EVALUATORS (a one-line ConfigError)."""
    names = [n.strip() for n in self.config.eval.evaluators.split(",") if n.strip()]
    labelled = [n for n in names if n not in LABEL_FREE_EVALUATORS]
    if labelled:
      raise base.ConfigError(f"eval.evaluators={self.config.eval.evaluators!r} names {labelled}, which need labels; "
                             "Two Rooms trajectories have none: use '' or 'rankme' (the planning evaluator always "
                             "runs when planner.episodes > 0)")

  def eval_example_fn(self):
    """Frame 0 of a window as 'image', with the dummy label -1 (trajectories have none)."""
    def fn(example, rng):
      del rng
      return {"image": np.asarray(example["frames"][0], np.float32), "label": np.int32(-1)}

    return fn

  @staticmethod
  def _planned_key(state):
    """Which state an evaluation planned with: its step and the sum of its first parameter (the trained state and
    the random-init baseline of one evaluation differ in it)."""
    first = jax.tree.leaves(state["params"])[0]
    return int(jax.device_get(state["step"])), float(jax.device_get(jnp.sum(first)))

  def check_can_plan(self):
    """A one-line ConfigError when this run's model cannot plan (jepa.plan asks before restoring it); none here."""

  def plan(self, model, **overrides):
    """`run_planning` of `model` with the config's planner and this method's energy; `overrides` as there."""
    return run_planning(model, self.config.planner, distance=self.planning_distance, **overrides)

  def extra_evaluations(self, state, models, mesh):
    """{'plan_success', 'plan_steps', 'plan_final_distance', 'plan_seconds_per_episode'} over planner.episodes
    held-out episodes ({} when planner.episodes = 0)."""
    del mesh  # Episodes run vmapped on one device.
    p = self.config.planner
    if not p.episodes:
      return {}
    model, _ = models(state)
    out = self.plan(model)
    self._planned = [(self._planned_key(state), out)] + self._planned[:1]
    return summarize(out, p.max_steps)

  def evaluation_pictures(self, state):
    """{'episodes': draw(path)}: `write_episodes` of the episodes `extra_evaluations` planned on this `state`
    object ({} when it planned none)."""
    key = self._planned_key(state)
    out = next((o for k, o in self._planned if k == key), None)
    return {} if out is None else {"episodes": functools.partial(write_episodes, out, self.config.planner)}


class WorldModelMethod(PlanningMethod):
  ema_target = None  # No teacher: the rollout targets are the encoder's own latents, with gradient.
  probes = ()  # Trajectories have no labels: no linear probe; the planning evaluator measures the model.
  collapse_monitors = ("embedding_std", "rankme")

  # --- model ------------------------------------------------------------------------------------------------
  def init_model(self, rngs):
    cfg = self.config.world_model
    dtype = factory.compute_dtype(self.config.dtype)
    dtype = None if dtype == jnp.float32 else dtype
    encoder = world_model_lib.ImpalaEncoder(tuple(cfg.channels), cfg.blocks, cfg.latent_dim,
                                            img_size=two_rooms.EnvConfig().img_size, conv=self.config.model.conv,
                                            dtype=dtype, rngs=rngs)
    dynamics = world_model_lib.GRU(ACTION_DIM, cfg.latent_dim, rngs=rngs)
    idm = world_model_lib.InverseDynamics(cfg.latent_dim, cfg.idm_hidden, rngs=rngs)
    return world_model_lib.WorldModel(encoder, dynamics, idm)

  def validate(self):
    check_data(self.config)
    check_section(self.config, "world_model")
    cfg = self.config.world_model
    for name in ("latent_dim", "idm_hidden", "rollout_steps", "sigreg_slices"):
      if cfg[name] < 1:
        raise base.ConfigError(f"world_model.{name}={cfg[name]} must be >= 1")
    if cfg.latent_dim < 2:
      raise base.ConfigError(f"world_model.latent_dim={cfg.latent_dim} must be >= 2 (the covariance term needs "
                             "two features)")
    channels = tuple(cfg.channels)
    if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
      raise base.ConfigError(f"world_model.channels={channels} must be positive integers, one per IMPALA stage "
                             "(EB-JEPA: (16, 32, 32))")
    if cfg.blocks < 0:
      raise base.ConfigError(f"world_model.blocks={cfg.blocks} must be >= 0 (residual blocks per stage; EB-JEPA: 2)")
    if not 2 <= cfg.frames <= trajectories.WINDOW:
      raise base.ConfigError(f"world_model.frames={cfg.frames} must be in [2, {trajectories.WINDOW}] (the frames "
                             "of a trajectory window that the loss sees)")
    if cfg.rollout_steps > cfg.frames - 1:
      raise base.ConfigError(f"world_model.rollout_steps={cfg.rollout_steps} needs {cfg.rollout_steps + 1} "
                             f"frames but world_model.frames={cfg.frames}: raise frames to "
                             f"{cfg.rollout_steps + 1} or lower rollout_steps")
    if cfg.regularizer not in REGULARIZERS:
      raise base.ConfigError(f"world_model.regularizer={cfg.regularizer!r} is unknown; use 'vc' (variance + "
                             "covariance, EB-JEPA's) or 'sigreg'")
    for name in ("std_weight", "cov_weight", "temporal_weight", "idm_weight", "sigreg_weight"):
      if cfg[name] < 0:
        raise base.ConfigError(f"world_model.{name}={cfg[name]} must be >= 0")
    if self.config.train.batch_size < 2:
      raise base.ConfigError("train.batch_size must be >= 2: the variance, covariance and SIGReg terms are batch "
                             "statistics")
    self.check_label_free_evaluators()
    check_planner(self.config)

  # --- data -------------------------------------------------------------------------------------------------
  def example_fn(self, train):
    """Train: {'frames' float32 [T, 65, 65, 2] raw, 'actions' [T - 1, 2]}; eval: frame 0 as 'image', label -1."""
    if not train:
      return self.eval_example_fn()
    frames = self.config.world_model.frames

    def fn(example, rng):
      del rng  # The window was drawn by the source, deterministically per index; nothing else is random.
      return {"frames": np.asarray(example["frames"][:frames], np.float32),
              "actions": np.asarray(example["actions"][:frames - 1], np.float32)}

    return fn

  # --- loss -------------------------------------------------------------------------------------------------
  def loss(self, model, target, batch, rng):
    del target  # No teacher.
    return world_model_loss(model, batch["frames"], batch["actions"], cfg=self.config.world_model,
                            key=self.step_key(rng, self.SIGREG))

  def features(self, model, target, images):
    """The latent z of each frame [B, 65, 65, 2] -> [B, D]."""
    del target
    return model.encode(images)

  # --- pictures ---------------------------------------------------------------------------------------------
  def pictures(self, example, rng):
    """One row per trajectory: every other frame of the window (the agent red, the walls grey)."""
    del rng
    frames = np.asarray(example["frames"][:self.config.world_model.frames], np.float32)
    return [[base.plots.Panel(self.display(f), f"t={t}") for t, f in enumerate(frames) if t % 2 == 0]]

  def display(self, image):
    """A raw frame [65, 65, 2] as RGB in [0, 1]: walls grey, the agent's dot red on top."""
    image = np.asarray(image, np.float32)
    dot, walls = np.clip(image[..., 0], 0, 1), np.clip(image[..., 1], 0, 1)
    rgb = np.stack([walls * 0.5] * 3, axis=-1)
    rgb[..., 0] = np.maximum(rgb[..., 0], dot)
    return rgb


METHOD = WorldModelMethod
