"""Command-line plumbing shared by `python -m jepa.main`, `python -m jepa.convert` and `python -m jepa.evaluate`.

Every failure a user can cause (a bad flag, a config file that does not load, a config override naming no key,
a JepaError, an unwritable workdir) ends the command with one line on stderr, `error: ...`, and exit status 2.
Ctrl-C ends it with one line too (`interrupted ...`, exit status 130). Library log noise below WARNING (absl,
orbax, asyncio, JAX's distributed runtime, XLA's C++ INFO lines) is kept off the console.
"""
import contextlib
import logging as std_logging
import os
import re
import signal
import socket
import sys
import threading
import traceback

from absl import flags
from absl import logging

# XLA / the JAX distributed runtime log through C++ (TSL) logging, which reads this once when jaxlib loads: keep
# its INFO lines off the console (warnings and errors still show). Set before anything imports jax.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# Python loggers of the libraries the commands drive; INFO lines from them are noise on a console.
QUIET_LOGGERS = ("absl", "orbax", "asyncio", "jax", "jax._src.distributed", "grain", "etils", "tensorstore")
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def fail(message):
  """Prints `error: message` on one line and exits with status 2."""
  message = " ".join(str(message).split())  # One line, whatever the message held.
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_ERROR)


def quiet_libraries():
  """Library loggers at WARNING: their INFO lines (Orbax's per-save chatter, JAX's distributed-service
  messages, asyncio's debug lines) stay off the console."""
  logging.set_verbosity(logging.WARNING)
  for name in QUIET_LOGGERS:
    std_logging.getLogger(name).setLevel(std_logging.WARNING)


def start(argv):
  """The common start of a jepa command: no positional arguments, library INFO logs kept off the console, and
  Ctrl-C answered with one line (see `catch_interrupts`)."""
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  quiet_libraries()
  workdir = flags.FLAGS["workdir"].value if "workdir" in flags.FLAGS else None
  catch_interrupts(workdir)


# --- config files and flags ---------------------------------------------------------------------------------
def _config_path(argv):
  value = flag_value(argv if argv is not None else sys.argv, "config")
  return value.split(":", 1)[0] if value else None


def loaded_config(config, argv=None):
  """`config` (a --config flag's value, or None), or one line saying why its file failed to load.

  ml_collections reports a config file that failed to load only on first use, so it is used here once.
  """
  path = _config_path(argv)
  try:
    if config is not None:
      config.get("method")
  except OSError as e:
    fail(f"--config could not be loaded: {str(e).strip().splitlines()[-1].strip()}")
  except AttributeError:
    fail(f"--config={path}: get_config() returned an object of type {type(config).__name__}, not a ConfigDict; "
         "make it return an ml_collections.ConfigDict (see configs/ijepa_vit.py)")
  return config


def _frames_of(e):
  return traceback.extract_tb(e.__traceback__) if e.__traceback__ is not None else []


def _from_config_file(e):
  """Whether `e` escaped while ml_collections loaded a --config file or called its get_config()."""
  return any(f.name == "parse" and f.filename.replace(os.sep, "/").endswith("config_flags/config_flags.py")
             and ("_LoadConfigModule" in (f.line or "") or "get_config" in (f.line or "")) for f in _frames_of(e))


def _config_file_error(e, argv):
  """One line for a config file that failed to import, lacks get_config or whose get_config raised."""
  path = _config_path(argv) or "the config file"
  shown = f"--config={path}"
  if isinstance(e, SyntaxError):
    where = f" at line {e.lineno}" if e.lineno else ""
    return f"{shown} has a syntax error{where} ({e.msg}); fix the file"
  if isinstance(e, AttributeError) and "get_config" in str(e):
    return (f"{shown} defines no get_config(); a config file must define get_config(arg='') returning an "
            "ml_collections.ConfigDict (see configs/ijepa_vit.py)")
  absolute = os.path.abspath(path) if path else ""
  lines = [f.lineno for f in _frames_of(e) if absolute and os.path.abspath(f.filename) == absolute]
  where = f" (line {lines[-1]})" if lines else ""
  detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
  detail = f"{type(e).__name__}: {detail}" if detail else type(e).__name__
  return f"{shown} failed to load: {detail}{where}; fix the file or its :preset argument"


