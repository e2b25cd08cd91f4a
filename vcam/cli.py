"""The `vcam` command line: `vcam <subcommand> [options]`.

`main(argv)` is callable in-process (tests and tools do that) and returns the exit code; it never calls
`sys.exit` and never lets a traceback reach the user for a known kind of failure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

import vcam
import vcam.commands
from vcam.errors import report_error

# Packages of the extras (pyproject.toml) that some commands need and the runtime does not: the extra to
# install when a command meets one missing (`vcam bench engine` and `vcam export` need torch).
EXTRAS = {"torch": "vcam[train]", "onnx": "vcam[train]", "skimage": "vcam[train]", "matplotlib": "vcam[train]",
          "tensorrt": "vcam[trt]"}


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
    quiet_native_logs(verbose=args.verbose)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ImportError as exc:  # an extra's package in a lean install: say which extra, in one line
        extra = EXTRAS.get(str(exc.name or "").split(".")[0])
        if extra is None:
            return report_error(exc, "vcam: ", verbose=args.verbose)
        print(f"vcam: error: {args.command} needs {exc.name.split('.')[0]}, which is not installed "
              f"(pip install '{extra}')", file=sys.stderr)
        return 1
    except Exception as exc:  # the policy in vcam.errors: one line; a bug says so; -v for the traceback
        return report_error(exc, "vcam: ", verbose=args.verbose)


def quiet_native_logs(verbose: bool = False) -> None:
    """Keep FFmpeg's and OpenCV's own logging off stderr (a corrupt file prints hundreds of lines).

    vcam says in one line what went wrong; `-v` lets the libraries speak again. FFmpeg reads
    OPENCV_FFMPEG_LOGLEVEL when OpenCV first opens a file, so setting it here, before any capture, is
    enough; a value the user exported wins.
    """
    if verbose:
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    try:
        import cv2

        cv2.setLogLevel(0)  # LOG_LEVEL_SILENT: OpenCV's own warnings (e.g. "can't open file")
    except Exception:  # an OpenCV without the call: its logs are noise, not a failure
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
