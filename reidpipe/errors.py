"""The one exception type the CLI turns into a clean message instead of a traceback."""


class ReidpipeError(Exception):
    """A user-facing error: the message names the file, key or value and what was expected."""
