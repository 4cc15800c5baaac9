"""User-facing errors.

Anything raised as `RladError` is a user mistake or an environment problem with a message that
says what to do; the CLI prints it on one line and exits with code 2 instead of a traceback.
"""


class RladError(Exception):
    """A problem the user can fix; the message names the file/option and the problem."""

    exit_code = 2


class DataError(RladError):
    """Invalid dataset folder, image, mask or pair file."""


class ConfigError(RladError):
    """Invalid configuration value, override or run directory."""
