r"""V-JEPA 2-AC (Assran et al., 2025) on Two Rooms: an action-conditioned predictor on a frozen encoder's tokens,
and CEM planning on the L1 energy to the goal's tokens.

Data: windows of T = ac.frames frames o_0..o_{T-1} [65, 65, 2] and the T - 1 actions a_t between them
(data.source='two_rooms', jepa/data/trajectories.py), with ac.state='position' also the agent's positions
s_t = p_t / 64 as the state (V-JEPA 2-AC's state is the robot's end-effector pose).

Frozen encoder: the run in ac.encoder_workdir (its config.json and latest checkpoint, restored with
jepa.evaluate.restore), e.g. V-JEPA trained on Two Rooms clips (configs/vjepa_vit.py:two_rooms). `validate` makes
the path absolute in the config, so config.json records it independently of the directory the run was started
from. It decides no shapes (the encoder's weights are also in this run's checkpoint), so when the encoder run has
moved, `--config.ac.encoder_workdir=NEWDIR` points jepa.evaluate to its new place. Every frame is encoded on its
own, as the encoder's data pipeline presents frames (data.source='two_rooms_video'):

  x_t = (as_rgb_clip(o_t) / 255 - mean) / std      64 x 64 crop and a zero third channel (trajectories.py), the
                                                   encoder's data.mean / data.std
  z_t = LN(E([x_t, x_t]))  in R^{N x D}            E = the restored method's patch_tokens (V-JEPA: its EMA target
                                                   encoder); a video encoder with tubelets of 2 sees the frame
                                                   duplicated into one tubelet (V-JEPA 2's rule), N = h w

LN is the non-affine LayerNorm over D (ac.normalize, V-JEPA 2's normalize_reps). E's weights are
jepa.train_state.Frozen variables: they sit in the state's model_state, so they get no gradient and no
optimizer or weight-decay update, and the state's checkpoint carries them.

Predictor P (jepa/models/ac_predictor.py): frames of [action token, (state token,) N patch tokens] under a
block-causal mask; its output at frame t, LayerNormed, is zhat_{t+1}. Loss (K = ac.rollout_steps, the
reference's auto_steps = 2; all means over batch, frames, tokens and features):

  zhat^tf_{1..T-1} = LN(P(z_{0..T-2}, a_{0..T-2}))                      teacher forcing: one parallel pass
  zhat^ar_1 = zhat^tf_1,  zhat^ar_{k+1} = LN(P([z_0, zhat^ar_1..zhat^ar_k], a_{0..k}))_k,  k = 1..K-1
  L = mean |zhat^tf - z_{1..T-1}| + mean |zhat^ar_{1..K} - z_{1..K}|     (L1, both terms summed)

z carries no gradient (the encoder is frozen); the rollout's own predictions do.

Planning (`extra_evaluations`, through jepa/methods/world_model.py `run_planning`: planner.episodes held-out
Two Rooms episodes, success within 4.5 px at the end, seconds per episode): CEM (jepa/planning.py) on the energy
mean |zhat_H - z_g| (planner.cost='last', ac.energy='l1'), z_g the goal observation's tokens, zhat_H the last of
H = planner.horizon predictions (ACWorldModel.rollout, autoregressive over a fixed buffer of H frames); the
first action is executed, then it plans again. V-JEPA 2-AC's planner: horizon 2, 400 samples, top 10, 10
iterations, momentum 0.15 (the section's defaults).

Source: facebookresearch/vjepa2 @ c2963a4: app/vjepa_droid/train.py (forward_target, forward_predictions,
loss_fn), configs/train/vitg16/droid-256px-8f.yaml, notebooks/utils/mpc_utils.py (cem, l1); read, not copied.
Choices where this method and the reference differ, and why:

* The encoder is a small V-JEPA trained here on Two Rooms clips (configs/vjepa_vit.py:two_rooms), not V-JEPA 2's
  ViT-g; the frames are cropped from 65 to 64 px and given a zero third channel (trajectories.as_rgb_clip).
* The restored run's model and teacher are both kept (frozen), whichever of them its patch_tokens reads, so the
  checkpoint also holds the one it does not read (V-JEPA: the online encoder and its predictor). The restored
  weights are read once, in `validate`, and become constants of the jitted state initialisation: fine at these
  sizes, not for a ViT-g.
* No state token by default (ac.state='none'): Two Rooms' only proprioception is the position the planner has to
  find. 'position' trains with it, but cannot plan: the planner's rollout has no state to integrate (the
  reference integrates the end-effector pose from the actions), so the config check refuses planner.episodes > 0.
* Actions are Two Rooms' 2-D displacements, norm-clipped at 2.45 (planner.action_bound); the planner's initial
  std is that bound (the reference: std = its maxnorm 0.05 m, with per-coordinate clipping).
* The schedule is the repo's warmup + cosine (the reference holds the peak and anneals over its last 15 epochs).
* The evaluation (jepa/evaluation/suite.py) extracts frozen features for its probes even when none runs: the
  eval transform gives frame 0 with the dummy label -1, and `features` average-pools its tokens.
"""
import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jepa import config as config_lib
from jepa import evaluate
from jepa import planning
from jepa import run_config
from jepa import train_state
from jepa.data import trajectories
from jepa.errors import CheckpointError
from jepa.methods import base
from jepa.methods import get_method
from jepa.methods import world_model
from jepa.models import ac_predictor
from jepa.models import factory
from jepa.models import posemb
from jepa.models import vit

