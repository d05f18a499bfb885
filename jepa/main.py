r"""Entry point: python -m jepa.main --config=configs/ijepa_vit.py[:preset] --workdir=DIR [--config.x.y=value].

Running again with the same --workdir resumes from the latest checkpoint there. A bad config, override or
input ends the run with one line naming the key or file and the fix (exit status 2; see jepa/cli.py).
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from jepa import cli
from jepa.errors import JepaError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/, optionally ':preset'.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results (resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  cli.start(argv)
  from jepa import train  # pylint: disable=import-outside-toplevel  (keeps --help fast)
  config = cli.loaded_config(FLAGS.config)
  try:
    train.run(config, FLAGS.workdir)
  except JepaError as e:
    cli.fail(str(e))


def entry():
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
  entry()
