r"""The planner with a perfect model: MPPI / CEM on Two Rooms with the true dynamics and hand-made latents.

  python experiments/planner_oracle.py                       # the CPU default planner, 3 latents, 20 episodes
  python experiments/planner_oracle.py --episodes=50 --horizon=90 --num_samples=200 --replan_every=8

This separates the planner from the learned model. The "world model" here is exact: its latent carries the
agent's position and the layout, and its rollout is the environment's own collision rule
(two_rooms._resolve_move, noise-free). What the planner's energy sees is one of
  euclid     z = p / 10: the squared latent distance is the Euclidean distance to the goal (up to a scale);
  rbf:S      z = exp(-||p - c_k||^2 / (2 S^2)) over a 15 x 15 grid of centres c_k on [4, 60]^2: a distance that
             saturates beyond ~2 S px, the shape of a learned latent's basin (experiments/world_model_landscape.py);
with the position and layout appended at scale 1e-3, so they steer the rollout but not the energy. Success is the
environment's (within 4.5 px of the goal after 200 steps) on the held-out episodes of jepa.plan (seed 0).
Neither latent knows where the door is, so the failures show what the energy, not the model, leaves undone.
"""
import dataclasses
import functools
import math
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from jepa import planning
from jepa.envs import two_rooms
from jepa.methods import world_model

flags.DEFINE_list("latents", ["euclid", "rbf:4", "rbf:10"], "Latents to plan in (see the module docstring).")
flags.DEFINE_integer("episodes", 20, "Held-out episodes (jepa.plan's, seed 0).")
flags.DEFINE_enum("planner", "mppi", ["mppi", "cem"], "Planner.")
flags.DEFINE_integer("horizon", 35, "Planning horizon (the CPU default preset's).")
flags.DEFINE_integer("num_samples", 100, "Samples per iteration.")
flags.DEFINE_integer("num_iterations", 10, "Iterations per plan.")
flags.DEFINE_integer("num_elites", 10, "Elites per iteration.")
flags.DEFINE_integer("replan_every", 4, "Actions executed per plan.")
flags.DEFINE_enum("cost", "sum", ["sum", "last"], "Energy over the horizon: its sum, or the last step only.")
flags.DEFINE_float("noise_beta", 0.0, "Samples' 1/f^beta spectrum over the horizon (0: white, the references).")
flags.DEFINE_bool("warm_start", False, "Start each plan from the previous one shifted (planner.warm_start).")
flags.DEFINE_enum("episodes_from", "random", ["random", "reference"], "Episodes: jepa.plan's random ones (seed 0), "
                  "or EB-JEPA's own evaluation episodes replayed (two_rooms.reference_episodes).")
flags.DEFINE_bool("unclipped", False, "Actions unclipped in the planner and the environment, as EB-JEPA's MPPI "
                  "and env.py run them (its max_norms reach only its CEM).")
FLAGS = flags.FLAGS
SCALE = 1e-3  # Position and layout ride along in the latent, too small to move the energy.
ENV = two_rooms.EnvConfig()
GRID = jnp.linspace(ENV.border_lo, ENV.border_hi, 15)
CENTRES = jnp.stack([a.ravel() for a in jnp.meshgrid(GRID, GRID)], axis=-1)


def features(position, latent):
  if latent == "euclid":
    return position / 10.0
  sigma = float(latent.split(":")[1])
  return jnp.exp(-jnp.sum((CENTRES - position) ** 2, axis=-1) / (2 * sigma ** 2))


def exact_model(latent, env=ENV):
  """(encode_fn(state), rollout_fn(z0, actions)) of the exact model in `latent` with the dynamics of `env`."""
  def encode(state):
    return jnp.concatenate([features(state.position, latent), state.position * SCALE,
                            jnp.stack([state.layout.wall_x, state.layout.door_y]) * SCALE])

  def rollout(z0, actions):
    layout = two_rooms.Layout(z0[-2] / SCALE, z0[-1] / SCALE)

    def step(p, a):
      a = two_rooms.clip_norm(a, env.max_step_norm)
      p = two_rooms._resolve_move(p, p + a, layout, jnp.zeros(2), env)  # pylint: disable=protected-access
      return p, jnp.concatenate([features(p, latent), p * SCALE, z0[-2:]])

    return jax.lax.scan(step, z0[-4:-2] / SCALE, actions)[1]

  return encode, rollout


def main(argv):
  del argv
  section = world_model.config_sections()["planner"]
  section.update(kind=FLAGS.planner, horizon=FLAGS.horizon, num_samples=FLAGS.num_samples,
                 num_iterations=FLAGS.num_iterations, num_elites=FLAGS.num_elites, replan_every=FLAGS.replan_every,
                 cost=FLAGS.cost, noise_beta=FLAGS.noise_beta, warm_start=FLAGS.warm_start)
  env = ENV
  if FLAGS.unclipped:
    section.action_bound = math.inf
    env = dataclasses.replace(ENV, max_step_norm=math.inf)
  plan_cfg = world_model.planner_config(section)
  states, plan_keys = world_model.evaluation_episodes(FLAGS.episodes_from, section.seed, FLAGS.episodes, env)
  for latent in FLAGS.latents:
    encode, rollout = exact_model(latent, env)

    def one(key, state, encode=encode, rollout=rollout):
      return planning.run_episode(key, state, two_rooms.goal_state(state), encode, rollout,
                                  functools.partial(two_rooms.step, cfg=env), plan_cfg, env.max_episode_steps,
                                  replan_every=FLAGS.replan_every, warm_start=FLAGS.warm_start)

    t0 = time.perf_counter()
    result = jax.block_until_ready(jax.jit(jax.vmap(one))(plan_keys, states))
    n = FLAGS.episodes
    p = float(result.success.mean())
    print(f"latent={latent} {FLAGS.planner} H={FLAGS.horizon} samples={FLAGS.num_samples} "
          f"iterations={FLAGS.num_iterations} elites={FLAGS.num_elites} replan_every={FLAGS.replan_every} "
          f"cost={FLAGS.cost} noise_beta={FLAGS.noise_beta} warm_start={FLAGS.warm_start} "
          f"episodes_from={FLAGS.episodes_from} unclipped={FLAGS.unclipped}: success={p:.3f} "
          f"(± {(p * (1 - p) / n) ** 0.5:.3f}, {n} episodes) "
          f"final_distance={float(result.distances[:, -1].mean()):.1f} px "
          f"({time.perf_counter() - t0:.0f} s with compilation)", flush=True)


if __name__ == "__main__":
  app.run(main)
