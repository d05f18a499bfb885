r"""Entry point: python -m jepa.main --config=configs/ijepa_vit.py[:preset] --workdir=DIR [--config.x.y=value].

Running again with the same --workdir resumes from the latest checkpoint there. A bad config or input ends
the run with one line naming the key or file and the fix (exit status 2).
"""
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from jepa.errors import JepaError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/, optionally ':preset'.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results (resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from jepa import train  # pylint: disable=import-outside-toplevel  (keeps --help fast)
  try:
    train.run(FLAGS.config, FLAGS.workdir)
  except JepaError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def entry():
  try:
    app.run(main)
  except flags.Error as e:  # Raised by config overrides that name unknown keys or give wrong types.
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
  entry()
