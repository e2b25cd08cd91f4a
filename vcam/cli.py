"""The `vcam` command line: `vcam <subcommand> [options]`.

`main(argv)` is callable in-process (tests and tools do that) and returns the exit code; it never calls
`sys.exit` and never lets a traceback reach the user for a known kind of failure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import vcam
import vcam.commands
from vcam.errors import VcamError

# Exceptions that mean "the user's input or environment is wrong", not "vcam has a bug".
_USER_ERRORS = (VcamError, ValueError, TypeError, FileNotFoundError, PermissionError, RuntimeError, OSError)


class _Parser(argparse.ArgumentParser):
    """argparse prints a usage block on error; we print one line and exit 2 (argparse's own code)."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        self.exit(2, f"{self.prog}: error: {message}\n")


def _discover_commands() -> dict:
    commands = {}
    for info in sorted(pkgutil.iter_modules(vcam.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"vcam.commands.{info.name}")
        if all(hasattr(module, attr) for attr in ("HELP", "add_arguments", "run")):
            commands[getattr(module, "NAME", info.name)] = module
    return commands


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vcam", description="Real-time portrait harmonization virtual camera.")
    parser.add_argument("--version", action="version", version=f"vcam {vcam.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    for name, module in _discover_commands().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: argparse already printed
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="vcam: %(message)s", stream=sys.stderr)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except _USER_ERRORS as exc:
        code = exc.exit_code if isinstance(exc, VcamError) else 1
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"vcam: error: {message}", file=sys.stderr)
        if getattr(args, "verbose", False):
            logging.exception("details")
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
