r"""What the planner sees: the energy of a trained world model over the map, for a few goals.

  python experiments/world_model_landscape.py --workdir=runs/wm --output=experiments/results/world_model/landscape.png

For one layout (wall at x = 32, door at y = 20) the agent is rendered at every pixel of the rooms, encoded, and
the planner's per-step energy to the goal's latent, mean((z(p) - z_g)^2) (planning.sequence_cost's term, or the
method's own distance), is drawn as a heat map with the goal starred and the wall drawn in. A planner can only
follow this energy: where it is flat, MPPI / CEM have nothing to descend, and where it is lower beyond the wall
than at the door, they push into the wall. The printed line gives, per goal, the radius (px) inside which the
energy is below half its median over the map, and the energy at the door beside the map's median and maximum.
"""
from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from jepa import config as config_lib
from jepa import evaluate
from jepa import planning
from jepa import run_config
from jepa.envs import two_rooms

flags.DEFINE_string("workdir", None, "A trained world-model run (its config.json and checkpoints).")
flags.DEFINE_string("output", "landscape.png", "PNG to write.")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS
WALL_X, DOOR_Y = 32.0, 20.0
GOALS = ((45.0, 45.0), (15.0, 50.0), (50.0, 10.0))


def main(argv):
  del argv
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  config = config_lib.with_defaults(run_config.load(FLAGS.workdir))
  state_def, state, _ = evaluate.restore(config, FLAGS.workdir)
  model, _ = state_def.models(state)
  distance = state_def.method.planning_distance or "sq"
  env_cfg = two_rooms.EnvConfig()
  layout = two_rooms.Layout(jnp.float32(WALL_X), jnp.float32(DOOR_Y))
  xs = np.arange(6.0, 59.0)
  grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)  # (x, y) pairs, row-major over y.
  encode = jax.jit(lambda p: model.encode(jax.vmap(lambda q: two_rooms.render(q, layout, env_cfg))(p)))
  latents = np.concatenate([np.asarray(encode(jnp.asarray(grid[i:i + 256], jnp.float32)))
                            for i in range(0, len(grid), 256)])
  fig, axes = plt.subplots(1, len(GOALS), figsize=(5 * len(GOALS), 4.4))
  lines = []
  for ax, goal in zip(axes, GOALS):
    z_goal = np.asarray(encode(jnp.asarray([goal], jnp.float32)))[0]
    energy = np.asarray(jax.vmap(lambda z: planning.sequence_cost(z[None], jnp.asarray(z_goal), jnp.ones(1),
                                                                 distance))(jnp.asarray(latents)))
    image = energy.reshape(len(xs), len(xs))
    radius = np.linalg.norm(grid - np.asarray(goal), axis=-1)[energy < 0.5 * np.median(energy)].max()
    door = image[int(DOOR_Y - xs[0]), int(WALL_X - xs[0])]
    lines.append(f"goal {goal}: basin radius {radius:.1f} px, energy at the door {door:.3f} (map median "
                 f"{np.median(energy):.3f}, max {energy.max():.3f})")
    im = ax.imshow(image, extent=(xs[0] - 0.5, xs[-1] + 0.5, xs[-1] + 0.5, xs[0] - 0.5), cmap="viridis")
    ax.plot(*goal, marker="*", color="red", markersize=12)
    ax.plot([WALL_X, WALL_X], [xs[0], DOOR_Y - env_cfg.door_space], color="white", linewidth=3)
    ax.plot([WALL_X, WALL_X], [DOOR_Y + env_cfg.door_space, xs[-1]], color="white", linewidth=3)
    ax.set_title(f"energy to the goal {goal} ({distance})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
  fig.suptitle(f"{FLAGS.workdir}, step {int(state['step'])}: the planner's energy over the map", fontsize=10)
  fig.tight_layout()
  fig.savefig(FLAGS.output, dpi=80)
  print("\n".join(lines + [f"wrote {FLAGS.output}"]))


if __name__ == "__main__":
  app.run(main)
