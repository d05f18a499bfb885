"""The end of a run, after training returns: final evaluation, results.json, pictures and report.md.

results.json holds the loop's summary (step, compile and train time, skipped steps, health, alarms), the
evaluators' results ('linear_probe' / 'attentive_probe' for the probes, then one entry per other evaluator,
each {'trained': ..., 'random_init': ...}) and the pictures written.
"""
import json
import os
import time

import numpy as np

from jepa import hooks
from jepa.evaluation import suite

PROBES = ("linear", "attentive")  # Evaluators reported as '<name>_probe' (the others under their own names).


def health(skipped, first_bad, num_steps, last_loss):
  """'' for a healthy run, else one sentence on its skipped steps and non-finite final loss."""
  problems = []
  if skipped:
    problems.append(f"{skipped} of {num_steps} steps were skipped (non-finite loss or gradient, the first at "
                    f"step {first_bad})")
  if last_loss is not None and not np.isfinite(last_loss):
    problems.append(f"the last logged loss is {last_loss}")
  return "; ".join(problems)


def _probe_line(kind, values):
  line = " | ".join(f"{k} {v:.4f}" for k, v in values.items())
  if len(set(values.values())) == 1 and len(values) > 1:  # e.g. a tiny preset's few steps
    line += " (identical: the run trained too little to change this result)"
  return f"{kind} probe accuracy (held-out split): {line}" if kind in PROBES else f"{kind}: {line}"


def finish(config, workdir, state, summary, *, evaluate_fn, pictures_fn, writer, log, is_main, has_predictor,
           has_ema, eval_seconds):
  """Evaluates the final state and writes the run's results; returns the results dict.

  Args:
    config, workdir: the run's.
    state: the final train state.
    summary: the loop's {'step', 'compile_time_s', 'train_time_s', 'last_loss', 'alarms', ...}.
    evaluate_fn: state -> {result: {'trained': v, 'random_init': v}} (the end-of-run evaluation).
    pictures_fn: (state, alarms) -> {name: path} (None: no pictures).
    writer: the run's metric writer (the final probe/ row); closed here.
    log: prints a line (process 0).
    is_main: process 0 writes the files.
    has_predictor, has_ema: for the report's key lines.
    eval_seconds: per-evaluator wall time, for the report.
  """
  num_steps = config.train.num_steps
  skipped = int(state["skipped"])
  results = {k: summary[k] for k in ("step", "compile_time_s", "train_time_s")}
  results["skipped_steps"] = skipped
  results["health"] = health(skipped, int(state["first_bad_step"]), num_steps, summary["last_loss"])
  probes = {}
  if config.eval.probe:
    t0 = time.perf_counter()
    probes = evaluate_fn(state)
    results["evaluation_time_s"] = time.perf_counter() - t0
    writer.write(results["step"], suite.flat(probes), prefix="probe/")
    for kind, values in probes.items():
      results[f"{kind}_probe" if kind in PROBES else kind] = values
      log(_probe_line(kind, values))
  writer.close()
  results["alarms"] = list(summary["alarms"])
  if results["health"]:
    log(f"WARNING: {results['health']}")
  if pictures_fn is not None:
    t0 = time.perf_counter()
    results["pictures"] = pictures_fn(state, summary["alarms"])
    results["pictures_time_s"] = time.perf_counter() - t0
  if is_main:
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)
    if config.eval.report:
      from jepa import report  # pylint: disable=import-outside-toplevel
      path = report.write_report(workdir, config, results, probes, eval_seconds=eval_seconds,
                                 fraction=config.train.collapse_alarm, has_predictor=has_predictor,
                                 has_ema=has_ema)
      drawn = results.get("pictures")
      log(f"wrote {path}" + (f" and {len(drawn)} pictures in {os.path.join(workdir, 'pictures')}" if drawn
                             else ""))
  if 2 * skipped > num_steps:  # The results describe an (almost) untrained model.
    raise hooks.TrainingStopped(f"{results['health']}; the results are not those of a trained model: lower "
                                "--config.optim.lr (or find the bad input) and train in a new --workdir")
  return results
