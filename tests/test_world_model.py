"""The action-conditioned world model (jepa/methods/world_model.py), its data source, the planning evaluator and
jepa.plan: loss terms against NumPy, the GRU against a hand-rolled NumPy GRU and torch.nn.GRU, the encoder
against a PyTorch build of EB-JEPA's IMPALA stack, training through train.fit, exact resume, the CLI.
"""
import json
import os
import pickle
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from jepa import config as config_lib
from jepa import plan as plan_lib
from jepa import plots
from jepa import run_config
from jepa import train
from jepa.data import sources
from jepa.data import trajectories
from jepa.envs import two_rooms
from jepa.errors import ConfigError
from jepa.methods import get_method
from jepa.methods import world_model as wm
from tests.helpers import REPO, load_config


def _config(**world_model):
  c = load_config("world_model", "tiny")
  c.world_model.update(world_model)
  return c


def _model(config, seed=0):
  """The method's model with NumPy-drawn weights (an eager nnx init compiles once per parameter shape, seconds)."""
  method = get_method(config)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: method.init_model(nnx.Rngs(0))))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if len(leaf.shape) > 1:  # Kernels: U(+-1/sqrt(fan_in)) as PyTorch's default.
      bound = 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.uniform(-bound, bound, leaf.shape), leaf.dtype)
    centre = 1.0 if str(getattr(path[-1], "key", path[-1])) == "scale" else 0.0  # LayerNorm scales near 1.
    return jnp.asarray(centre + 0.2 * rng.normal(size=leaf.shape), leaf.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


def _np(v):
  return np.asarray(v[...], np.float64)


@pytest.fixture(scope="module")
def small():
  """One small model for the unit tests (eager initialisation compiles per shape: built once), stages of
  different widths so that a transposed or misordered weight shows."""
  config = _config(latent_dim=6, channels=(4, 6, 5), blocks=2, rollout_steps=8, frames=10)
  return config, _model(config)


# --- NumPy references ------------------------------------------------------------------------------------------
def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _layer_norm(x, scale, bias, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def _np_gru_rollout(model, z0, actions):
  """torch.nn.GRU's equations, gates (r, z, n), then the encoder's LayerNorm, step by step in float64."""
  wi, bi = _np(model.dynamics.input.kernel), _np(model.dynamics.input.bias)
  wh, bh = _np(model.dynamics.hidden.kernel), _np(model.dynamics.hidden.bias)
  scale, bias = _np(model.encoder.norm.scale), _np(model.encoder.norm.bias)
  d = z0.shape[-1]
  h, out = np.asarray(z0, np.float64), []
  for k in range(actions.shape[1]):
    gi, gh = actions[:, k] @ wi + bi, h @ wh + bh
    r = _sigmoid(gi[:, :d] + gh[:, :d])
    u = _sigmoid(gi[:, d:2 * d] + gh[:, d:2 * d])
    n = np.tanh(gi[:, 2 * d:] + r * gh[:, 2 * d:])
    h = _layer_norm((1 - u) * n + u * h, scale, bias)
    out.append(h)
  return np.stack(out, axis=1)


def _np_variance_hinge(x):
  x = np.asarray(x, np.float64)
  std = np.sqrt(np.array([np.sum((c - c.mean()) ** 2) / (len(c) - 1) for c in x.T]) + 1e-4)
  return np.mean(np.maximum(0.0, 1.0 - std))


def _np_covariance(x):
  cov = np.cov(np.asarray(x, np.float64), rowvar=False)  # ddof = 1
  d = cov.shape[0]
  return sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / (d * (d - 1))


def _np_temporal(z):
  z = np.asarray(z, np.float64)
  b, t, d = z.shape
  return sum(np.sum((z[i, s + 1] - z[i, s]) ** 2) for i in range(b) for s in range(t - 1)) / (b * (t - 1) * d)


def _np_idm(model, z, actions):
  z = np.asarray(z, np.float64)
  x = np.concatenate([z[:, :-1], z[:, 1:]], axis=-1)
  h = np.maximum(0, x @ _np(model.idm.fc1.kernel) + _np(model.idm.fc1.bias))
  h = np.maximum(0, h @ _np(model.idm.fc2.kernel) + _np(model.idm.fc2.bias))
  a_hat = h @ _np(model.idm.fc3.kernel) + _np(model.idm.fc3.bias)
  return np.mean((a_hat - actions) ** 2)


# --- loss terms ---------------------------------------------------------------------------------------------------
def test_variance_hinge_and_covariance_match_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(24, 6)) * np.array([0.1, 0.5, 1.0, 2.0, 0.01, 1.5]) + rng.normal(size=6)
  x[:, 3] += 0.7 * x[:, 1]  # Correlated features give a non-zero covariance term.
  np.testing.assert_allclose(float(wm.variance_hinge(jnp.asarray(x, jnp.float32))), _np_variance_hinge(x),
                             rtol=1e-5)
  np.testing.assert_allclose(float(wm.covariance_offdiag(jnp.asarray(x, jnp.float32))), _np_covariance(x),
                             rtol=1e-4)
  # A collapsed batch: every feature's std is sqrt(1e-4) = 0.01, so the hinge is 0.99; no covariance.
  np.testing.assert_allclose(float(wm.variance_hinge(jnp.ones((8, 4)))), 0.99, rtol=1e-6)
  assert float(wm.covariance_offdiag(jnp.ones((8, 4)))) == 0.0


def test_temporal_smoothness_matches_numpy():
  z = np.random.default_rng(1).normal(size=(3, 5, 4))
  np.testing.assert_allclose(float(wm.temporal_smoothness(jnp.asarray(z, jnp.float32))), _np_temporal(z),
                             rtol=1e-5)
  assert float(wm.temporal_smoothness(jnp.asarray(z[:, :1], jnp.float32))) == 0.0


def test_rollout_over_8_steps_matches_a_hand_rolled_gru(small):
  _, model = small
  rng = np.random.default_rng(2)
  z0, actions = rng.normal(size=(3, 6)), rng.normal(size=(3, 8, 2)) * 2.0
  got = np.asarray(model.rollout(jnp.asarray(z0, jnp.float32), jnp.asarray(actions, jnp.float32)))
  want = _np_gru_rollout(model, z0, actions)
  assert got.shape == (3, 8, 6)
  np.testing.assert_allclose(got, want, atol=2e-5)
  # rollout_loss: the mean over the 8 steps of each step's MSE.
  targets = rng.normal(size=(3, 8, 6))
  loss, per_step = wm.rollout_loss(jnp.asarray(want, jnp.float32), jnp.asarray(targets, jnp.float32))
  per_step_np = [np.mean((want[:, k] - targets[:, k]) ** 2) for k in range(8)]
  np.testing.assert_allclose(np.asarray(per_step), per_step_np, rtol=1e-5)
  np.testing.assert_allclose(float(loss), np.mean(per_step_np), rtol=1e-5)


def test_gru_cell_equals_torch_gru(small):
  torch = pytest.importorskip("torch")
  _, model = small
  gru = torch.nn.GRU(input_size=2, hidden_size=6, num_layers=1)
  with torch.no_grad():  # torch keeps [W_r; W_z; W_n] as [3H, in]; ours are their transposes.
    gru.weight_ih_l0.copy_(torch.tensor(_np(model.dynamics.input.kernel).T))
    gru.bias_ih_l0.copy_(torch.tensor(_np(model.dynamics.input.bias)))
    gru.weight_hh_l0.copy_(torch.tensor(_np(model.dynamics.hidden.kernel).T))
    gru.bias_hh_l0.copy_(torch.tensor(_np(model.dynamics.hidden.bias)))
  rng = np.random.default_rng(3)
  h, a = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)
  want, _ = gru(torch.tensor(a)[None], torch.tensor(h)[None])
  np.testing.assert_allclose(np.asarray(model.dynamics(jnp.asarray(h), jnp.asarray(a))), want[0].detach().numpy(),
                             atol=1e-5)