def parse_flags(argv):
  """absl's flag parsing (ml_collections config flags included), with every failure reported on one line."""
  sys.excepthook = _interrupt_hook  # Only commands parse flags here: other importers keep their hook.
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # ml_collections warns of a get_config() returning None: reported below.
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    required = re.search(r"Flag --(\w+) must have a value other than None", str(e))
    if any(line.startswith("Traceback") for line in lines):  # A config file raised: keep its own message.
      own = re.match(r"jepa\.errors\.\w+: (.*)", lines[-1])  # Already one line with the fix (run_config.py).
      lines = [own.group(1)] if own else [lines[0].split(": Error whilst parsing config file")[0] + ":", lines[-1]]
    elif required and required.group(1) == "config" and flag_value(argv, "config"):
      lines = [f"--config={flag_value(argv, 'config')}: get_config() returned None; make it return the config "
               "(an ml_collections.ConfigDict)"]
    elif required:
      name = required.group(1)
      lines = [f"--{name} is required; pass --{name}=..." + (" (a config file in configs/, optionally :preset)"
                                                           if name == "config" else "")]
    fail(" ".join(lines))
  except KeyboardInterrupt:
    raise
  except Exception as e:  # pylint: disable=broad-except  (sorted out below; nothing else reaches the user)
    if _from_config_file(e):
      fail(_config_file_error(e, argv))
    if isinstance(e, (AttributeError, KeyError)):  # ml_collections: an override names a key the config lacks.
      fail(_unknown_key(e, argv))
    if isinstance(e, (TypeError, ValueError)):
      fail(f"bad --config override: {str(e).splitlines()[0]}")
    raise
  finally:
    logging.set_verbosity(verbosity)


def _unknown_key(e, argv):
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
  return f"{culprit} names a config key that does not exist{hint}; check its spelling against the config file"


def flag_value(argv, name):
  """The value of `--name=value` or `--name value` in argv, or None (for decisions made before parsing)."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


# --- workdirs and output files ------------------------------------------------------------------------------
def _is_url(path):
  return "://" in str(path)


def check_workdir(workdir):
  """Fails on one line unless `workdir` is (or can be created as) a folder this process can write.

  Creates it, writes and deletes a probe file; a folder created only for the check is removed again, so that a
  run that stops on a later error leaves nothing behind. Remote paths (gs://...) are left to the libraries.
  """
  if not workdir:
    fail("--workdir is empty; pass --workdir=DIR (a writable folder)")
  if _is_url(workdir):
    return
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    fail(f"--workdir={workdir} is a file, not a folder; pass a folder (new or a run's)")
  created = []
  probe = os.path.join(path, f".jepa_write_check.{socket.gethostname()}.{os.getpid()}")
  missing = path
  while not os.path.exists(missing):
    created.append(missing)
    missing = os.path.dirname(missing)
  try:
    for attempt in range(3):
      try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "w", encoding="utf-8") as f:
          f.write("jepa write check\n")
        os.remove(probe)
        break
      except FileNotFoundError:  # Another process of the run removed its own check's folder meanwhile.
        if attempt == 2:
          raise
  except OSError as e:
    _remove_empty(created)
    reason = e.strerror or type(e).__name__
    if created:
      fail(f"--workdir={workdir} cannot be created ({reason}); pass a writable folder")
    fail(f"--workdir={workdir} is not writable ({reason}); pass a writable folder (a new --workdir, or make "
         "this one writable)")
  _remove_empty(created)


def _remove_empty(paths):
  """Removes the folders in `paths` (deepest first) that are empty; anything holding a file stays."""
  for p in sorted(paths, key=len, reverse=True):
    try:
      os.rmdir(p)
    except OSError:
      pass


def check_output_file(path, flag="--output"):
  """Fails on one line unless `path` can be written: its folder exists and is writable, and it is no folder."""
  if _is_url(path):
    return
  full = os.path.abspath(os.path.expanduser(path))
  folder = os.path.dirname(full)
  if os.path.isdir(full):
    fail(f"{flag}={path} is a folder; pass a file name (e.g. {os.path.join(path, 'evaluation.json')})")
  if not os.path.isdir(folder):
    fail(f"{flag}={path}: the folder {folder} does not exist; create it or pass a path in an existing folder")
  if not os.access(folder, os.W_OK) or (os.path.exists(full) and not os.access(full, os.W_OK)):
    fail(f"{flag}={path} is not writable; pass a path in a writable folder")


def checkpoint_steps(workdir):
  """The finalized checkpoint steps in WORKDIR/checkpoints (a folder per step, named by the step)."""
  if not workdir or _is_url(workdir):
    return []
  directory = os.path.join(os.path.expanduser(workdir), "checkpoints")
  try:
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())
  except OSError:
    return []


def _interrupted_line(workdir=None, *, resumable=False, message=None):
  """The line for a Ctrl-C: what the workdir holds (or `message`)."""
  if message:
    return message
  steps = checkpoint_steps(workdir)
  if not steps:
    return "interrupted before the first checkpoint; nothing saved"
  if resumable:
    return (f"interrupted; {workdir} keeps its checkpoints (latest: step {steps[-1]}): run the same command to "
            "resume")
  return f"interrupted; {workdir} keeps its checkpoints (latest: step {steps[-1]})"


def interrupted(workdir=None, *, resumable=False, message=None):
  """Ctrl-C: one line saying what the workdir holds (or `message`), exit status 130."""
  print(_interrupted_line(workdir, resumable=resumable, message=message), file=sys.stderr, flush=True)
  sys.exit(EXIT_INTERRUPTED)


_interrupt = {"workdir": None, "resumable": False, "cleanup": (), "message": None}


def _on_interrupt(signum, frame):
  """SIGINT outside the training loop (start-up: imports, data, compilation; or the final evaluation): one
  line and exit 130 at once.

  A KeyboardInterrupt would surface wherever Python happens to run: inside a gc callback (where it is
  swallowed and the run goes on) or in the middle of XLA's compile threads (whose interpreter shutdown can then
  crash). Nothing is being saved here (the training loop installs its own handler, which saves a checkpoint),
  so the process ends right away; folders this command created and left empty are removed first.
  """
  del signum, frame
  try:
    _remove_empty(_interrupt["cleanup"])
    print(_interrupted_line(_interrupt["workdir"], resumable=_interrupt["resumable"],
                            message=_interrupt["message"]), file=sys.stderr, flush=True)
    sys.stdout.flush()
  finally:
    os._exit(EXIT_INTERRUPTED)  # pylint: disable=protected-access


def catch_interrupts(workdir=None, *, resumable=None, cleanup=None, message=None):
  """Answers Ctrl-C with one line and exit status 130 (see `_on_interrupt`); later calls refine the line."""
  _interrupt["workdir"] = workdir if workdir is not None else _interrupt["workdir"]
  for key, value in (("resumable", resumable), ("cleanup", cleanup), ("message", message)):
    if value is not None:
      _interrupt[key] = value
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, _on_interrupt)


def _library_error(e):
  """One line for an error of a library that a user's input or machine caused, or None for anything else."""
  text = str(e).strip()
  first = text.splitlines()[0] if text else type(e).__name__
  if isinstance(e, OSError):
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    return f"{where}{e.strerror or first}; check the path, its permissions and the free space"
  if type(e).__name__ in ("XlaRuntimeError", "JaxRuntimeError") and "RESOURCE_EXHAUSTED" in text:
    return (f"out of device memory ({first[:160]}); lower --config.train.batch_size or --config.eval.batch_size "
            "(or set --config.model.remat=True)")
  return None


