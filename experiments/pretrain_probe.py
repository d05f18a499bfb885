r"""Pretrain with a config, then linear-probe the trained encoder, a random-init one and raw pixels.

  python experiments/pretrain_probe.py --config=configs/ijepa_vit.py:cifar10 --name=ijepa_cifar10 \
      --workdir=/tmp/ijepa_cifar10

Writes experiments/results/<name>.json and .md (accuracies, wall time, the exact command, the machine).
The held-out split is the config's eval split (for ../shared/data, a fixed carve-out of train).
"""
import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from jepa import train
import baselines  # experiments/baselines.py
from jepa.data import sources
from jepa.evaluation import linear_probe

config_flags.DEFINE_config_file("config", None, "Config to pretrain.", lock_config=True)
flags.DEFINE_string("name", None, "Result name (experiments/results/<name>.{json,md}).")
flags.DEFINE_string("workdir", None, "Run directory (resumed if it exists).")
FLAGS = flags.FLAGS
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main(argv):
  del argv
  config = FLAGS.config
  t0 = time.time()
  run = train.setup(config, FLAGS.workdir)
  _, results = train.fit(run)
  train_minutes = (time.time() - t0) / 60
  cfg = config.eval
  xt, yt = baselines.raw_pixels(run.method, run.train_source, cfg.max_train_examples)
  xe, ye = baselines.raw_pixels(run.method, sources.get_source(config.data, "eval"),
                                  cfg.max_eval_examples)
  raw = linear_probe.linear_probe(xt, yt, xe, ye, run.train_source.num_classes)["accuracy"]
  out = {
      "name": FLAGS.name, "command": " ".join(["python"] + sys.argv),
      "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
      "steps": results["step"], "global_batch": config.train.batch_size,
      "wall_minutes_including_probes": round((time.time() - t0) / 60, 1),
      "train_minutes": round(train_minutes, 1),
      "probe_trained": results["linear_probe"]["trained"],
      "probe_random_init": results["linear_probe"].get("random_init"), "probe_raw_pixels": raw,
      "train_examples_probed": int(len(yt)), "eval_examples": int(len(ye)),
  }
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, f"{FLAGS.name}.json"), "w", encoding="utf-8") as f:
    json.dump(out, f, indent=2)
  with open(os.path.join(RESULTS, f"{FLAGS.name}.md"), "w", encoding="utf-8") as f:
    f.write(f"# {FLAGS.name}\n\nCommand:\n\n```\n{out['command']}\n```\n\n")
    f.write(f"Machine: {out['machine']} (at the end of the run).\n\n")
    f.write(f"{out['steps']} steps of global batch {out['global_batch']}; {out['train_minutes']} min including "
            f"the trained and random-init probes; held-out split of {out['eval_examples']} images.\n\n")
    f.write("| features | linear-probe top-1 |\n|---|---|\n")
    f.write(f"| trained encoder | {out['probe_trained']:.4f} |\n")
    if out["probe_random_init"] is not None:
      f.write(f"| random-init encoder | {out['probe_random_init']:.4f} |\n")
    f.write(f"| raw pixels | {raw:.4f} |\n")
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "name", "workdir"])
  app.run(main)