ACTION_DIM = world_model.ACTION_DIM  # Two Rooms' actions (dx, dy).
STATES = ("none", "position")
STATE_DIM = 2  # ac.state='position': the agent's (x, y) / POSITION_SCALE.
POSITION_SCALE = 64.0  # Pixels -> about [0, 1].
ENCODER_FIX = ("set --config.ac.encoder_workdir=DIR to a trained encoder run, e.g. one made with python -m jepa.main "
               "--config=configs/vjepa_vit.py:two_rooms --workdir=DIR")
MOVED_FIX = "if the encoder run has moved, pass its new place with --config.ac.encoder_workdir=NEWDIR"


def config_sections():
  """The method's `ac` section and its `planner` (world_model's keys, V-JEPA 2-AC's CEM values), documented in
  configs/world_model.py."""
  planner = world_model.config_sections()["planner"]
  planner.update(kind="cem", horizon=2, num_samples=400, num_iterations=10, num_elites=10, init_std=2.45,
                 momentum=0.15, cost="last", replan_every=1)
  return {
      "ac": ml_collections.ConfigDict(dict(
          encoder_workdir="", width=1024, depth=24, heads=16, mlp_ratio=4.0, frames=8, rollout_steps=2,
          normalize=True, state="none", energy="l1", rope_layout="rotation")),
      "planner": planner,
  }


# --- the frozen encoder ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class RestoredEncoder:
  """A restored encoder run, on the host: what `FrozenEncoder` is rebuilt from (see `load_encoder`)."""
  method: Any  # The run's Method: its patch_tokens.
  model_def: Any
  model_values: dict
  teacher_def: Any  # None without an EMA teacher.
  teacher_values: Any
  grid: tuple  # (h, w): patches of one frame.
  dim: int  # D, the token width.
  tubelet: int  # Frames per tubelet of a video encoder (each frame is repeated this often); 0: an image encoder.
  mean: tuple
  std: tuple


def _foreign_error(workdir, error):
  """The one-line ConfigError for a CheckpointError or ConfigError raised by the encoder run's own config or
  checkpoint: its message names that run's keys and flags (e.g. its train.batch_size against this machine's
  devices), which would otherwise read as this run's."""
  return base.ConfigError(f"ac.encoder_workdir={workdir!r}: the encoder run there cannot be restored, for a reason "
                          f"of its own {run_config.CONFIG_FILE} or checkpoints (not this run's): {error}; fix that "
                          f"run, or {ENCODER_FIX}")


