r"""Runs a table of bad inputs through the command-line tools, as a user would, and checks the one-line rule.

  python experiments/bad_inputs.py               # every case (about 3 minutes on 2 CPU cores)
  python experiments/bad_inputs.py -k label -j 4 # only the cases whose name contains 'label', 4 at a time
  python experiments/bad_inputs.py --repo=DIR    # the same table against another checkout (before/after)

The rule (jepa/cli.py): every user mistake ends with exactly ONE line on stderr, `error: <problem>; <fix>`, and
exit status 2; Ctrl-C with one line `interrupted ...` and exit status 130. Each case runs `python -m jepa.main`,
`jepa.evaluate` or `jepa.convert` in a subprocess, on tiny presets in a temporary folder (most fail before
anything compiles: a few seconds of imports). Cases whose documented behaviour is not an error (a fallback to
the previous checkpoint, data.skip_corrupt) are marked `fallback` and checked for that behaviour instead.

Prints, per case: verdict, name, exit status, number of stderr lines and the (last) stderr line; then

  bad_inputs: N/M gave exactly one error line and exit 2[; not: name, name, ...]
  other: K/L behaved as documented (fallbacks, Ctrl-C)[; not: ...]

Exit status: 0 when every case behaved, 1 otherwise.
"""
import argparse
import dataclasses
import io
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

import numpy as np

TINY = "--config=configs/ijepa_vit.py:tiny"


@dataclasses.dataclass
class Case:
  name: str
  module: str
  args: list
  kind: str = "error"                         # error | fallback | interrupt
  words: tuple = ()                           # (error) words the line should hold: reported, not counted
  check: Optional[Callable] = None            # (fallback) fn(result) -> None if right, else why not
  needs_run: bool = False                     # runs once the trained run exists (see `setup_run`)
  prepare: Optional[Callable] = None          # fn() called just before the case starts (e.g. copy a run)


@dataclasses.dataclass
class Result:
  returncode: int
  stdout: str
  stderr: str
  seconds: float

  @property
  def lines(self):
    return [line for line in self.stderr.splitlines() if line.strip()]


# --- running ---------------------------------------------------------------------------------------------------
class Started:
  """A running case: stdout / stderr in files, so that a chatty child never stalls on a full pipe."""

  def __init__(self, repo, case):
    self.case = case
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    self.start = time.perf_counter()
    self.proc = subprocess.Popen([sys.executable, "-m", case.module, *case.args], cwd=repo, env=env,
                                 stdout=self._out, stderr=self._err, text=True)
    if case.kind == "interrupt":
      self.signal_at = self.start + 5.0  # During start-up: imports, data, compilation.
    else:
      self.signal_at = None

  def poll(self, timeout):
    if self.signal_at is not None and time.perf_counter() >= self.signal_at:
      self.proc.send_signal(signal.SIGINT)
      self.signal_at = None
    if self.proc.poll() is None:
      if time.perf_counter() - self.start > timeout:
        self.proc.kill()
        self.proc.wait()
      else:
        return None
    self._out.seek(0)
    self._err.seek(0)
    return Result(self.proc.returncode, self._out.read(), self._err.read(), time.perf_counter() - self.start)


def run_cases(repo, cases, jobs, timeout, report):
  pending, running, results = list(cases), [], {}
  while pending or running:
    while pending and len(running) < jobs:
      case = pending.pop(0)
      if case.prepare is not None:
        case.prepare()
      running.append(Started(repo, case))
    for started in list(running):
      result = started.poll(timeout)
      if result is not None:
        running.remove(started)
        results[started.case.name] = result
        report(started.case, result)
    time.sleep(0.05)
  return results


def verdict(case, result):
  """(ok, note) for a finished case."""
  lines = result.lines
  if case.kind == "error":
    ok = result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    missing = [w for w in case.words if not lines or w not in lines[-1]]
    return ok, (f"message lacks {missing}" if ok and missing else "")
  if case.kind == "interrupt":
    ok = result.returncode == 130 and len(lines) == 1 and lines[0].startswith("interrupted")
    return ok, ""
  why = case.check(result)
  return why is None, why or ""


