"""The error of a setting that cannot be used, in the lowest layer so that every part can raise it.

The command line answers a `ConfigError` with its message alone, on one line: the message names
the hparam, flag or value and the fix.
"""


class ConfigError(ValueError):
    """A config file, override string, flag or value that cannot be used."""
