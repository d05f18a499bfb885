"""The commands as a user runs them (subprocesses): every mistake ends with ONE `error: ...` line on stderr and
exit status 2, Ctrl-C with one `interrupted ...` line and exit status 130, and the documented fallbacks (a
truncated checkpoint, a corrupt image with data.skip_corrupt) keep stderr clean.

Time: most cases fail before anything compiles (a few seconds of imports each) and run a few at a time; one
tiny training run (2 steps) and one evaluation of it run beside them.
"""
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from jepa import config as config_lib
from jepa.data import pipeline
from jepa.data import sources
from jepa.errors import ConfigError, DataError
from tests.helpers import REPO, load_config

TINY = "--config=configs/ijepa_vit.py:tiny"
PARALLEL = 3  # Fast cases in flight at once (imports are mostly single-threaded).


# --- helpers -------------------------------------------------------------------------------------------------
def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


class _Proc:
  """A started `python -m <module> <args>`, stdout and stderr in files (a full pipe would stall it)."""

  def __init__(self, module, args):
    self.args = [module, *args]
    self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=_env(), text=True,
                                 stdout=self._out, stderr=self._err)

  def wait(self, timeout=300):
    try:
      self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
      raise
    self._out.seek(0)
    self._err.seek(0)
    self.stdout, self.stderr = self._out.read(), self._err.read()
    self.returncode = self.proc.returncode
    return self


def _run_all(cases, parallel=PARALLEL):
  """Runs [(name, module, args)] a few at a time; returns {name: finished _Proc}."""
  pending, running, done = list(cases), [], {}
  while pending or running:
    while pending and len(running) < parallel:
      name, module, args = pending.pop(0)
      running.append((name, _Proc(module, args)))
    name, proc = running.pop(0)
    done[name] = proc.wait()
  return done


def _lines(text):
  return [line for line in text.splitlines() if line.strip()]


def _one_error_line(proc, words):
  """None if `proc` exited 2 with exactly one stderr line, `error: ...`, containing every word; else why not."""
  err = _lines(proc.stderr)
  if proc.returncode != 2 or len(err) != 1 or not err[0].startswith("error: "):
    return f"exit {proc.returncode}, {len(err)} stderr lines: {proc.stderr[-1500:]!r}"
  missing = [w for w in words if w not in err[0]]
  return f"missing {missing} in {err[0]!r}" if missing else None


def _packed_jpeg_npz(path, *, n=400, corrupt=(), labels=None):
  """A packed-JPEG npz (jpeg_bytes, offsets, labels) of scikit-learn digits; `corrupt` images garbled."""
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  digits = load_digits()
  blobs = []
  for i, image in enumerate(np.round(digits.images[:n] * (255 / 16)).astype(np.uint8)):
    buf = io.BytesIO()
    Image.fromarray(np.repeat(image[:, :, None], 3, -1)).save(buf, format="JPEG")
    blobs.append(b"\x00garbled" * 8 if i in corrupt else buf.getvalue())
  offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
  labels = digits.target[:n].astype(np.int64) if labels is None else labels
  np.savez(path, jpeg_bytes=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets, labels=labels)
  return str(path)


def _plain_npz(path, labels):
  images = np.random.default_rng(0).integers(0, 255, (len(labels), 8, 8), dtype=np.uint8)
  np.savez(path, images=images, labels=np.asarray(labels))
  return str(path)


@contextlib.contextmanager
def _read_only_folder(path):
  """An existing folder nobody can write into (chmod; as root, the immutable attribute). Yields the folder, or
  a path below a plain file when this machine offers neither (the same check refuses it)."""
  path.mkdir()
  os.chmod(path, 0o555)
  immutable = False
  try:
    if _writable(path) and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
      immutable = True
    if _writable(path):
      (path.parent / "plain_file").write_text("")
      yield path.parent / "plain_file" / "run"
    else:
      yield path
  finally:
    if immutable:
      subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    os.chmod(path, 0o755)


def _writable(path):
  try:
    with open(os.path.join(path, ".probe"), "w", encoding="utf-8"):
      pass
    os.remove(os.path.join(path, ".probe"))
    return True
  except OSError:
    return False


