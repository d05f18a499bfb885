r"""The config a run saved in its workdir (`WORKDIR/config.json`), as an ml_collections config file.

`jepa.train.Trainer.run` and `jepa.convert` write `WORKDIR/config.json`; this module reads it back so that a
later command rebuilds exactly the same model, with `--config.*` overrides on top (e.g. another data source):

  python -m jepa.main --config=jepa/run_config.py:runs/x --workdir=runs/x --config.train.num_steps=2000
  python -m jepa.evaluate --workdir=runs/x --config.data.source=npz --config.data.path=...

(`jepa.evaluate` passes `--config=<this file>:WORKDIR` itself when no --config is given.)
"""
import json
import os

import ml_collections

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
  """Writes `config` to `workdir/config.json` (the file `load` reads)."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2))


def get_config(arg=""):
  """ml_collections entry point: `--config=jepa/run_config.py:WORKDIR`."""
  if not arg:
    raise ConfigError("jepa/run_config.py needs the workdir after a colon: "
                      "--config=jepa/run_config.py:WORKDIR")
  return load(arg)