def test_encoder_equals_a_torch_impala_stack(small):
  """EB-JEPA's ImpalaEncoder as described (conv 3x3, MaxPool2d(3, 2, 1), relu(x + conv(relu(conv x))) blocks,
  relu, flatten, Linear, LayerNorm), built in PyTorch with our weights."""
  torch = pytest.importorskip("torch")
  _, model = small

  def conv(c):  # HWIO -> OIHW
    layer = torch.nn.Conv2d(c.in_features, c.out_features, 3, padding=1)
    with torch.no_grad():
      layer.weight.copy_(torch.tensor(np.transpose(_np(c.kernel), (3, 2, 0, 1))))
      layer.bias.copy_(torch.tensor(_np(c.bias)))
    return layer.double()

  frames = np.stack([two_rooms.render(jnp.array([10.0 + 7 * i, 40.0 - 5 * i]), two_rooms.Layout(
      jnp.float32(30 + i), jnp.float32(20 + 3 * i))) for i in range(3)])
  x = torch.tensor(np.asarray(two_rooms.normalize_observation(frames), np.float64)).permute(0, 3, 1, 2)
  with torch.no_grad():
    for stage in model.encoder.stages:
      x = torch.nn.functional.max_pool2d(conv(stage.conv)(x), 3, 2, 1)
      for block in stage.blocks:
        x = torch.relu(x + conv(block.conv2)(torch.relu(conv(block.conv1)(x))))
  assert tuple(x.shape[1:]) == (5, 9, 9)  # 65 -> 33 -> 17 -> 9
  flat = torch.relu(x).permute(0, 2, 3, 1).reshape(3, -1).numpy()  # Our flatten order is (h, w, c).
  z = flat @ _np(model.encoder.proj.kernel) + _np(model.encoder.proj.bias)
  want = _layer_norm(z, _np(model.encoder.norm.scale), _np(model.encoder.norm.bias))
  np.testing.assert_allclose(np.asarray(model.encode(jnp.asarray(frames))), want, atol=1e-4)


