r"""Does a trained world model predict the wall? Its rollout of pushes into the wall, against the truth.

  python experiments/world_model_walls.py --workdir=runs/wm

For one layout (wall at x = 32, door at y = 20), agents start 3-8 px left of the wall, away from the door
(y in [34, 56]), and push right at full speed (2.45 px per step) for k steps. The environment (noise-free) stops
them at the wall; a model that ignored it would put them k x 2.45 px further, beyond the wall ("free").
For each k the line printed gives, over the starts, the model's error mean((z_hat_k - z)^2) against the
encoding of the true end position (blocked at the wall) and against the encoding of the free one, and the
fraction of starts whose prediction is nearer the free end. As a yardstick, the same pushes to the left in
free space (agents in the middle of the left room moving away from the wall): there the true and free ends
coincide, and the error is the model's plain rollout error at that horizon.
"""
from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from jepa import config as config_lib
from jepa import evaluate
from jepa import run_config
from jepa.envs import two_rooms

flags.DEFINE_string("workdir", None, "A trained world-model run (its config.json and checkpoints).")
flags.DEFINE_list("steps", ["1", "2", "4", "8", "16"], "Rollout lengths k.")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS
WALL_X, DOOR_Y = 32.0, 20.0
SPEED = 2.45


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

  print(f"{FLAGS.workdir}: {len(near_wall)} starts 3-8 px left of the wall (x = {WALL_X}), door at y = {DOOR_Y}")
  for k in (int(s) for s in FLAGS.steps):
    for name, starts, direction in (("into the wall", near_wall, 1.0), ("free space", free_space, -1.0)):
      if name == "free space" and k * SPEED > starts[0, 0] - env_cfg.border_lo - 1:
        continue  # The push would reach the left border.
      action = jnp.array([direction * SPEED, 0.0], jnp.float32)
      p0 = jnp.asarray(starts)
      ends = jax.vmap(lambda p, k=k, action=action: true_end(p, action, k))(p0)
      free = p0 + k * action
      z_hat = model.rollout(encode(p0), jnp.broadcast_to(action, (len(starts), k, 2)))[:, -1]
      err_true = np.asarray(jnp.mean((z_hat - encode(ends)) ** 2, axis=-1))
      err_free = np.asarray(jnp.mean((z_hat - encode(free)) ** 2, axis=-1))
      moved = float(np.linalg.norm(np.asarray(ends) - np.asarray(p0), axis=-1).mean())
      line = (f"k={k:2d} {name:13s}: true end moved {moved:5.1f} px (free {k * SPEED:5.1f}); error to the true "
              f"end {err_true.mean():.4f}")
      if name == "into the wall":
        line += f", to the free end {err_free.mean():.4f}; nearer the free end: {np.mean(err_free < err_true):.0%}"
      print(line, flush=True)


if __name__ == "__main__":
  app.run(main)
