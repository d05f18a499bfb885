"""Run logging: a JSONL file, TensorBoard event files and a console line (step, loss, lr, img/s, ETA)."""
import json
import os
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
  """Console progress: throughput and ETA over the steps since the last report (first step excluded)."""

  def __init__(self, total_steps, global_batch, *, enabled=True):
    self.total = total_steps
    self.global_batch = global_batch
    self.enabled = enabled
    self._t = None
    self._step = None

  def start(self, step):
    self._t, self._step = time.perf_counter(), step

  def report(self, step, metrics):
    now = time.perf_counter()
    dt, ds = now - self._t, step - self._step
    self._t, self._step = now, step
    rate = ds / dt if dt > 0 and ds > 0 else float("nan")
    out = {"steps_per_s": rate, "img_per_s": rate * self.global_batch}
    if self.enabled:
      eta = (self.total - step) / rate if rate == rate and rate > 0 else float("nan")
      shown = " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items() if np.asarray(v).size == 1)
      print(f"step {step}/{self.total} {shown} img/s={out['img_per_s']:.1f} eta={_eta(eta)}", flush=True)
    return out


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