def load_encoder(workdir):
  """The RestoredEncoder of the run in `workdir` (ac.encoder_workdir), or a one-line ConfigError naming the key."""
  if not workdir:
    raise base.ConfigError(f"ac.encoder_workdir is empty, but the predictor trains on a frozen encoder's tokens: "
                           f"{ENCODER_FIX}")
  if not os.path.isfile(os.path.join(workdir, run_config.CONFIG_FILE)):
    raise base.ConfigError(f"ac.encoder_workdir={workdir!r} holds no trained run (no {run_config.CONFIG_FILE}): "
                           f"{MOVED_FIX}; else {ENCODER_FIX}")
  try:
    config = config_lib.with_defaults(run_config.load(workdir))
    method = get_method(config)
  except base.ConfigError as e:
    raise _foreign_error(workdir, e) from None
  grid = method.token_grid()
  if grid is None:
    raise base.ConfigError(f"ac.encoder_workdir={workdir!r} holds a {config.method!r} run, whose encoder gives no "
                           f"patch tokens: {ENCODER_FIX}")
  if config.data.image_size != trajectories.CLIP_SIZE:
    size = trajectories.CLIP_SIZE
    raise base.ConfigError(f"ac.encoder_workdir={workdir!r}: its encoder reads {config.data.image_size} px frames "
                           f"(data.image_size), but Two Rooms frames are cropped to {size}: train it with "
                           f"--config.data.image_size={size} (configs/vjepa_vit.py:two_rooms)")
  try:
    state_def, state, _ = evaluate.restore(config, workdir)
  except (CheckpointError, base.ConfigError) as e:  # restore validates the encoder's config (train_state.define).
    raise _foreign_error(workdir, e) from None
  model, teacher = state_def.models(state)
  tubelet = int(config.model.tubelet_size) if config.data.num_frames else 0
  frame = (tubelet,) if tubelet else ()
  example = jax.ShapeDtypeStruct((1, *frame, trajectories.CLIP_SIZE, trajectories.CLIP_SIZE, 3), jnp.float32)
  tokens = jax.eval_shape(lambda x: method.patch_tokens(model, teacher, x), example)
  hw = tuple(int(g) for g in grid[-2:])
  if tokens.shape[1] != hw[0] * hw[1]:
    raise base.ConfigError(f"ac.encoder_workdir={workdir!r}: one frame gives {tokens.shape[1]} tokens, not the "
                           f"{hw[0]} x {hw[1]} patches of its grid; use a V-JEPA (tubelet 2) or image encoder")
  model_def, model_values = nnx.split(model)
  teacher_def, teacher_values = nnx.split(teacher) if teacher is not None else (None, None)
  host = lambda values: None if values is None else jax.device_get(nnx.to_pure_dict(values))
  return RestoredEncoder(method=method, model_def=model_def, model_values=host(model_values),
                         teacher_def=teacher_def, teacher_values=host(teacher_values), grid=hw,
                         dim=int(tokens.shape[-1]), tubelet=tubelet, mean=tuple(config.data.mean),
                         std=tuple(config.data.std))


def encoder_input(frames, mean, std):
  """Raw frames [..., 65, 65, 2] in [0, 1] -> the encoder's input [..., 64, 64, 3]: as_rgb_clip, then the steps
  of its data pipeline (augment.to_float, augment.normalize) in the same float32 operations, so that a frame
  reaches the encoder exactly as its training clips did."""
  x = trajectories.as_rgb_clip(frames.astype(jnp.float32), xp=jnp) * jnp.float32(1.0 / 255.0)
  return (x - jnp.asarray(mean, jnp.float32)) * (jnp.float32(1.0) / jnp.asarray(std, jnp.float32))


