"""What every trainer command shares: turn a user-facing failure into one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable

# Failures a user can cause (bad path, bad value, no device): one line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError, TypeError)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call ``main(argv)``; print a user error as ``error: message`` on stderr and return 2."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
