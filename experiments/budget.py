r"""Quality per compute: train a config for a wall-clock budget or a step count, probe it along the way.

  python experiments/budget.py --config=configs/ijepa_vit.py:cifar10_reference --name=ijepa_reference \
      --steps=1670 --points=4 --workdir=/tmp/budget/ijepa_reference
  python experiments/budget.py --config=configs/lejepa_vit.py:cifar10_cpu --name=lejepa_cpu --minutes=21.6 \
      --workdir=/tmp/budget/lejepa_cpu
  python experiments/budget.py --summary=cifar10     # table + picture of every result on that dataset
  python experiments/budget.py --rescore --config=... --name=ijepa_reference --workdir=...  # new probe, old run

With --minutes the step's time is measured first (a few steps after compilation, in a throw-away state) and
train.num_steps is set so that training fills the budget: the schedules (warmup, cosine, EMA) then span the
run, as they would in a run planned for that length. Training is split at `--points` evenly spaced steps; at
each one the frozen features (the method's probe features) of the whole training split and of the held-out
split are extracted and scored:
  - linear probe: standardised features, multinomial logistic regression, L2 picked on a 20% hold-out of the
    training features (jepa/evaluation/linear_probe.py);
  - kNN (k = 20, cosine, weighted vote with T = 0.07).
Raw pixels (the eval transform's normalised pixels) and the same network at random init are scored once per
result file, with the same probes, as the horizontal lines of the picture. Each point records the step, the
epochs seen, training minutes (the loop's wall time, evaluations excluded; checkpoint saves at the points
included), img/s and the 1-minute load average, since these machines are shared.

Results: experiments/results/budget/<name>.json; --summary writes experiments/results/budget/<dataset>.md and
<dataset>.png (accuracy against training minutes, one curve per result).
"""
import glob
import itertools
import json
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from jepa import checkpoint
from jepa import features as features_lib
from jepa import train
import baselines as baselines_lib  # experiments/baselines.py
import timing  # experiments/timing.py
from jepa.data import sources
from jepa.evaluation import knn
from jepa.evaluation import linear_probe

config_flags.DEFINE_config_file("config", None, "Config to train.", lock_config=False)
flags.DEFINE_string("name", None, "Result name: experiments/results/budget/<name>.json.")
flags.DEFINE_string("workdir", None, "Run directory (must be new or hold the same run).")
flags.DEFINE_float("minutes", 0.0, "Training budget in minutes (sets train.num_steps); or give --steps.")
flags.DEFINE_integer("steps", 0, "Training steps (default: the config's train.num_steps).")
flags.DEFINE_integer("points", 4, "Evaluation points, evenly spaced over the run (the last at its end).")
flags.DEFINE_integer("calibration_steps", 6, "Timed steps used to turn --minutes into steps.")
flags.DEFINE_integer("probe_train_examples", 0, "Training examples the probes fit on at the intermediate points "
                     "(0 = the whole split); the last point and the random-init baseline always use all of them.")
flags.DEFINE_string("baselines_from", "", "Take the raw-pixel and random-init rows from this result name "
                    "(same data and model) instead of computing them again.")
flags.DEFINE_bool("rescore", False, "Score the saved checkpoints of an existing result (--name, --config, "
                  "--workdir) and its baselines again with today's probes, on the whole training split.")
flags.DEFINE_string("raw_pixels_from", "", "Take only the raw-pixel row from this result name (same dataset: "
                    "the probe standardises each pixel, so the normalisation does not matter); score the "
                    "random init of this run's model.")
flags.DEFINE_string("summary", None, "Write the table and picture of every result on this dataset and exit.")
FLAGS = flags.FLAGS
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "budget")


def dataset_name(config):
  if config.data.source in ("npz", "folder", "idx"):
    return os.path.basename(os.path.dirname(os.path.abspath(config.data.path))) or config.data.path
  return config.data.name or config.data.source