class FrozenEncoder(nnx.Module):
  """Raw Two Rooms frames [B, 65, 65, 2] in [0, 1] -> the restored run's patch tokens [B, N, D]; every weight is a
  train_state.Frozen variable (module docstring)."""

  def __init__(self, restored):
    def rebuild(graphdef, values):
      return train_state.freeze(nnx.merge(graphdef, jax.tree.map(jnp.asarray, values)))

    self.model = rebuild(restored.model_def, restored.model_values)
    self.teacher = None if restored.teacher_def is None else rebuild(restored.teacher_def, restored.teacher_values)
    self.tokens_fn = restored.method.patch_tokens
    self.mean, self.std, self.tubelet = restored.mean, restored.std, restored.tubelet

  def __call__(self, frames):
    x = encoder_input(frames, self.mean, self.std)
    if self.tubelet:  # V-JEPA 2: one frame is a tubelet of copies of itself.
      x = jnp.repeat(x[:, None], self.tubelet, axis=1)
    return self.tokens_fn(self.model, self.teacher, x).astype(jnp.float32)


# --- the loss -------------------------------------------------------------------------------------------------
def ac_loss(model, frames, actions, states=None, *, rollout_steps):
  """(loss, metrics) of the module docstring: frames [B, T, 65, 65, 2] raw, actions [B, T - 1, 2], states
  [B, T, S] or None; `model` an ac_predictor.ACWorldModel."""
  k = rollout_steps
  z = model.encode(frames)                                                    # [B, T, N, D], no gradient
  cut = lambda s, n: None if s is None else s[:, :n]
  z_tf = model.predict(z[:, :-1], actions, cut(states, -1))                   # frames 1 .. T-1
  tf = jnp.mean(jnp.abs(z_tf - z[:, 1:]))
  rollout = [z[:, :1], z_tf[:, :1]]
  for n in range(1, k):
    rollout.append(model.predict(jnp.concatenate(rollout, axis=1), actions[:, :n + 1], cut(states, n + 1))[:, -1:])
  z_ar = jnp.concatenate(rollout[1:], axis=1)                                 # frames 1 .. K
  per_step = jnp.mean(jnp.abs(z_ar - z[:, 1:k + 1]), axis=(0, 2, 3))
  ar = per_step.mean()
  # copy_l1: the teacher-forcing loss of predicting every frame as the one before (no motion), the bar to beat.
  metrics = {"tf_loss": tf, "ar_loss": ar, "ar_loss_last": per_step[-1],
             "copy_l1": jnp.mean(jnp.abs(z[:, 1:] - z[:, :-1])),
             "prediction_std": jnp.std(jax.lax.stop_gradient(z_tf), axis=0).mean()}
  return tf + ar, metrics


