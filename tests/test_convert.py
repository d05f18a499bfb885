"""Import of official checkpoints (jepa.convert) and probing of any checkpoint (jepa.evaluate).

Parity: tiny PyTorch models written from the reference spec (tests/torch_reference.py) are saved in the
official layout (prefixes, conv / qkv layouts, pos_embed tensors), converted into a workdir, restored through
jepa.evaluate.restore, and compared forward to forward (encoder on context tokens, target encoder on all tokens,
predictor on given context and target indices) within 1e-4 in float32. The files are read by
jepa.torch_pickle (no torch); a run of the CLI with torch hidden checks that conversion needs no torch at
all. Tests that make files skip when torch is not installed (`pip install -e ".[torch]"`). The error and
evaluation tests build official-layout state dicts in NumPy and run without torch.
"""
import json
import os
import subprocess
import sys

from flax import nnx
import jax
import numpy as np
import pytest

from jepa import convert
from jepa import evaluate
from jepa import official_weights
from jepa import run_config
from jepa import train
from jepa.errors import CheckpointError, ConfigError
from jepa.models import posemb
from tests.helpers import REPO

try:
  import torch  # pylint: disable=g-import-not-at-top
  from tests import torch_reference as ref  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = ref = None

needs_torch = pytest.mark.skipif(torch is None, reason='torch is not installed (pip install -e ".[torch]")')
ATOL = 1e-4

# name -> (torch model sizes, converter flags); tiny, with uneven sin-cos / RoPE channel splits on purpose.
CASES = {
    "ijepa": (dict(image_size=16, patch=4, dim=32, depth=2, heads=2, pred_dim=16, pred_depth=2, pred_heads=2),
              dict(heads=2)),
    "vjepa": (dict(image_size=16, patch=4, dim=32, depth=2, heads=2, pred_dim=16, pred_depth=1, pred_heads=2,
                   num_frames=4, tubelet=2, num_mask_tokens=2),
              dict(heads=2)),
    # head_dim 32 (RoPE 3 x 10 channels + 2 unrotated) and predictor head_dim 16 (3 x 4 + 4); 10 mask tokens.
    "vjepa2": (dict(image_size=16, patch=4, dim=64, depth=2, heads=2, pred_dim=32, pred_depth=2, pred_heads=2,
                    num_frames=4, tubelet=2, num_mask_tokens=10),
               dict(heads=2, predictor_heads=2, image_size=16, num_frames=4)),
}


def _config(fmt):
  """The converter's default config for `fmt`, with masks and evaluation sized for a 4x4 token grid."""
  c = convert.default_config(fmt)
  c.masks.update(min_context=1)
  c.data.update(num_threads=1, prefetch=1)
  c.train.update(batch_size=8, num_steps=2, log_every=2, checkpoint_every=0)
  c.eval.update(batch_size=32, max_train_examples=96, max_eval_examples=32)
  c.eval.attentive.update(epochs=1, batch_size=32)
  return c


# --------------------------------------------------------------------------------------------- parity (torch)
def _indices(rng, batch, n, k):
  return np.stack([np.sort(rng.choice(n, k, replace=False)) for _ in range(batch)]).astype(np.int64)


def _to_channels_last(x):
  return np.moveaxis(x, 1, -1)  # [B, C, (T,) H, W] -> [B, (T,) H, W, C]


@nnx.jit
def _encode(encoder, x, idx):
  return encoder(x, idx=idx)


@nnx.jit(static_argnames="mask_token_index")
def _predict(predictor, ctx, ctx_idx, tgt_idx, mask_token_index):
  return predictor(ctx, ctx_idx, None, tgt_idx, mask_token_index=mask_token_index)


