r"""How fast a run honours SIGTERM, and whether its console img/s is the computed throughput.

  python experiments/sigterm_latency.py [--config=configs/ijepa_vit.py:cifar10] [--wait=60]

1. Throughput: trains `--log_steps` steps with train.log_every=5 and compares the img/s the console prints (the
   mean of its lines after the first) with completed steps over wall time, both over the same steps: from the
   first logged line to the last, whose outputs the loop waited for.
2. Latency: starts the same config with logging off (train.log_every = num_steps), sends SIGTERM `--wait`
   seconds after the first step (compilation) finished, and prints the seconds from the signal to the exit and
   the steps that ran after the signal (saved step minus steps computed by then, estimated from part 1's step
   time). A preemption notice gives ~30 s, so the exit must come within ~2 steps plus the checkpoint save.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time


def _start(config, workdir, *overrides):
  cmd = [sys.executable, "-u", "-m", "jepa.main", f"--config={config}", f"--workdir={workdir}",
         "--config.eval.probe=False", "--config.eval.pictures=False", "--config.eval.report=False", *overrides]
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)


def throughput(config, steps, batch):
  with tempfile.TemporaryDirectory() as workdir:
    proc = _start(config, workdir, f"--config.train.num_steps={steps}", "--config.train.log_every=5",
                "--config.optim.warmup_steps=1",
                  "--config.train.checkpoint_every=0")
    stamps, rates = [], []
    for line in proc.stdout:
      m = re.match(r"step (\d+)/\d+ .*img/s=([\d.]+)", line)
      if m:
        stamps.append((int(m.group(1)), time.perf_counter()))
        rates.append(float(m.group(2)))
    proc.wait()
  (s0, t0), (s1, t1) = stamps[0], stamps[-1]
  return {"console_img_per_s": sum(rates[1:]) / len(rates[1:]), "measured_img_per_s": batch * (s1 - s0) / (t1 - t0),
          "step_s": (t1 - t0) / (s1 - s0)}


def latency(config, wait, step_s, batch):
  with tempfile.TemporaryDirectory() as workdir:
    proc = _start(config, workdir, "--config.train.num_steps=100000", "--config.train.log_every=100000",
                  "--config.optim.warmup_steps=1",
                  "--config.train.checkpoint_every=0")
    t_first = None
    for line in proc.stdout:
      if line.startswith("first step"):
        t_first = time.perf_counter()
        break
    time.sleep(wait)
    t_sig = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    tail = proc.stdout.read()
    proc.wait()
    t_exit = time.perf_counter()
    m = re.search(r"checkpoint at step (\d+)", tail)
    saved = int(m.group(1)) if m else -1
  computed_at_signal = 1 + (t_sig - t_first) / step_s
  return {"latency_s": t_exit - t_sig, "saved_step": saved,
          "steps_after_signal": saved - computed_at_signal, "exit_status": proc.returncode,
          "img_per_s": batch / step_s}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/ijepa_vit.py:cifar10")
  parser.add_argument("--wait", type=float, default=60.0)
  parser.add_argument("--log_steps", type=int, default=40)
  parser.add_argument("--batch", type=int, default=128, help="the config's global batch (for img/s)")
  args = parser.parse_args()
  print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
  t = throughput(args.config, args.log_steps, args.batch)
  ratio = t["console_img_per_s"] / t["measured_img_per_s"]
  print(f"throughput: console img/s {t['console_img_per_s']:.2f}, completed steps over wall time "
        f"{t['measured_img_per_s']:.2f} img/s (ratio {ratio:.3f}); step {t['step_s']:.3f} s",
        flush=True)
  lat = latency(args.config, args.wait, t["step_s"], args.batch)
  print(f"sigterm: exit {lat['latency_s']:.1f} s after the signal, {lat['steps_after_signal']:.1f} steps after it "
        f"(saved step {lat['saved_step']}, exit status {lat['exit_status']}); load average after: "
        f"{os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
  main()
