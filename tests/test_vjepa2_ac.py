"""V-JEPA 2-AC (jepa/models/ac_predictor.py, jepa/methods/vjepa2_ac.py): the block-causal mask and the RoPE
coordinates against hand-built ones, the predictor and the loss against a NumPy forward pass, causality, the
fixed-buffer rollout against a growing-prefix NumPy rollout, the Two Rooms clips against the encoder's input
transform, and end to end (a tiny V-JEPA encoder on Two Rooms clips, the AC predictor on its frozen tokens,
CEM planning): the encoder bit-identical after training, resume exact, planning deterministic from the seed and
using its energy, bad input.
"""
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import special

from jepa import evaluate
from jepa import planning
from jepa import run_config
from jepa import train
from jepa import train_state
from jepa.data import sources
from jepa.data import trajectories
from jepa.data import video
from jepa.errors import ConfigError
from jepa.methods import get_method
from jepa.methods import vjepa2_ac
from jepa.methods import world_model
from jepa.models import ac_predictor
from tests.helpers import load_config


# --- NumPy references -----------------------------------------------------------------------------------------
def _np(v):
  return np.asarray(v[...], np.float64)


def _ln(x, scale=None, bias=None, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
  return y if scale is None else y * scale + bias


def _linear(layer, x):
  return x @ _np(layer.kernel) + _np(layer.bias)


def _rotate(x, pos):
  """A true rotation of channel pairs (2i, 2i + 1) by pos * 10000^(-i / (d / 2)): x [N, d], pos [N]."""
  d = x.shape[-1]
  theta = pos[:, None] * 10000.0 ** (-np.arange(d // 2) / (d / 2))
  even, odd = x[:, 0::2], x[:, 1::2]
  out = np.empty_like(x)
  out[:, 0::2] = even * np.cos(theta) - odd * np.sin(theta)
  out[:, 1::2] = odd * np.cos(theta) + even * np.sin(theta)
  return out


def _rope(x, coords):
  """[time | row | column | tail] blocks of 2 floor(floor(d / 3) / 2) channels, each rotated by its coordinate."""
  sub = 2 * ((x.shape[-1] // 3) // 2)
  parts = [_rotate(x[:, a * sub:(a + 1) * sub], coords[:, a]) for a in range(3)]
  return np.concatenate(parts + [x[:, 3 * sub:]], axis=-1)


def _np_predictor(p, z, actions, states=None):
  """V-JEPA 2-AC's predictor for one example, by hand: z [T, N, D], actions [T, A], states [T, S] or None."""
  t, n, _ = z.shape
  h, w = p.grid
  frames = []
  for f in range(t):
    cond = [_linear(p.action_encoder, actions[f])[None]]
    if states is not None:
      cond.append(_linear(p.state_encoder, states[f])[None])
    frames.append(np.concatenate(cond + [_linear(p.predictor_embed, z[f])]))
  c = len(frames[0]) - n
  x = np.concatenate(frames)                                                # [T K, W]
  k = c + n
  frame_of = np.arange(t * k) // k
  slot = np.arange(t * k) % k - c                                           # -c..-1: conditioning; >= 0: patch
  coords = np.stack([frame_of, np.where(slot >= 0, slot // w, 0), np.where(slot >= 0, slot % w, 0)], -1)
  allowed = np.array([[frame_of[j] <= frame_of[i] for j in range(t * k)] for i in range(t * k)])
  for blk in p.blocks:
    heads = blk.attn.heads
    y = _ln(x, _np(blk.norm1.scale), _np(blk.norm1.bias))
    qkv = _linear(blk.attn.qkv, y).reshape(t * k, 3, heads, -1)
    out = []
    for hd in range(heads):
      q, kk, v = _rope(qkv[:, 0, hd], coords), _rope(qkv[:, 1, hd], coords), qkv[:, 2, hd]
      logits = np.where(allowed, q @ kk.T / np.sqrt(q.shape[-1]), -np.inf)
      att = np.exp(logits - logits.max(-1, keepdims=True))
      out.append((att / att.sum(-1, keepdims=True)) @ v)
    x = x + _linear(blk.attn.proj, np.concatenate(out, axis=-1))
    y = _linear(blk.mlp.fc1, _ln(x, _np(blk.norm2.scale), _np(blk.norm2.bias)))
    x = x + _linear(blk.mlp.fc2, 0.5 * y * (1.0 + special.erf(y / np.sqrt(2.0))))
  x = x.reshape(t, k, -1)[:, c:]
  return _linear(p.predictor_proj, _ln(x, _np(p.predictor_norm.scale), _np(p.predictor_norm.bias)))


def _np_loss(encode, predict, frames, actions, states, k):
  """The method's loss in NumPy for a batch: z = LN(encode(frames)); teacher forcing; the K-step rollout."""
  z = _ln(encode(frames), eps=1e-5)                                         # [B, T, N, D]
  step = lambda zs, a, s: _ln(predict(zs, a, s), eps=1e-5)
  tf, ar = [], []
  for b in range(len(z)):
    s = None if states is None else states[b]
    tf.append(np.abs(step(z[b, :-1], actions[b], None if s is None else s[:-1]) - z[b, 1:]))
    rolled = [z[b, 0], step(z[b, :1], actions[b, :1], None if s is None else s[:1])[0]]
    for n in range(1, k):
      rolled.append(step(np.stack(rolled), actions[b, :n + 1], None if s is None else s[:n + 1])[-1])
    ar.append(np.abs(np.stack(rolled[1:]) - z[b, 1:k + 1]))
  return np.mean(tf) + np.mean(ar), np.mean(tf), np.mean(ar), np.mean(np.abs(z[:, 1:] - z[:, :-1]))


def _randomized(module, seed):
  """`module` with every Param redrawn (LayerNorm scales near 1), so that a transposed weight shows."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    centre = 1.0 if str(getattr(path[-1], "key", path[-1])) == "scale" else 0.0
    return jnp.asarray(centre + 0.3 * rng.normal(size=leaf.shape), leaf.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, params), rest)


class _LinearEncoder(nnx.Module):
  """A stand-in frozen encoder: frames [B, 65, 65, 2] -> flatten @ W -> tokens [B, N, D]."""

  def __init__(self, weight, n, d):
    self.weight = train_state.Frozen(jnp.asarray(weight, jnp.float32))
    self.n, self.d = n, d

  def __call__(self, frames):
    return (frames.reshape(frames.shape[0], -1) @ self.weight[...]).reshape(-1, self.n, self.d)


GRID, D_ENC = (2, 2), 5


def _predictor(state_dim=0, depth=2, seed=0):
  p = ac_predictor.ACPredictor(embed_dim=D_ENC, grid=GRID, action_dim=2, state_dim=state_dim, width=16, depth=depth,
                               heads=2, rngs=nnx.Rngs(0))
  return _randomized(p, seed)


# --- the mask, the coordinates, the predictor -------------------------------------------------------------------
@pytest.mark.parametrize("frames,tokens", [(1, 3), (3, 2), (4, 5)])
def test_block_causal_mask_matches_a_hand_built_mask(frames, tokens):
  expected = np.zeros((frames * tokens, frames * tokens), bool)
  for t1 in range(frames):  # Frame t1's block row sees the blocks of frames 0..t1 (the reference's loop).
    for t2 in range(t1 + 1):
      expected[t1 * tokens:(t1 + 1) * tokens, t2 * tokens:(t2 + 1) * tokens] = True
  np.testing.assert_array_equal(ac_predictor.block_causal_mask(frames, tokens), expected)


def test_token_positions_rotate_conditioning_tokens_on_time_only():
  got = ac_predictor.token_positions(2, (2, 3), num_cond=2)
  expected = [row for t in range(2) for row in [(t, 0, 0)] * 2 + [(t, r, c) for r in range(2) for c in range(3)]]
  np.testing.assert_array_equal(got, np.asarray(expected))


@pytest.mark.parametrize("state_dim", [0, 3])
def test_predictor_matches_numpy(state_dim):
  p = _predictor(state_dim)
  rng = np.random.default_rng(1)
  z, a = rng.normal(size=(2, 3, 4, D_ENC)), rng.normal(size=(2, 3, 2))
  s = rng.normal(size=(2, 3, state_dim)) if state_dim else None
  out = np.asarray(nnx.jit(lambda p, *args: p(*args))(p, jnp.asarray(z, jnp.float32), jnp.asarray(a, jnp.float32),
                                                       None if s is None else jnp.asarray(s, jnp.float32)))
  assert out.shape == (2, 3, 4, D_ENC)
  for b in range(2):
    np.testing.assert_allclose(out[b], _np_predictor(p, z[b], a[b], None if s is None else s[b]), atol=2e-4,
                               rtol=2e-4)


def test_predictor_is_block_causal():
  """Changing frame t + 1's tokens, action or state leaves the outputs at frames <= t unchanged (and changes
  the later ones, so the check is not vacuous)."""
  p = _predictor(state_dim=2)
  rng = np.random.default_rng(2)
  z, a, s = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in ((1, 4, 4, D_ENC), (1, 4, 2), (1, 4, 2)))
  base = np.asarray(p(z, a, s))
  for t in range(3):
    for which in range(3):
      inputs = [z, a, s]
      inputs[which] = inputs[which].at[:, t + 1:].add(1.0)
      out = np.asarray(p(*inputs))
      np.testing.assert_allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-6, rtol=0)
      assert np.abs(out[:, t + 1:] - base[:, t + 1:]).max() > 1e-3


def _stub_model(state_dim=0, seed=0):
  weight = np.random.default_rng(seed + 10).normal(size=(65 * 65 * 2, 4 * D_ENC)) * 0.05
  model = ac_predictor.ACWorldModel(_LinearEncoder(weight, 4, D_ENC), _predictor(state_dim, seed=seed),
                                    normalize=True)
  encode = lambda frames: (frames.reshape(*frames.shape[:2], -1) @ weight).reshape(*frames.shape[:2], 4, D_ENC)
  return model, encode


@pytest.mark.parametrize("state_dim", [0, 2])
def test_loss_matches_numpy(state_dim):
  model, encode = _stub_model(state_dim)
  rng = np.random.default_rng(3)
  frames = rng.uniform(size=(2, 5, 65, 65, 2))
  actions = rng.normal(size=(2, 4, 2))
  states = rng.normal(size=(2, 5, 2)) if state_dim else None
  ac_loss = nnx.jit(vjepa2_ac.ac_loss, static_argnames="rollout_steps")  # Compiled: faster than eager dispatch.
  loss, metrics = ac_loss(model, jnp.asarray(frames, jnp.float32), jnp.asarray(actions, jnp.float32),
                          None if states is None else jnp.asarray(states, jnp.float32), rollout_steps=3)
  predict = lambda zs, a, s: _np_predictor(model.predictor, zs, a, s)
  want, tf, ar, copy = _np_loss(encode, predict, frames, actions, states, 3)
  assert float(metrics["copy_l1"]) == pytest.approx(copy, rel=1e-4)
  assert float(metrics["tf_loss"]) == pytest.approx(tf, rel=1e-4)
  assert float(metrics["ar_loss"]) == pytest.approx(ar, rel=1e-4)
  assert float(loss) == pytest.approx(want, rel=1e-4)


def test_rollout_is_the_autoregression_of_the_predictor():
  """The fixed-buffer rollout equals a NumPy autoregression over a growing prefix, for leading batch axes."""
  model, _ = _stub_model()
  rng = np.random.default_rng(4)
  z0, actions = rng.normal(size=(2, 4, D_ENC)), rng.normal(size=(2, 3, 2))
  out = np.asarray(model.rollout(jnp.asarray(z0, jnp.float32), jnp.asarray(actions, jnp.float32)))
  assert out.shape == (2, 3, 4, D_ENC)
  for b in range(2):
    frames = [z0[b]]
    for k in range(3):
      frames.append(_ln(_np_predictor(model.predictor, np.stack(frames), actions[b, :k + 1]), eps=1e-5)[-1])
    np.testing.assert_allclose(out[b], np.stack(frames[1:]), atol=2e-4, rtol=2e-4)


def test_l1_energy_and_its_config_check():
  latents, goal = jnp.array([[1.0, -2.0], [3.0, 0.5]]), jnp.array([0.0, 1.0])
  weights = jnp.array([0.0, 1.0])
  assert float(planning.sequence_cost(latents, goal, weights, distance="l1")) == pytest.approx((3.0 + 0.5) / 2)
  assert float(planning.sequence_cost(latents, goal, weights)) == pytest.approx((9.0 + 0.25) / 2)  # 'sq' default.
  with pytest.raises(ConfigError, match=re.escape("PlannerConfig.distance='l2' is unknown")):
    planning.validate(planning.PlannerConfig(distance="l2"))


# --- the clips the encoder trains on ------------------------------------------------------------------------------
def _encoder_config():
  """A tiny V-JEPA on Two Rooms clips: configs/vjepa_vit.py:two_rooms's data at the tiny preset's sizes."""
  c = load_config("vjepa_vit", "tiny")
  two_rooms = load_config("vjepa_vit", "two_rooms")
  c.data.update({k: two_rooms.data[k] for k in ("source", "image_size", "crop_scale", "crop_ratio", "flip", "mean",
                                                "std")})
  c.model.update(patch_size=16)
  c.train.update(num_steps=2, checkpoint_every=0)
  c.eval.probe = False
  return c


def test_two_rooms_clips_are_the_windows_cropped_and_the_encoder_sees_them_as_its_pipeline_does():
  config = _encoder_config()
  windows = trajectories.TwoRoomsTrajectories(seed=0, num_examples=100_000)
  clips = sources.get_source(config.data, "train")
  i = int(clips.indices[5])
  example, window = clips.source[i], windows[i]
  full = example["video"].frames
  assert full.dtype == np.uint8 and full.shape == (17, 64, 64, 3)
  np.testing.assert_array_equal(full[..., :2], np.floor(window["frames"][:, :64, :64] * 255))
  assert not full[..., 2].any()
  # What the crop drops: in the walls channel row and column 64 repeat row and column 63 (the walls run over the
  # whole image), and the dot there is only its tail, below 3 / 255.
  frames = window["frames"]
  np.testing.assert_array_equal(frames[:, 64, :, 1], frames[:, 63, :, 1])
  np.testing.assert_array_equal(frames[:, :, 64, 1], frames[:, :, 63, 1])
  assert max(frames[:, 64, :, 0].max(), frames[:, :, 64, 0].max()) < 3 / 255
  assert example["label"] == int(window["positions"][8, 0] > window["wall_x"])
  # V-JEPA's training transform (no crop, no flip; the clip's window is the generator's first draw) and the AC
  # method's encoder input agree bit for bit.
  seen = get_method(config).example_fn(train=True)(example, np.random.default_rng(0))["image"]
  start = video.clip_indices(17, 4, 1, np.random.default_rng(0))[0]
  mine = np.asarray(vjepa2_ac.encoder_input(jnp.asarray(window["frames"]), config.data.mean, config.data.std))
  np.testing.assert_array_equal(seen, mine[start:start + 4])


# --- end to end -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny V-JEPA trained 2 steps on Two Rooms clips, then the vjepa2_ac tiny preset on its frozen tokens for 4
  steps through train.fit, with the planning evaluator at the end: (encoder workdir, run, state, results)."""
  enc_dir = str(tmp_path_factory.mktemp("encoder"))
  train.fit(train.setup(_encoder_config(), enc_dir, verbose=False))
  config = load_config("world_model", "vjepa2_ac_tiny")
  config.ac.encoder_workdir = enc_dir
  run = train.setup(config, str(tmp_path_factory.mktemp("ac")), verbose=False)
  state, results = train.fit(run)
  return enc_dir, run, state, results


def test_the_frozen_encoder_is_bit_identical_after_training(trained):
  enc_dir, run, state, results = trained
  assert results["step"] == 4 and not results["health"]
  assert set(state["params"]) == {"predictor"}  # The optimizer (and its weight decay) never sees the encoder.
  _, restored, _ = evaluate.restore(run_config.load(enc_dir), enc_dir)
  frozen = jax.device_get(state["model_state"]["encoder"])
  for name, ours in (("params", frozen["model"]), ("ema", frozen["teacher"])):
    theirs = jax.device_get(restored[name])
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
      np.testing.assert_array_equal(a, b)
  fresh, trained_params = (jax.tree.leaves(jax.device_get(s["params"])) for s in (run.state_def.init(0), state))
  assert max(np.abs(a - b).max() for a, b in zip(fresh, trained_params)) > 0  # The predictor did train.


def test_planning_runs_and_is_deterministic_from_the_seed(trained):
  _, run, state, results = trained
  success = results["plan_success"]["trained"]
  assert 0.0 <= success <= 1.0 and success * 2 == round(success * 2)  # 2 episodes.
  assert results["plan_seconds_per_episode"]["trained"] > 0
  model, _ = run.state_def.models(state)
  p = run.config.planner
  first = world_model.run_planning(model, p, distance="l1", seed=3)
  again = world_model.run_planning(model, p, distance="l1", seed=3)
  for key in ("success", "steps_to_goal", "final_distance"):
    np.testing.assert_array_equal(first[key], again[key])
  other = world_model.run_planning(model, p, distance="l1", seed=4)
  assert not np.array_equal(first["final_distance"], other["final_distance"])  # Another seed, other episodes.
  evaluated = run.method.extra_evaluations(state, run.state_def.models, run.mesh)
  assert evaluated["plan_success"] == success
  assert evaluated["plan_final_distance"] == pytest.approx(results["plan_final_distance"]["trained"], abs=1e-5)


def test_jepa_plan_plans_a_vjepa2_ac_run_with_its_l1_energy(trained):
  _, run, state, _ = trained
  from jepa import plan as plan_lib  # pylint: disable=import-outside-toplevel
  out = plan_lib.plan(run_config.load(run.workdir), run.workdir, episodes=2, seed=3)
  model, _ = run.state_def.models(state)
  expected = world_model.run_planning(model, run.config.planner, episodes=2, distance="l1", seed=3)
  np.testing.assert_allclose([e["final_distance"] for e in out["per_episode"]], expected["final_distance"], rtol=1e-6)
  assert out["step"] == 4 and out["planner"] == "cem"
  # The squared-error energy plans the same episodes otherwise: had the energy been ignored, they would agree.
  squared = world_model.run_planning(model, run.config.planner, episodes=2, distance="sq", seed=3)
  assert not np.array_equal(squared["final_distance"], expected["final_distance"])


def test_resume_continues_exactly_and_finds_a_relative_encoder_from_another_directory(trained, tmp_path,
                                                                                       monkeypatch):
  """The fixture's run stopped at step 2 and resumed to 4 ends bit-identical to it. It is set up with the encoder
  path relative to the encoder's parent directory and resumed from config.json in another directory."""
  enc_dir, _, straight, _ = trained
  config = load_config("world_model", "vjepa2_ac_tiny")
  config.planner.episodes = 0  # Planning changes no weight; skipping it skips its compilation.
  config.eval.probe = False
  monkeypatch.chdir(os.path.dirname(enc_dir))
  config.ac.encoder_workdir = os.path.basename(enc_dir)
  workdir = str(tmp_path / "ac")
  run = train.setup(config, workdir, verbose=False)
  assert os.path.isabs(run.config.ac.encoder_workdir) and os.path.samefile(run.config.ac.encoder_workdir, enc_dir)
  assert train.fit(run, stop_at=2)[1]["preempted"]
  monkeypatch.chdir(tmp_path)
  resumed, _ = train.fit(train.setup(run_config.load(workdir), workdir, verbose=False))
  assert int(resumed["step"]) == 4
  for name in ("params", "model_state"):  # model_state holds the Frozen encoder.
    ours, theirs = jax.device_get(resumed[name]), jax.device_get(straight[name])
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
      np.testing.assert_array_equal(a, b)


def test_bad_input_is_one_line_naming_the_key(trained, tmp_path):
  enc_dir = trained[0]
  # An encoder run whose own config.json its validation refuses, then one without a checkpoint: errors about
  # that run, which must say so.
  foreign = tmp_path / "encoder"
  (foreign / "checkpoints").mkdir(parents=True)
  saved = run_config.load(enc_dir)
  saved.train.collapse_alarm = 1.5
  run_config.save(saved, str(foreign))
  whose = (f"ac.encoder_workdir={str(foreign)!r}: the encoder run there cannot be restored, for a reason of its own "
           "config.json or checkpoints (not this run's): ")
  cases = [({"ac.encoder_workdir": ""}, "ac.encoder_workdir is empty"),
           ({"ac.encoder_workdir": "/nonexistent/encoder"}, "ac.encoder_workdir='/nonexistent/encoder' holds no "
            "trained run"),
           ({"ac.state": "position"}, "ac.state='position' cannot plan"),
           ({"ac.rollout_steps": 4}, "ac.frames=4 must be in [ac.rollout_steps + 1 = 5"),
           ({"ac.heads": 5}, "ac.heads=5 does not divide ac.width=24"),
           ({"data.source": "digits"}, "method=vjepa2_ac trains on action-labelled Two Rooms trajectories"),
           ({"planner.num_elites": 9}, "planner.num_elites=9 exceeds num_samples=8"),
           ({"ac.encoder_workdir": str(foreign)}, whose + "train.collapse_alarm=1.5 must be in [0, 1)")]
  for overrides, message in cases:
    c = load_config("world_model", "vjepa2_ac_tiny")
    c.ac.encoder_workdir = enc_dir
    for key, value in overrides.items():
      section, name = key.split(".")
      c[section][name] = value
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
      train.setup(c, "/nonexistent/never/created", verbose=False)
    assert "\n" not in str(err.value)
    if "encoder_workdir" in message:
      assert "--config.ac.encoder_workdir=DIR" in str(err.value)  # The fix.
    if "holds no trained run" in message:  # The path may only have moved.
      assert "--config.ac.encoder_workdir=NEWDIR" in str(err.value)
  saved.train.collapse_alarm = 0.25
  run_config.save(saved, str(foreign))
  c = load_config("world_model", "vjepa2_ac_tiny")
  c.ac.encoder_workdir = str(foreign)
  with pytest.raises(ConfigError, match=re.escape(whose + f"--workdir={foreign} holds no checkpoint")) as err:
    train.setup(c, "/nonexistent/never/created", verbose=False)
  assert "\n" not in str(err.value) and "--config.ac.encoder_workdir=DIR" in str(err.value)


def test_position_state_trains_with_the_agent_position():
  method = get_method(load_config("world_model", "vjepa2_ac_tiny"))
  method.config.ac.state = "position"
  example = trajectories.TwoRoomsTrajectories(seed=0, num_examples=1)[0]
  out = method.example_fn(train=True)(example, None)
  assert out["frames"].shape == (4, 65, 65, 2) and out["actions"].shape == (3, 2)
  np.testing.assert_allclose(out["states"], example["positions"][:4] / 64.0)


def test_jepa_plan_refuses_a_position_state_run_in_one_line(trained):
  _, run, _, _ = trained
  from jepa import plan as plan_lib  # pylint: disable=import-outside-toplevel
  config = run_config.load(run.workdir)
  config.ac.state = "position"
  with pytest.raises(ConfigError, match=r"^ac.state='position': .* --config.ac.state=none to plan$"):
    plan_lib.check(config, run.workdir, episodes=2)
