r"""The config a run saved in its workdir (`WORKDIR/config.json`), as an ml_collections config file.

`jepa.train` and `jepa.convert` write `WORKDIR/config.json`; this module reads it back so that a
later command rebuilds exactly the same model, with `--config.*` overrides on top (e.g. another data source):

  python -m jepa.main --config=jepa/run_config.py:runs/x --workdir=runs/x --config.train.num_steps=2000
  python -m jepa.evaluate --workdir=runs/x --config.data.source=npz --config.data.path=...

(`jepa.evaluate` passes `--config=<this file>:WORKDIR` itself when no --config is given.)
"""
import json
import os

import ml_collections

from jepa import config as config_lib
from jepa.errors import ConfigError

CONFIG_FILE = "config.json"


def _tuples(value):
  """JSON turns the configs' tuples into lists; back to tuples, so that overrides parse as in config files."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def load(workdir):
  """The ConfigDict saved in `workdir/config.json`; a ConfigError naming the file if there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
  except FileNotFoundError:
    raise ConfigError(f"--workdir={workdir} has no {CONFIG_FILE} (written by jepa.main and jepa.convert); "
                      "pass the run's config with --config=FILE") from None
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path} is unreadable ({e}); pass the run's config with --config=FILE") from None
  return ml_collections.ConfigDict(_tuples(raw))


def save(config, workdir):
  """Writes `config` to `workdir/config.json` (the file `load` reads).

  Written aside and renamed: the other processes of a resumed run read it (check_resume) at the same time, and
  must see the old file or the new one, never a truncated one."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(path + ".tmp", path)


# Keys a resumed run may change: how long it trains, what it logs, evaluates and keeps, where the data lies
# and how it is read, and the devices it runs on (resume is exact across meshes). Anything else would train a
# run that config.json does not describe.
RESUMABLE = ("train.num_steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
             "train.collapse_alarm", "train.collapse_alarm_logs", "eval.", "data.data_dir", "data.num_threads",
             "data.prefetch", "data.skip_corrupt", "mesh.", "distributed.")


def flat_json(config):
  """{'a.b.c': value} of `config`'s leaves, as JSON values (tuples as lists), for comparing two configs."""
  def walk(node, prefix):
    for k, v in node.items():
      if isinstance(v, dict):
        yield from walk(v, f"{prefix}{k}.")
      else:
        yield f"{prefix}{k}", v
  return dict(walk(json.loads(config.to_json_best_effort()), ""))


def check_resume(path, config):
  """Raises a ConfigError naming every key in which `config` differs from the saved run's `path` (config.json),
  except the RESUMABLE ones. A run without config.json (an old layout) is not checked."""
  if not os.path.exists(path):
    return
  try:
    with open(path, encoding="utf-8") as f:
      saved = config_lib.with_defaults(ml_collections.ConfigDict(_tuples(json.load(f))))
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path} is unreadable ({e}); resume needs the run's config: restore the file or use a "
                      "new --workdir") from None
  old, new = flat_json(saved), flat_json(config)
  changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
             and not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE)]
  if changed:
    shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:6])
    more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
    raise ConfigError(f"--workdir={os.path.dirname(path) or '.'} holds a run trained with another config: {shown}"
                      f"{more}; resume with the run's values (--config=jepa/run_config.py:WORKDIR) or use a new "
                      "--workdir (a resume may change only train.num_steps, logging, eval.*, data location, mesh)")


def get_config(arg=""):
  """ml_collections entry point: `--config=jepa/run_config.py:WORKDIR`."""
  if not arg:
    raise ConfigError("jepa/run_config.py needs the workdir after a colon: "
                      "--config=jepa/run_config.py:WORKDIR")
  return load(arg)