PROBE = f"L-BFGS until ||grad|| < {linear_probe.TOL} (at most {linear_probe.STEPS} steps)"


def score(train_xy, eval_xy, num_classes):
  (xt, yt), (xe, ye) = train_xy, eval_xy
  xt, xe = xt.reshape(len(xt), -1), xe.reshape(len(xe), -1)
  t0 = time.perf_counter()
  probe = linear_probe.linear_probe(xt, yt, xe, ye, num_classes)
  knn_acc = knn.knn_accuracy(xt, yt, xe, ye, num_classes)
  return {"linear": probe["accuracy"], "linear_l2": probe["l2"], "knn": knn_acc,
          "probe_seconds": round(time.perf_counter() - t0, 1), "probe": PROBE}


def scored_baselines(run, eval_source, num_classes, seed, *, raw=None):
  """{'raw_pixels': ..., 'random_init': ...} scored with `score` (`raw`: an already scored raw-pixel row)."""
  if raw is None:
    raw = score(baselines_lib.raw_pixels(run.method, run.train_source, 0),
                baselines_lib.raw_pixels(run.method, eval_source, 0), num_classes)
  random_state = run.state_def.init(seed + 1)
  return {"raw_pixels": raw, "random_init": score(*features(run, random_state, eval_source), num_classes)}


def rescore(config):
  """Scores every point of result --name whose checkpoint is still in --workdir, and the baselines, again."""
  out = read_result(FLAGS.name)
  config.eval.update(probe=False, pictures=False, report=False, every=0)
  config.train.num_steps = out["num_steps"]
  out["image_size"] = config.data.image_size  # The probe's resolution (--config.data.image_size may change it).
  run = train.setup(config, FLAGS.workdir)
  machine, cpu_flags = timing.machine()
  eval_source = sources.get_source(config.data, "eval")
  num_classes = run.train_source.num_classes
  ckpt = checkpoint.Checkpointer(os.path.join(FLAGS.workdir, "checkpoints"), async_save=False)
  saved = set(ckpt.all_steps())
  dropped = [p["step"] for p in out["points"] if p["step"] not in saved]
  copied = out.get("baselines", {}).get("copied_from")
  source = read_result(copied) if copied else None
  if source and same_data(source, config):
    # Copied rows are copied again, from that result as it is now; at another size they are scored afresh.
    out["baselines"] = dict(source["baselines"], copied_from=copied)
  else:
    out["baselines"] = scored_baselines(run, eval_source, num_classes, config.seed)
    print("baselines: " + json.dumps(out["baselines"]), flush=True)
  points = []
  for p in out["points"]:
    if p["step"] in saved:
      state, _ = ckpt.restore_latest(run.state_def.abstract, None, steps=[p["step"]])
      p = dict(p, probe_train_examples=len(run.train_source))
      p.update(score(*features(run, state, eval_source), num_classes))
      points.append(p)
      print("point: " + json.dumps(p), flush=True)
  out["points"] = points
  out["rescored"] = {"command": " ".join(["python"] + sys.argv), "dropped_steps": dropped, "probe": PROBE}
  _write(out)
  return out


def features(run, state, eval_source, *, final=True):
  """(train, eval) features and labels of the method's probe features."""
  apply = features_lib.apply_fn(run.state_def, run.method.features)
  kw = dict(example_fn=run.method.example_fn(train=False), batch_size=run.config.eval.batch_size)
  train_xy = features_lib.extract(apply, state, run.train_source, run.mesh,
                                  max_examples=0 if final else FLAGS.probe_train_examples, **kw)
  return train_xy, features_lib.extract(apply, state, eval_source, run.mesh, **kw)


def read_result(name):
  with open(os.path.join(RESULTS, f"{name}.json"), encoding="utf-8") as f:
    return json.load(f)


def same_data(result, config):
  """Whether `result` was scored on the data `config` reads, at the same image size."""
  return (result["dataset"], result["image_size"]) == (dataset_name(config), config.data.image_size)


