"""Errors that end a run with one line naming the problem and the fix (printed by `jepa.main`)."""


class JepaError(Exception):
  """Base class: the message is a complete, one-line explanation with the fix."""


class ConfigError(JepaError, ValueError):
  """The config is invalid: the message names the key and the fix."""


class DataError(JepaError, ValueError):
  """A data source, file or sample is missing or unreadable: the message names it and the fix."""


class CheckpointError(JepaError, ValueError):
  """A checkpoint cannot be read or does not match the model: the message names the key."""
