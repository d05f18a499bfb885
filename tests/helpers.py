"""Shared test helpers: tiny configs and fresh processes with simulated devices."""
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name, arg="tiny"):
  """configs/<name>.py's get_config(arg), as config_flags would load it."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def run_in_fresh_process(code, *, devices=1, timeout=600):
  """Runs `code` in a new Python with `devices` simulated CPU devices; returns the JSON it prints last."""
  return start_in_fresh_process(code, devices=devices).result(timeout)


class FreshProcess:
  """A started `python -c code`; `result()` waits for it and returns the JSON it printed last."""

  def __init__(self, code, env):
    # Files rather than pipes: a child that fills a pipe nobody reads yet would stall until its turn comes.
    self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    self.proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=self._out,
                                 stderr=self._err, text=True)

  def result(self, timeout=600):
    try:
      self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      raise
    self._out.seek(0)
    self._err.seek(0)
    if self.proc.returncode != 0:
      raise AssertionError(f"subprocess failed ({self.proc.returncode}):\n{self._err.read()[-4000:]}")
    return json.loads(self._out.read().strip().splitlines()[-1])

  def kill(self):
    """Stops the process if it still runs (e.g. when the tests that wanted its result were not run)."""
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()


# The suite compiles hundreds of tiny programs, whose cost is mostly LLVM's backend optimisation: at level 0 the
# suite runs ~20% faster (tests/test_vjepa.py: 83 s of CPU instead of 103). The HLO, and so every graph-level
# choice under test (fusion, sharding, donation), is the same; only the machine code is less optimised.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def start_in_fresh_process(code, *, devices=1):
  """Starts `code` in a new Python with `devices` simulated CPU devices, without waiting (see FreshProcess).

  Compilation is mostly single-threaded, so tests that need several fresh processes start them together.
  """
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return FreshProcess(code, env)