# --- a tiny trained run on data with corrupt images (data.skip_corrupt), started first ------------------------
@pytest.fixture(scope="module")
def corrupt_run(tmp_path_factory):
  """`jepa.main` on a packed-JPEG npz with 16 garbled images and data.skip_corrupt=True: 2 steps, checkpoints
  at 1 and 2, then the final probe (which reads the corrupt images too). Started when first requested."""
  root = tmp_path_factory.mktemp("corrupt_run")
  data = _packed_jpeg_npz(root / "corrupt.npz", corrupt=set(range(3, 400, 25)))
  workdir = root / "run"
  proc = _Proc("jepa.main", [TINY, f"--workdir={workdir}", "--config.data.source=npz", f"--config.data.path={data}",
                             "--config.data.skip_corrupt=True", "--config.train.num_steps=2",
                             "--config.train.checkpoint_every=1", "--config.optim.warmup_steps=1",
                             "--config.eval.random_baseline=False"])
  return {"proc": proc, "workdir": workdir, "data": data, "root": root}


def test_mistakes_before_compilation_give_one_line_and_exit_2(tmp_path, corrupt_run):
  """Config files and keys, overrides, data labels, workdirs, distributed flags, evaluate flags: each fails
  before anything compiles, on one line naming the key / file and the fix."""
  del corrupt_run  # Requested so that the training run compiles while these fail.
  cfg = tmp_path / "cfg"
  cfg.mkdir()
  (cfg / "syntax.py").write_text("def get_config(:\n  pass\n")
  (cfg / "raises.py").write_text("def get_config(arg=''):\n  raise RuntimeError('boom in get_config')\n")
  (cfg / "no_get_config.py").write_text("X = 1\n")
  big = _plain_npz(tmp_path / "big_label.npz", [0, 1, 10**9, 1] * 10)
  wd = lambda name: f"--workdir={tmp_path / name}"  # pylint: disable=unnecessary-lambda-assignment
  with _read_only_folder(tmp_path / "read_only") as read_only:
    cases = [  # (name, module, args, words of the error line)
        ("syntax error in the config file", "jepa.main", [f"--config={cfg / 'syntax.py'}", wd("w1")],
         ["syntax.py has a syntax error at line 1", "fix the file"]),
        ("get_config raises", "jepa.main", [f"--config={cfg / 'raises.py'}", wd("w2")],
         ["raises.py failed to load: RuntimeError: boom in get_config (line 2)"]),
        ("no get_config", "jepa.main", [f"--config={cfg / 'no_get_config.py'}", wd("w3")],
         ["no_get_config.py defines no get_config()"]),
        ("crop_scale with one entry", "jepa.main", [TINY, wd("w4"), "--config.data.crop_scale=(0.3,)"],
         ["data.crop_scale=(0.3,) must have 2 entries", "--config.data.crop_scale=(0.3,1.0)"]),
        ("ema.momentum above 1", "jepa.main", [TINY, wd("w5"), "--config.ema.momentum=1.5"],
         ["ema.momentum=1.5 must be in [0, 1]"]),
        ("warmup longer than the run", "jepa.main", [TINY, wd("w6"), "--config.optim.warmup_steps=100"],
         ["optim.warmup_steps=100 is longer than the run (train.num_steps=4)", "--config.optim.warmup_steps=1"]),
        ("1x1 patch grid", "jepa.main", [TINY, wd("w7"), "--config.data.image_size=4"],
         ["data.image_size=4 with model.patch_size=4 gives a 1x1 patch grid", "--config.data.image_size=8"]),
        ("label 1e9", "jepa.main", [TINY, wd("w8"), "--config.data.source=npz", f"--config.data.path={big}"],
         ["big_label.npz has label 1000000000 at index 2", "renumber the labels"]),
        ("read-only workdir", "jepa.main", [TINY, f"--workdir={read_only}"],
         [f"--workdir={read_only}", "pass a writable folder"]),
        ("num_processes=2 without a coordinator", "jepa.main",
         [TINY, wd("w9"), "--config.distributed.num_processes=2"],
         ["distributed.num_processes=2 needs distributed.coordinator_address"]),
        ("process_id out of range", "jepa.main",
         [TINY, wd("w10"), "--config.distributed.num_processes=2", "--config.distributed.process_id=5",
          "--config.distributed.coordinator_address=localhost:1"],
         ["distributed.process_id=5 must be in [0, 2)"]),
        ("no peer within the timeout", "jepa.main",
         [TINY, wd("w11"), "--config.distributed.num_processes=2", "--config.distributed.initialization_timeout=2",
          f"--config.distributed.coordinator_address=localhost:{_free_port()}"],
         ["process 0 of 2 timed out after 2s waiting for 2 processes", "distributed.initialization_timeout"]),
        ("evaluate --output in a missing folder", "jepa.evaluate",
         [wd("nothing"), "--output=/nonexistent/dir/x.json"],
         ["--output=/nonexistent/dir/x.json: the folder /nonexistent/dir does not exist"]),
    ]
    done = _run_all([(name, module, args) for name, module, args, _ in cases])
  problems = {name: _one_error_line(done[name], words) for name, _, _, words in cases}
  assert not {k: v for k, v in problems.items() if v}, problems
  waiting = done["no peer within the timeout"].stdout
  assert "process 0 of 2: waiting up to 2s for 2 processes at localhost:" in waiting, waiting
  assert not [p for p in os.listdir(tmp_path) if p.startswith("w")]  # Runs that never started left nothing.


