"""User-facing errors: raised for bad input, printed by the CLI without a traceback."""


class GeckoError(Exception):
    """An error whose message is meant for the user (bad file, missing asset, ...)."""


class InputError(GeckoError):
    """Bad input data; the message names the file and, where it applies, the line."""

    def __init__(self, path, message, line=None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