class VJEPA2AC(world_model.PlanningMethod):
  ema_target = None  # No EMA teacher: the encoder is frozen inside the model (train_state.Frozen variables).
  probes = ()  # Trajectories have no labels; the planning evaluator measures the model.
  collapse_monitors = ("prediction_std",)  # The targets are frozen; only the predictions can collapse.

  def __init__(self, config):
    super().__init__(config)
    self._restored = None

  def check_can_plan(self):
    """jepa.plan's check: a run trained with ac.state='position' cannot plan (its rollout has no state to
    integrate), whatever the planner settings."""
    if self.config.ac.state == "position":
      raise base.ConfigError("ac.state='position': this run's predictor needs the agent's position at every "
                             "predicted frame, which planning cannot give it; train one with --config.ac.state=none "
                             "to plan")

  @property
  def planning_distance(self):
    return self.config.ac.energy  # V-JEPA 2-AC's energy: 'l1'.

  def restored_encoder(self):
    """The RestoredEncoder of ac.encoder_workdir, read once (validate reads it, before anything is traced)."""
    if self._restored is None:
      self._restored = load_encoder(self.config.ac.encoder_workdir)
    return self._restored

  # --- model ------------------------------------------------------------------------------------------------
  def init_model(self, rngs):
    cfg, restored = self.config.ac, self.restored_encoder()
    predictor = ac_predictor.ACPredictor(
        embed_dim=restored.dim, grid=restored.grid, action_dim=ACTION_DIM,
        state_dim=STATE_DIM if cfg.state == "position" else 0, width=cfg.width, depth=cfg.depth, heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio, rope_layout=cfg.rope_layout, dtype=factory.compute_dtype(self.config.dtype),
        rngs=rngs)
    return ac_predictor.ACWorldModel(FrozenEncoder(restored), predictor, normalize=cfg.normalize)

  def validate(self):
    c = self.config
    cfg = c.ac
    if c.data.source != "two_rooms":
      raise base.ConfigError(f"data.source={c.data.source!r}, but method=vjepa2_ac trains on action-labelled Two "
                             "Rooms trajectories: use --config.data.source=two_rooms")
    for name in ("width", "depth", "heads", "rollout_steps"):
      if cfg[name] < 1:
        raise base.ConfigError(f"ac.{name}={cfg[name]} must be >= 1")
    if not cfg.mlp_ratio > 0:
      raise base.ConfigError(f"ac.mlp_ratio={cfg.mlp_ratio} must be > 0 (the reference: 4)")
    if not cfg.rollout_steps + 1 <= cfg.frames <= trajectories.WINDOW:
      raise base.ConfigError(f"ac.frames={cfg.frames} must be in [ac.rollout_steps + 1 = {cfg.rollout_steps + 1}, "
                             f"{trajectories.WINDOW}] (the frames of a window the loss sees)")
    config_lib.check_choice(c, "ac.state", STATES)
    config_lib.check_choice(c, "ac.energy", planning.DISTANCES)
    config_lib.check_choice(c, "ac.rope_layout", posemb.ROPE_LAYOUTS)
    vit.check_heads(cfg.width, cfg.heads, key="ac.heads", width_key="ac.width", rope=True)
    if cfg.state == "position" and c.planner.episodes:
      raise base.ConfigError(f"ac.state='position' cannot plan (the rollout has no state to integrate) but "
                             f"planner.episodes={c.planner.episodes}: set --config.planner.episodes=0 or "
                             "--config.ac.state=none")
    self.check_label_free_evaluators()
    world_model.check_planner(c)
    if cfg.encoder_workdir:  # Absolute in config.json: the run reads it from any directory (jepa.evaluate, resume).
      cfg.encoder_workdir = os.path.abspath(cfg.encoder_workdir)
    self.restored_encoder()  # Last: a bad ac.encoder_workdir is reported before anything is built.

  # --- data -------------------------------------------------------------------------------------------------
  def example_fn(self, train):
    """Train: {'frames' float32 [T, 65, 65, 2] raw, 'actions' [T - 1, 2] (, 'states' [T, 2])}; eval: frame 0 as
    'image' with the dummy label -1."""
    cfg = self.config.ac
    if not train:
      return self.eval_example_fn()

    def fn(example, rng):
      del rng  # The window was drawn by the source, deterministically per index; nothing else is random.
      out = {"frames": np.asarray(example["frames"][:cfg.frames], np.float32),
             "actions": np.asarray(example["actions"][:cfg.frames - 1], np.float32)}
      if cfg.state == "position":
        out["states"] = np.asarray(example["positions"][:cfg.frames], np.float32) / np.float32(POSITION_SCALE)
      return out

    return fn

  # --- loss -------------------------------------------------------------------------------------------------
  def loss(self, model, target, batch, rng):
    del target, rng  # No teacher; nothing random.
    return ac_loss(model, batch["frames"], batch["actions"], batch.get("states"),
                   rollout_steps=self.config.ac.rollout_steps)

  def features(self, model, target, images):
    """The frozen encoder's tokens of each frame [B, 65, 65, 2], average-pooled -> [B, D]."""
    del target
    return model.encode(images).mean(axis=-2)


METHOD = VJEPA2AC