def copied_baselines(flag, config):
  """The baselines of the result that --<flag> names; it must have read the same data at the same size."""
  name = getattr(FLAGS, flag)
  path = os.path.join(RESULTS, f"{name}.json")
  if not os.path.exists(path):
    raise SystemExit(f"error: --{flag}={name}: no {path}; pass the name of a result written by budget.py")
  result = read_result(name)
  if not same_data(result, config):
    theirs = (result["dataset"], result["image_size"])
    ours = (dataset_name(config), config.data.image_size)
    raise SystemExit(f"error: --{flag}={name} scored {theirs[0]} at {theirs[1]} px, this run reads {ours[0]} "
                     f"at {ours[1]} px; name a result of the same data and config.data.image_size, or drop the flag")
  return result["baselines"]


def run(config):
  config.eval.update(probe=False, pictures=False, report=False, every=0)
  # Read (and checked) before the calibration and training, so that a bad name fails first.
  copied = {flag: copied_baselines(flag, config) for flag in ("baselines_from", "raw_pixels_from")
            if getattr(FLAGS, flag)}
  if FLAGS.minutes:
    sec = timing.step_seconds(config, FLAGS.workdir + ".calibration", FLAGS.calibration_steps)
    config.train.num_steps = max(FLAGS.points, int(FLAGS.minutes * 60 / sec))
    print(f"budget: {FLAGS.minutes} min at {sec:.3f} s/step -> train.num_steps={config.train.num_steps}",
          flush=True)
  elif FLAGS.steps:
    config.train.num_steps = FLAGS.steps
  num_steps = config.train.num_steps
  config.train.checkpoint_every = 0  # Only the points (and the end) save.
  run = train.setup(config, FLAGS.workdir)
  machine, cpu_flags = timing.machine()
  eval_source = sources.get_source(config.data, "eval")
  num_classes = run.train_source.num_classes
  train_size = len(run.train_source)
  out = {"name": FLAGS.name, "command": " ".join(["python"] + sys.argv), "dataset": dataset_name(config),
         "image_size": config.data.image_size, "method": config.method, "num_steps": num_steps,
         "global_batch": config.train.batch_size,
         "train_examples": train_size, "eval_examples": len(eval_source),
         "machine": machine, "cpu_flags": cpu_flags,
         "points": []}

  t0 = time.perf_counter()
  if FLAGS.baselines_from:
    baselines = dict(copied["baselines_from"], copied_from=FLAGS.baselines_from)
  else:
    raw = None
    if FLAGS.raw_pixels_from:
      raw = dict(copied["raw_pixels_from"]["raw_pixels"], copied_from=FLAGS.raw_pixels_from)
    baselines = scored_baselines(run, eval_source, num_classes, config.seed, raw=raw)
  out["baselines"] = baselines
  print(f"baselines ({time.perf_counter() - t0:.0f}s): " + json.dumps(baselines), flush=True)

  train_seconds = 0.0
  for k in range(1, FLAGS.points + 1):
    stop = round(k * num_steps / FLAGS.points)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    state, result = train.fit(run, stop_at=stop if stop < num_steps else None)
    train_seconds += time.perf_counter() - t0
    step = result["step"]
    point = {"step": step, "epochs": round(step * config.train.batch_size / train_size, 2),
             "train_minutes": round(train_seconds / 60, 2),
             "img_per_s": round(step * config.train.batch_size / train_seconds, 1),
             "load_before": round(load, 1), "load_after": round(os.getloadavg()[0], 1)}
    final = k == FLAGS.points
    point["probe_train_examples"] = train_size if final or not FLAGS.probe_train_examples else min(
        train_size, FLAGS.probe_train_examples)
    point.update(score(*features(run, state, eval_source, final=final), num_classes))
    out["points"].append(point)
    print("point: " + json.dumps(point), flush=True)
    _write(out)
  return out


