"""`vcam ui`: the virtual camera with the control page, from the page's last settings.

    vcam ui                      # camera 0 to the virtual camera; open http://127.0.0.1:8765/
    vcam ui --input talk.mp4 --output preview --ui-port 0

The same as `vcam run --ui` (every `vcam run` option is accepted).
"""

from __future__ import annotations

import argparse

from vcam.commands import run as run_command

HELP = "run the virtual camera with its control page in the browser (vcam run --ui)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_command.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    args.ui = True
    return run_command.run(args)