@contextlib.contextmanager
def boundary(workdir=None, *, resumable=False, cleanup=(), interrupted_message=None):
  """The edge of a command: a JepaError or a known library error becomes one `error:` line (exit 2), Ctrl-C
  one `interrupted` line (exit 130). `cleanup`: folders this command created, removed if still empty when it
  is interrupted (e.g. an empty checkpoints/ left by a run stopped while it compiled)."""
  from jepa.errors import JepaError  # pylint: disable=import-outside-toplevel
  catch_interrupts(workdir, resumable=resumable, cleanup=tuple(cleanup), message=interrupted_message)
  try:
    yield
  except KeyboardInterrupt:
    _remove_empty(cleanup)
    interrupted(workdir, resumable=resumable, message=interrupted_message)
  except JepaError as e:
    fail(str(e))
  except Exception as e:  # pylint: disable=broad-except
    message = _library_error(e)
    if message is None:
      raise
    fail(message)


def run(main, argv=None, *, interrupted_message=None):
  """`absl.app.run(main)` with jepa's flag parser, and Ctrl-C during start-up (imports, flag parsing) on one
  line; errors inside `main` are its own `boundary`'s."""
  from absl import app  # pylint: disable=import-outside-toplevel
  try:
    app.run(main, argv=argv, flags_parser=parse_flags)
  except KeyboardInterrupt:
    interrupted(flag_value(argv if argv is not None else sys.argv, "workdir"), message=interrupted_message)


def _interrupt_hook(kind, value, tb):
  """sys.excepthook of a running command: a Ctrl-C that reached the top (during flag parsing, before `start`
  installed the handler) prints one line instead of a traceback."""
  if issubclass(kind, KeyboardInterrupt):
    print(_interrupted_line(flag_value(sys.argv, "workdir")), file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)  # pylint: disable=protected-access  (the interpreter would re-raise SIGINT)
  _previous_hook(kind, value, tb)


_previous_hook = sys.excepthook
