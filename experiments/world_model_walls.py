r"""Does a trained world model predict the wall? Its rollout of pushes into the wall, against the truth.

  python experiments/world_model_walls.py --workdir=runs/wm

For one layout (wall at x = 32, door at y = 20), agents start 3.5-8.5 px left of the wall's face, away from the door
(y in [34, 56]), and push right at --speed px per step (default 2.45, the action bound) for k steps. The
environment (noise-free) stops them at the wall; a model that ignored it would put them k x speed px further,
beyond the wall ("free").
For each k the line printed gives, over the starts, the model's error mean((z_hat_k - z)^2) against the
encoding of the true end position (blocked at the wall) and against the encoding of the free one, and the
fraction of starts whose prediction is nearer the free end. As a yardstick, the same pushes to the left in
free space (agents in the middle of the left room moving away from the wall): there the true and free ends
coincide, and the error is the model's plain rollout error at that horizon. The last line counts how often the
training data's moves are blocked by the inner wall (--data_windows windows of the run's generator, seed 0, the
first rollout_steps actions of each: what the rollout loss sees).
"""
from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from jepa import config as config_lib
from jepa import evaluate
from jepa import run_config
from jepa.data import trajectories
from jepa.envs import two_rooms

flags.DEFINE_string("workdir", None, "A trained world-model run (its config.json and checkpoints).")
flags.DEFINE_list("steps", ["1", "2", "4", "8", "16"], "Rollout lengths k.")
flags.DEFINE_float("speed", 2.45, "Push length per step, px: 2.45 the action bound the planner uses; the training "
                   "data's steps are 0.2-1.8 px (mean 1).")
flags.DEFINE_integer("data_windows", 3000, "Training windows to count wall contacts in (0: none).")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS
WALL_X, DOOR_Y = 32.0, 20.0


def main(argv):
  del argv
  config = config_lib.with_defaults(run_config.load(FLAGS.workdir))
  state_def, state, _ = evaluate.restore(config, FLAGS.workdir)
  model, _ = state_def.models(state)
  env_cfg = two_rooms.EnvConfig()
  layout = two_rooms.Layout(jnp.float32(WALL_X), jnp.float32(DOOR_Y))
  xs, ys = np.meshgrid(np.arange(WALL_X - 1.5 - 8, WALL_X - 1.5 - 3 + 1e-6, 1.0), np.arange(34.0, 56.1, 2.0))
  near_wall = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)
  free_space = near_wall.copy()
  free_space[:, 0] = WALL_X - 4.5  # Pushed left from here, for as many steps as the room leaves (below).
  encode = jax.jit(lambda p: model.encode(jax.vmap(lambda q: two_rooms.render(q, layout, env_cfg))(p)))

  def true_end(p, action, k):
    def body(p, _):
      moved = two_rooms._resolve_move(p, p + action, layout, jnp.zeros(2), env_cfg)  # pylint: disable=protected-access
      return moved, None
    return jax.lax.scan(body, p, None, length=k)[0]

  print(f"{FLAGS.workdir}: {len(near_wall)} starts 3.5-8.5 px left of the wall's face (x = "
        f"{WALL_X - env_cfg.half_wall}), door at y = {DOOR_Y}, pushes of {FLAGS.speed} px")
  for k in (int(s) for s in FLAGS.steps):
    for name, starts, direction in (("into the wall", near_wall, 1.0), ("free space", free_space, -1.0)):
      if name == "free space" and k * FLAGS.speed > starts[0, 0] - env_cfg.border_lo - 1:
        continue  # The push would reach the left border.
      action = jnp.array([direction * FLAGS.speed, 0.0], jnp.float32)
      p0 = jnp.asarray(starts)
      ends = jax.vmap(lambda p, k=k, action=action: true_end(p, action, k))(p0)
      free = p0 + k * action
      z_hat = model.rollout(encode(p0), jnp.broadcast_to(action, (len(starts), k, 2)))[:, -1]
      err_true = np.asarray(jnp.mean((z_hat - encode(ends)) ** 2, axis=-1))
      err_free = np.asarray(jnp.mean((z_hat - encode(free)) ** 2, axis=-1))
      moved = float(np.linalg.norm(np.asarray(ends) - np.asarray(p0), axis=-1).mean())
      line = (f"k={k:2d} {name:13s}: true end moved {moved:5.1f} px (free {k * FLAGS.speed:5.1f}); error to "
              f"the true end {err_true.mean():.4f}")
      if name == "into the wall":
        line += f", to the free end {err_free.mean():.4f}; nearer the free end: {np.mean(err_free < err_true):.0%}"
      print(line, flush=True)
  if FLAGS.data_windows:
    k = int(config.world_model.rollout_steps)
    wall, border, windows = data_wall_contacts(FLAGS.data_windows, k, env_cfg)
    print(f"training data, {FLAGS.data_windows} windows x their first {k} actions: blocked by the inner wall "
          f"{wall:.1%}, by a border {border:.1%}; windows with an inner-wall block {windows:.1%}")


def data_wall_contacts(num_windows, num_actions, env_cfg):
  """(fraction of the first `num_actions` moves of each window blocked by the inner wall, by a border; fraction
  of windows with an inner-wall block) over `num_windows` windows of EB-JEPA's generator (seed 0)."""
  source = trajectories.TwoRoomsTrajectories(seed=0, num_examples=num_windows)
  lo, hi = env_cfg.border_lo, env_cfg.border_hi
  wall = border = windows = 0
  for i in range(num_windows):
    traj = source.trajectory(i)
    w, positions, actions = traj["window_start"], traj["positions"].tolist(), traj["actions"].tolist()
    hit = False
    for t in range(w, w + num_actions):
      p1 = tuple(positions[t])
      p2 = (p1[0] + actions[t][0], p1[1] + actions[t][1])
      if trajectories.move_is_blocked(p1, p2, float(traj["wall_x"]), float(traj["door_y"]), env_cfg):
        if lo < p2[0] < hi and lo < p2[1] < hi:  # Inside the borders: the inner wall stopped it.
          wall, hit = wall + 1, True
        else:
          border += 1
    windows += hit
  moves = num_windows * num_actions
  return wall / moves, border / moves, windows / num_windows


if __name__ == "__main__":
  app.run(main)
