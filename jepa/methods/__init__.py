"""Methods: `get_method(config)` imports `jepa.methods.<config.method>` and builds its `METHOD` class.

Adding a method is adding a module here that defines `METHOD = <a jepa.methods.base.Method subclass>`; nothing
else (the loop, checkpoints, sharding, evaluation) changes.
"""
import importlib
import pkgutil

from jepa.errors import ConfigError


# Shared bases of the methods, not methods themselves.
BASES = ("base", "masked")


def available():
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in BASES)


def get_method(config):
  if config.method not in available():
    raise ConfigError(f"method={config.method!r} is unknown; choose one of {available()}")
  module = importlib.import_module(f"jepa.methods.{config.method}")
  return module.METHOD(config)