def _parity(fmt, tmp_path):
  """Converts a random reference model of format `fmt`; returns {what: max abs error}."""
  sizes, flags = CASES[fmt]
  torch.manual_seed(0)
  encoder, target, predictor = ref.make_models(fmt, **sizes, seed=1)
  stale = torch.zeros(1, 7, sizes["dim"]) if fmt == "vjepa2" else None
  path = str(tmp_path / f"{fmt}.pth.tar")
  ref.save_official(path, fmt, encoder, target, predictor, stale_pos_embed=stale)
  workdir = str(tmp_path / "run")
  convert.convert(fmt, path, workdir, config=_config(fmt), **flags)
  state_def, state, _ = evaluate.restore(run_config.load(workdir), workdir)
  model, jax_target = state_def.models(state)

  rng = np.random.default_rng(0)
  b, side = 2, sizes["image_size"]
  frames = sizes.get("num_frames", 0)
  shape = (b, 3, frames, side, side) if frames else (b, 3, side, side)
  x = rng.standard_normal(shape).astype(np.float32)
  n = (frames // sizes.get("tubelet", 1) if frames else 1) * (side // sizes["patch"]) ** 2
  ctx_idx = _indices(rng, b, n, n // 2)
  errors = {}
  with torch.no_grad():
    xt = torch.from_numpy(x)
    want_ctx = ref_ctx = encoder(xt, masks=torch.from_numpy(ctx_idx)).numpy()
    got_ctx = _encode(model.encoder, _to_channels_last(x), ctx_idx)
    errors["encoder (context tokens)"] = ref.max_abs(got_ctx, want_ctx)
    errors["target encoder (all tokens)"] = ref.max_abs(jax_target(_to_channels_last(x)), target(xt).numpy())
    if fmt == "vjepa2":  # RoPE positions come from the actual grid: a non-square clip.
      wide = rng.standard_normal((b, 3, frames, side // 2, side)).astype(np.float32)
      errors["target encoder (non-square clip)"] = ref.max_abs(jax_target(_to_channels_last(wide)),
                                                               target(torch.from_numpy(wide)).numpy())
    # Predictor on the same (reference) context features: I-JEPA with 2 target blocks in one call (mask-major
    # batch), V-JEPA per mask generator g with mask token g, V-JEPA 2 with tokens 0 and 7 of its 10.
    calls = {"ijepa": [(2, 0)], "vjepa": [(1, 0), (1, 1)], "vjepa2": [(1, 0), (1, 7)]}[fmt]
    for m, token in calls:
      tgt_idx = np.stack([_indices(rng, b, n, n // 4) for _ in range(m)], axis=1)  # [B, M, Kt]
      want = predictor(torch.from_numpy(ref_ctx), torch.from_numpy(ctx_idx),
                       [torch.from_numpy(tgt_idx[:, i]) for i in range(m)], mask_index=token).numpy()
      got = np.asarray(_predict(model.predictor, ref_ctx, ctx_idx, tgt_idx, token))
      got = got.transpose(1, 0, 2, 3).reshape(m * b, *got.shape[2:])  # [B, M, Kt, D] -> theirs [M*B, Kt, D]
      errors[f"predictor (M={m}, mask token {token})"] = ref.max_abs(got, want)
  return errors


@needs_torch
@pytest.mark.parametrize("fmt", sorted(CASES))
def test_forward_parity_with_the_reference(fmt, tmp_path):
  errors = _parity(fmt, tmp_path)
  print(f"\n{fmt} parity, max abs error: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
  assert max(errors.values()) < ATOL, errors


@needs_torch
def test_cli_reports_a_missing_tensor_on_one_line(tmp_path):
  sizes, _ = CASES["ijepa"]
  encoder, target, predictor = ref.make_models("ijepa", **sizes)
  ckpt = {"encoder": ref.official_state_dict(encoder, "ijepa"),
          "predictor": ref.official_state_dict(predictor, "ijepa"),
          "target_encoder": ref.official_state_dict(target, "ijepa")}
  del ckpt["target_encoder"]["module.blocks.1.mlp.fc2.bias"]
  path = tmp_path / "broken.pth.tar"
  torch.save(ckpt, path)
  proc = subprocess.run([sys.executable, "-m", "jepa.convert", "--format=ijepa", f"--checkpoint={path}",
                         f"--workdir={tmp_path / 'run'}", "--heads=2"], cwd=REPO, capture_output=True,
                        text=True, timeout=300, check=False, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "target_encoder['module.blocks.1.mlp.fc2.bias'] is missing" in lines[0], lines
  assert not (tmp_path / "run" / "checkpoints").exists()


# A `python -m jepa.convert` in which `import torch` fails: what a machine without torch runs.
HIDE_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['jepa.convert', *sys.argv[1:]]; "
              "runpy.run_module('jepa.convert', run_name='__main__', alter_sys=True)")


def _convert_cli(*args, hide_torch=True):
  command = ["-c", HIDE_TORCH] if hide_torch else ["-m", "jepa.convert"]
  return subprocess.run([sys.executable, *command, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=300, check=False, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _flat(tree):
  """{'a/0/b': ndarray} of a nested tree (int and str keys alike)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  name = lambda k: str(getattr(k, "key", getattr(k, "idx", k)))
  return {"/".join(map(name, path)): np.asarray(leaf) for path, leaf in leaves}


@needs_torch
def test_the_cli_converts_a_torch_file_with_torch_hidden(tmp_path):
  """torch.save writes the file; a process where `import torch` fails converts it; the restored step 0 equals
  the conversion of torch's own `tensor.numpy()` arrays, bit for bit."""
  sizes, flags = CASES["vjepa"]
  encoder, target, predictor = ref.make_models("vjepa", **sizes, seed=3)
  path = tmp_path / "vjepa.pth.tar"
  ckpt = ref.save_official(str(path), "vjepa", encoder, target, predictor)
  workdir = tmp_path / "run"
  proc = _convert_cli("--format=vjepa", f"--checkpoint={path}", f"--workdir={workdir}", "--heads=2",
                      "--config.data.num_threads=1", "--config.masks.min_context=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "converted vjepa checkpoint" in proc.stdout and "grid 2x4x4" in proc.stdout, proc.stdout

  want = official_weights.convert_state_dicts(ref.to_numpy_state_dicts(ckpt), "vjepa", **flags)
  _, state, _ = evaluate.restore(run_config.load(str(workdir)), str(workdir))
  got = {"params": _flat(jax.device_get(state["params"])), "ema": _flat(jax.device_get(state["ema"]))}
  expected = {"params": _flat({"encoder": want.encoder, "predictor": want.predictor}),
              "ema": _flat(want.target_encoder)}
  for part in ("params", "ema"):
    assert set(got[part]) == set(expected[part]), part
    for key, value in expected[part].items():
      np.testing.assert_array_equal(got[part][key], value, err_msg=f"{part}/{key}")
  # The same check, spot on a tensor whose layout is spelled out: Conv3d [D, 3, kt, p, p] -> [kt, p, p, 3, D].
  conv = ckpt["encoder"]["module.backbone.patch_embed.proj.weight"].numpy()
  np.testing.assert_array_equal(got["params"]["encoder/patch_embed/kernel"], conv.transpose(2, 3, 4, 1, 0))


def test_the_cli_reports_reading_errors_on_one_line_with_torch_hidden(tmp_path):
  """Exit status 2 and one line naming the problem; nothing says torch is needed."""
  workdir, _ = _converted_workdir(tmp_path)
  (tmp_path / "foo.pth").write_bytes(b"not a checkpoint")
  cases = {
      str(tmp_path / "missing.pth"): f"--checkpoint={tmp_path / 'missing.pth'} does not exist",
      workdir: f"--checkpoint={workdir} is a jepa workdir/checkpoint, not a PyTorch checkpoint; use it",
      str(tmp_path / "foo.pth"): "is not a PyTorch checkpoint",
  }
  for source, needle in cases.items():
    proc = _convert_cli("--format=ijepa", f"--checkpoint={source}", f"--workdir={tmp_path / 'out'}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (source, proc.returncode, proc.stderr[-3000:])
    assert needle in lines[0] and "torch]" not in lines[0] and "needs torch" not in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def _torch_file(tmp_path, obj, name="ckpt.pth"):
  path = str(tmp_path / name)
  torch.save(obj, path)
  return path


@needs_torch
def test_load_errors_name_what_the_file_holds(tmp_path):
  # A dict without the state dicts: named with the keys it does hold.
  path = _torch_file(tmp_path, {"foo": torch.ones(2)})
  with pytest.raises(CheckpointError) as e:
    official_weights.load_torch_checkpoint(path)
  _one_line_error(e, f"--checkpoint={path} has no 'encoder' state dict (it holds ['foo'])")
  # A bare state dict of many tensors: its first keys and how many.
  sizes, _ = CASES["ijepa"]
  encoder, _, _ = ref.make_models("ijepa", **sizes)
  path = _torch_file(tmp_path, encoder.state_dict(), "bare.pth")
  with pytest.raises(CheckpointError) as e:
    official_weights.load_torch_checkpoint(path)
  _one_line_error(e, "has no 'encoder' state dict (it holds ['blocks.0.attn.proj.bias', ",
                  f"({len(encoder.state_dict())} keys)]")
  # Not a dict; a state dict that is not a dict; a tensor that is not floating-point.
  path = _torch_file(tmp_path, [torch.ones(2)], "list.pth")
  with pytest.raises(CheckpointError) as e:
    official_weights.load_torch_checkpoint(path)
  _one_line_error(e, "holds a list, not the dict of state dicts")
  full = {"encoder": {"w": torch.ones(2)}, "predictor": {"w": torch.ones(2)}, "target_encoder": 3}
  with pytest.raises(CheckpointError) as e:
    official_weights.load_torch_checkpoint(_torch_file(tmp_path, full, "int.pth"))
  _one_line_error(e, "'target_encoder' in ", "is of type int, not a state dict")
  full["target_encoder"] = {"module.step": torch.tensor(3)}
  with pytest.raises(CheckpointError) as e:
    official_weights.load_torch_checkpoint(_torch_file(tmp_path, full, "long.pth"))
  _one_line_error(e, "target_encoder['module.step'] in ", "is a tensor of int64, not a floating-point tensor")
  # Code in the file: refused, not run.
  marker = tmp_path / "pwned"
  evil = {"encoder": {}, "predictor": {}, "target_encoder": {}, "x": _Evil(marker)}
  path = _torch_file(tmp_path, evil, "evil.pth")
  with pytest.raises(CheckpointError) as e:
    official_weights.load_torch_checkpoint(path)
  _one_line_error(e, f"--checkpoint={path} is refused", "system")
  assert not marker.exists()


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_folders_are_named_for_what_they_are(tmp_path):
  workdir, _ = _converted_workdir(tmp_path)
  step = os.path.join(workdir, "checkpoints", "0")
  for source in (workdir, os.path.join(workdir, "checkpoints"), step, os.path.join(step, "state"),
                 os.path.join(step, "_CHECKPOINT_METADATA")):
    with pytest.raises(CheckpointError) as e:
      official_weights.load_torch_checkpoint(source)
    _one_line_error(e, f"--checkpoint={source} is a jepa workdir/checkpoint, not a PyTorch checkpoint",
                    f"python -m jepa.evaluate --workdir={workdir}")
  other = tmp_path / "folder"
  other.mkdir()
  with pytest.raises(CheckpointError) as e:
    official_weights.load_torch_checkpoint(str(other))
  _one_line_error(e, "is a directory, not a PyTorch checkpoint file")


@needs_torch
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_checkpoints_are_read_as_float32(dtype, tmp_path):
  """State dicts saved in bf16 / fp16 are read as float32 equal to torch's own cast (and fp16 ones convert:
  their tables are within TABLE_ATOL of ours, bf16's rounding of about 4e-3 is not)."""
  sizes, flags = CASES["ijepa"]
  models = ref.make_models("ijepa", **sizes)
  ckpt = {name: {k: v.to(getattr(torch, dtype)) for k, v in ref.official_state_dict(m, "ijepa").items()}
          for name, m in zip(("encoder", "target_encoder", "predictor"), models)}
  loaded = official_weights.load_torch_checkpoint(_torch_file(tmp_path, ckpt))
  for name, sd in ckpt.items():
    assert list(loaded[name]) == list(sd)
    for key, tensor in sd.items():
      assert loaded[name][key].dtype == np.float32 and loaded[name][key].flags.writeable
      np.testing.assert_array_equal(loaded[name][key], tensor.float().numpy(), err_msg=f"{name}[{key!r}]")
  if dtype == "float16":
    converted = official_weights.convert_state_dicts(loaded, "ijepa", **flags)
    qkv = ckpt["encoder"]["module.blocks.1.attn.qkv.weight"].float().numpy()
    np.testing.assert_array_equal(converted.encoder["blocks"][1]["attn"]["qkv"]["kernel"], qkv.T)


# ---------------------------------------------------------------------------------- errors (no torch needed)
def _spec(fmt, **kw):
  sizes = dict(format=fmt, width=32, depth=2, heads=2, mlp_ratio=4.0, patch_size=4, tubelet_size=0,
               image_size=16, num_frames=0, predictor_width=16, predictor_depth=1, predictor_heads=2,
               num_mask_tokens=1)
  if fmt != "ijepa":
    sizes.update(tubelet_size=2, num_frames=4, num_mask_tokens=2 if fmt == "vjepa" else 10)
  sizes.update(kw)
  return official_weights.ModelSpec(**sizes)


def _synthetic(spec, seed=0):
  """Official-layout state dicts ({name: {prefixed key: array}}) of random tensors and the right tables."""
  rng = np.random.default_rng(seed)
  kind = official_weights.FORMATS[spec.format].pos_embedding
  prefix = "module." if spec.format == "ijepa" else "module.backbone."
  layouts = {"encoder": official_weights.encoder_layout(spec), "target_encoder": official_weights.encoder_layout(spec),
             "predictor": official_weights.predictor_layout(spec)}
  out = {}
  for name, layout in layouts.items():
    out[name] = {}
    for key, (shape, _, _) in layout.items():
      if key in ("pos_embed", "predictor_pos_embed"):
        value = posemb.table(kind, spec.grid, shape[-1])[None]
      else:
        value = 0.1 * rng.standard_normal(shape)
      out[name][prefix + key] = value.astype(np.float32)
  return out


def _one_line_error(excinfo, *needles):
  message = str(excinfo.value)
  assert "\n" not in message, message
  for needle in needles:
    assert needle in message, message


def test_round_trip_infers_the_spec():
  for fmt in official_weights.FORMATS:
    spec = _spec(fmt)
    flags = dict(heads=2)
    if fmt == "vjepa2":
      flags.update(predictor_heads=2, image_size=16, num_frames=4)
    converted = official_weights.convert_state_dicts(_synthetic(spec), fmt, **flags)
    assert converted.spec == spec
    assert converted.predictor["mask_tokens"].shape == (spec.num_mask_tokens, 16)


def test_reference_sizes_give_the_heads():
  """ViT-g at 1408: 16 heads for I-JEPA, 22 (vit_giant_xformers) and a 12-head predictor for V-JEPA 2."""
  assert official_weights._default_heads("ijepa", 1408) == 16  # pylint: disable=protected-access
  assert official_weights._default_heads("vjepa2", 1408) == 22  # pylint: disable=protected-access
  assert official_weights._default_heads("vjepa", 1280) == 16  # pylint: disable=protected-access
  assert int(1408 * official_weights._mlp_ratio(6144, 1408)) == 6144  # pylint: disable=protected-access
  with pytest.raises(ConfigError) as e:
    official_weights.convert_state_dicts(_synthetic(_spec("ijepa")), "ijepa")  # width 32: not a reference size
  _one_line_error(e, "--heads")


@pytest.mark.parametrize("fmt", sorted(official_weights.FORMATS))
def test_missing_extra_and_misshaped_tensors_are_named(fmt):
  spec = _spec(fmt)
  prefix = "module." if fmt == "ijepa" else "module.backbone."
  flags = dict(heads=2, predictor_heads=2, image_size=16, num_frames=4 if fmt != "ijepa" else 0)

  sd = _synthetic(spec)
  del sd["encoder"][prefix + "blocks.1.attn.proj.bias"]
  with pytest.raises(CheckpointError) as e:
    official_weights.convert_state_dicts(sd, fmt, **flags)
  _one_line_error(e, f"encoder['{prefix}blocks.1.attn.proj.bias'] is missing")

  sd = _synthetic(spec)
  sd["predictor"][prefix + "predictor_blocks.0.attn.q_norm.weight"] = np.ones(8, np.float32)
  with pytest.raises(CheckpointError) as e:
    official_weights.convert_state_dicts(sd, fmt, **flags)
  _one_line_error(e, f"predictor['{prefix}predictor_blocks.0.attn.q_norm.weight'] is unexpected")

  sd = _synthetic(spec)
  sd["target_encoder"][prefix + "blocks.1.attn.qkv.weight"] = np.zeros((90, 32), np.float32)
  with pytest.raises(CheckpointError) as e:
    official_weights.convert_state_dicts(sd, fmt, **flags)
  _one_line_error(e, f"target_encoder['{prefix}blocks.1.attn.qkv.weight'] has shape [90, 32], "
                  "expected [96, 32]")

  sd = _synthetic(spec)
  del sd["target_encoder"]
  with pytest.raises(CheckpointError) as e:
    official_weights.convert_state_dicts(sd, fmt, **flags)
  _one_line_error(e, "no 'target_encoder' state dict")


def test_a_position_table_that_is_not_ours_is_refused():
  spec = _spec("ijepa")
  sd = _synthetic(spec)
  # V-JEPA's row-first 2D table in an I-JEPA checkpoint (same shape, transposed layout).
  sd["encoder"]["module.pos_embed"] = posemb.sincos_2d_vjepa(4, 4, 32)[None]
  with pytest.raises(CheckpointError) as e:
    official_weights.convert_state_dicts(sd, "ijepa", heads=2)
  _one_line_error(e, "encoder['module.pos_embed'] differs from the regenerated sincos_ijepa table for "
                  "grid 4x4")

  sd = _synthetic(spec)
  sd["predictor"]["module.predictor_pos_embed"] = sd["predictor"]["module.predictor_pos_embed"] + 0.01
  with pytest.raises(CheckpointError) as e:
    official_weights.convert_state_dicts(sd, "ijepa", heads=2)
  _one_line_error(e, "predictor['module.predictor_pos_embed'] differs")


def test_the_video_grid_is_read_off_pos_embed():
  # 64 tokens fit the square grids 64x1x1, 16x2x2, 4x4x4 and 1x8x8; only the true one regenerates the table.
  spec = _spec("vjepa", num_frames=8)
  converted = official_weights.convert_state_dicts(_synthetic(spec), "vjepa", heads=2)
  assert (converted.spec.num_frames, converted.spec.image_size) == (8, 16)


# --------------------------------------------------------------------------- workdir, evaluation, training on
def _converted_workdir(tmp_path):
  spec = _spec("ijepa")
  converted = official_weights.convert_state_dicts(_synthetic(spec), "ijepa", heads=2)
  config = convert.apply_spec(_config("ijepa"), converted.spec)
  workdir = str(tmp_path / "run")
  convert.write_workdir(config, workdir, converted)
  return workdir, converted


def test_evaluate_cli_and_training_on_from_a_converted_checkpoint(tmp_path):
  workdir, converted = _converted_workdir(tmp_path)

  # The CLI reads WORKDIR/config.json by itself; --config.* overrides change the data that is probed.
  proc = subprocess.run([sys.executable, "-m", "jepa.evaluate", f"--workdir={workdir}", "--probe=linear",
                         "--random_baseline", "--config.eval.max_train_examples=64"], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "evaluation.json"), encoding="utf-8") as f:
    out = json.load(f)
  assert out["step"] == 0 and set(out["probes"]) == {"linear"}
  assert set(out["probes"]["linear"]) == {"trained", "random_init"}
  assert all(0.0 <= acc <= 1.0 for acc in out["probes"]["linear"].values())

  # The attentive probe on I-JEPA probes the target encoder's tokens.
  attentive = evaluate.evaluate(run_config.load(workdir), workdir, probe="attentive")
  assert 0.0 <= attentive["probes"]["attentive"]["trained"] <= 1.0

  # jepa.main with the same workdir (here the train.fit it runs) starts from the converted step 0.
  config = run_config.load(workdir)
  config.eval.probe = False
  state, _ = train.fit(train.setup(config, workdir, verbose=False))
  assert int(state["step"]) == config.train.num_steps
  ema = jax.device_get(state["ema"]["blocks"][0]["attn"]["qkv"]["kernel"])
  start = converted.target_encoder["blocks"][0]["attn"]["qkv"]["kernel"]
  assert np.max(np.abs(ema - start)) < 1e-2  # EMA 0.996: two steps move the converted target only a little


def test_evaluate_without_a_checkpoint_names_the_workdir(tmp_path):
  config = _config("ijepa")
  with pytest.raises(CheckpointError) as e:
    evaluate.evaluate(config, str(tmp_path / "nothing"))
  _one_line_error(e, "has no checkpoints/ folder")


def test_convert_refuses_a_workdir_with_checkpoints(tmp_path):
  workdir, converted = _converted_workdir(tmp_path)
  config = convert.apply_spec(_config("ijepa"), converted.spec)
  with pytest.raises(ConfigError) as e:
    convert.write_workdir(config, workdir, converted)
  _one_line_error(e, "already holds checkpoints")
