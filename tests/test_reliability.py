"""Reliability: preemption, crash-resume, checkpoint fallback, the NaN guard, one-line errors for bad input.

tests/test_train.py covers exact resume after `stop_at` and the NaN guard on every step; these tests add real
signals, damaged checkpoints, a NaN at one step, and bad configs / files. Runs are tiny (a few steps of the
`tiny` preset); a Run is re-fit rather than set up again where possible: `train.fit` reuses its compiled step.
"""
import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from jepa import checkpoint as checkpoint_lib
from jepa import config as config_lib
from jepa import metrics as metrics_lib
from jepa import train
from jepa.data import pipeline
from jepa.data import sources
from jepa.errors import CheckpointError, ConfigError, DataError, JepaError
from jepa.methods import get_method
from tests.helpers import REPO, load_config

CLI = [sys.executable, "-m", "jepa.main", "--config=configs/ijepa_vit.py:tiny"]


def _config(**train_overrides):
  c = load_config("ijepa_vit", "tiny")
  c.eval.probe = False
  c.train.update(train_overrides)
  return c


def _params(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state["params"]))]


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _saved_state(workdir, step):
  return ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(workdir), "checkpoints", str(step),
                                                         "state"))


def _cli(workdir, *overrides):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen(CLI + [f"--workdir={workdir}", "--config.eval.probe=False", *overrides], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --- preemption ------------------------------------------------------------------------------------------------
def test_sigterm_to_the_cli_saves_and_a_restart_finishes(tmp_path):
  """A real SIGTERM to `python -m jepa.main`: finish the step, save, exit 0 with a message; then resume."""
  steps = ["--config.train.num_steps=12", "--config.train.checkpoint_every=0", "--config.train.log_every=1"]
  proc = _cli(tmp_path, *steps)
  for line in proc.stdout:
    if line.startswith("step 2/"):
      proc.send_signal(signal.SIGTERM)
      break
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  last = out.strip().splitlines()[-1]
  assert last.startswith("received SIGTERM: saved a checkpoint at step "), out
  saved = int(last.split("at step ")[1].split()[0])
  assert 2 <= saved < 12 and os.listdir(tmp_path / "checkpoints") == [str(saved)]

  out, err = _cli(tmp_path, *steps).communicate(timeout=300)
  assert f"resumed from step {saved} in" in out, out + err
  assert [r["step"] for r in _rows(tmp_path)] == list(range(1, 13))  # one row per step, no duplicates
  assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints"))[-1] == 12


def _flip_a_byte(step_dir):
  """Flips one byte in the middle of the largest array file: Orbax alone would read it back silently."""
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))


def test_signal_resume_and_corrupt_latest_checkpoint_continue_identically(tmp_path, capsys, monkeypatch):
  """SIGTERM mid-run -> checkpoint; a platform preemption notice -> checkpoint; resume to the end; then a
  damaged newest checkpoint and a leftover Orbax tmp folder -> warning, fallback to the previous checkpoint,
  and the same final params and losses again."""
  run = train.setup(_config(num_steps=6, checkpoint_every=2, log_every=1), str(tmp_path))
  step_fn, calls = run.train_step, []

  def signalling_step(state, batch):
    calls.append(None)
    if len(calls) == 3:
      os.kill(os.getpid(), signal.SIGTERM)  # Arrives mid-step: step 3 completes, then the loop saves.
    return step_fn(state, batch)

  run.train_step = signalling_step
  assert train.fit(run)[1] == {"step": 3, "preempted": True}
  assert "received SIGTERM: saved a checkpoint at step 3" in capsys.readouterr().out
  run.train_step = step_fn
  # Orbax's preemption sync point (multi-host platforms) at step 5, as JAX's preemption service would signal.
  with monkeypatch.context() as m:
    m.setattr(checkpoint_lib.Checkpointer, "reached_preemption", lambda self, step: step == 5)
    assert train.fit(run)[1] == {"step": 5, "preempted": True}
  out = capsys.readouterr().out
  assert "resumed from step 3" in out and "preemption notice: saved a checkpoint at step 5" in out, out
  state, _ = train.fit(run)
  assert "resumed from step 5" in capsys.readouterr().out
  final, rows = _params(state), _rows(tmp_path)
  assert [r["step"] for r in rows] == list(range(1, 7))

  ckpts = tmp_path / "checkpoints"
  assert sorted(os.listdir(ckpts)) == ["4", "5", "6"]
  _flip_a_byte(ckpts / "6")
  os.makedirs(ckpts / "8.orbax-checkpoint-tmp" / "state")  # What a kill -9 during an async save leaves.
  state, _ = train.fit(run)
  out = capsys.readouterr().out
  assert "WARNING: checkpoint 6 is unreadable" in out and "resumed from step 5" in out, out
  assert (tmp_path / "checkpoints.corrupt" / "6").is_dir()  # Moved aside, so step 6 could be saved again.
  assert sorted(os.listdir(ckpts)) == ["4", "5", "6"]  # The tmp folder is gone.
  for a, b in zip(final, _params(state)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  again = _rows(tmp_path)
  assert [r["step"] for r in again] == list(range(1, 7))
  assert [r["loss"] for r in again] == [r["loss"] for r in rows]


def test_metrics_rows_after_the_resume_step_are_dropped(tmp_path):
  """A resumed run re-logs the steps after its checkpoint: earlier rows for them (and a half-written line left
  by a kill) are dropped, so metrics.jsonl keeps one row per logged step."""
  rows = [json.dumps({"step": s, "loss": float(s)}) for s in range(1, 6)]
  (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + '\n{"step": 6, "lo')
  writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False, start_step=3)
  writer.write(4, {"loss": 40.0})
  writer.close()
  assert [(r["step"], r["loss"]) for r in _rows(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_unreadable_checkpoints_stop_instead_of_starting_over(tmp_path):
  """All checkpoints unreadable (here: saved for another model) -> a one-line CheckpointError, no restart."""
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path), async_save=False)
  ckpt.save(1, {"w": jnp.zeros(3)}, None, {"step": 1})
  ckpt.close()
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path), async_save=False)
  with pytest.raises(CheckpointError, match=r"no checkpoint in .* is readable \(step 1: .* new --workdir"):
    ckpt.restore_latest({"w": jax.ShapeDtypeStruct((4,), jnp.float32)}, None)
  ckpt.close()


