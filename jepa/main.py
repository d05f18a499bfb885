r"""Entry point: python -m jepa.main --config=configs/ijepa_vit.py[:preset] --workdir=DIR [--config.x.y=value].

Running again with the same --workdir resumes from the latest checkpoint there. A bad config, override or
input ends the run with one line naming the key or file and the fix (exit status 2; see jepa/cli.py); Ctrl-C
before the training loop runs ends it with one line too (exit status 130; in the loop it saves a checkpoint).
"""
import os
import sys

from absl import flags
from ml_collections import config_flags

from jepa import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/, optionally ':preset'.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results (resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def _new_folders(workdir):
  """The workdir and its checkpoints/ folder where they do not exist yet (removed again, if still empty, when
  the run is interrupted before it saved anything)."""
  if "://" in workdir:
    return []
  path = os.path.abspath(os.path.expanduser(workdir))
  return [p for p in (path, os.path.join(path, "checkpoints")) if not os.path.exists(p)]


def main(argv):
  cli.start(argv)
  workdir = FLAGS.workdir
  with cli.boundary(workdir, resumable=True, cleanup=_new_folders(workdir)):
    config = cli.loaded_config(FLAGS.config)
    if config is None:
      cli.fail(f"--config={cli.flag_value(sys.argv, 'config')}: get_config() returned None; make it return the "
               "config (an ml_collections.ConfigDict)")
    from jepa import config as config_lib  # pylint: disable=import-outside-toplevel  (keeps --help fast)
    config_lib.check_training(config)
    cli.check_workdir(workdir)  # Before anything compiles: a read-only or unusable workdir fails on one line.
    # Said at once: importing JAX, building the model and compiling the step take 10-30 s on a CPU.
    print(f"jepa: {config.method} on {config.data.source} data, {config.train.num_steps} steps of "
          f"{config.train.batch_size} in {workdir}; building the model and compiling the step ...", flush=True)
    if str(cli.flag_value(sys.argv, "config") or "").endswith(":tiny"):
      print("note: the tiny preset is for tests (a toy model for a few steps); its probes say nothing about "
            "learning: use the default preset or a dataset preset to judge a method", flush=True)
    from jepa import train  # pylint: disable=import-outside-toplevel
    train.train_and_evaluate(config, workdir)


def entry():
  cli.run(main)


if __name__ == "__main__":
  entry()