@pytest.mark.parametrize("regularizer", ["vc", "sigreg"])
def test_loss_is_the_weighted_sum_of_the_terms(small, regularizer):
  config, model = small
  config = _config(**dict(config.world_model.to_dict(), regularizer=regularizer))
  source = trajectories.TwoRoomsTrajectories(seed=3, num_examples=4)
  frames = jnp.asarray(np.stack([source[i]["frames"][:10] for i in range(4)]))
  actions = np.stack([source[i]["actions"][:9] for i in range(4)])
  key = jax.random.key(5)
  loss, metrics = wm.world_model_loss(model, frames, jnp.asarray(actions), cfg=config.world_model, key=key)
  z = np.asarray(model.encode(frames), np.float64)  # [4, 10, 6]: the targets are the encoder's own latents.
  pred = np.mean((_np_gru_rollout(model, z[:, 0], actions[:, :8]) - z[:, 1:9]) ** 2)
  flat = z.reshape(40, 6)
  want = pred + 12 * _np_temporal(z) + 1 * _np_idm(model, z, actions)
  if regularizer == "vc":
    want += 16 * _np_variance_hinge(flat) + 8 * _np_covariance(flat)
    np.testing.assert_allclose(float(metrics["std_loss"]), _np_variance_hinge(flat), rtol=1e-4)
  else:
    # SIGReg itself is checked in tests/test_losses.py; here: over the 10 frames as views of the 4 trajectories.
    from jepa import losses  # pylint: disable=import-outside-toplevel
    want += 0.05 * float(losses.sigreg(jnp.swapaxes(jnp.asarray(z, jnp.float32), 0, 1), key=key, num_slices=256))
    assert "std_loss" not in metrics
  np.testing.assert_allclose(float(metrics["pred_loss"]), pred, rtol=1e-4)
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)


# --- data and config ----------------------------------------------------------------------------------------------
def test_two_rooms_source_is_carved_deterministic_and_picklable():
  data = load_config("world_model", "tiny").data
  train_src, eval_src = sources.get_source(data, "train"), sources.get_source(data, "eval")
  assert len(train_src) + len(eval_src) == 100_000 and len(eval_src) == 10_000
  assert not set(train_src.indices) & set(eval_src.indices)
  raw = trajectories.TwoRoomsTrajectories(seed=0, num_examples=100_000)
  for src in (train_src, eval_src):
    a, b = src[5], pickle.loads(pickle.dumps(src))[5]
    np.testing.assert_array_equal(a["frames"], raw[int(src.indices[5])]["frames"])
    np.testing.assert_array_equal(a["actions"], b["actions"])
  assert train_src.num_classes == 0 and train_src.name == "two_rooms"
  method = get_method(load_config("world_model", "tiny"))
  ex = method.example_fn(train=True)(train_src[0], np.random.default_rng(0))
  assert ex["frames"].shape == (4, 65, 65, 2) and ex["actions"].shape == (3, 2)
  ev = method.example_fn(train=False)(train_src[0], None)
  assert ev["image"].shape == (65, 65, 2) and ev["label"] == -1


