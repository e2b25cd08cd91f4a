"""Subcommands of the `vcam` CLI, one module each.

A module here is a subcommand when it defines:
    HELP: str                                   one line for `vcam --help`
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int        exit code; raise VcamError (or ValueError,
                                                FileNotFoundError, RuntimeError) for one clear line
The CLI finds them by listing this package, so adding a subcommand touches no other file.
"""
