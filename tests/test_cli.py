"""The CLI's contract: in-process main(argv), --help lists subcommands, usage errors are one line + exit 2."""

import re
import subprocess
import sys

import pytest

from vcam.cli import build_parser, main


def test_packages_import():
    import engine  # noqa: F401
    import trainer  # noqa: F401
    import vcam  # noqa: F401


SUBCOMMANDS = {"run", "demo", "devices", "export", "bench", "ui"}


def test_help_lists_exactly_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == SUBCOMMANDS
    listed = {m.group(1) for m in re.finditer(r"^    (\w[\w-]*)\s", out, re.MULTILINE)}  # not wrapped help
    assert listed == SUBCOMMANDS, out


@pytest.mark.parametrize("argv", [["no-such-command"], ["--no-such-flag"]])
def test_usage_error_is_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "vcam", "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