def test_config_checks_name_the_key():
  config_lib.validate(load_config("world_model", ""), num_devices=1)
  cases = [({"world_model.latnt_dim": 3}, "world_model.latnt_dim is unknown"),
           ({"world_model.regularizer": "vic"}, "world_model.regularizer='vic'"),
           ({"world_model.rollout_steps": 4}, "world_model.rollout_steps=4 needs 5 frames"),
           ({"planner.num_elites": 9}, "planner.num_elites=9 exceeds num_samples=8"),
           ({"planner.horizon": 0}, "planner.horizon=0"), ({"planner.action_bound": 0.0}, "planner.action_bound"),
           ({"planner.episodes_from": "ebjepa"}, "planner.episodes_from='ebjepa' is unknown"),
           ({"planner.episodes_from": "reference", "planner.level": "easy"}, "--config.planner.level=normal"),
           ({"data.source": "digits"}, "data.source='digits' is an image dataset"),
           ({"eval.evaluators": "knn"}, "need labels")]
  for overrides, message in cases:
    c = load_config("world_model", "tiny")
    for key, value in overrides.items():
      section, name = key.split(".")
      c[section][name] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
      train.setup(c, "/nonexistent/never/created", verbose=False)
  c = load_config("world_model", "tiny")
  c.data.unknown_key = 1  # Base sections still refuse unknown keys.
  with pytest.raises(ConfigError, match="data.unknown_key is unknown"):
    config_lib.validate(c, num_devices=1)


# --- training, resume, planning, CLI ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny world model trained 6 steps through train.fit, with the planning evaluator, the pictures and the
  report at the end: (workdir, run, final state, results, number of run_planning calls during the fit)."""
  workdir = str(tmp_path_factory.mktemp("wm"))
  config = load_config("world_model", "tiny")
  config.eval.update(pictures=True, report=True)
  run = train.setup(config, workdir, verbose=False)
  calls, run_planning = [], wm.run_planning

  def counted(*args, **kwargs):
    calls.append(1)
    return run_planning(*args, **kwargs)

  wm.run_planning = counted
  try:
    state, results = train.fit(run)
  finally:
    wm.run_planning = run_planning
  return workdir, run, state, results, len(calls)


def test_fit_trains_and_the_planning_evaluator_returns_a_fraction(trained):
  workdir, run, state, results, _ = trained
  assert results["step"] == 6 and not results["health"]
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
  train_rows = [r for r in rows if "loss" in r]
  assert len(train_rows) == 6 and all(np.isfinite(r["loss"]) and np.isfinite(r["idm_loss"]) for r in train_rows)
  success = results["plan_success"]["trained"]
  assert 0.0 <= success <= 1.0 and success * 2 == round(success * 2)  # 2 episodes.
  assert 0 <= results["plan_steps"]["trained"] <= 8 and results["plan_seconds_per_episode"]["trained"] > 0
  assert "linear_probe" not in results  # No labels, no probe.
  # The evaluator called directly on the trained state: the same episodes, the same outcome.
  again = run.method.extra_evaluations(state, run.state_def.models, run.mesh)
  assert again["plan_success"] == success and again["plan_final_distance"] == pytest.approx(
      results["plan_final_distance"]["trained"], abs=1e-4)


def test_planning_on_the_reference_episodes_plays_those_episodes(trained):
  """planner.episodes_from='reference' plans EB-JEPA's own evaluation episodes: the starts, goals and walls of
  two_rooms.reference_episodes, not the seed's random ones."""
  _, run, state, _, _ = trained
  p = run.config.planner.copy_and_resolve_references()
  p.episodes_from = "reference"
  out = wm.run_planning(run.state_def.models(state)[0], p, episodes=3)
  ref = two_rooms.reference_episodes(3)
  np.testing.assert_allclose(out["positions"][:, 0], np.asarray(ref.position), atol=1e-6)
  np.testing.assert_allclose(out["goals"], np.asarray(ref.goal), atol=1e-6)
  np.testing.assert_array_equal(out["wall_x"], np.asarray(ref.layout.wall_x))


def test_fit_draws_the_planned_episodes_and_reports_them(trained):
  """The end of the run draws the evaluator's own episodes (planned once) and the success over training, and
  report.md shows the planning results."""
  workdir, run, _, results, planning_calls = trained
  assert planning_calls == 1  # eval.every = 0 and no random init: the final evaluation's planning only.
  assert set(results["pictures"]) == {"curves", "evaluations", "masks", "plan_success", "episodes"}
  for name, rel in results["pictures"].items():
    assert rel == f"pictures/{name}.png"
    with Image.open(os.path.join(workdir, rel)) as im:
      assert im.format == "PNG" and min(im.size) > 0, name
  # Both episodes are drawn in episode order (2 < EPISODES_DRAWN), each start where two_rooms put it.
  p = run.config.planner
  env_keys, _ = wm.episode_keys(p.seed, p.episodes)
  with Image.open(os.path.join(workdir, "pictures", "episodes.png")) as im:
    pixels = np.asarray(im.convert("RGB"))
  side = 65 * wm.EPISODE_SCALE
  for k in range(p.episodes):
    start = np.asarray(two_rooms.sample_episode(env_keys[k], wm.env_config(p)).position)
    r, c = plots.map_pixel(start, wm.EPISODE_SCALE)
    assert tuple(pixels[plots.HEADER + plots.TITLE + r, plots.PAD + k * (side + plots.PAD) + c]) == wm.START
  with Image.open(os.path.join(workdir, "pictures", "plan_success.png")) as im:
    assert im.size == (2 * plots.CURVE_W, plots.CURVE_H)
  with open(os.path.join(workdir, "report.md"), encoding="utf-8") as f:
    report = f.read()
  success = results["plan_success"]["trained"]
  assert "## Planning (held-out episodes)" in report and f"| {success:.4g} ({round(2 * success)} of 2) |" in report
  assert "](pictures/episodes.png)" in report and "](pictures/plan_success.png)" in report


