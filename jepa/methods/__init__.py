"""Method registry: `get_method(config)` returns the method object named by `config.method`."""
from jepa.errors import ConfigError


def _registry():
  # Imported lazily so that importing one method does not import all of them.
  from jepa.methods import ijepa
  return {"ijepa": ijepa.IJEPA}


def get_method(config):
  registry = _registry()
  if config.method not in registry:
    raise ConfigError(f"method={config.method!r} is unknown; choose one of {sorted(registry)}")
  return registry[config.method](config)
