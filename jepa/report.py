r"""WORKDIR/report.md, written at the end of a run (process 0): what ran, what it measured, what to look at.

Sections: the run (steps, times), the config (key lines, then every key in a collapsed block), the last
training metrics, the planning results when the run has any (plan_* results: the world models' planning
evaluator, with the planner's settings, its energy and its pictures), the evaluation table (trained vs random init for
every other evaluator, with the difference), the collapse alarms, and the pictures, linked by paths relative
to WORKDIR (so the folder can be moved).
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


# The planning evaluator's results (jepa/methods/world_model.py `summarize`), in their own section.
PLAN_PREFIX = "plan_"
_PLAN_DESCRIPTIONS = {
    "plan_success": "success rate: episodes that end within the success radius of the goal",
    "plan_steps": "mean steps to the goal (the first step within the radius; never = {max_steps})",
    "plan_final_distance": "mean distance to the goal at the end of the episode (px)",
    "plan_seconds_per_episode": "planning seconds per episode (one vmapped batch, compilation excluded)",
}
# The energy's distance (planning.DISTANCES) in words. The planner section has no distance key: V-JEPA 2-AC's is
# ac.energy, the world model's the planner's default, 'sq'.
_ENERGIES = {"sq": "squared error", "l1": "L1"}
_PLAN_PICTURES = ("plan_success", "episodes")  # Shown in the planning section, not again under Pictures.
_TITLES = {"curves": "Training metrics", "evaluations": "Evaluations over the run",
           "masks": "Inputs as the method trains on them", "pca": "PCA of patch features (RGB)",
           "plan_success": "Planning over training", "episodes": "Planned episodes (the last evaluation's)"}


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


def _model_line(c, *, has_predictor):
  if "world_model" in c:  # Its own model section: the ViT keys of c.model do not apply.
    w = c.world_model
    return (f"world model: IMPALA encoder {tuple(w.channels)} x {w.blocks} blocks -> latent {w.latent_dim}, GRU "
            f"predictor, {w.rollout_steps}-step rollout loss on {w.frames} frames, regulariser `{w.regularizer}`")
  if "ac" in c:  # V-JEPA 2-AC: a predictor on a frozen encoder from another run.
    a = c.ac
    return (f"V-JEPA 2-AC predictor {a.width} x {a.depth} ({a.heads} heads) on the frozen encoder of "
            f"`{a.encoder_workdir}`, {a.frames} frames, teacher forcing + {a.rollout_steps}-step rollout L1")
  enc, pred = c.model.encoder, c.model.predictor
  return (f"encoder `{enc.size}` (width {enc.width or 'preset'}, depth {enc.depth or 'preset'}), patch "
          f"{c.model.patch_size}" + (f", predictor {pred.width} x {pred.depth}" if has_predictor else ""))


def _key_lines(c, *, has_predictor, has_ema):
  lines = [
      f"method `{c.method}`, seed {c.seed}, dtype {c.dtype}",
      f"data `{c.data.source}`{' ' + c.data.name if c.data.name else ''}, image size {c.data.image_size}"
      + (f", {c.data.num_frames} frames" if c.data.num_frames else ""),
      _model_line(c, has_predictor=has_predictor),
      f"batch {c.train.batch_size}, {c.train.num_steps} steps, lr {c.optim.start_lr:g} -> {c.optim.lr:g} -> "
      f"{c.optim.final_lr:g} (warmup {c.optim.warmup_steps}), weight decay {c.optim.weight_decay:g} -> "
      f"{c.optim.final_weight_decay:g}"
      + (f", EMA {c.ema.momentum:g} -> {c.ema.final_momentum:g}" if has_ema else ", no EMA teacher"),
      f"evaluators `{c.eval.evaluators}`, collapse alarm at {c.train.collapse_alarm:g} x the early value",
  ]
  return lines


def _planning_section(config, plans, pictures):
  """The planning results `plans` ({result: {candidate: value}}), the planner's settings and its pictures."""
  p = config.get("planner")
  out = ["", "## Planning (held-out episodes)", ""]
  if p is not None:
    distance = config.ac.energy if config.get("ac") is not None else "sq"
    out += [f"{p.kind} planner in the model's latent space: horizon {p.horizon}, {p.num_samples} samples, "
            f"{p.num_iterations} iterations, {p.num_elites} elites, re-planning every {p.replan_every} steps, cost "
            f"`{p.cost}`, energy: {_ENERGIES[distance]} to the goal's latent; {p.episodes} episodes "
            f"of {p.max_steps} steps (level `{p.level}`), seed {p.seed}.", ""]
  baseline = any("random_init" in v for v in plans.values())
  out += ["| result | what | trained |" + (" random init |" if baseline else ""),
          "|---|---|---|" + ("---|" if baseline else "")]
  for key, values in plans.items():
    what = _PLAN_DESCRIPTIONS.get(key, key).format(max_steps=p.max_steps if p is not None else "the episode length")
    cells = []
    for cand in ("trained", "random_init")[:1 + baseline]:
      v = values.get(cand)
      cell = _fmt(v) if v is not None else ""
      if key == "plan_success" and v is not None and p is not None:
        cell += f" ({round(v * p.episodes)} of {p.episodes})"
      cells.append(cell)
    out.append(f"| {key} | {what} | " + " | ".join(cells) + " |")
  for name in _PLAN_PICTURES:
    if name in pictures:
      out += ["", f"### {_TITLES[name]}", "", f"![{name}]({pictures[name]})"]
  return out


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

  pictures = results.get("pictures") or {}
  plans = {k: v for k, v in probes.items() if k.startswith(PLAN_PREFIX)}
  others = {k: v for k, v in probes.items() if k not in plans}
  if plans:
    out += _planning_section(config, plans, pictures)
  if others:
    out += ["", "## Evaluations (held-out split)", ""]
    out += ["| result | what | trained | random init | trained - random |", "|---|---|---|---|---|"]
    for key, values in others.items():
      t, r = values.get("trained"), values.get("random_init")
      diff = f"{t - r:+.4f}" if t is not None and r is not None else ""
      out.append(f"| {key} | {_describe(key, config)} | {_fmt(t) if t is not None else ''} | "
                 f"{_fmt(r) if r is not None else ''} | {diff} |")
    if eval_seconds:
      out += ["", "Time per evaluator (all evaluations of the run): "
              + ", ".join(f"{k} {_seconds(v)}" for k, v in eval_seconds.items()) + "."]
  elif not plans:
    out += ["", "## Evaluations (held-out split)", "", "No evaluation ran (eval.probe=False)."]

  out += ["", "## Collapse alarms", ""]
  alarms = results.get("alarms") or []
  if alarms:
    out += [f"- {metrics_lib.alarm_line(a, fraction)}" for a in alarms]
  elif fraction:
    out.append(f"None: no collapse monitor fell below {fraction:g} x its early value.")
  else:
    out.append("The alarm is off (train.collapse_alarm=0).")

  out += ["", "## Pictures", ""]
  if pictures:
    for name, rel in pictures.items():
      if not (plans and name in _PLAN_PICTURES):
        out += [f"### {_TITLES.get(name, name)}", "", f"![{name}]({rel})", ""]
  else:
    out.append("No pictures (eval.pictures=False).")
  path = os.path.join(workdir, "report.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(out).rstrip() + "\n")
  return path
