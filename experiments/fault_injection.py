r"""Fault injection: kill -9 a tiny training at random moments, restart it until it finishes, and check that
every interrupted run ends exactly where one uninterrupted run does.

  python experiments/fault_injection.py --trials=20

One reference run of `python -m jepa.main --config=configs/ijepa_vit.py:tiny` (more steps, a checkpoint every
few steps, a metrics row every step) is made without interruption. Each trial then runs the same command in a
fresh workdir and SIGKILLs it 1 to --max_kills times, restarting after each kill until the command exits 0. A
kill is placed by progress rather than by wall time, so that it lands in training whatever the machine's load:
a target step is drawn uniformly from the steps the launch has left (resume point + 1 .. N), and the process
is killed a uniformly random 0..--jitter seconds after it prints that step, i.e. inside a later step, an
asynchronous checkpoint write, the final save or the exit. A trial passes when

  * every restart that found a checkpoint printed "resumed from step k" with k the newest complete checkpoint
    left by the kill, and no restart ended with an error;
  * metrics.jsonl holds exactly one row per step 1..N and each step's loss equals the reference's (|diff| <=
    --tol); and
  * the final checkpoint's state (params, EMA target, optimizer state, counters) equals the reference's
    (max |diff| <= --tol).

The summary line is "P/T trials resumed and continued identically" followed by any failures.
"""
import argparse
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_SUFFIX = ".orbax-checkpoint-tmp"


def command(workdir, args):
  return [sys.executable, "-m", "jepa.main", "--config=configs/ijepa_vit.py:tiny", f"--workdir={workdir}",
          f"--config.train.num_steps={args.num_steps}",
          f"--config.train.checkpoint_every={args.checkpoint_every}",
          "--config.train.log_every=1", "--config.eval.probe=False"]


class Launch:
  """One run of the command, its output read by a thread; `wait` can SIGKILL it at a chosen point."""

  def __init__(self, workdir, args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    self.proc = subprocess.Popen(command(workdir, args), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, bufsize=1)
    self.lines = []
    self.last_step = None
    self._queue = queue.Queue()
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self):
    for line in self.proc.stdout:
      self._queue.put(line)
    self._queue.put(None)

  def wait(self, kill_step=None, delay=0.0):
    """Reads output until exit; kills `delay` s after step `kill_step` is printed. Returns (status, killed)."""
    killed, deadline = False, None
    while True:
      timeout = None
      if deadline is not None:
        timeout = max(0.0, deadline - time.monotonic())
        if timeout == 0.0:
          if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            killed = True
          deadline, timeout = None, None
      try:
        line = self._queue.get(timeout=timeout)
      except queue.Empty:
        continue
      if line is None:
        break
      self.lines.append(line)
      m = re.match(r"step (\d+)/", line)
      if m:
        self.last_step = int(m.group(1))
        if kill_step is not None and self.last_step >= kill_step:
          deadline, kill_step = time.monotonic() + delay, None
    return self.proc.wait(), killed


def checkpoint_steps(workdir):
  """(finalized steps, number of unfinished Orbax tmp folders) in workdir/checkpoints."""
  folder = os.path.join(workdir, "checkpoints")
  names = os.listdir(folder) if os.path.isdir(folder) else []
  return sorted(int(n) for n in names if n.isdigit()), sum(TMP_SUFFIX in n for n in names)


