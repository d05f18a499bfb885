"""tpu/*.sh with --dry-run: the gcloud commands they would run, parsed back into argument lists.

A `gcloud` stub that fails is put first on PATH, so a script that ran a command instead of printing it fails
the test (and never reaches the real gcloud).
"""
import os
import shlex
import stat
import subprocess

import pytest

from tests.helpers import REPO

TPU = os.path.join(REPO, "tpu")
LOCATION = ["--name=jepa-test", "--zone=europe-west4-a", "--project=my-proj"]


@pytest.fixture(name="env")
def _env(tmp_path):
  stub = tmp_path / "bin" / "gcloud"
  stub.parent.mkdir()
  stub.write_text("#!/bin/sh\necho 'the real gcloud must not run under --dry-run' >&2\nexit 99\n")
  stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
  env = {k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "ZONE", "PROJECT", "ACCELERATOR")}
  env["PATH"] = f"{stub.parent}{os.pathsep}{env['PATH']}"
  env["TMPDIR"] = str(tmp_path)
  return env


def _dry_run(env, script, *args):
  """The printed commands of `tpu/<script> --dry-run args`, each split as a shell would."""
  proc = subprocess.run(["bash", os.path.join(TPU, script), "--dry-run", *args], env=env, capture_output=True,
                        text=True, timeout=60, check=False)
  assert proc.returncode == 0, proc.stderr
  return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def _remote(cmd):
  """The --command=... of a `gcloud ... ssh` argument list."""
  (command,) = [a[len("--command="):] for a in cmd if a.startswith("--command=")]
  return command


def test_create(env):
  (cmd,) = _dry_run(env, "create.sh", *LOCATION, "--accelerator=v4-32", "--spot")
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "jepa-test"]
  assert {"--zone=europe-west4-a", "--project=my-proj", "--accelerator-type=v4-32",
          "--version=tpu-ubuntu2204-base", "--spot"} == set(cmd[6:])


@pytest.mark.parametrize("accelerator,runtime", [("v5litepod-16", "v2-alpha-tpuv5-lite"),
                                                 ("v5p-32", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")])
def test_create_picks_the_runtime_of_the_generation(env, accelerator, runtime):
  (cmd,) = _dry_run(env, "create.sh", *LOCATION, f"--accelerator={accelerator}")
  assert f"--version={runtime}" in cmd and "--spot" not in cmd


def test_setup_installs_on_every_worker(env):
  archive, scp, ssh = _dry_run(env, "setup.sh", *LOCATION)
  assert archive[:3] == ["git", "-C", REPO] and archive[3] == "archive" and archive[-1] == "HEAD"
  tarball = next(a.split("=", 1)[1] for a in archive if a.startswith("--output="))
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert scp[5] == tarball and scp[6] == "jepa-test:~/jepa.tar.gz" and "--worker=all" in scp
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jepa-test"] and "--worker=all" in ssh
  assert {"--zone=europe-west4-a", "--project=my-proj"} <= set(ssh)
  remote = _remote(ssh)
  assert "tar -xzf ~/jepa.tar.gz" in remote and "--python 3.11" in remote
  assert "-e ~/jepa 'jax[tpu]>=0.10.2'" in remote


def test_launch_runs_the_same_command_on_every_worker(env):
  (cmd,) = _dry_run(env, "launch.sh", *LOCATION, "--", "--config=configs/ijepa_vit.py:in1k_vith14",
                    "--workdir=gs://bucket/ijepa run", "--config.train.batch_size=4096")
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jepa-test"] and "--worker=all" in cmd
  remote = shlex.split(_remote(cmd).split("&&", 1)[1].split(">", 1)[0])
  assert remote == ["nohup", "~/jepa-venv/bin/python", "-m", "jepa.main",
                    "--config=configs/ijepa_vit.py:in1k_vith14", "--workdir=gs://bucket/ijepa run",
                    "--config.train.batch_size=4096", "--config.distributed.initialize=True"]
  assert _remote(cmd).startswith("cd ~/jepa && ") and "> ~/jepa-train.log 2>&1 < /dev/null &" in _remote(cmd)


def test_logs_stop_delete(env):
  (logs,) = _dry_run(env, "logs.sh", *LOCATION)
  assert "--worker=0" in logs and _remote(logs) == "tail -n 100 -F ~/jepa-train.log"
  (logs_all,) = _dry_run(env, "logs.sh", *LOCATION, "--worker=all", "--lines=20")
  assert "--worker=all" in logs_all and "tail -n 20 ~/jepa-train.log" in _remote(logs_all)
  (stop,) = _dry_run(env, "stop.sh", *LOCATION)
  assert "--worker=all" in stop and "kill -TERM $(cat ~/jepa-train.pid)" in _remote(stop)
  (delete,) = _dry_run(env, "delete.sh", *LOCATION)
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "jepa-test", "--zone=europe-west4-a",
                    "--project=my-proj", "--quiet"]


@pytest.mark.parametrize("script,args,message", [
    ("launch.sh", ["--", "--workdir=gs://b/r"], "no --config="),
    ("launch.sh", ["--", "--config=configs/ijepa_vit.py"], "no --workdir="),
    ("launch.sh", ["--config=configs/ijepa_vit.py"], "put jepa.main's flags after --"),
    ("create.sh", ["--acelerator=v4-8"], "unknown option --acelerator=v4-8"),
    ("logs.sh", ["--worker=two"], "--worker=two"),
])
def test_bad_options_fail_with_one_line(env, script, args, message):
  proc = subprocess.run(["bash", os.path.join(TPU, script), "--dry-run", *args], env=env, capture_output=True,
                        text=True, timeout=60, check=False)
  assert proc.returncode == 2 and proc.stdout == ""
  assert proc.stderr.count("\n") == 1 and message in proc.stderr
