"""The exception type the CLI turns into a single clear line and an exit code; the shared error helpers.

The policy itself (what is expected, what is a bug, exit codes) is `engine.errors.report_error`, shared with
the trainer's commands.
"""

from __future__ import annotations

from engine.errors import first_line, is_expected, report_error

__all__ = ["VcamError", "first_line", "is_expected", "report_error"]


class VcamError(Exception):
    """A user-facing failure: bad input, missing device, unusable file.

    The message is shown as is, on one line, without a traceback.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