def _free_port():
  import socket  # pylint: disable=import-outside-toplevel
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_skip_corrupt_evaluation_truncated_checkpoint_and_model_override(corrupt_run):
  """Item by item on one tiny run: (1) the final probe honours data.skip_corrupt (replaces, counts, says so);
  (2) a truncated latest checkpoint falls back to the previous one with clean stderr (no asyncio tracebacks),
  and evaluate refuses a --config.model.* override of the trained run on one line, with the right fix."""
  proc = corrupt_run["proc"].wait(timeout=600)
  workdir = corrupt_run["workdir"]
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "WARNING: data.skip_corrupt:" in proc.stdout and "replaced by the next readable one in evaluation" in \
      proc.stdout, proc.stdout
  results = json.loads((workdir / "results.json").read_text())
  assert 0.0 <= results["linear_probe"]["trained"] <= 1.0
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2"]

  with open(workdir / "checkpoints" / "2" / "state" / "manifest.ocdbt", "r+b") as f:
    f.truncate(10)
  fallback = _Proc("jepa.evaluate", [f"--workdir={workdir}", f"--output={workdir / 'fallback.json'}"])
  override = _Proc("jepa.evaluate", [f"--workdir={workdir}", "--config.model.encoder.width=64"]).wait()
  assert _one_error_line(override, ["model.encoder.width=64 (the run has 32)",
                                    "do not override model keys of a trained run"]) is None, override.stderr
  assert "new --workdir" not in override.stderr
  fallback.wait(timeout=600)
  assert fallback.returncode == 0, fallback.stderr[-3000:]
  # No "Event loop is closed" / "Task exception was never retrieved" noise: at most skip_corrupt's warnings.
  assert all("skip_corrupt: example" in line for line in _lines(fallback.stderr)), fallback.stderr[-3000:]
  assert "WARNING: checkpoint 2 is unreadable" in fallback.stdout and "at step 1" in fallback.stdout
  assert json.loads((workdir / "fallback.json").read_text())["step"] == 1


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path):
  """SIGINT while the run starts (imports, data, compilation): one line, exit 130, no empty checkpoints/."""
  workdir = tmp_path / "run"
  proc = _Proc("jepa.main", [TINY, f"--workdir={workdir}"])
  time.sleep(5)
  proc.proc.send_signal(signal.SIGINT)
  proc.wait()
  if proc.returncode == 0:  # A fast machine reached the loop: its handler saves a checkpoint and stops.
    assert "received SIGINT: saved a checkpoint" in proc.stdout, proc.stdout
    return
  err = _lines(proc.stderr)
  assert proc.returncode == 130 and len(err) == 1 and err[0].startswith("interrupted"), proc.stderr[-2000:]
  assert not (workdir / "checkpoints").is_dir() or os.listdir(workdir / "checkpoints")


