r"""World models on Two Rooms: train for a budget, plan on held-out episodes along the way, tabulate variants.

  python experiments/world_model.py --config=configs/world_model.py --name=ebjepa_cpu --minutes=35 \
      --episodes=200 --workdir=/tmp/wm/ebjepa_cpu
  python experiments/world_model.py --config=configs/world_model.py --name=no_idm --steps=600 \
      --config.world_model.idm_weight=0 --workdir=/tmp/wm/no_idm          # an ablation row
  python experiments/world_model.py --from_run --name=ebjepa_cpu --workdir=runs/wm   # plan a jepa.main run's
                                                                                     # checkpoints
  python experiments/world_model.py --summary                               # table + picture of every result

With --minutes the step's time is measured first (a few steps after compilation, in a throw-away state) and
train.num_steps is set so that training fills the budget (the schedules then span the run). Training is split at
`--points` evenly spaced steps; at each one the model plans `--point_episodes` held-out episodes with the
config's planner (the last point: `--episodes` with every planner in `--planners`), episode i a function of
(planner.seed, i) as in `python -m jepa.plan`. Each point records the step, training minutes (the loop's wall
time, planning excluded), planning seconds per episode, success (within 4.5 px of the goal after
planner.max_steps steps, EB-JEPA's criterion), mean steps to the goal and the 1-minute load average, since these
machines are shared. A success rate over n episodes is given with its binomial standard error,
sqrt(p (1 - p) / n).

Results: experiments/results/world_model/<name>.json; --summary writes experiments/results/world_model/
two_rooms.md (one row per result) and two_rooms.png (success against training minutes).
"""
import glob
import json
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from jepa import checkpoint
from jepa import run_config
from jepa import train
from jepa.methods import world_model
import timing  # experiments/timing.py

config_flags.DEFINE_config_file("config", None, "World-model config to train.", lock_config=False)
flags.DEFINE_string("name", None, "Result name: experiments/results/world_model/<name>.json.")
flags.DEFINE_string("workdir", None, "Run directory (must be new or hold the same run).")
flags.DEFINE_float("minutes", 0.0, "Training budget in minutes (sets train.num_steps); or give --steps.")
flags.DEFINE_integer("steps", 0, "Training steps (default: the config's train.num_steps).")
flags.DEFINE_integer("points", 3, "Planning points, evenly spaced over the run (the last at its end).")
flags.DEFINE_integer("point_episodes", 50, "Episodes planned at the intermediate points.")
flags.DEFINE_integer("episodes", 200, "Episodes planned at the end, with each planner.")
flags.DEFINE_list("planners", ["mppi", "cem"], "Planners run at the end (the first also at the points).")
flags.DEFINE_string("note", "", "What this result varies, for the table.")
flags.DEFINE_bool("from_run", False, "Plan with every checkpoint already saved in --workdir (a run trained by "
                  "python -m jepa.main; its config.json) instead of training: the last checkpoint as the final point.")
flags.DEFINE_bool("summary", False, "Write the table and picture of every result and exit.")
FLAGS = flags.FLAGS
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "world_model")


def planned(method, model, *, episodes, kind):
  """Plans `episodes` held-out episodes with the method's planner and energy; the numbers of one table cell."""
  planner_cfg = method.config.planner
  out = method.plan(model, episodes=episodes, kind=kind)
  s = world_model.summarize(out, planner_cfg.max_steps)
  p = s["plan_success"]
  return {"planner": kind, "episodes": episodes, "success": round(p, 4),
          "success_se": round(float(np.sqrt(p * (1 - p) / episodes)), 4), "steps_to_goal": round(s["plan_steps"], 1),
          "final_distance": round(s["plan_final_distance"], 2),
          "seconds_per_episode": round(s["plan_seconds_per_episode"], 3),
          "compile_seconds": round(out["compile_seconds"], 1)}


