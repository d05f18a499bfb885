r"""XLA's CPU convolutions against im2col (jepa/models/conv.py), per layer and on whole train steps.

  python experiments/conv_impl.py                          # both tables, writes experiments/results/conv_impl.md
  python experiments/conv_impl.py --sizes=none --preset=imagenette_cpu --steps=xla:48,auto:48 \
      --out=experiments/results/conv_impl_imagenette.md
  python experiments/conv_impl.py --net=impala --batch=288 --config=world_model --preset= --steps=xla,auto \
      --out=experiments/results/conv_impl_world_model.md

Layers: forward + backward of every distinct 3x3 convolution of `--net`: 'resnet', the ResNet-18 of
`configs/lejepa_vit.py:cifar10_cpu` (CIFAR stem, stage widths 16/32/64/256) at the views' training sizes
(`--sizes`), or 'impala', the world model's IMPALA encoder (16/32/32 on 65 x 65 x 2 frames,
jepa/models/world_model.py); batch `--batch` (the LeJEPA step's 2 views x 64, or the world model's 32 windows x
9 frames = 288), float32, jitted; gradients of x and of the kernel, except for a stem on the input pixels (of
the kernel only, as in training); each timed `--repeats` times alternating the two implementations, median
reported.
Steps: the whole train step of `--config`:`--preset` (jepa.train.setup, experiments/timing.py) for each
`model.conv` setting in `--steps` (`conv[:global_size]`, comma separated; the size is LeJEPA's view size), each in
a fresh process one after the other, so compare ratios from one run (the cores may be shared; the load is
printed). `--out` is rewritten: give another path for a second preset.
"""
import argparse
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "experiments"))

from jepa.models import conv  # noqa: E402
import timing  # noqa: E402


def xla_conv(x, kernel, stride, pad):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def layer_shapes(size, widths=(16, 32, 64, 256)):
  """(input map, cin, cout, stride) of each distinct 3x3 conv of a CIFAR-stem ResNet-18 at `size` px."""
  shapes, hw, cin = [(size, 3, widths[0], 1)], size, widths[0]
  for i, w in enumerate(widths):
    if i:
      shapes.append((hw, cin, w, 2))
      hw = (hw - 1) // 2 + 1
    shapes.append((hw, w, w, 1))
    cin = w
  return shapes


def impala_shapes(size=65, widths=(16, 32, 32), in_channels=2):
  """(input map, cin, cout, stride) of each distinct 3x3 conv of the IMPALA encoder (each stage: conv, max-pool
  3 x 3 / 2, residual blocks of the stage's width)."""
  shapes, hw, cin = [], size, in_channels
  for w in widths:
    shapes.append((hw, cin, w, 1))
    hw = (hw - 1) // 2 + 1
    shapes.append((hw, w, w, 1))
    cin = w
  return list(dict.fromkeys(shapes))  # Distinct, in order (stage 3's conv is stage 2's block shape).


def median_ms(fns, args, repeats):
  """{name: median milliseconds of fn(*args)}, compiled first, then timed in turn `repeats` rounds (side by
  side, so a load change hits both)."""
  for fn in fns.values():
    jax.block_until_ready(fn(*args))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - t0)
  return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def layer_table(net, sizes, batch, repeats):
  rows = ["| input size | input map | channels | stride | gradients of | XLA conv ms | im2col ms | im2col speed-up |",
          "|---|---|---|---|---|---|---|---|"]
  for size in sizes:
    for i, (hw, cin, cout, stride) in enumerate(layer_shapes(size) if net == "resnet" else impala_shapes(size)):
      rng = np.random.default_rng(0)
      x = jnp.asarray(rng.normal(size=(batch, hw, hw, cin)), jnp.float32)
      kernel = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) / np.sqrt(9 * cin), jnp.float32)
      argnums = (1,) if i == 0 else (0, 1)  # A stem's input is data: no gradient flows into it.
      grads = {name: jax.jit(jax.grad(lambda x, k, fn=fn: jnp.sum(fn(x, k, stride, 1) ** 2), argnums=argnums))
               for name, fn in (("xla", xla_conv), ("im2col", conv.im2col_conv))}
      ms = median_ms(grads, (x, kernel), repeats)
      rows.append(f"| {size} | {hw} x {hw} | {cin} -> {cout} | {stride} | {'kernel' if i == 0 else 'x, kernel'} | "
                  f"{ms['xla']:.1f} | {ms['im2col']:.1f} | {ms['xla'] / ms['im2col']:.2f}x |")
      print(rows[-1], flush=True)
  return rows


