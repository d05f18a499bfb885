"""Run logging: a JSONL file, TensorBoard event files and a console line (step, loss, lr, img/s, ETA)."""
import contextlib
import json
import os
import sys
import time

import numpy as np


def _scalar(v):
  v = np.asarray(v)
  return float(v) if v.size == 1 else v.tolist()


def _truncate_jsonl(path, start_step):
  """Keeps the rows of `path` with step <= start_step (and drops a half-written last line)."""
  if not os.path.exists(path):
    return
  kept = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:  # A process killed mid-write leaves a partial line.
        continue
      if isinstance(row, dict) and int(row.get("step", 0)) <= start_step:
        kept.append(line if line.endswith("\n") else line + "\n")
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(kept)
  os.replace(tmp, path)  # Atomic: a kill here leaves either the old or the new file.


class MetricWriter:
  """Writes `metrics.jsonl` and TensorBoard events in the workdir (process 0 only).

  Rows are keyed by step. `start_step` is the step the run starts (or resumes) from: rows logged after it by
  an earlier, interrupted run are removed from metrics.jsonl and hidden in TensorBoard (purge_step), since the
  run logs those steps again; a resumed run's files then read like an uninterrupted run's.
  """

  def __init__(self, workdir, *, enabled=True, tensorboard=True, start_step=0):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    _truncate_jsonl(path, start_step)
    self._jsonl = open(path, "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)

  def write(self, step, metrics, *, prefix=""):
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({prefix + k: _scalar(v) for k, v in metrics.items()})
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, float):
          self._tb.add_scalar(k, v, int(step))

  def close(self):
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


class Progress:
  """Console progress: step, loss, img/s and ETA, on one line of at most 120 columns (the rest of the metrics
  go to metrics.jsonl / TensorBoard); updated in place on a terminal, one line per report otherwise.

  Throughput counts completed steps (the loop marks them with `completed`), over the wall time since the last
  report less the time spent inside `paused()` (checkpoints, evaluations), so neither dispatch run-ahead nor
  a slow save makes img/s or ETA jump. The first step (compilation) is excluded by starting after it.
  """

  WIDTH = 120
  SHOWN = ("loss", "prediction_loss", "sigreg", "lr")  # Console keys, in order, when the metrics have them.

  def __init__(self, total_steps, global_batch, *, enabled=True, stream=None):
    self.total = total_steps
    self.global_batch = global_batch
    self.enabled = enabled
    self.stream = stream or sys.stdout
    self.in_place = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
    self._open_line = False  # An in-place line is on the terminal, not yet ended by a newline.
    self._t = self._step = self._done_t = self._done_step = None
    self._excluded = 0.0

  def start(self, step):
    self._t = self._done_t = time.perf_counter()
    self._step = self._done_step = step
    self._excluded = 0.0

  def completed(self, step):
    """Marks `step` as computed (its outputs are ready) now."""
    self._done_t, self._done_step = time.perf_counter(), step

  @contextlib.contextmanager
  def paused(self):
    """Time spent inside does not count as training time."""
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self._excluded += time.perf_counter() - t0

  def report(self, step, metrics):
    if self._t is None:
      self.start(step)
    dt = self._done_t - self._t - self._excluded
    ds = self._done_step - self._step
    self._t, self._step, self._excluded = self._done_t, self._done_step, 0.0
    rate = ds / dt if dt > 0 and ds > 0 else float("nan")
    out = {"steps_per_s": rate, "img_per_s": rate * self.global_batch}
    if self.enabled:
      eta = (self.total - step) / rate if rate == rate and rate > 0 else float("nan")
      shown = [f"{k}={_fmt(metrics[k])}" for k in self.SHOWN if k in metrics]
      shown += [f"{k}={int(metrics[k])}" for k in ("skipped_steps", "corrupt_skipped") if metrics.get(k)]
      line = f"step {step}/{self.total} " + " ".join(shown)
      tail = f" img/s={out['img_per_s']:.1f} eta={_eta(eta)}"
      line = line[:self.WIDTH - len(tail)] + tail
      if self.in_place:
        self.stream.write("\r\033[K" + line)
        self.stream.flush()
        self._open_line = True
      else:
        print(line, file=self.stream, flush=True)
    return out

  def message(self, text):
    """Prints `text` on its own line (below an in-place progress line, which stays)."""
    if self._open_line:
      self.stream.write("\n")
      self._open_line = False
    print(text, file=self.stream, flush=True)

  def finish(self):
    if self._open_line:
      self.stream.write("\n")
      self.stream.flush()
      self._open_line = False


def _fmt(v):
  v = float(v)
  return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"


def _eta(seconds):
  if seconds != seconds:
    return "?"
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class CollapseAlarm:
  r"""Warns when a collapse monitor falls below a fraction of its early value.

  For each watched metric m (e.g. target_feature_std, embedding_std, rankme, probe/lidar/trained) the early
  value is the mean of its first `early_logs` logged values, e_m; the alarm threshold is fraction * e_m. An
  alarm fires on each downward crossing: at the first logged value v < fraction * e_m, and again only after
  the metric has recovered to >= the threshold and fallen below it once more (a metric that stays low raises
  one alarm, not one per log). No alarm can fire before the early value is known.

  `observe(step, metrics)` returns the alarms of this row as dicts {metric, step, value, early, threshold};
  rows can be replayed (e.g. from metrics.jsonl on resume) to rebuild the state without re-reporting.
  """

  def __init__(self, metrics, *, fraction, early_logs=3):
    self.metrics = tuple(metrics)
    self.fraction = float(fraction)
    self.early_logs = int(early_logs)
    self._seen = {m: [] for m in self.metrics}
    self._below = {m: False for m in self.metrics}
    self.alarms = []

  def early(self, metric):
    seen = self._seen[metric]
    return float(np.mean(seen)) if len(seen) >= self.early_logs else None

  def observe(self, step, metrics):
    fired = []
    if self.fraction <= 0:
      return fired
    for m in self.metrics:
      if m not in metrics:
        continue
      value = float(np.asarray(metrics[m]))
      if value != value:  # NaN: not a value to compare (the NaN guard reports it).
        continue
      early = self.early(m)
      if early is None:
        self._seen[m].append(value)
        continue
      threshold = self.fraction * early
      below = value < threshold
      if below and not self._below[m]:
        alarm = {"metric": m, "step": int(step), "value": value, "early": early, "threshold": threshold}
        fired.append(alarm)
        self.alarms.append(alarm)
      self._below[m] = below
    return fired


def alarm_line(alarm, fraction):
  """The console WARNING line of one CollapseAlarm alarm."""
  return (f"WARNING: collapse alarm at step {alarm['step']}: {alarm['metric']} = {alarm['value']:.4g} fell "
          f"below {fraction:g} x its early value {alarm['early']:.4g} (threshold {alarm['threshold']:.4g})")


def alarm_row(alarm):
  """The metrics.jsonl / TensorBoard entries of an alarm (numbers only, keyed under alarm/<metric>)."""
  m = alarm["metric"]
  return {f"alarm/{m}": alarm["value"], f"alarm/{m}/early": alarm["early"],
          f"alarm/{m}/threshold": alarm["threshold"]}


def read_jsonl(path):
  """The rows of a metrics.jsonl (half-written lines skipped); [] if the file does not exist."""
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        continue
      if isinstance(row, dict) and "step" in row:
        rows.append(row)
  return rows