# --- the NaN guard -------------------------------------------------------------------------------------------
def test_non_finite_state_is_never_saved(tmp_path):
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path), async_save=False)
  with pytest.raises(CheckpointError, match="refusing to save step 5: the train state holds NaN/Inf"):
    ckpt.save(5, {"w": jnp.array([1.0, jnp.nan])}, None, {"step": 5})
  assert ckpt.all_steps() == []
  ckpt.close()


def _image_folder(root, corrupt):
  for i in range(16):
    cls = root / f"class_{i % 2}"
    cls.mkdir(parents=True, exist_ok=True)
    if i in corrupt:
      (cls / f"{i:02d}.png").write_bytes(b"not a png")
    else:
      Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
          cls / f"{i:02d}.png")


def _poison_step(run, bad_step):
  """Makes the loss (and so the gradient) NaN at `bad_step` only; the step's key identifies it inside jit."""
  loss = run.method.loss
  bad_key = jax.random.key_data(jax.random.fold_in(jax.random.key(run.config.seed), bad_step))

  def poisoned(model, target, batch, rng):
    value, metrics = loss(model, target, batch, rng)
    hit = jnp.all(jax.random.key_data(rng) == bad_key)
    return value * jnp.where(hit, jnp.nan, 1.0), metrics

  run.method.loss = poisoned


def test_nan_step_skipped_and_counted_corrupt_images_skipped_and_counted(tmp_path):
  """nan_policy='skip': the bad step is skipped, counted in the metrics, and no checkpoint holds a NaN;
  data.skip_corrupt: unreadable images are replaced and counted in the metrics instead of ending the run."""
  _image_folder(tmp_path / "images", corrupt={3, 8, 13})
  c = _config(num_steps=4, checkpoint_every=1, log_every=1)
  c.data.update(source="folder", path=str(tmp_path / "images"), skip_corrupt=True)
  train_files = sources.get_source(c.data, "train")
  bad_names = ("03.png", "08.png", "13.png")  # At least one is in the train split (not carved out for eval).
  assert any(train_files.source.files[i].endswith(bad_names) for i in train_files.indices)
  run = train.setup(c, str(tmp_path / "run"), verbose=False)
  _poison_step(run, 2)
  state, _ = train.fit(run)
  assert int(state["skipped"]) == 1 and int(state["first_bad_step"]) == 2
  rows = _rows(tmp_path / "run")
  assert [r["skipped_steps"] for r in rows] == [0, 0, 1, 1]
  assert not np.isfinite(rows[2]["loss"]) and np.isfinite(rows[3]["loss"])
  assert rows[-1]["corrupt_skipped"] >= 1
  for step in (1, 2, 3, 4):  # keep_checkpoints=3 keeps 2..4; every one is finite
    if os.path.isdir(tmp_path / "run" / "checkpoints" / str(step)):
      leaves = jax.tree.leaves(_saved_state(tmp_path / "run", step))
      assert all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(np.asarray(x).dtype, np.floating))


