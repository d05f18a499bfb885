"""V-JEPA: presets, the per-group loss, the 3D table, the attentive probe, one compilation, 1 vs 8 devices.

The 3D sin-cos layout is checked against per-channel loops in tests/test_vit.py, RoPE's relative-position
property there too, and the 3D mask invariants in tests/test_masks.py; here they are checked as the method
uses them.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jepa import config as config_lib
from jepa import losses
from jepa import train
from jepa.data import sources
from jepa.errors import ConfigError
from jepa.evaluation import attentive_probe
from jepa.methods import get_method
from jepa.methods import vjepa
from jepa.models import vit as vit_lib
from tests.helpers import load_config


def _config(**train_overrides):
  c = load_config("vjepa_vit", "tiny")
  c.eval.probe = False
  c.train.update(train_overrides)
  return c


def _batch(method, n=2, seed=0):
  fn = method.example_fn(train=True)
  src = sources.get_source(method.config.data, "train")
  examples = [fn(dict(src[i]), np.random.default_rng([seed, i])) for i in range(n)]
  return {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("preset", ["", "tiny", "vitl16", "vith16", "vjepa2_vitl16"])
def test_presets_validate(preset):
  c = load_config("vjepa_vit", preset)
  config_lib.validate(c, num_devices=1)
  method = get_method(c)
  method.validate()
  assert method.ema_target == "encoder" and method.probes == ("attentive",)
  assert c.loss.kind == "l1" and c.optim.schedule_scale == 1.25 and c.model.tubelet_size == 2


def test_paper_presets_match_the_reference():
  l16 = load_config("vjepa_vit", "vitl16")
  assert (l16.train.batch_size, l16.train.num_steps, l16.optim.warmup_steps) == (3072, 90_000, 12_000)
  assert (l16.optim.start_lr, l16.optim.lr, l16.optim.final_lr) == (2e-4, 6.25e-4, 1e-6)
  assert (l16.optim.weight_decay, l16.optim.final_weight_decay) == (0.04, 0.4)
  assert (l16.ema.momentum, l16.ema.final_momentum) == (0.998, 1.0)
  assert (l16.optim.grad_clip, l16.optim.clip_after_warmup) == (10.0, True)
  assert (l16.data.num_frames, l16.data.frame_step, l16.data.image_size) == (16, 4, 224)
  assert vjepa.METHOD(l16).grid() == (8, 14, 14)
  assert load_config("vjepa_vit", "vith16").model.encoder.size == "huge"
  v2 = load_config("vjepa_vit", "vjepa2_vitl16")
  assert v2.model.pos_embedding == "rope" and v2.model.predictor.heads == 12
  assert v2.optim.final_lr == v2.optim.lr == 5.25e-4 and v2.optim.grad_clip == 0.0
  assert v2.ema.momentum == v2.ema.final_momentum == 0.99925
  lr_fn, _, _ = get_method(v2).schedules(v2.train.num_steps)
  assert float(lr_fn(12_000)) == pytest.approx(5.25e-4) and float(lr_fn(200_000)) == pytest.approx(5.25e-4)


def test_validation_errors_name_the_key():
  c = load_config("vjepa_vit", "tiny")
  c.data.num_frames = 0
  with pytest.raises(ConfigError, match="data.num_frames"):
    get_method(c).validate()
  c = load_config("vjepa_vit", "tiny")
  c.model.pos_embedding = "sincos_ijepa"
  with pytest.raises(ConfigError, match="model.pos_embedding"):
    get_method(c).validate()
  c = load_config("vjepa_vit", "tiny")
  c.masks.video_spatial_scale = (0.15, 1.0)
  with pytest.raises(ConfigError, match=r"masks.video_spatial_scale\[1\]"):
    get_method(c).validate()
  c.masks.video_spatial_scale = (0.15,)
  with pytest.raises(ConfigError, match="one entry per mask group"):
    get_method(c).validate()


# ---------------------------------------------------------------- model and loss


def _sincos_3d_numpy(t, h, w, dim):
  """V-JEPA's documented table: [t | h | w], each 2 ceil(dim / 6) channels [sin | cos], truncated to dim."""
  d = 2 * math.ceil(dim / 6)
  omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2))
  coords = np.stack(np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 3)
  parts = [np.concatenate([np.sin(c[:, None] * omega), np.cos(c[:, None] * omega)], 1) for c in coords.T]
  return np.concatenate(parts, 1)[:, :dim]


