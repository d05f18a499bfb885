r"""Share of a LeJEPA training step's time spent in SIGReg.

  python experiments/sigreg_share.py                       # both setups below, writes experiments/results/
  python experiments/sigreg_share.py --setups=digits --repeats=3

For each setup, two jitted train steps are built by the real loop (`jepa.train.setup`) from the same config:
  with     the LeJEPA step as trained: L = (1 - lam) inv + lam SIGReg (forward and backward of both terms);
  without  the same step with the SIGReg term removed: L = (1 - lam) inv (same model, views, optimiser).
Both are compiled first, then timed side by side in one process, alternating with / without, `repeats` rounds of
`steps` steps each (block_until_ready after every round). The share is (t_with - t_without) / t_with from the
per-round medians; the min-based share is reported too, because on a shared machine the minimum is the least
disturbed estimate. A third number times SIGReg alone (value and gradient w.r.t. z of the same shape), which
does not depend on how XLA overlaps it with the rest of the step.

Setups:
  digits  configs/lejepa_vit.py default (ViT 96 x 4 at 16 px, 2 global + 4 local views, 256 slices, batch 64)
  cifar       configs/lejepa_vit.py:cifar10_resnet18 views / loss / projector with a width-16 ResNet-18 and
              batch 64 (the CPU-sized model of experiments/lejepa_cifar10.py), 1024 slices
  cifar_full  the same with the preset's full-width (64) ResNet-18, batch 64
Results of setups not measured in a run are kept from the previous results file.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jepa import losses  # noqa: E402
from jepa import parallel  # noqa: E402
from jepa import train  # noqa: E402
from jepa import train_state  # noqa: E402
from tests.helpers import load_config  # noqa: E402

RESULTS = os.path.join(REPO, "experiments", "results")


def setup_config(name):
  if name == "digits":
    return load_config("lejepa_vit", "")
  if name in ("cifar", "cifar_full"):
    c = load_config("lejepa_vit", "cifar10_resnet18")
    c.lejepa.update(resnet_width=16 if name == "cifar" else 64)
    c.train.batch_size = 64
    c.data.num_threads = 2
    return c
  raise ValueError(f"unknown setup {name!r}; use digits, cifar or cifar_full")


def without_sigreg(method):
  """Replaces method.loss by the invariance term alone (the rest of the step unchanged)."""
  cfg = method.config.lejepa

  def loss(model, target, batch, rng):
    del target, rng
    z, _ = method.project(model, batch)
    inv = losses.lejepa_invariance(z, cfg.num_global)
    weight = (1.0 - cfg.lam) if cfg.form == "convex" else 1.0
    return weight * inv, {"invariance": inv}

  method.loss = loss


def time_steps(run, state, batch, steps):
  t0 = time.perf_counter()
  for _ in range(steps):
    state, _ = run.train_step(state, batch)
  jax.block_until_ready(state)
  return state, (time.perf_counter() - t0) / steps


def measure(name, repeats, steps, workdir):
  c = setup_config(name)
  c.eval.probe = False
  trainers = {"with": train.setup(c, os.path.join(workdir, name, "with"), verbose=False),
              "without": train.setup(c, os.path.join(workdir, name, "without"), verbose=False)}
  without_sigreg(trainers["without"].method)
  t = trainers["with"]
  it = train_state.train_iterator(t.config, t.method, t.train_source)
  batch = parallel.global_batch(next(it), parallel.batch_sharding(t.mesh))  # One fixed batch: time the step.
  states = {k: tr.state_def.init(c.seed) for k, tr in trainers.items()}
  for k, tr in trainers.items():  # Compile and warm up.
    states[k], _ = time_steps(tr, states[k], batch, 2)
  times = {k: [] for k in trainers}
  for _ in range(repeats):
    for k, tr in trainers.items():
      states[k], dt = time_steps(tr, states[k], batch, steps)
      times[k].append(dt)

  # SIGReg alone: value and gradient w.r.t. z [V, B, K] of the shape the step uses.
  cfg = c.lejepa
  v = cfg.num_global + cfg.num_local
  z = jax.random.normal(jax.random.key(0), (v, c.train.batch_size, cfg.proj_dim))
  sig = jax.jit(jax.value_and_grad(lambda z, k: losses.sigreg(
      z, key=k, num_slices=cfg.num_slices, quadrature=cfg.quadrature, num_knots=cfg.num_knots)))
  jax.block_until_ready(sig(z, jax.random.key(1)))
  alone = []
  for r in range(repeats):
    t0 = time.perf_counter()
    for i in range(steps):
      out = sig(z, jax.random.key(r * steps + i))
    jax.block_until_ready(out)
    alone.append((time.perf_counter() - t0) / steps)

  med = {k: statistics.median(x) for k, x in times.items()}
  mins = {k: min(x) for k, x in times.items()}
  return {
      "setup": name, "batch_size": c.train.batch_size, "views": v, "num_slices": cfg.num_slices,
      "proj_dim": cfg.proj_dim, "backbone": cfg.backbone, "repeats": repeats, "steps_per_repeat": steps,
      "step_with_s": times["with"], "step_without_s": times["without"],
      "median_with_s": med["with"], "median_without_s": med["without"],
      "share_median": (med["with"] - med["without"]) / med["with"],
      "share_min": (mins["with"] - mins["without"]) / mins["with"],
      "sigreg_alone_median_s": statistics.median(alone),
      "share_alone": statistics.median(alone) / med["with"],
      "load_average_1min": os.getloadavg()[0],  # Other jobs on the machine when the measurement ended.
  }


def write(results, command):
  os.makedirs(RESULTS, exist_ok=True)
  path = os.path.join(RESULTS, "sigreg_share.json")
  if os.path.exists(path):  # Keep the setups this run did not measure, with the command that measured them.
    with open(path, encoding="utf-8") as f:
      previous = json.load(f)
    measured = {r["setup"] for r in results}
    kept = [dict(r, command=r.get("command", previous.get("command"))) for r in previous.get("results", [])
            if r["setup"] not in measured]
    results = kept + [dict(r, command=command) for r in results]
  meta = {"command": command, "date": datetime.datetime.now().isoformat(timespec="seconds"),
          "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs: noisy)",
          "jax": jax.__version__, "devices": [str(d) for d in jax.devices()], "results": results}
  with open(path, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2)
  lines = [
      "# Share of a LeJEPA step spent in SIGReg",
      "",
      f"Measured with jax {meta['jax']} on {meta['machine']}; commands:",
      "",
      *sorted({f"- `{r['command']}`" for r in results}),
      "",
      "Jitted train steps of the real loop with and without the SIGReg term, alternated in one process; the share",
      "is (with - without) / with. 'alone' times SIGReg's value and gradient on z of the same shape by itself.",
      "",
      "| setup | backbone | batch x views | slices | step with (ms) | step without (ms) | share (median) | "
      "share (min) | SIGReg alone (ms) | alone / step | load avg |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results:
    lines.append(
        f"| {r['setup']} | {r['backbone']} | {r['batch_size']} x {r['views']} | {r['num_slices']} | "
        f"{1e3 * r['median_with_s']:.1f} | {1e3 * r['median_without_s']:.1f} | {100 * r['share_median']:.1f}% | "
        f"{100 * r['share_min']:.1f}% | {1e3 * r['sigreg_alone_median_s']:.2f} | {100 * r['share_alone']:.1f}% | "
        f"{r.get('load_average_1min', float('nan')):.1f} |")
  lines += [
      "",
      "SIGReg costs O(N V M knots) cos/sin evaluations whatever the backbone (here N V M x 17 knots), so its share",
      "falls as the backbone grows; the CPU-sized models of the digits default and of the CIFAR-10 experiment are",
      "where it is largest. Per-round step times (s) are in sigreg_share.json. The machine was shared with other",
      "jobs (load average in the last column, 2 cores), so single rounds are noisy; the table reports medians and",
      "minima over rounds, and 'alone / step' is the least sensitive to how XLA overlaps work within a step.",
      ""]
  with open(os.path.join(RESULTS, "sigreg_share.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--setups", default="digits,cifar")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--workdir", default="/tmp/sigreg_share")
  args = parser.parse_args()
  results = []
  for name in args.setups.split(","):
    r = measure(name, args.repeats, args.steps, args.workdir)
    print(json.dumps({k: v for k, v in r.items() if not isinstance(v, list)}), flush=True)
    results.append(r)
  write(results, "python " + " ".join(["experiments/sigreg_share.py"] + sys.argv[1:]))


if __name__ == "__main__":
  main()