# --- one-line errors for bad configs and inputs ---------------------------------------------------------------
def _retyped(section, key, value):
  """The tiny config with `section.key` replaced by a value of another type (ConfigDict refuses to assign)."""
  c = _config()
  c[section] = ml_collections.ConfigDict(dict(c[section].to_dict(), **{key: value}))
  return c


def _set(path, value, **more):
  """The tiny config with `path` (dotted) set to `value`, even a key it lacks; `more`: further a__b=value."""
  c = _config()
  for name, v in [(path, value)] + [(k.replace("__", "."), v) for k, v in more.items()]:
    *parents, key = name.split(".")
    node = c
    for p in parents:
      node = node[p]
    with node.unlocked():
      node[key] = v
  return c


VALIDATE_CASES = [  # (config, devices, words the message must contain)
    (_set("train.bogus", 1), 1, ["config key train.bogus is unknown", "remove it or fix its spelling"]),
    (_set("data.batch_size", 8), 1, ["config key data.batch_size is unknown", "did you mean"]),
    (_retyped("train", "batch_size", "8"), 1, ["train.batch_size='8' has type str, expected int"]),
    (_retyped("optim", "lr", "fast"), 1, ["optim.lr='fast' has type str, expected float"]),
    (_set("train.nan_policy", "ignore"), 1, ["train.nan_policy='ignore' is not one of ['skip', 'stop']"]),
    (_set("dtype", "float16"), 1, ["dtype='float16' is not one of"]),
    (_set("loss.kind", "huber"), 1, ["loss.kind='huber' is not one of"]),
    (_set("data.source", "s3"), 1, ["data.source='s3' is not one of"]),
    (_set("train.num_steps", 0), 1, ["train.num_steps=0 must be positive"]),
    (_set("train.batch_size", 6), 4, ["train.batch_size=6 is not divisible by the 4 devices",
                                      "--config.train.batch_size=4"]),
    (_set("eval.batch_size", 66), 4, ["eval.batch_size=66 is not divisible by the 4 devices"]),
    (_set("data.eval_fraction", 1.5), 1, ["data.eval_fraction=1.5 must be in (0, 1)"]),
    (_set("data.crop_scale", (0.5, 1.5)), 1, ["data.crop_scale=(0.5, 1.5) must satisfy"]),
    (_set("train.checkpoint_every", -1), 1, ["train.checkpoint_every=-1 must be >= 0"]),
    (_set("train.keep_checkpoints", 0), 1, ["train.keep_checkpoints=0 must be positive"]),
    (_set("optim.lr", -1e-3), 1, ["optim.lr=-0.001 must be >= 0"]),
    (_set("data.mean", (0.5,)), 1, ["data.mean=(0.5,) must have 3 entries"]),
]


@pytest.mark.parametrize("config,devices,words", VALIDATE_CASES)
def test_bad_config_one_line_error(config, devices, words):
  """Shared keys are checked by config.validate, a method's sections (here loss.*) by its Method.validate."""
  with pytest.raises(ConfigError) as excinfo:
    config_lib.validate(config, num_devices=devices)
    get_method(config).validate()
  _assert_one_line(excinfo, words)


SETUP_CASES = [  # Caught by train.setup: before anything compiles.
    (_set("method", "dino"), ConfigError, ["method='dino' is unknown; choose one of"]),
    (_set("masks.target_scale", (0.9, 0.95)), ConfigError,
     ["masks.target_scale=(0.9, 0.95) lets one target block cover the whole 4x4 grid",
      "lower its upper bound"]),
    (_set("masks.min_context", 1000), ConfigError, ["masks.min_context=1000 cannot be met"]),
    (_set("data.image_size", 18), ConfigError, ["data.image_size=18 is not divisible by model.patch_size=4"]),
    (_set("model.encoder.size", "enormous"), ConfigError, ["model.encoder.size='enormous' is unknown"]),
    (_set("model.encoder.heads", 3), ConfigError,
     ["model.encoder.width=32 is not divisible by model.encoder.heads=3"]),
    (_set("mesh.data", 3), ConfigError, ["mesh.data"]),
    (_set("data.source", "npz"), DataError, ["data.path is empty; pass --config.data.path="]),
    (_set("data.source", "folder", data__path="/nonexistent/images"), DataError,
     ["data.path: /nonexistent/images does not exist; pass --config.data.path="]),
]


