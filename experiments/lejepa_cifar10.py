r"""LeJEPA on CIFAR-10 at a fixed CPU budget: linear probe of the trained vs a random-init encoder vs raw pixels.

  python experiments/lejepa_cifar10.py                     # writes experiments/results/lejepa_cifar10.{md,json}

Data: ../shared/data/cifar10/train.npz (50,000 train images; packed JPEG). The probe's evaluation split is the
data layer's fixed 10% carve-out of train (`data.eval_fraction`), which training never sees.

Model and objective: configs/lejepa_vit.py:cifar10_resnet18 (ResNet-18 with the CIFAR stem, 2 views at 32 px,
projector 2048-2048 -> 128, lam 0.05, 1024 slices, AdamW 5e-4 / wd 5e-4, warmup + cosine to lr/1000), scaled
to a CPU: ResNet width `--width` (16 instead of 64: 1/16 of the FLOPs), batch `--batch`, and `--steps` updates
(chosen so that training takes about 10 minutes on 2 CPU cores), with 10% of them warmup.

Probe (jepa.evaluation.linear_probe: standardised features, L2-regularised softmax regression by L-BFGS, the L2
strength picked on a hold-out of the probe's training features) on `--probe_train` training images and the
5,000 carved-out images, for three feature sets:
  trained       the pooled ResNet embedding (pre-projector) after training;
  random_init   the same network at a random initialisation (seed + 1), BatchNorm in eval mode;
  raw_pixels    the flattened normalised 32x32x3 pixels (3,072 features).
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time

import jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jepa import train  # noqa: E402
import baselines  # noqa: E402  (experiments/baselines.py)
from jepa.data import sources  # noqa: E402
from jepa.evaluation import linear_probe  # noqa: E402
from tests.helpers import load_config  # noqa: E402

RESULTS = os.path.join(REPO, "experiments", "results")


def build_config(args):
  c = load_config("lejepa_vit", "cifar10_resnet18")
  c.data.path = os.path.join(REPO, "..", "shared", "data", "cifar10", "train.npz")
  c.data.num_threads = 2
  c.lejepa.resnet_width = args.width
  c.train.update(batch_size=args.batch, num_steps=args.steps, log_every=max(1, args.steps // 20),
                 checkpoint_every=0)
  c.optim.warmup_steps = max(1, args.steps // 10)
  c.eval.update(batch_size=500, max_train_examples=args.probe_train, max_eval_examples=5000)
  c.seed = args.seed
  return c


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=800)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--width", type=int, default=16)
  parser.add_argument("--probe_train", type=int, default=10000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="/tmp/lejepa_cifar10",
                      help="run directory; rerunning with the same one skips the finished training")
  args = parser.parse_args()
  command = "python " + " ".join(["experiments/lejepa_cifar10.py"] + sys.argv[1:])

  c = build_config(args)
  c.eval.probe = False  # Probed below, so that training and probing are timed apart.
  workdir = args.workdir
  timing_path = os.path.join(workdir, "train_timing.json")
  run_def = train.setup(c, workdir)
  t0, c0 = time.perf_counter(), time.process_time()
  state, run = train.fit(run_def)
  if os.path.exists(timing_path):  # Resumed after the training had finished: keep the first measurement.
    with open(timing_path, encoding="utf-8") as f:
      timing = json.load(f)
  else:
    timing = {"train_wall_s": time.perf_counter() - t0, "train_cpu_s": time.process_time() - c0,
              "compile_s": run["compile_time_s"]}
    with open(timing_path, "w", encoding="utf-8") as f:
      json.dump(timing, f)
  train_wall, train_cpu = timing["train_wall_s"], timing["train_cpu_s"]
  print(f"training: {train_wall:.0f} s wall, {train_cpu:.0f} s CPU; probing", flush=True)

  t0 = time.perf_counter()
  probe = train.evaluate(run_def, state, random_baseline=True)
  probe = dict(probe.get("linear", probe))  # {probe kind: {'trained': .., 'random_init': ..}}
  print(f"probes of the network: {probe}; raw pixels next", flush=True)
  eval_source = sources.get_source(c.data, "eval")
  xt, yt = baselines.raw_pixels(run_def.method, run_def.train_source, c.eval.max_train_examples)
  xe, ye = baselines.raw_pixels(run_def.method, eval_source, c.eval.max_eval_examples)
  probe["raw_pixels"] = linear_probe.linear_probe(xt, yt, xe, ye, run_def.train_source.num_classes)["accuracy"]
  probe_wall = time.perf_counter() - t0

  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    last = [json.loads(line) for line in f][-1]
  final = {k: last[k] for k in ("loss", "invariance", "sigreg", "rankme", "embedding_std") if k in last}
  result = {
      "command": command, "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (timings noisy)",
      "jax": jax.__version__, "steps": run["step"], "batch_size": args.batch, "resnet_width": args.width,
      "epochs": run["step"] * args.batch / len(run_def.train_source),
      "train_wall_s": train_wall, "train_cpu_s": train_cpu, "compile_s": timing["compile_s"],
      "probe_wall_s": probe_wall, "probe_train_examples": len(yt), "probe_eval_examples": len(ye),
      "final_metrics": final, "linear_probe": probe,
      "config": json.loads(c.to_json_best_effort()),
  }
  print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2), flush=True)
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, "lejepa_cifar10.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  lines = [
      "# LeJEPA on CIFAR-10 at a fixed CPU budget",
      "",
      f"Command: `{command}` ({result['date']}; jax {result['jax']}; {result['machine']}).",
      "",
      f"ResNet-18 (CIFAR stem, width {args.width}) + projector 2048-2048 -> 128, 2 views at 32 px, lam 0.05, "
      f"1024 slices; {run['step']} steps at batch {args.batch} ({result['epochs']:.2f} epochs of the 45,000 "
      "training images).",
      f"Training took {train_wall / 60:.1f} min wall ({train_cpu / 60:.1f} min CPU, compilation "
      f"{timing['compile_s']:.0f} s); the three probes {probe_wall / 60:.1f} min.",
      "",
      f"Linear probe (top-1 on the {len(ye)} carved-out validation images; probe fitted on {len(yt)} training "
      "images):",
      "",
      "| features | accuracy |",
      "|---|---|",
      f"| LeJEPA trained (backbone embedding, pre-projector) | {probe['trained']:.4f} |",
      f"| same network, random init | {probe['random_init']:.4f} |",
      f"| raw pixels (3,072 normalised values) | {probe['raw_pixels']:.4f} |",
      "",
      "Final training metrics (mean of the last log window): "
      + ", ".join(f"{k} {v:.4g}" for k, v in final.items()) + ".",
      "",
      "For orientation: the published 300-epoch ResNet-18 (width 64) numbers are 91-92.5% (EB-JEPA, LeJEPA); this",
      "run is a short CPU budget, so only the ordering of the three rows is meaningful. The machine was shared",
      "with other jobs, so the times are noisy.",
      "",
  ]
  with open(os.path.join(RESULTS, "lejepa_cifar10.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines))


if __name__ == "__main__":
  main()
