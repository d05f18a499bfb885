r"""WORKDIR/report.md, written at the end of a run (process 0): what ran, what it measured, what to look at.

Sections: the run (steps, times), the config (key lines, then every key in a collapsed block), the last
training metrics, the evaluation table (trained vs random init for every evaluator, with the difference),
the collapse alarms, and the pictures, linked by paths relative to WORKDIR (so the folder can be moved).
"""
import os

from jepa import metrics as metrics_lib
from jepa import config as config_lib

# What each result measures, for the table (the rest are named as they are).
_DESCRIPTIONS = {
    "linear": "linear probe (l2 selected on a train hold-out)",
    "attentive": "attentive probe",
    "knn": "kNN, cosine",
    "rankme": "RankMe of the eval features (effective rank)",
    "lidar": "LiDAR of augmented views (effective rank)",
    "mrr": "MRR of the world model (IWM)",
}


def _describe(key, config):
  if key.startswith("few_shot_"):
    shots = key[len("few_shot_"):]
    what = "all labels" if shots == "all" else f"{shots} label{'s' if shots != '1' else ''} per class"
    return f"few-shot linear probe, {what} (l2 {config.eval.few_shot.l2:g})"
  if key == "knn":
    k = config.eval.knn
    vote = f"T={k.temperature:g} weighted" if k.vote == "weighted" else "majority"
    return f"kNN, cosine, k={k.k}, {vote} vote"
  if key == "lidar":
    c = config.eval.lidar
    return f"LiDAR, {c.samples} eval images x {c.views} views (effective rank)"
  return _DESCRIPTIONS.get(key, key)


def _fmt(v):
  if isinstance(v, float):
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
  return str(v)


def _seconds(s):
  if s is None:
    return "?"
  m, sec = divmod(float(s), 60)
  return f"{int(m)} min {sec:.0f} s" if m else f"{sec:.1f} s"


def _key_lines(c, *, has_predictor, has_ema):
  enc, pred = c.model.encoder, c.model.predictor
  lines = [
      f"method `{c.method}`, seed {c.seed}, dtype {c.dtype}",
      f"data `{c.data.source}`{' ' + c.data.name if c.data.name else ''}, image size {c.data.image_size}"
      + (f", {c.data.num_frames} frames" if c.data.num_frames else ""),
      f"encoder `{enc.size}` (width {enc.width or 'preset'}, depth {enc.depth or 'preset'}), patch "
      f"{c.model.patch_size}" + (f", predictor {pred.width} x {pred.depth}" if has_predictor else ""),
      f"batch {c.train.batch_size}, {c.train.num_steps} steps, lr {c.optim.start_lr:g} -> {c.optim.lr:g} -> "
      f"{c.optim.final_lr:g} (warmup {c.optim.warmup_steps}), weight decay {c.optim.weight_decay:g} -> "
      f"{c.optim.final_weight_decay:g}"
      + (f", EMA {c.ema.momentum:g} -> {c.ema.final_momentum:g}" if has_ema else ", no EMA teacher"),
      f"evaluators `{c.eval.evaluators}`, collapse alarm at {c.train.collapse_alarm:g} x the early value",
  ]
  return lines


def write_report(workdir, config, results, probes, *, eval_seconds=None, fraction=None, has_predictor=True,
                 has_ema=True):
  """Writes WORKDIR/report.md; returns its path.

  Args:
    workdir: the run's directory (metrics.jsonl and pictures/ inside).
    config: the run's config.
    results: the dict jepa/finish.py writes to results.json (times, alarms, pictures).
    probes: jepa.evaluation.suite.evaluate's {result: {'trained': v, 'random_init': v}} ({} without evaluation).
    eval_seconds: {evaluator: seconds} spent, for a timing line.
    fraction: the collapse alarm's fraction (for the alarm lines).
    has_predictor, has_ema: whether the model has a predictor / an EMA teacher (their config lines are
      shown only then; LeJEPA has neither).
  """
  rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  train_rows = [r for r in rows if not any(k.startswith(("probe/", "alarm/")) for k in r)]
  out = [f"# Run report: {config.method}", ""]
  times = {k: _seconds(results.get(f"{k}_time_s")) for k in ("train", "compile", "evaluation", "pictures")}
  out.append(f"Workdir `{os.path.abspath(workdir)}`: step {results.get('step')} of {config.train.num_steps}; "
             f"training loop {times['train']} (first step, compilation included, {times['compile']}), "
             f"evaluation {times['evaluation']}, pictures {times['pictures']}; "
             f"{results.get('skipped_steps', 0)} skipped steps.")
  if results.get("health"):
    out += ["", f"**WARNING: {results['health']}.**"]
  out += ["", "## Config", ""]
  out += [f"- {line}" for line in _key_lines(config, has_predictor=has_predictor, has_ema=has_ema)]
  flat = config_lib._flatten(config)  # pylint: disable=protected-access
  out += ["", "<details><summary>every config key</summary>", "", "```"]
  out += [f"{k} = {v!r}" for k, v in sorted(flat.items())]
  out += ["```", "", "</details>", ""]

  out += [f"## Final training metrics (step {train_rows[-1]['step']})" if train_rows else
          "## Final training metrics", ""]
  if train_rows:
    out += ["| metric | value |", "|---|---|"]
    out += [f"| {k} | {_fmt(v)} |" for k, v in train_rows[-1].items() if k != "step"]
  else:
    out.append("No training metrics were logged.")

  out += ["", "## Evaluations (held-out split)", ""]
  if probes:
    out += ["| result | what | trained | random init | trained - random |", "|---|---|---|---|---|"]
    for key, values in probes.items():
      t, r = values.get("trained"), values.get("random_init")
      diff = f"{t - r:+.4f}" if t is not None and r is not None else ""
      out.append(f"| {key} | {_describe(key, config)} | {_fmt(t) if t is not None else ''} | "
                 f"{_fmt(r) if r is not None else ''} | {diff} |")
    if eval_seconds:
      out += ["", "Time per evaluator (all evaluations of the run): "
              + ", ".join(f"{k} {_seconds(v)}" for k, v in eval_seconds.items()) + "."]
  else:
    out.append("No evaluation ran (eval.probe=False).")

  out += ["", "## Collapse alarms", ""]
  alarms = results.get("alarms") or []
  if alarms:
    out += [f"- {metrics_lib.alarm_line(a, fraction)}" for a in alarms]
  elif fraction:
    out.append(f"None: no collapse monitor fell below {fraction:g} x its early value.")
  else:
    out.append("The alarm is off (train.collapse_alarm=0).")

  pictures = results.get("pictures") or {}
  out += ["", "## Pictures", ""]
  titles = {"curves": "Training metrics", "evaluations": "Evaluations over the run",
            "masks": "Inputs as the method trains on them", "pca": "PCA of patch features (RGB)"}
  if pictures:
    for name, rel in pictures.items():
      out += [f"### {titles.get(name, name)}", "", f"![{name}]({rel})", ""]
  else:
    out.append("No pictures (eval.pictures=False).")
  path = os.path.join(workdir, "report.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(out).rstrip() + "\n")
  return path