def header(run_):
  """The result's description: command, sizes, the model's and the planner's config sections, the machine."""
  config = run_.config
  if not isinstance(run_.method, world_model.PlanningMethod):
    raise app.UsageError(f"the run trains method={config.method!r}, which does not plan; this harness plans with "
                         "world models (configs/world_model.py)")
  machine, cpu_flags = timing.machine()
  model_section = "world_model" if "world_model" in config else "ac"
  return {"name": FLAGS.name, "note": FLAGS.note, "command": " ".join(["python"] + sys.argv),
          "method": config.method, "num_steps": config.train.num_steps, "global_batch": config.train.batch_size,
          "model": {model_section: config[model_section].to_dict()}, "planner": config.planner.to_dict(),
          "machine": machine, "cpu_flags": cpu_flags, "points": []}


def point(run_, state, *, final, train_minutes):
  """Plans with `state`'s model: `--point_episodes` with the first planner, or at the end `--episodes` with each."""
  model, _ = run_.state_def.models(state)
  load = os.getloadavg()[0]
  t0 = time.perf_counter()
  plans = [planned(run_.method, model, episodes=FLAGS.episodes if final else FLAGS.point_episodes, kind=kind)
           for kind in (FLAGS.planners if final else FLAGS.planners[:1])]
  out = {"step": int(state["step"]), "train_minutes": round(train_minutes, 2),
         "plan_minutes": round((time.perf_counter() - t0) / 60, 2), "load_before": round(load, 1),
         "load_after": round(os.getloadavg()[0], 1), "plans": plans}
  print("point: " + json.dumps(out), flush=True)
  return out


def run(config):
  config.planner.episodes = 0  # The points below plan; the run's own evaluator would plan twice.
  config.eval.update(pictures=False, report=False, every=0)
  if FLAGS.minutes:
    sec = timing.step_seconds(config, FLAGS.workdir + ".calibration", 4)
    config.train.num_steps = max(FLAGS.points, int(FLAGS.minutes * 60 / sec))
    print(f"budget: {FLAGS.minutes} min at {sec:.3f} s/step -> train.num_steps={config.train.num_steps}",
          flush=True)
  elif FLAGS.steps:
    config.train.num_steps = FLAGS.steps
  num_steps = config.train.num_steps
  config.train.checkpoint_every = 0  # Only the points (and the end) save.
  run_ = train.setup(config, FLAGS.workdir)
  out = header(run_)
  train_seconds = 0.0
  for k in range(1, FLAGS.points + 1):
    stop = round(k * num_steps / FLAGS.points)
    t0 = time.perf_counter()
    state, _ = train.fit(run_, stop_at=stop if stop < num_steps else None)
    train_seconds += time.perf_counter() - t0
    out["points"].append(point(run_, state, final=k == FLAGS.points, train_minutes=train_seconds / 60))
    _write(out)
  return out


def train_minutes(workdir):
  """{step: training minutes up to that step} from the run's metrics.jsonl (each logged row's steps_per_s covers
  the steps since the previous row)."""
  minutes, prev, total = {}, 0, 0.0
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      if "steps_per_s" in row and row["step"] > prev:
        total += (row["step"] - prev) / row["steps_per_s"] / 60
        prev = row["step"]
        minutes[prev] = total
  return minutes


def from_run():
  """The points of a finished jepa.main run: every saved checkpoint planned (see --from_run)."""
  config = run_config.load(FLAGS.workdir)
  config.planner.episodes = 0
  run_ = train.setup(config, FLAGS.workdir)
  out = header(run_)
  ckpt = checkpoint.Checkpointer(os.path.join(FLAGS.workdir, "checkpoints"), async_save=False)
  steps = sorted(ckpt.all_steps())
  if not steps:
    raise app.UsageError(f"--workdir={FLAGS.workdir} holds no checkpoint to plan with")
  minutes = train_minutes(FLAGS.workdir)
  for step in steps:
    state, _ = ckpt.restore_latest(run_.state_def.abstract, None, steps=[step])
    logged = [m for s, m in minutes.items() if s <= step]
    out["points"].append(point(run_, state, final=step == steps[-1], train_minutes=logged[-1] if logged else 0.0))
    _write(out)
  return out