def show(case, result):
  ok, note = verdict(case, result)
  lines = result.lines
  line = lines[-1] if lines else "(no stderr)"
  line = line if len(line) <= 260 else line[:257] + "..."
  tag = "ok " if ok else "BAD"
  extra = f"  [{note}]" if note else ""
  print(f"[{tag}] {case.kind:9s} {case.name:44s} exit={result.returncode:<4d} lines={len(lines):<5d} {line}{extra}",
        flush=True)


# --- inputs ----------------------------------------------------------------------------------------------------
def _digits(n):
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  d = load_digits()
  return np.round(d.images[:n] * (255 / 16)).astype(np.uint8), d.target[:n].astype(np.int64)


def packed_jpeg_npz(path, *, n=400, corrupt=(), labels=None):
  """The packed-JPEG layout of jepa/data/image_sources.py (jpeg_bytes, offsets, labels), `corrupt` images garbled."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  images, target = _digits(n)
  blobs = []
  for i, image in enumerate(images):
    buf = io.BytesIO()
    Image.fromarray(np.repeat(image[:, :, None], 3, -1)).save(buf, format="JPEG")
    blobs.append(b"\x00garbled" * 8 if i in corrupt else buf.getvalue())
  offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
  np.savez(path, jpeg_bytes=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets,
           labels=target if labels is None else labels)
  return str(path)


def plain_npz(path, labels, n=200, **more):
  images, _ = _digits(n)
  np.savez(path, images=images, labels=np.asarray(labels), **more)
  return str(path)


def read_only_folder(path):
  """An existing folder nobody can write into, or None when this machine allows none (root without chattr)."""
  path.mkdir()
  os.chmod(path, 0o555)
  if _writable(path):  # root ignores the mode bits; the immutable attribute binds it too.
    subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
  return None if _writable(path) else path


def release_read_only(path):
  if path is not None:
    subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
    os.chmod(path, 0o755)


def _writable(path):
  try:
    with open(os.path.join(path, ".probe"), "w", encoding="utf-8"):
      pass
    os.remove(os.path.join(path, ".probe"))
    return True
  except OSError:
    return False


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def copy_run(src, dst, *, truncate=()):
  """A copy of the trained run with the given checkpoint files cut to 10 bytes."""
  def prepare():
    shutil.copytree(src, dst)
    for rel in truncate:
      with open(os.path.join(dst, rel), "r+b") as f:
        f.truncate(10)
  return prepare


# --- fallback checks -------------------------------------------------------------------------------------------
def clean_stderr(result, allowed=("skip_corrupt: example",)):
  noisy = [line for line in result.lines if not any(a in line for a in allowed)]
  return f"{len(noisy)} stderr lines, e.g. {noisy[0][:160]!r}" if noisy else None


def fell_back(result):
  if result.returncode != 0:
    return f"exit {result.returncode}"
  if "WARNING: checkpoint 2 is unreadable" not in result.stdout or "at step 1" not in result.stdout:
    return "no fallback to checkpoint 1 in stdout"
  return clean_stderr(result)


def skipped_corrupt(result):
  if result.returncode != 0:
    return f"exit {result.returncode}"
  if "WARNING: data.skip_corrupt:" not in result.stdout:
    return "evaluation did not say it replaced corrupt examples"
  return clean_stderr(result)


# --- the table -------------------------------------------------------------------------------------------------
def build_cases(root):
  """The cases, with their input files written under `root`; the trained run goes to root/run."""
  cfg = os.path.join(root, "cfg")
  os.makedirs(cfg)
  files = {
      "syntax.py": "def get_config(:\n  pass\n",
      "raises.py": "def get_config(arg=''):\n  raise RuntimeError('boom in get_config')\n",
      "no_get_config.py": "X = 1\n",
      "returns_none.py": "def get_config():\n  return None\n",
      "returns_int.py": "def get_config():\n  return 5\n",
      "bad_import.py": "import no_such_module_here\ndef get_config():\n  return None\n",
  }
  for name, text in files.items():
    with open(os.path.join(cfg, name), "w", encoding="utf-8") as f:
      f.write(text)
  data = os.path.join(root, "data")
  os.makedirs(os.path.join(data, "no_classes"))
  garbage = os.path.join(data, "garbage.npz")
  with open(garbage, "wb") as f:
    f.write(b"this is not a zip file")
  labels = _digits(200)[1]
  big, neg, frac = labels.copy(), labels.copy(), labels.astype(np.float64)
  big[7], neg[3], frac[2] = 10**9, -1, 0.5
  npz = {
      "big": plain_npz(os.path.join(data, "label_1e9.npz"), big),
      "neg": plain_npz(os.path.join(data, "label_negative.npz"), neg),
      "frac": plain_npz(os.path.join(data, "label_fraction.npz"), frac),
      "one": plain_npz(os.path.join(data, "one_class.npz"), np.zeros(200, np.int64)),
      "declared": plain_npz(os.path.join(data, "declared_2.npz"), labels, num_classes=2),
      "count": plain_npz(os.path.join(data, "count.npz"), labels[:150]),
      "corrupt": packed_jpeg_npz(os.path.join(data, "corrupt.npz"), corrupt=set(range(3, 400, 25))),
  }
  np.savez(os.path.join(data, "no_labels.npz"), images=_digits(10)[0])
  not_pickle = os.path.join(data, "not_a_checkpoint.pth")
  with open(not_pickle, "w", encoding="utf-8") as f:
    f.write("not a torch file\n")
  a_file = os.path.join(root, "a_file")
  open(a_file, "w", encoding="utf-8").close()
  read_only = read_only_folder(pathlib.Path(root) / "read_only")
  run = os.path.join(root, "run")
  n = [0]

  def wd():
    n[0] += 1
    return f"--workdir={os.path.join(root, 'w', str(n[0]))}"

  main, ev, conv = "jepa.main", "jepa.evaluate", "jepa.convert"
  c = Case
  cases = [
      # config files
      c("config file missing", main, ["--config=/nonexistent/cfg.py", wd()], words=("could not be loaded",)),
      c("config: syntax error", main, [f"--config={cfg}/syntax.py", wd()], words=("syntax error at line 1",)),
      c("config: get_config raises", main, [f"--config={cfg}/raises.py", wd()], words=("boom in get_config",)),
      c("config: no get_config", main, [f"--config={cfg}/no_get_config.py", wd()], words=("defines no get_config",)),
      c("config: get_config returns None", main, [f"--config={cfg}/returns_none.py", wd()], words=("None",)),
      c("config: get_config returns an int", main, [f"--config={cfg}/returns_int.py", wd()], words=("int",)),
      c("config: import error", main, [f"--config={cfg}/bad_import.py", wd()], words=("no_such_module_here",)),
      c("config: unknown preset", main, ["--config=configs/ijepa_vit.py:bogus", wd()],
        words=("unknown config argument 'bogus'",)),
      # flags and overrides
      c("override: unknown key", main, [TINY, wd(), "--config.train.bogus=1"], words=("--config.train.bogus",)),
      c("override: misspelled section", main, [TINY, wd(), "--config.trian.num_steps=3"], words=("trian",)),
      c("override: not an int", main, [TINY, wd(), "--config.train.batch_size=abc"], words=("batch_size=abc",)),
      c("override: crop_scale=(0.3,)", main, [TINY, wd(), "--config.data.crop_scale=(0.3,)"],
        words=("must have 2 entries",)),
      c("override: mean of strings", main, [TINY, wd(), "--config.data.mean=(a,b,c)"]),
      c("positional argument", main, [TINY, wd(), "extra"], words=("unexpected arguments: extra",)),
      c("unknown flag", main, [TINY, wd(), "--bogus_flag=1"]),
      c("missing --workdir", main, [TINY], words=("workdir",)),
      c("missing --config", main, [wd()], words=("config",)),
      # config values
      c("ema.momentum=1.5", main, [TINY, wd(), "--config.ema.momentum=1.5"], words=("must be in [0, 1]",)),
      c("ema.momentum=-1", main, [TINY, wd(), "--config.ema.momentum=-1.0"], words=("must be in [0, 1]",)),
      c("ema.final_momentum=2", main, [TINY, wd(), "--config.ema.final_momentum=2.0"], words=("[0, 1]",)),
      c("warmup longer than the run", main, [TINY, wd(), "--config.optim.warmup_steps=100"],
        words=("optim.warmup_steps=100",)),
      c("image_size=4 (1x1 grid)", main, [TINY, wd(), "--config.data.image_size=4"],
        words=("--config.data.image_size=8",)),
      c("image_size=18 (not divisible)", main, [TINY, wd(), "--config.data.image_size=18"],
        words=("not divisible",)),
      c("train.batch_size=0", main, [TINY, wd(), "--config.train.batch_size=0"], words=("must be positive",)),
      c("data.eval_fraction=1.5", main, [TINY, wd(), "--config.data.eval_fraction=1.5"], words=("(0, 1)",)),
      c("data.source=s3", main, [TINY, wd(), "--config.data.source=s3"], words=("is not one of",)),
      c("method=dino", main, [TINY, wd(), "--config.method=dino"], words=("dino",)),
      c("masks.target_scale covers the grid", main, [TINY, wd(), "--config.masks.target_scale=(0.9,0.95)"],
        words=("lower its upper bound",)),
      c("mesh.data=3 on 1 device", main, [TINY, wd(), "--config.mesh.data=3"], words=("mesh.data",)),
      c("model.encoder.heads=3", main, [TINY, wd(), "--config.model.encoder.heads=3"], words=("heads=3",)),
      # data files and labels
      c("npz missing", main, [TINY, wd(), "--config.data.source=npz", "--config.data.path=/nonexistent/x.npz"],
        words=("does not exist",)),
      c("npz is not a zip", main, [TINY, wd(), "--config.data.source=npz", f"--config.data.path={garbage}"],
        words=("not a readable npz",)),
      c("npz without labels", main, [TINY, wd(), "--config.data.source=npz",
                                     f"--config.data.path={data}/no_labels.npz"], words=('no "labels"',)),
      c("npz: 200 images, 150 labels", main, [TINY, wd(), "--config.data.source=npz",
                                              f"--config.data.path={npz['count']}"], words=("150 labels",)),
      c("folder missing", main, [TINY, wd(), "--config.data.source=folder", "--config.data.path=/nonexistent/d"],
        words=("does not exist",)),
      c("folder without class folders", main, [TINY, wd(), "--config.data.source=folder",
                                               f"--config.data.path={data}/no_classes"], words=("no class",)),
      c("label 1e9", main, [TINY, wd(), "--config.data.source=npz", f"--config.data.path={npz['big']}"],
        words=("label 1000000000",)),
      c("label -1", main, [TINY, wd(), "--config.data.source=npz", f"--config.data.path={npz['neg']}"],
        words=("label -1",)),
      c("label 0.5", main, [TINY, wd(), "--config.data.source=npz", f"--config.data.path={npz['frac']}"],
        words=("label 0.5",)),
      c("one class", main, [TINY, wd(), "--config.data.source=npz", f"--config.data.path={npz['one']}"],
        words=("single class",)),
      c("labels beyond declared num_classes", main, [TINY, wd(), "--config.data.source=npz",
                                                     f"--config.data.path={npz['declared']}"],
        words=("declares 2 classes",)),
      c("corrupt JPEG, no skip_corrupt", main,
        [TINY, wd(), "--config.data.source=npz", f"--config.data.path={npz['corrupt']}",
         "--config.train.num_steps=2", "--config.eval.random_baseline=False", "--config.train.checkpoint_every=0"],
        words=("cannot decode image", "skip_corrupt=True")),
      c("corrupt JPEG, skip_corrupt=True", main,
        [TINY, wd(), "--config.data.source=npz", f"--config.data.path={npz['corrupt']}",
         "--config.data.skip_corrupt=True", "--config.train.num_steps=2", "--config.eval.random_baseline=False",
         "--config.train.checkpoint_every=0"], kind="fallback", check=skipped_corrupt),
      # workdirs
      c("workdir is a file", main, [TINY, f"--workdir={a_file}"], words=("is a file",)),
      c("workdir below a file", main, [TINY, f"--workdir={a_file}/run"], words=("cannot be created",)),
      c("workdir empty", main, [TINY, "--workdir="], words=("workdir",)),
      c("workdir read-only" + ("" if read_only else " (stand-in: below a file)"), main,
        [TINY, f"--workdir={read_only or a_file + '/ro'}"], words=("writable",)),
      # distributed
      c("num_processes=2, no coordinator", main, [TINY, wd(), "--config.distributed.num_processes=2"],
        words=("coordinator_address",)),
      c("process_id=5 of 2", main, [TINY, wd(), "--config.distributed.num_processes=2",
                                    "--config.distributed.process_id=5",
                                    "--config.distributed.coordinator_address=localhost:1"],
        words=("process_id=5 must be in [0, 2)",)),
      c("process_id=-1", main, [TINY, wd(), "--config.distributed.num_processes=2",
                                "--config.distributed.process_id=-1",
                                "--config.distributed.coordinator_address=localhost:1"], words=("process_id=-1",)),
      c("num_processes=0", main, [TINY, wd(), "--config.distributed.num_processes=0"], words=("num_processes=0",)),
      c("no peer within the timeout", main, [TINY, wd(), "--config.distributed.num_processes=2",
                                             "--config.distributed.initialization_timeout=3",
                                             f"--config.distributed.coordinator_address=localhost:{free_port()}"],
        words=("timed out after 3s",)),
      # evaluate
      c("evaluate: --output in a missing folder", ev, [f"--workdir={run}", "--output=/nonexistent/dir/x.json"],
        words=("does not exist",)),
      c("evaluate: --output is a folder", ev, [f"--workdir={run}", f"--output={root}"], words=("is a folder",)),
      c("evaluate: --probe=bogus", ev, [f"--workdir={run}", "--probe=bogus"], words=("--probe",)),
      c("evaluate: --evaluators=bogus", ev, [f"--workdir={run}", "--evaluators=bogus"], needs_run=True,
        words=("bogus",)),
      c("evaluate: workdir without config.json", ev, [f"--workdir={root}/nothing_here"], words=("config.json",)),
      c("evaluate: no --workdir", ev, [], words=("workdir",)),
      c("evaluate: --config.model.encoder.width=64", ev, [f"--workdir={run}", "--config.model.encoder.width=64"],
        needs_run=True, words=("do not override model keys",)),
      c("evaluate: --config.eval.bogus=1", ev, [f"--workdir={run}", "--config.eval.bogus=1"], needs_run=True,
        words=("eval.bogus",)),
      # checkpoints
      c("resume with another model", main, [TINY, f"--workdir={run}", "--config.model.encoder.width=64"],
        needs_run=True, words=("model.encoder.width",)),
      c("truncated latest checkpoint", ev, [f"--workdir={root}/trunc", f"--output={root}/trunc.json"],
        kind="fallback", check=fell_back, needs_run=True,
        prepare=copy_run(run, f"{root}/trunc", truncate=["checkpoints/2/state/manifest.ocdbt"])),
      c("every checkpoint truncated", ev, [f"--workdir={root}/trunc_all"], needs_run=True,
        prepare=copy_run(run, f"{root}/trunc_all", truncate=["checkpoints/1/state/manifest.ocdbt",
                                                             "checkpoints/2/state/manifest.ocdbt"]),
        words=("no checkpoint in",)),
      c("garbled config.json", ev, [f"--workdir={root}/bad_json"], needs_run=True,
        prepare=copy_run(run, f"{root}/bad_json", truncate=["config.json"]), words=("config.json",)),
      # Ctrl-C
      c("Ctrl-C while jepa.main starts", main, [TINY, wd()], kind="interrupt"),
      c("Ctrl-C while jepa.evaluate starts", ev, [f"--workdir={run}"], kind="interrupt", needs_run=True),
      # convert (being reworked elsewhere: only the one-line rule is checked)
      c("convert: no --format", conv, [f"--checkpoint={not_pickle}", wd()]),
      c("convert: --format=bogus", conv, ["--format=bogus", f"--checkpoint={not_pickle}", wd()]),
      c("convert: checkpoint missing", conv, ["--format=ijepa", "--checkpoint=/nonexistent/x.pth", wd()]),
      c("convert: not a checkpoint", conv, ["--format=ijepa", f"--checkpoint={not_pickle}", wd()]),
      c("convert: unknown override", conv, ["--format=ijepa", f"--checkpoint={not_pickle}", wd(),
                                            "--config.train.bogus=1"]),
      # ahead-of-time compilation for TPU (experiments/aot.py; needs libtpu)
      c("aot: unknown topology", "experiments.aot", [TINY, "--topology=v9x:2x2"], words=("--topology",)),
      c("aot: topology shape libtpu refuses", "experiments.aot", [TINY, "--topology=v5e:3x3"],
        words=("--topology",)),
      c("aot: mesh does not divide the topology", "experiments.aot", [TINY, "--topology=v5e:2x2",
                                                                     "--config.mesh.fsdp=3"], words=("mesh.fsdp",)),
  ]
  return cases, run, read_only


def setup_run(repo, run):
  """The trained run the checkpoint / evaluate cases use: tiny, 2 steps, checkpoints at 1 and 2, no probe."""
  case = Case("setup: tiny run", "jepa.main", [TINY, f"--workdir={run}", "--config.train.num_steps=2",
                                               "--config.train.checkpoint_every=1", "--config.optim.warmup_steps=1",
                                               "--config.eval.probe=False"])
  return Started(repo, case)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      help="the checkout whose commands run (default: this one)")
  parser.add_argument("-j", "--jobs", type=int, default=3, help="cases at a time")
  parser.add_argument("-k", default="", help="only the cases whose name contains this")
  parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case")
  parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
  opts = parser.parse_args()
  repo = os.path.abspath(opts.repo)
  root = tempfile.mkdtemp(prefix="bad_inputs_")
  t0 = time.perf_counter()
  read_only = None
  try:
    cases, run, read_only = build_cases(root)
    cases = [c for c in cases if opts.k in c.name]
    setup = setup_run(repo, run) if any(c.needs_run for c in cases) else None
    results = run_cases(repo, [c for c in cases if not c.needs_run], max(1, opts.jobs - (setup is not None)),
                        opts.timeout, show)
    if setup is not None:
      while (done := setup.poll(opts.timeout)) is None:
        time.sleep(0.2)
      if done.returncode != 0:
        print(f"setup run failed (exit {done.returncode}): {done.stderr[-2000:]}", flush=True)
      results.update(run_cases(repo, [c for c in cases if c.needs_run], opts.jobs, opts.timeout, show))
  finally:
    release_read_only(read_only)
    if not opts.keep:
      shutil.rmtree(root, ignore_errors=True)
  errors = [c for c in cases if c.kind == "error"]
  others = [c for c in cases if c.kind != "error"]
  bad_errors = [c.name for c in errors if not verdict(c, results[c.name])[0]]
  bad_others = [c.name for c in others if not verdict(c, results[c.name])[0]]
  wrong_words = [c.name for c in errors if c.name not in bad_errors and verdict(c, results[c.name])[1]]
  print(f"bad_inputs: {len(errors) - len(bad_errors)}/{len(errors)} gave exactly one error line and exit 2"
        + (f"; not: {', '.join(bad_errors)}" if bad_errors else ""))
  print(f"other: {len(others) - len(bad_others)}/{len(others)} behaved as documented (fallbacks, Ctrl-C)"
        + (f"; not: {', '.join(bad_others)}" if bad_others else ""))
  if wrong_words:
    print(f"one line, but not the expected words: {', '.join(wrong_words)}")
  print(f"({len(cases)} cases in {time.perf_counter() - t0:.0f}s, repo {repo})")
  return 1 if bad_errors or bad_others else 0


if __name__ == "__main__":
  sys.exit(main())