def _write(out):
  timing.write_result(RESULTS, out)


def summary(dataset):
  """experiments/results/budget/<dataset>.{md,png} from every result on `dataset`."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  results = []
  for path in sorted(glob.glob(os.path.join(RESULTS, "*.json"))):
    with open(path, encoding="utf-8") as f:
      r = json.load(f)
    if r.get("dataset") == dataset and r.get("points"):
      results.append(r)
  if not results:
    raise SystemExit(f"error: no results for dataset {dataset!r} in {RESULTS}; run experiments/budget.py first")
  lines = [f"# Quality per compute on {dataset}", "",
           "Written by `python experiments/budget.py --summary=" + dataset + "` from the result files beside it;",
           "each row is one evaluation point (linear probe / kNN on the held-out carve of the train split).", "",
           "Probe: " + PROBE + " unless the row says `200 steps` (the earlier fixed count, which underfits).", "",
           "Machine: the CPU model and flags the result file recorded ('x86_64' in files written before the model",
           "name was recorded); minutes are only comparable on the same machine type.", "",
           "px: the image size the probes and the raw-pixel baseline read (data.image_size); compare a result",
           "with raw pixels at its own size.", "",
           "| result | machine | method | px | step | epochs | train min | img/s | load | probe fit on | linear | kNN "
           "| command |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in results:
    for p in r["points"]:
      lines.append(f"| {r['name']} | {r['machine']} ({r['cpu_flags']}) | {r['method']} | {r['image_size']} | "
                   f"{p['step']} | "
                   f"{p['epochs']} | {p['train_minutes']} | {p['img_per_s']} | {p['load_before']}-{p['load_after']} | "
                   f"{p.get('probe_train_examples', '')} | "
                   f"{p['linear']:.4f}{'' if p.get('probe') else ' (200 steps)'} | "
                   f"{p['knn']:.4f} | `{r['command']}` |")
    for base in ("raw_pixels", "random_init"):
      row = r["baselines"][base]
      lines.append(f"| {r['name']} | | {base} | {r['image_size']} | 0 | 0 | 0 | | | {r['train_examples']} | "
                   f"{row['linear']:.4f}{'' if row.get('probe') or row.get('copied_from') else ' (200 steps)'} | "
                   f"{row['knn']:.4f} | |")
    ax.plot([0] + [p["train_minutes"] for p in r["points"]],
            [r["baselines"]["random_init"]["linear"]] + [p["linear"] for p in r["points"]], "o-", label=r["name"])
  raw_by_size = {r["image_size"]: r["baselines"]["raw_pixels"]["linear"] for r in results}
  for size, style in zip(sorted(raw_by_size), itertools.cycle(("--", "-.", ":"))):
    raw = raw_by_size[size]
    ax.axhline(raw, color="k", ls=style, lw=1, label=f"raw pixels at {size} px ({raw:.3f})")
  for r in results:
    ax.axhline(r["baselines"]["random_init"]["linear"], color="gray", ls=":", lw=0.8)
  ax.set_xlabel("training minutes (2 CPU cores)")
  ax.set_ylabel("linear-probe accuracy (held-out carve)")
  ax.set_title(f"{dataset}: accuracy per training minute (dotted: random init)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(RESULTS, f"{dataset}.png"), dpi=110)
  with open(os.path.join(RESULTS, f"{dataset}.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n\n![accuracy per minute](" + dataset + ".png)\n")
  print("\n".join(lines))


def main(argv):
  del argv
  if FLAGS.summary:
    summary(FLAGS.summary)
    return
  if not (FLAGS.config and FLAGS.name and FLAGS.workdir):
    raise SystemExit("error: pass --config, --name and --workdir (or --summary=DATASET)")
  if FLAGS.rescore:
    rescore(FLAGS.config)
  else:
    run(FLAGS.config)


if __name__ == "__main__":
  app.run(main)
