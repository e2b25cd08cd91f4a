"""Errors shown to a user: the one-line helper and the CLI error policy (engine, trainer and vcam use them).

Lives in `engine`, the package the other two build on, and imports nothing heavy: `vcam --help` and
the CLIs' error paths stay cheap.
"""

from __future__ import annotations

import sys
import traceback


def first_line(exc: BaseException) -> str:
    """The first non-empty line of `exc`'s message, or its type's name when the message is empty.

    Libraries put the reason first and details (stacks, tables, hints) after; a user-facing line keeps
    just the reason.
    """
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


# The CLI error policy, shared by `vcam` and the trainer's commands (both build on this package).
# Expected failures: anything carrying an `exit_code` (vcam's VcamError and SettingError); ValueError (a bad
# value, a corrupt file); OSError (missing, unreadable or unwritable paths); RuntimeError, which the engine
# raises for device and runtime failures (no CUDA, a backend that cannot start). RuntimeError's subclasses
# NotImplementedError and RecursionError are bugs, as is everything else (TypeError, KeyError, ...).
EXPECTED_ERRORS = (ValueError, OSError, RuntimeError)
_BUG_SUBCLASSES = (NotImplementedError, RecursionError)


def is_expected(exc: BaseException) -> bool:
    """Whether `exc` is a failure a user or the machine can cause, rather than a bug."""
    if isinstance(exc, _BUG_SUBCLASSES):
        return False
    return isinstance(getattr(exc, "exit_code", None), int) or isinstance(exc, EXPECTED_ERRORS)


def report_error(exc: BaseException, prefix: str = "", verbose: bool = False) -> int:
    """Print `exc` as one line on stderr (and its traceback when `verbose`); returns the exit code.

    An expected failure prints `<prefix>error: <first line>` and returns its `exit_code` (1 unless it
    carries another: a setting typed wrong on the command line is a usage error, 2). Anything else prints
    `<prefix>internal error (a bug, please report it): <Type>: <first line>` and returns 1.

    Args:
        exc: the exception that ended the command.
        prefix: e.g. "vcam: ".
        verbose: also print the traceback.
    """
    if is_expected(exc):
        print(f"{prefix}error: {first_line(exc)}", file=sys.stderr)
        code = getattr(exc, "exit_code", 1)
    else:
        hint = "" if verbose else "; run with -v for the traceback"
        print(f"{prefix}internal error (a bug, please report it): {type(exc).__name__}: {first_line(exc)}{hint}",
              file=sys.stderr)
        code = 1
    if verbose:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    return code if isinstance(code, int) and code > 0 else 1