def _write(out):
  timing.write_result(RESULTS, out)


def _cell(plan):
  return f"{100 * plan['success']:.1f} ± {100 * plan['success_se']:.1f}% (n={plan['episodes']})"


def summary():
  """experiments/results/world_model/two_rooms.{md,png} from every result."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  results = []
  for path in sorted(glob.glob(os.path.join(RESULTS, "*.json"))):
    with open(path, encoding="utf-8") as f:
      results.append(json.load(f))
  lines = ["# World models on Two Rooms (random wall): planning success per training budget", "",
           "Generated by `python experiments/world_model.py --summary` from experiments/results/world_model/*.json; "
           "each row's command is in its JSON. Success: within 4.5 px of the goal after planner.max_steps steps, "
           "± the binomial standard error. Minutes: training wall time on the machine named, planning excluded "
           "(load = the 1-minute load average before / after the last training segment).", "",
           "| result | what varies | steps x batch | train min | planner settings | MPPI | CEM | "
           "planning s / episode | load | machine |", "|---|---|---|---|---|---|---|---|---|---|"]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  results = [r for r in results if r["points"]]
  for r in results:
    last = r["points"][-1]
    by = {p["planner"]: p for p in last["plans"]}
    q = r["planner"]
    settings = (f"H {q['horizon']}, {q['num_samples']} samples, {q['num_iterations']} it, {q['num_elites']} elites, "
                f"replan {q['replan_every']}")
    secs = " / ".join(f"{k} {v['seconds_per_episode']:.2f}" for k, v in by.items())
    lines.append(f"| {r['name']} | {r.get('note', '')} | {r['num_steps']} x {r['global_batch']} | "
                 f"{last['train_minutes']:.1f} | {settings} | {_cell(by['mppi']) if 'mppi' in by else '-'} | "
                 f"{_cell(by['cem']) if 'cem' in by else '-'} | {secs} | {last['load_before']} / {last['load_after']} "
                 "| "
                 f"{r['machine']} ({r['cpu_flags']}) |")
    xs = [pt["train_minutes"] for pt in r["points"]]
    ys = [100 * pt["plans"][0]["success"] for pt in r["points"]]
    ax.plot(xs, ys, marker="o", label=r["name"])
  lines += ["", "Success along training (the first planner; the points of each result, same held-out episodes for "
            "the same planner.seed and count): compare ablations with the full model at the same step.", "",
            "| result | step: success ± SE (episodes) |", "|---|---|"]
  for r in results:
    cells = [f"{pt['step']}: {_cell(pt['plans'][0])}" for pt in r["points"]]
    lines.append(f"| {r['name']} | {'; '.join(cells)} |")
  ax.axhline(97, color="grey", linestyle="--", linewidth=1, label="EB-JEPA MPPI (GPU): 97%")
  ax.set_xlabel("training minutes (2 CPU cores)")
  ax.set_ylabel("planning success, % (first planner)")
  ax.set_ylim(0, 100)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(RESULTS, "two_rooms.png"), dpi=120)
  with open(os.path.join(RESULTS, "two_rooms.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines + ["", "![success against training minutes](two_rooms.png)", ""]))
  print("\n".join(lines))


def main(argv):
  del argv
  if FLAGS.summary:
    summary()
    return
  if FLAGS.from_run:
    if not FLAGS.name or not FLAGS.workdir:
      raise app.UsageError("--from_run needs --name and --workdir")
    from_run()
    return
  if not FLAGS.name or not FLAGS.workdir or FLAGS.config is None:
    raise app.UsageError("give --config, --name and --workdir (or --summary)")
  run(FLAGS.config)


if __name__ == "__main__":
  app.run(main)