STEP_CODE = """
import sys, tempfile
sys.path.insert(0, {repo!r}); sys.path.insert(0, {exp!r})
import timing
from tests.helpers import load_config
c = load_config({config!r}, {preset!r})
c.model.conv = {impl!r}
if {size}:
  c.lejepa.global_size = {size}
with tempfile.TemporaryDirectory() as d:
  print(timing.step_seconds(c, d, {steps}))
"""


def step_table(config, preset, settings, calibration_steps, examples):
  rows = ["| model.conv | views trained at | s/step | examples/s | load before |", "|---|---|---|---|---|"]
  for setting in settings:
    impl, _, size = setting.partition(":")
    load = os.getloadavg()[0]
    code = STEP_CODE.format(repo=REPO, exp=os.path.join(REPO, "experiments"), config=config, preset=preset,
                            impl=impl, size=int(size or 0), steps=calibration_steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds = float(out.stdout.strip().splitlines()[-1])
    rows.append(f"| {impl} | {size + ' px' if size else 'preset'} | {seconds:.3f} | {examples / seconds:.0f} | "
                f"{load:.1f} |")
    print(rows[-1], flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--net", default="resnet", choices=("resnet", "impala"), help="the layer table's network")
  parser.add_argument("--sizes", default="", help="input sizes of the layer table, comma separated (default: "
                      "24,16 for resnet, 65 for impala; 'none' skips it)")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--steps", default="xla:24,auto:24,xla:16,auto:16,xla:20,auto:20",
                      help="conv:global_size settings of the step table ('none' skips it)")
  parser.add_argument("--config", default="lejepa_vit", help="configs/<config>.py of the step table")
  parser.add_argument("--preset", default="cifar10_cpu", help="the config's preset of the step table")
  parser.add_argument("--calibration_steps", type=int, default=10)
  parser.add_argument("--examples_per_step", type=int, default=128,
                      help="images the step encodes, for its rate (LeJEPA's 64 x 2 views; the world model's 32 x 9)")
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results", "conv_impl.md"))
  args = parser.parse_args()
  cpu, flags = timing.machine()
  sizes = args.sizes or ("24,16" if args.net == "resnet" else "65")
  lines = ["# XLA's CPU convolutions against im2col (experiments/conv_impl.py)", "",
           f"{cpu} ({flags}); jax {jax.__version__}; `python experiments/conv_impl.py --net={args.net} "
           f"--sizes={sizes} --batch={args.batch} --config={args.config} --preset={args.preset} "
           f"--steps={args.steps} --examples_per_step={args.examples_per_step}`", ""]
  if sizes != "none":
    network = ("`cifar10_cpu`'s ResNet-18" if args.net == "resnet" else
               "the world model's IMPALA encoder (configs/world_model.py)")
    lines += [f"Forward + backward of each 3x3 conv of {network}, batch {args.batch}, float32:", ""]
    lines += layer_table(args.net, [int(s) for s in sizes.split(",")], args.batch, args.repeats) + [""]
  if args.steps != "none":
    lines += [f"The whole `{args.config}:{args.preset}` train step ({args.examples_per_step} examples: views or "
              f"frames), median of {args.calibration_steps} steps after compilation:", ""]
    lines += step_table(args.config, args.preset, args.steps.split(","), args.calibration_steps,
                        args.examples_per_step) + [""]
  with open(args.out, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