@pytest.mark.parametrize("config,error,words", SETUP_CASES)
def test_bad_config_stops_setup(tmp_path, config, error, words):
  with pytest.raises(error) as excinfo:
    train.setup(config, str(tmp_path), verbose=False)
  _assert_one_line(excinfo, words)


def _npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_bad_data_files_one_line_errors(tmp_path):
  """Missing dataset, unreadable or wrongly shaped files: each a DataError naming the file or key, the fix."""
  imgs = np.zeros((4, 8, 8, 3), np.uint8)
  cases = [
      ({"source": "npz", "path": str(tmp_path / "none.npz")}, ["data.path:", "none.npz does not exist"]),
      ({"source": "tfds", "name": "cifar10", "data_dir": str(tmp_path)},
       ["data.data_dir:", "prepare cifar10"]),
      ({"source": "npz", "path": _npz(tmp_path / "nolabels.npz", images=imgs)}, ['has no "labels" array']),
      ({"source": "npz", "path": _npz(tmp_path / "count.npz", images=imgs, labels=np.zeros(3))},
       ["has 4 images but 3 labels"]),
  ]
  for data, words in cases:
    with pytest.raises(DataError) as excinfo:
      sources.get_source(data, "train")
    _assert_one_line(excinfo, words)
  # Problems inside examples surface when a batch is read, naming the example and the fix.
  read_cases = [
      (_npz(tmp_path / "five.npz", images=np.zeros((4, 8, 8, 5), np.uint8), labels=np.zeros(4)),
       ["five.npz image", "has shape (8, 8, 5)"]),
      (_npz(tmp_path / "float.npz", images=imgs.astype(np.float32), labels=np.zeros(4)),
       ["float.npz", "dtype float32; expected uint8"]),
  ]
  for path, words in read_cases:
    src = sources.NpzSource(path)
    with pytest.raises(DataError) as excinfo:
      next(pipeline.make_train_iterator(src, lambda ex, rng: ex, batch_size=2, seed=0, num_threads=0))
    _assert_one_line(excinfo, words)
  _image_folder(tmp_path / "images", corrupt={5})
  src = sources.FolderSource(str(tmp_path / "images"))
  with pytest.raises(DataError) as excinfo:
    for i in range(len(src)):
      src[i]
  _assert_one_line(excinfo, ["05.png: cannot decode image", "--config.data.skip_corrupt=True"])


def test_unwritable_workdir_one_line_error(tmp_path):
  (tmp_path / "file").write_text("")
  run = train.setup(_config(), str(tmp_path / "file" / "run"), verbose=False)
  with pytest.raises(ConfigError) as excinfo:
    train.fit(run)
  _assert_one_line(excinfo, ["file/run cannot be created", "pass a writable folder"])


def _assert_one_line(excinfo, words):
  assert isinstance(excinfo.value, JepaError)
  message = str(excinfo.value)
  assert "\n" not in message, message
  for word in words:
    assert word in message, message


CLI_CASES = [  # (arguments, words of the one stderr line) — run through the real entry point, in parallel.
    (["--config.train.bogus=1"], ["error: --config.train.bogus names a config key that does not exist"]),
    (["--config.train.batch_size=abc"], ["error: flag --config.train.batch_size=abc:", "invalid literal"]),
    (["--config.data.source=npz", "--config.data.path=/nonexistent/data.npz"],
     ["error: data.path: /nonexistent/data.npz does not exist; pass --config.data.path="]),
    (["--config.optim.lr=1e30", "--config.optim.start_lr=1e30", "--config.train.nan_policy=stop",
      "--config.train.num_steps=6", "--config.train.checkpoint_every=1", "--config.train.log_every=100"],
     ["error: non-finite loss or gradient at step 1; the state was not updated and no checkpoint holds it"]),
]


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path):
  procs = [_cli(tmp_path / str(i), *args) for i, (args, _) in enumerate(CLI_CASES)]
  preset = subprocess.Popen([sys.executable, "-m", "jepa.main", "--config=configs/ijepa_vit.py:bogus",
                             f"--workdir={tmp_path / 'p'}"], cwd=REPO, stderr=subprocess.PIPE, text=True)
  results = [p.communicate(timeout=300)[1] for p in procs + [preset]]
  expected = [words for _, words in CLI_CASES] + [["unknown config argument 'bogus'; choose one of"]]
  for proc, err, words in zip(procs + [preset], results, expected):
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1, err
    for word in words:
      assert word in lines[0], err
  # The NaN stop: the save after the bad step was refused, so only the checkpoint before it exists.
  assert os.listdir(tmp_path / "3" / "checkpoints") == ["1"]
