"""The one helper for showing an exception as a single line (engine, trainer and vcam all use it).

Lives in `engine`, the package the other two build on, and imports nothing heavy: `vcam --help` and
the CLIs' error paths stay cheap.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-empty line of `exc`'s message, or its type's name when the message is empty.

    Libraries put the reason first and details (stacks, tables, hints) after; a user-facing line keeps
    just the reason.
    """
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
