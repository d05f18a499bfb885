r"""Entry point: python -m jepa.main --config=configs/ijepa_vit.py[:preset] --workdir=DIR [--config.x.y=value].

Running again with the same --workdir resumes from the latest checkpoint there. A bad config, override or
input ends the run with one line naming the key or file and the fix (exit status 2).
"""
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jepa.errors import JepaError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/, optionally ':preset'.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results (resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def parse_flags(argv):
  """absl's flag parsing, with every failure reported on one line (exit status 2)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):  # A config file raised: keep its own message.
      lines = [lines[0].split(":")[0] + ":", lines[-1]]
    _fail(" ".join(lines))
  except (AttributeError, KeyError) as e:  # ml_collections: an override names a key the config lacks.
    missing = str(e).strip("'\"")
    culprit = next((a.split("=")[0] for a in argv[1:]
                    if a.startswith("--config.") and re.search(rf"\.{re.escape(missing)}\b", a.split("=")[0])),
                   f"a --config.* override ({missing!r})")
    _fail(f"{culprit} names a config key that does not exist; check its spelling against the config file")
  except (TypeError, ValueError) as e:
    _fail(f"bad --config override: {str(e).splitlines()[0]}")
  return argv


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # Keep library INFO logs (orbax, XLA) off the console.
  from jepa import train  # pylint: disable=import-outside-toplevel  (keeps --help fast)
  try:
    config = FLAGS.config
    config.get("method")  # ml_collections reports a config file that failed to load only on first use.
  except OSError as e:
    _fail(f"--config could not be loaded: {str(e).strip().splitlines()[-1].strip()}")
  try:
    train.run(config, FLAGS.workdir)
  except JepaError as e:
    _fail(str(e))


def entry():
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  entry()