def test_encoder_adds_the_3d_table():
  c = load_config("vjepa_vit", "tiny")
  c.model.encoder.update(width=28, heads=2)  # 2 * ceil(28 / 6) = 10 channels per axis; the last 2 dropped.
  model = get_method(c).init_model(nnx.Rngs(0))
  clip = jax.random.normal(jax.random.key(0), (1, 4, 16, 16, 3))
  enc = model.encoder
  tokens = enc.patch_embed(clip) + _sincos_3d_numpy(2, 4, 4, 28)
  expected = enc.norm(vit_lib.run_blocks(enc.blocks, tokens, kv_mask=None, positions=None, remat=False))
  np.testing.assert_allclose(enc(clip), expected, atol=1e-5)


def test_mask_tokens_per_group_zero_init_and_loss_is_group_mean():
  c = load_config("vjepa_vit", "tiny")
  method = get_method(c)
  model = method.init_model(nnx.Rngs(0))
  assert model.predictor.mask_tokens.shape == (2, 32)
  np.testing.assert_array_equal(model.predictor.mask_tokens[...], 0.0)
  target = method.init_model(nnx.Rngs(1)).encoder
  batch = _batch(method)
  assert batch["image"].shape == (2, 4, 16, 16, 3) and batch["context_idx"].shape[:2] == (2, 2)
  loss, metrics = method.loss(model, target, batch, jax.random.key(0))
  # Recompute by hand: per group, encoder on the context, predictor with token g, L1 to layer-normed targets.
  h = target(batch["image"])
  by_hand = []
  for g in range(2):
    z = model.encoder(batch["image"], idx=batch["context_idx"][:, g], valid=batch["context_valid"][:, g])
    pred = model.predictor(z, batch["context_idx"][:, g], batch["context_valid"][:, g],
                           batch["target_idx"][:, g:g + 1], batch["target_valid"][:, g:g + 1],
                           mask_token_index=g)
    tgt = jnp.take_along_axis(h, batch["target_idx"][:, g][..., None], axis=1)
    err = jnp.abs(pred[:, 0] - losses.layer_norm(tgt)).mean(-1)
    valid = batch["target_valid"][:, g]
    by_hand.append((err * valid).sum() / valid.sum())
    np.testing.assert_allclose(metrics[f"loss_group{g}"], by_hand[-1], rtol=1e-5)
  np.testing.assert_allclose(loss, np.mean(by_hand), rtol=1e-5)

  # Each mask token receives gradient only through its own group.
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def group_loss(p, g):
    return method.loss(nnx.merge(graphdef, p, rest), target, batch, None)[1][f"loss_group{g}"]

  # Both groups' gradients in one compilation (eager differentiation dispatches every op on its own).
  grads = jax.jit(lambda p: [jax.grad(group_loss)(p, g) for g in range(2)])(params.to_pure_dict())
  for g in range(2):
    grad = grads[g]["predictor"]["mask_tokens"]
    assert float(jnp.abs(grad[g]).sum()) > 0 and float(jnp.abs(grad[1 - g]).sum()) == 0


def test_features_are_all_target_tokens():
  method = get_method(load_config("vjepa_vit", "tiny"))
  model = method.init_model(nnx.Rngs(0))
  clips = _batch(method)["image"]
  feats = method.features(model, model.encoder, clips)
  assert feats.shape == (2, 32, 32)  # [B, T/2 * H/p * W/p, D]


# ---------------------------------------------------------------- attentive probe


@pytest.mark.parametrize("variant", ["vjepa", "vjepa2"])
def test_attentive_probe_learns_a_token_task(variant):
  # The class is which of 4 patterns one token (at a random place among noise tokens) carries.
  rng = np.random.default_rng(0)
  patterns = 4.0 * np.eye(4, 16, dtype=np.float32)

  def make(n):
    y = rng.integers(0, 4, n)
    x = rng.normal(0, 0.3, (n, 8, 16)).astype(np.float32)
    x[np.arange(n), rng.integers(0, 8, n)] += patterns[y]
    return x, y

  xt, yt = make(512)
  xe, ye = make(256)
  depth = 2 if variant == "vjepa2" else 0
  out = attentive_probe.attentive_probe(xt, yt, xe, ye, 4, variant=variant, depth=depth, epochs=40,
                                        batch_size=32, lr=3e-3)
  assert out["heads"] == 1 and out["accuracy"] > 0.85, out  # Chance: 0.25.


def test_default_heads():
  assert [attentive_probe.default_heads(d) for d in (32, 128, 192, 1024, 1280, 100)] == [1, 2, 3, 16, 20, 1]


# ---------------------------------------------------------------- the loop


def test_compiles_once_and_probes(tmp_path):
  c = _config(num_steps=4, checkpoint_every=0)
  c.eval.update(probe=True, random_baseline=True)
  run = train.setup(c, str(tmp_path), verbose=False)
  _, results = train.fit(run)
  assert run.train_step._cache_size() == 1  # pylint: disable=protected-access
  assert set(results["attentive_probe"]) == {"trained", "random_init"}
  assert all(0.0 <= v <= 1.0 for v in results["attentive_probe"].values())
