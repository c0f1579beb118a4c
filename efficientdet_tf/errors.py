"""The errors that the command line answers with their message alone, on one line, in the lowest
layer so that every part can raise them: the message names the thing and the fix.
"""


class ConfigError(ValueError):
    """A config file, override string, flag or value that cannot be used (exit status 2)."""


class FaultError(RuntimeError):
    """A fault met while running, not in the settings: a write that failed (a full disk), a
    damaged file (exit status 1)."""