def final_state(workdir, step):
  """The saved train state at `step` as a flat {path: np.ndarray}."""
  import jax  # pylint: disable=import-outside-toplevel  (the parent process needs jax only here)
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.abspath(workdir), "checkpoints", str(step), "state")
  tree = ocp.StandardCheckpointer().restore(path)
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def losses(workdir):
  """{step: [loss of each row logged at that step]} from metrics.jsonl (probe rows excluded)."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      if "loss" in row:
        out.setdefault(row["step"], []).append(row["loss"])
  return out


def compare(workdir, ref_state, ref_losses, args):
  """List of problems (empty when the run matches the reference)."""
  problems = []
  got = losses(workdir)
  duplicated = sorted(s for s, v in got.items() if len(v) > 1)
  missing = sorted(set(range(1, args.num_steps + 1)) - set(got))
  if duplicated:
    problems.append(f"duplicated metrics rows at steps {duplicated[:5]}")
  if missing:
    problems.append(f"no metrics row at steps {missing[:5]}")
  diffs = [abs(got[s][-1] - ref_losses[s][0]) for s in ref_losses if s in got]
  loss_diff = max(diffs) if diffs else float("inf")
  if loss_diff > args.tol:
    bad = [s for s in ref_losses if s in got and abs(got[s][-1] - ref_losses[s][0]) > args.tol]
    problems.append(f"losses differ at {len(bad)} steps (first {bad[0]}, max |diff| {loss_diff:.3g})")
  state = final_state(workdir, args.num_steps)
  state_diff = max(float(np.max(np.abs(state[k].astype(np.float64) - v.astype(np.float64)), initial=0.0))
                   for k, v in ref_state.items())
  if set(state) != set(ref_state) or state_diff > args.tol:
    problems.append(f"final state differs (max |diff| {state_diff:.3g})")
  return problems, loss_diff, state_diff


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--trials", type=int, default=20)
  parser.add_argument("--max_kills", type=int, default=3, help="kills per trial are uniform in 1..max_kills")
  parser.add_argument("--num_steps", type=int, default=80)
  parser.add_argument("--checkpoint_every", type=int, default=4)
  parser.add_argument("--jitter", type=float, default=0.5, help="max seconds between a step's line and the kill")
  parser.add_argument("--tol", type=float, default=1e-6)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="", help="where runs go (default: a temporary folder, removed)")
  args = parser.parse_args()
  root = args.workdir or tempfile.mkdtemp(prefix="fault_injection_")
  started = time.time()

  print(f"reference: {' '.join(command('REF', args)[1:])}", flush=True)
  ref_dir = os.path.join(root, "reference")
  shutil.rmtree(ref_dir, ignore_errors=True)
  ref = Launch(ref_dir, args)
  t0 = time.monotonic()
  rc, _ = ref.wait()
  if rc != 0:
    sys.exit("the reference run failed:\n" + "".join(ref.lines[-20:]))
  ref_state, ref_losses = final_state(ref_dir, args.num_steps), losses(ref_dir)
  print(f"reference: {args.num_steps} steps in {time.monotonic() - t0:.0f}s (start-up included)", flush=True)

  rng = random.Random(args.seed)
  failures, total_kills, mid_save, resumes = [], 0, 0, 0
  for trial in range(args.trials):
    workdir = os.path.join(root, f"trial_{trial:02d}")
    shutil.rmtree(workdir, ignore_errors=True)
    kills_left, notes, problems, launches = rng.randint(1, args.max_kills), [], [], 0
    expect_resume = None
    while True:
      launches += 1
      run = Launch(workdir, args)
      if kills_left:
        rc, killed = run.wait(rng.randint((expect_resume or 0) + 1, args.num_steps), rng.uniform(0, args.jitter))
      else:
        rc, killed = run.wait()
      text = "".join(run.lines)
      if expect_resume is not None:
        m = re.search(r"resumed from step (\d+)", text)
        if expect_resume and (not m or int(m.group(1)) != expect_resume):
          problems.append(f"expected to resume from step {expect_resume}, got {m.group(1) if m else 'none'}")
        resumes += bool(m)
      if "WARNING: checkpoint" in text:
        problems.append("a restart found an unreadable checkpoint: " +
                        next(line for line in run.lines if "WARNING: checkpoint" in line).strip())
      if killed:
        kills_left -= 1
        total_kills += 1
        steps, tmp = checkpoint_steps(workdir)
        mid_save += bool(tmp)
        expect_resume = steps[-1] if steps else 0
        notes.append(f"kill at step {run.last_step}{' (mid-save)' if tmp else ''} -> ckpt {expect_resume}")
        continue
      if rc != 0:
        problems.append(f"exit status {rc}: {run.lines[-1].strip() if run.lines else ''}")
      break
    if not problems:
      found, loss_diff, state_diff = compare(workdir, ref_state, ref_losses, args)
      problems += found
      notes.append(f"losses max|diff| {loss_diff:.1g}, state max|diff| {state_diff:.1g}")
    status = "identical" if not problems else "FAILED: " + "; ".join(problems)
    print(f"trial {trial + 1:2d}/{args.trials}: {launches} launches, {'; '.join(notes)} -> {status}",
          flush=True)
    if problems:
      failures.append(trial + 1)
    else:
      shutil.rmtree(workdir, ignore_errors=True)

  passed = args.trials - len(failures)
  print(f"{total_kills} kills ({mid_save} left an unfinished checkpoint write), {resumes} resumes, "
        f"{time.time() - started:.0f}s in all", flush=True)
  print(f"{passed}/{args.trials} trials resumed and continued identically" +
        (f"; failed trials: {failures}" if failures else ""), flush=True)
  if not args.workdir and not failures:
    shutil.rmtree(root, ignore_errors=True)
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  main()