# --- the same checks, in process (milliseconds each) -----------------------------------------------------------
@pytest.mark.parametrize("labels,words", [
    ([0, 1, -1, 1], ["has label -1 at index 2", "labels must be in [0, num_classes)"]),
    ([0.0, 1.0, 0.5, 1.0], ["has label 0.5 at index 2", "integer class indices"]),
    (["a", "b", "a", "b"], ["labels of dtype <U1"]),
    ([0, 1, 10**9, 1], ["has label 1000000000 at index 2"]),
])
def test_bad_labels_fail_when_the_source_opens(tmp_path, labels, words):
  with pytest.raises(DataError) as excinfo:
    sources.get_source({"source": "npz", "path": _plain_npz(tmp_path / "x.npz", labels)}, "train")
  message = str(excinfo.value)
  assert "\n" not in message and "x.npz" in message and all(w in message for w in words), message


def test_one_class_and_declared_classes(tmp_path):
  with pytest.raises(DataError, match=r"one.npz holds a single class \(every label is 0\); the probes need at least 2"):
    sources.get_source({"source": "npz", "path": _plain_npz(tmp_path / "one.npz", [0] * 8)}, "train")
  path = str(tmp_path / "declared.npz")
  np.savez(path, images=np.zeros((4, 8, 8), np.uint8), labels=np.asarray([0, 1, 2, 1]), num_classes=2)
  with pytest.raises(DataError, match=r"declares 2 classes, so labels must be in \[0, 2\)"):
    sources.NpzSource(path)
  integral_floats = sources.NpzSource(_plain_npz(tmp_path / "floats.npz", [0.0, 1.0, 2.0, 1.0]))
  assert integral_floats.labels.dtype == np.int64 and integral_floats.num_classes == 3


def test_eval_batches_honour_skip_corrupt(tmp_path, capsys):
  """Evaluation reads through data.skip_corrupt: the corrupt examples are replaced, counted, announced once."""
  data = {"source": "npz", "path": _packed_jpeg_npz(tmp_path / "c.npz", n=60, corrupt={1, 2, 40}),
          "skip_corrupt": True}
  train = sources.get_source(data, "train")
  strict = sources.get_source(dict(data, skip_corrupt=False), "train")
  with pytest.raises(DataError, match="set --config.data.skip_corrupt=True"):
    list(pipeline.eval_batches(strict, lambda ex, rng: ex, batch_size=8, num_threads=0))
  for _ in range(2):  # The second pass (e.g. the random-init baseline) is not announced again.
    batches = list(pipeline.eval_batches(train, lambda ex, rng: ex, batch_size=8, num_threads=0))
    assert sum(int(b["mask"].sum()) for b in batches) == len(train)
  out = capsys.readouterr().out
  assert out.count("WARNING: data.skip_corrupt:") == 1 and "replaced by the next readable one" in out, out
  assert train.num_skipped >= 2 * len(train.skipped_indices) >= 2
  # Training reuses the same reader (and its counters) rather than wrapping it again.
  it = pipeline.make_train_iterator(train, lambda ex, rng: {"label": ex["label"]}, batch_size=4, seed=0,
                                    skip_corrupt=True, num_threads=0)
  assert it.corrupt is train


@pytest.mark.parametrize("name,path,value,words", [
    ("ijepa_vit", "ema.final_momentum", -1.0, ["ema.final_momentum=-1.0 must be in [0, 1]"]),
    ("lejepa_vit", "lejepa.jitter", (0.4, 0.4), ["lejepa.jitter=(0.4, 0.4) must have 4 entries"]),
    ("ijepa_vit", "masks.target_scale", (0.15, "x"),
     ["masks.target_scale=(0.15, 'x') must have 2 entries, numbers"]),
])
def test_config_values_one_line(name, path, value, words):
  """Shared keys are checked by config.validate, a method's sections by its Method.validate."""
  from jepa.methods import get_method  # pylint: disable=import-outside-toplevel
  c = load_config(name)
  section, key = path.split(".")
  c[section][key] = value
  with pytest.raises(ConfigError) as excinfo:
    config_lib.validate(c, num_devices=1)
    get_method(c).validate()
  assert "\n" not in str(excinfo.value) and all(w in str(excinfo.value) for w in words), str(excinfo.value)
  c = load_config("ijepa_vit")
  c.train.num_steps, c.optim.warmup_steps = 10, 11
  with pytest.raises(ConfigError, match=r"optim.warmup_steps=11 is longer than the run \(train.num_steps=10\)"):
    config_lib.check_training(c)
