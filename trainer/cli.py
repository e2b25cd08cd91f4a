"""What every trainer command shares: the CLI error policy of `engine.errors` (one line, exit codes)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from engine.errors import report_error


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call ``main(argv)`` and turn an exception into one line on stderr and an exit code.

    Expected failures (bad path, bad value, no device) print ``error: message`` and exit 1; argparse's
    usage errors keep its 2; an unexpected exception says it is a bug, and ``-v``/``--verbose`` among the
    arguments shows the traceback.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return report_error(exc, verbose=any(a in ("-v", "--verbose") for a in args))