def test_resume_continues_exactly(tmp_path, trained):
  _, _, straight, _, _ = trained
  config = load_config("world_model", "tiny")
  config.eval.probe = False
  run = train.setup(config, str(tmp_path), verbose=False)
  assert train.fit(run, stop_at=3)[1]["preempted"]
  resumed, _ = train.fit(train.setup(config, str(tmp_path), verbose=False))
  assert int(resumed["step"]) == 6
  for a, b in zip(jax.tree.leaves(jax.device_get(straight["params"])),
                  jax.tree.leaves(jax.device_get(resumed["params"]))):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def _plan_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.Popen([sys.executable, "-m", "jepa.plan", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def test_plan_cli_and_its_bad_input_lines(trained, tmp_path):
  workdir, _, _, _, _ = trained
  other = str(tmp_path / "lejepa")
  run_config.save(load_config("lejepa_vit", "tiny"), other)
  # Every bad input is refused by plan.check (what the command calls before restoring anything) with one line
  # naming the key; two of them through the command itself (exit status 2, one line on stderr).
  config = run_config.load(workdir)
  bad = {"planner.num_elites=9 exceeds num_samples=8": {"planner.num_elites": 9},
         "planner.horizon=0 must be a positive integer": {"planner.horizon": 0},
         "planner.action_bound=0.0 must be > 0": {"planner.action_bound": 0.0},
         "data.source='digits' is an image dataset": {"data.source": "digits"}}
  for message, overrides in bad.items():
    c = run_config.load(workdir)
    for key, value in overrides.items():
      section, name = key.split(".")
      c[section][name] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
      plan_lib.check(c, workdir)
  with pytest.raises(ConfigError, match="holds a 'lejepa' model, not a world model"):
    plan_lib.check(run_config.load(other), other)
  with pytest.raises(ConfigError, match=re.escape("--episodes=0 must be >= 1")):
    plan_lib.check(config, workdir, episodes=0)
  procs = {"planner.num_elites": _plan_cli(f"--workdir={workdir}", "--config.planner.num_elites=9"),
           "not a world model": _plan_cli(f"--workdir={other}")}
  good = _plan_cli(f"--workdir={workdir}", "--episodes=3", "--planner=cem", "--seed=1")
  for key, proc in procs.items():
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (key, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and key in err, err
  out, err = good.communicate(timeout=300)
  assert good.returncode == 0, err
  lines = out.strip().splitlines()
  assert "world model at step 6, cem planner" in lines[0]
  assert sum(line.startswith("episode ") for line in lines) == 3
  m = re.fullmatch(r"success=(\S+) steps_to_goal=\S+ seconds_per_episode=(\S+) episodes=3 planner=cem seed=1",
                   lines[-1])
  assert m, lines[-1]
  success, seconds = float(m.group(1)), float(m.group(2))
  assert 0.0 <= success <= 1.0 and seconds > 0
  assert f"wrote {os.path.join(workdir, 'plan.json')} and {os.path.join(workdir, 'plan_episodes.png')}" in lines
  with Image.open(os.path.join(workdir, "plan_episodes.png")) as im:  # 3 episodes: one row of 3 panels.
    assert im.format == "PNG" and im.size[1] == plots.HEADER + plots.TITLE + 65 * wm.EPISODE_SCALE + 2 * plots.PAD
  with open(os.path.join(workdir, "plan.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert saved["success"] == pytest.approx(success, abs=1e-4) and len(saved["per_episode"]) == 3
  assert [e["success"] for e in saved["per_episode"]] == [e["final_distance"] < 4.5 for e in saved["per_episode"]]
  assert plan_lib.check(config, workdir, episodes=5, planner="cem", seed=2).planner.kind == "cem"
