"""Command-line plumbing shared by `python -m jepa.convert` and `python -m jepa.evaluate`.

Every failure a user can cause (a bad flag, a config override naming no key, a JepaError) ends the command
with one line on stderr, `error: ...`, and exit status 2, as `jepa.main` does.
"""
import re
import sys

from absl import flags
from absl import logging


def fail(message):
  """Prints `error: message` on one line and exits with status 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def start(argv):
  """The common start of a jepa command: no positional arguments, and library INFO logs (orbax, XLA) kept off
  the console."""
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)


def loaded_config(config):
  """`config` (a --config flag's value, or None), or one line saying why its file failed to load.

  ml_collections reports a config file that failed to load only on first use, so it is used here once.
  """
  try:
    if config is not None:
      config.get("method")
  except OSError as e:
    fail(f"--config could not be loaded: {str(e).strip().splitlines()[-1].strip()}")
  return config


def parse_flags(argv):
  """absl's flag parsing (ml_collections config flags included), with every failure reported on one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):  # A config file raised: keep its own message.
      lines = [lines[0].split(":")[0] + ":", lines[-1]]
    fail(" ".join(lines))
  except (AttributeError, KeyError) as e:  # ml_collections: an override names a key the config lacks.
    # The message is "'key'" or "'key'\nDid you mean \"other\" instead of \"key\"?" (KeyError), or a sentence.
    detail = e
    while isinstance(detail, BaseException) and detail.args:  # AttributeError(KeyError("'key'\n...")).
      detail = detail.args[0]
    lines = str(detail).strip().splitlines() or [""]
    words = re.findall(r"[A-Za-z_]\w*", lines[0])
    missing = words[0] if len(words) == 1 else ""
    culprit = next((a.split("=")[0] for a in argv[1:] if missing and a.startswith("--config.")
                    and re.search(rf"\.{re.escape(missing)}\b", a.split("=")[0])), "a --config.* override")
    hint = next((f" ({line.strip()})" for line in lines[1:] if line.strip().startswith("Did you mean")), "")
    fail(f"{culprit} names a config key that does not exist{hint}; check its spelling against the config "
         "file")
  except (TypeError, ValueError) as e:
    fail(f"bad --config override: {str(e).splitlines()[0]}")
  return argv


def flag_value(argv, name):
  """The value of `--name=value` or `--name value` in argv, or None (for decisions made before parsing)."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None
