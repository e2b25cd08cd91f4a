"""The exception type the CLI turns into a single clear line and an exit code, and the one-line helper."""

from engine.errors import first_line

__all__ = ["VcamError", "first_line"]


class VcamError(Exception):
    """A user-facing failure: bad input, missing device, unusable file.

    The message is shown as is, on one line, without a traceback.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
