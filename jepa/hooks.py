"""The loop's periodic actions, each a hook called after every step as `hook(step, state, metrics)`.

  NonFiniteStop  with train.nan_policy='stop', ends the run once an update was skipped (at logs and saves)
  LogMetrics     every train.log_every steps: the window's mean metrics to metrics.jsonl / TensorBoard, the
                 progress line and the collapse alarm
  Checkpoint     every train.checkpoint_every steps (the loop also saves at the end and when it stops early)
  Evaluate       every eval.every steps: the evaluators (probe/ rows, alarms on them) and the pictures
  Preemption     SIGTERM / SIGINT or JAX's multi-host preemption notice: `stop_reason(step)` says why to stop

Hooks hold what they use (a writer, a checkpointer, an evaluate function), never the loop.
"""
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

from jepa import metrics as metrics_lib
from jepa.errors import JepaError


class TrainingStopped(JepaError):
  """The run stopped on purpose (non-finite loss with nan_policy='stop')."""


class NonFiniteStop:
  """With nan_policy='stop', raises TrainingStopped (one line naming the first bad step) once a step was skipped:
  checked at every log step (`every`, and `last`) and before every checkpoint save (Checkpoint calls `check`),
  so no checkpoint is written after a bad step."""

  def __init__(self, nan_policy, every, last):
    self.active, self.every, self.last = nan_policy == "stop", every, last

  def __call__(self, step, state, metrics):
    del metrics
    if step % self.every == 0 or step == self.last:
      self.check(state)

  def check(self, state):
    if self.active and int(state["skipped"]):
      bad = int(state["first_bad_step"])
      raise TrainingStopped(f"non-finite loss or gradient at step {bad}; the state was not updated and no "
                            "checkpoint holds it. Lower optim.lr, or set --config.train.nan_policy=skip")


class Alarms:
  """The collapse alarm: a crossing prints a WARNING (process 0) and writes an alarm row."""

  def __init__(self, monitors, train_cfg, writer, *, is_main):
    self.alarm = metrics_lib.CollapseAlarm(monitors, fraction=train_cfg.collapse_alarm,
                                           early_logs=train_cfg.collapse_alarm_logs)
    self.writer, self.is_main = writer, is_main

  def replay(self, rows):
    """A resumed run rebuilds the early values (and its earlier alarms) from the rows of metrics.jsonl."""
    for row in rows:
      self.alarm.observe(row["step"], row)

  def __call__(self, step, row):
    for alarm in self.alarm.observe(step, row):
      if self.is_main:
        print(metrics_lib.alarm_line(alarm, self.alarm.fraction), flush=True)
      self.writer.write(step, metrics_lib.alarm_row(alarm))


class LogMetrics:
  """Every `every` steps (and at `last`): the mean of the window's metrics, one row per logged step."""

  def __init__(self, every, last, writer, alarms, progress, *, corrupt=None):
    self.every, self.last, self.writer, self.alarms = every, last, writer, alarms
    self.progress, self.corrupt = progress, corrupt
    self.pending, self.last_loss = [], None

  def __call__(self, step, state, metrics):
    self.pending.append(metrics)
    if step % self.every and step != self.last:
      return
    host = jax.device_get(self.pending)
    self.pending = []
    self.progress.completed(step)
    row = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
    row["skipped_steps"] = int(state["skipped"])
    if self.corrupt is not None:
      # Corrupt examples replaced by data.skip_corrupt since this process started, summed over processes.
      count = np.asarray(self.corrupt.num_skipped, np.int64)
      if jax.process_count() > 1:
        count = multihost_utils.process_allgather(count).sum()
      row["corrupt_skipped"] = int(count)
    self.last_loss = float(host[-1]["loss"])  # The final step's, not the window mean.
    row.update(self.progress.report(step, row))
    self.writer.write(step, row)
    self.alarms(step, row)


class Checkpoint:
  """Saves state + data position every `every` steps before `last` (never after a bad step with 'stop')."""

  def __init__(self, every, last, ckpt, iterator, guard, meta_fn):
    self.every, self.last, self.ckpt, self.iterator = every, last, ckpt, iterator
    self.guard, self.meta_fn = guard, meta_fn

  def save(self, step, state):
    self.guard.check(state)
    self.ckpt.save(step, state, self.iterator, self.meta_fn(step))

  def __call__(self, step, state, metrics):
    del metrics
    if self.every and step % self.every == 0 and step < self.last:
      self.save(step, state)


class Evaluate:
  """Every `every` steps before `last`: `evaluate_fn(state)` -> probe/ rows (alarms on them), then pictures."""

  def __init__(self, every, last, evaluate_fn, writer, alarms, log, *, pictures_fn=None):
    self.every, self.last, self.evaluate_fn, self.writer = every, last, evaluate_fn, writer
    self.alarms, self.log, self.pictures_fn = alarms, log, pictures_fn

  def __call__(self, step, state, metrics):
    del metrics
    if not (self.every and step % self.every == 0 and step < self.last):
      return
    row = self.evaluate_fn(state)
    self.writer.write(step, row, prefix="probe/")
    self.log(f"step {step} evaluations: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
    self.alarms(step, {f"probe/{k}": v for k, v in row.items()})
    if self.pictures_fn is not None:  # Redrawn at every evaluation, so the run can be watched while it trains.
      self.pictures_fn(state, self.alarms.alarm.alarms)


def _preemption_service_active():
  """Whether JAX's multi-host preemption sync service runs (it then owns SIGTERM; see Checkpointer)."""
  try:
    from jax._src import distributed  # pylint: disable=import-outside-toplevel  (no public accessor)
  except ImportError:
    return False
  state = distributed.global_state
  return (getattr(state, "client", None) is not None
          and getattr(state, "preemption_sync_manager", None) is not None)


class Preemption:
  """A context manager that catches SIGTERM / SIGINT; `stop_reason(step)` is '' or why the loop must stop.

  Multi-host runs with JAX's preemption service: it owns SIGTERM and agrees a common step across hosts
  (ckpt.reached_preemption, called every step on every host as its protocol requires); a Python handler would
  shadow it, so only SIGINT is caught here then.
  """

  def __init__(self, ckpt, stop_at=None):
    self.ckpt, self.stop_at, self.received = ckpt, stop_at, []
    self.previous = {}

  def __enter__(self):
    signals = (signal.SIGINT,) if _preemption_service_active() else (signal.SIGTERM, signal.SIGINT)
    self.previous = {s: signal.signal(s, lambda signum, _: self.received.append(signum)) for s in signals}
    return self

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      signal.signal(s, handler)

  def stop_reason(self, step):
    preempted = self.ckpt.reached_preemption(step)
    if self.received:
      return f"received {signal.Signals(self.received[0]).name}"
    if preempted:
      return "preemption notice"
    return f"stop_at={self.stop_at}" if step == self.stop_at else ""
