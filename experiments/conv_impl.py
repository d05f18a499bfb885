r"""XLA's CPU convolutions against im2col (jepa/models/conv.py), per layer and on whole LeJEPA steps.

  python experiments/conv_impl.py                          # both tables, writes experiments/results/conv_impl.md
  python experiments/conv_impl.py --sizes=none --preset=imagenette_cpu --steps=xla:48,auto:48 \
      --out=experiments/results/conv_impl_imagenette.md

Layers: forward + backward (gradients of x and of the kernel) of every distinct 3x3 convolution of the ResNet-18
in `configs/lejepa_vit.py:cifar10_cpu` (CIFAR stem, stage widths 16/32/64/256), at the views' training sizes
(`--sizes`), batch `--batch` (the step's 2 views x 64), float32, jitted; each timed `--repeats` times
alternating the two implementations, median reported.
Steps: the whole train step of `--preset` (jepa.train.setup, experiments/timing.py) for each `model.conv` setting
and view size in `--steps` (`conv:global_size`, comma separated), each in a fresh process one after the other, so
compare ratios from one run (the cores may be shared; the load is printed). `--out` is rewritten: give another
path for a second preset.
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
  shapes, hw, cin = [], size, widths[0]
  for i, w in enumerate(widths):
    if i:
      shapes.append((hw, cin, w, 2))
      hw = (hw - 1) // 2 + 1
    shapes.append((hw, w, w, 1))
    cin = w
  return shapes


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


def layer_table(sizes, batch, repeats):
  rows = ["| view size | input map | channels | stride | XLA conv ms | im2col ms | im2col speed-up |",
          "|---|---|---|---|---|---|---|"]
  for size in sizes:
    for hw, cin, cout, stride in layer_shapes(size):
      rng = np.random.default_rng(0)
      x = jnp.asarray(rng.normal(size=(batch, hw, hw, cin)), jnp.float32)
      kernel = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) / np.sqrt(9 * cin), jnp.float32)
      grads = {name: jax.jit(jax.grad(lambda x, k, fn=fn: jnp.sum(fn(x, k, stride, 1) ** 2), argnums=(0, 1)))
               for name, fn in (("xla", xla_conv), ("im2col", conv.im2col_conv))}
      ms = median_ms(grads, (x, kernel), repeats)
      rows.append(f"| {size} | {hw} x {hw} | {cin} -> {cout} | {stride} | {ms['xla']:.1f} | {ms['im2col']:.1f} | "
                  f"{ms['xla'] / ms['im2col']:.2f}x |")
      print(rows[-1], flush=True)
  return rows


STEP_CODE = """
import sys, tempfile
sys.path.insert(0, {repo!r}); sys.path.insert(0, {exp!r})
import timing
from tests.helpers import load_config
c = load_config("lejepa_vit", {preset!r})
c.model.conv = {impl!r}
c.lejepa.global_size = {size}
with tempfile.TemporaryDirectory() as d:
  print(timing.step_seconds(c, d, {steps}))
"""


def step_table(preset, settings, calibration_steps):
  rows = ["| model.conv | views trained at | s/step | img/s | load before |", "|---|---|---|---|---|"]
  for setting in settings:
    impl, size = setting.split(":")
    load = os.getloadavg()[0]
    code = STEP_CODE.format(repo=REPO, exp=os.path.join(REPO, "experiments"), preset=preset, impl=impl,
                            size=int(size), steps=calibration_steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds = float(out.stdout.strip().splitlines()[-1])
    rows.append(f"| {impl} | {size} px | {seconds:.3f} | {128 / seconds:.0f} | {load:.1f} |")
    print(rows[-1], flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="24,16", help="view sizes of the layer table ('none' skips it)")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--steps", default="xla:24,auto:24,xla:16,auto:16,xla:20,auto:20",
                      help="conv:global_size settings of the step table ('none' skips it)")
  parser.add_argument("--preset", default="cifar10_cpu", help="configs/lejepa_vit.py preset of the step table")
  parser.add_argument("--calibration_steps", type=int, default=10)
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results", "conv_impl.md"))
  args = parser.parse_args()
  cpu, flags = timing.machine()
  lines = ["# XLA's CPU convolutions against im2col (experiments/conv_impl.py)", "",
           f"{cpu} ({flags}); jax {jax.__version__}; `python experiments/conv_impl.py "
           f"--sizes={args.sizes} --batch={args.batch} --preset={args.preset} --steps={args.steps}`", ""]
  if args.sizes != "none":
    lines += ["Forward + backward of each 3x3 conv of `cifar10_cpu`'s ResNet-18, batch "
              f"{args.batch}, float32:", ""]
    lines += layer_table([int(s) for s in args.sizes.split(",")], args.batch, args.repeats) + [""]
  if args.steps != "none":
    lines += [f"The whole `{args.preset}` train step (batch 64 x 2 views), median of "
              f"{args.calibration_steps} steps after compilation:", ""]
    lines += step_table(args.preset, args.steps.split(","), args.calibration_steps) + [""]
  with open(args.out, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
