"""A fresh `pip install .` as a new user gets it: its size, and no torch, nvidia-* or triton in it.

    python scripts/check_install.py --python ~/.pyenv/versions/3.12.1/bin/python3.12
    python scripts/check_install.py --python python3.13 --smoke --venv /tmp/vcam-lean --keep

Creates a new virtual environment with the given interpreter, runs `pip install <this checkout>` in it with
pip's configuration files and every PIP_* source setting ignored (no find-links, local wheel directory,
extra index or constraints: PyPI only), and prints the size of its site-packages in MB, the largest
distributions (--table: all of them) and whether torch, nvidia-* or triton are there. The size is the sum
of the files' bytes in MB (10^6 bytes), the .pyc files that pip compiles at install and the venv's own pip
included: what a user's disk holds. (`du -s` counts directories and whole blocks too, ~3 % more bytes;
`du -sh` prints that in MiB, a smaller number: 624M for 634.0 MB.) Exits 1 when the install fails, when
any of those is there, or when site-packages exceeds --max-mb (600, issue 21). --smoke then runs `vcam demo`
and tests/lean_frame.py (a frame through engine.Harmonizer and `vcam run`) with the environment's python.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN_PREFIXES = ("torch", "nvidia-", "triton")
# Settings about where packages come from; the rest (certificates, timeouts) stay as the machine has them.
_KEEP_PIP = {"PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_PROGRESS_BAR"}

# Run by the new environment's python: every distribution's name, version and installed bytes.
_MEASURE = r"""
import importlib.metadata as md, json, os, sysconfig
dirs = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
total = 0
for d in dirs:
    for root, _, files in os.walk(d):
        total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
dists = []
for dist in md.distributions():
    size = 0
    for f in dist.files or ():
        try:
            size += os.lstat(dist.locate_file(f)).st_size
        except OSError:
            pass
    dists.append({"name": dist.metadata["Name"], "version": dist.version, "bytes": size})
print(json.dumps({"site_packages": dirs, "bytes": total, "distributions": dists}))
"""


def pip_environment() -> dict[str, str]:
    """os.environ without pip's package-source settings, and with its configuration files off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in _KEEP_PIP}
    env["PIP_CONFIG_FILE"] = os.devnull  # pip reads no pip.conf at all (global, user, site)
    env.pop("PYTHONPATH", None)
    return env


def install(python: str, venv: Path) -> float:
    """Create `venv` with `python` and pip-install this checkout into it; returns the seconds it took.

    Raises:
        RuntimeError: venv creation or the install failed (pip's last lines in the message).
    """
    started = time.monotonic()
    env = pip_environment()
    steps = [[python, "-m", "venv", str(venv)],
             [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(REPO)]]
    for command in steps:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise RuntimeError(f"{' '.join(command[:4])} ... failed: {tail}")
    return time.monotonic() - started


def measure(venv: Path) -> dict:
    """The environment's site-packages size and distributions (_MEASURE, run by its own python)."""
    # cwd: the venv, not the checkout (whose vcam.egg-info would read as a second vcam distribution).
    done = subprocess.run([str(venv / "bin" / "python"), "-c", _MEASURE], capture_output=True, text=True,
                          check=True, env=pip_environment(), cwd=venv)
    return json.loads(done.stdout)


def smoke(venv: Path) -> list[str]:
    """`vcam demo` and tests/lean_frame.py with the environment's python, from a directory outside the
    checkout (so the installed package runs); returns the failures."""
    failures = []
    with tempfile.TemporaryDirectory(prefix="vcam-smoke-") as tmp:
        env = {**pip_environment(), "VCAM_CACHE_DIR": str(Path(tmp) / "cache")}
        for label, command in (("vcam demo", [str(venv / "bin" / "vcam"), "demo", "--frames", "8",
                                              "--out-dir", str(Path(tmp) / "demo")]),
                               ("lean_frame", [str(venv / "bin" / "python"), str(REPO / "tests" / "lean_frame.py")])):
            done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
            lines = (done.stdout + done.stderr).strip().splitlines()
            print(f"smoke: {label}: exit {done.returncode}: {lines[-1] if lines else ''}")
            if done.returncode:
                failures.append(f"{label} exited {done.returncode}")
    return failures


def table(found: dict) -> str:
    """Every distribution, largest first, as Markdown rows (name, version, MB of its installed files, the
    .pyc that pip compiled at install included)."""
    rows = ["| distribution | version | MB |", "|---|---|---:|"]
    rows += [f"| {d['name']} | {d['version']} | {d['bytes'] / 1e6:.1f} |"
             for d in sorted(found["distributions"], key=lambda d: -d["bytes"])]
    return "\n".join(rows)


def report(found: dict, python_version: str, seconds: float, max_mb: float) -> list[str]:
    """Print the figures; returns the problems (forbidden distributions, too big)."""
    mb = found["bytes"] / 1e6
    dists = sorted(found["distributions"], key=lambda d: -d["bytes"])
    forbidden = [d["name"] for d in dists if d["name"].lower().startswith(FORBIDDEN_PREFIXES)]
    print(f"python {python_version}: pip install . in {seconds:.0f} s; site-packages {mb:.1f} MB "
          f"({len(dists)} distributions) in {', '.join(found['site_packages'])}")
    print("largest: " + ", ".join(f"{d['name']} {d['version']} {d['bytes'] / 1e6:.1f} MB" for d in dists[:8]))
    for prefix in FORBIDDEN_PREFIXES:
        names = [n for n in forbidden if n.lower().startswith(prefix)]
        print(f"{prefix.rstrip('-')}{'-*' if prefix.endswith('-') else ''}: {', '.join(names) or 'absent'}")
    problems = [f"{name} is installed" for name in forbidden]
    if mb > max_mb:
        problems.append(f"site-packages is {mb:.1f} MB > {max_mb:g} MB")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter to make the venv with")
    parser.add_argument("--venv", type=Path, default=None, help="where (must not exist; default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the environment afterwards")
    parser.add_argument("--max-mb", type=float, default=600.0, help="site-packages limit in MB (default 600)")
    parser.add_argument("--smoke", action="store_true", help="also run vcam demo and tests/lean_frame.py in it")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--table", action="store_true", help="also print every distribution's size (Markdown)")
    args = parser.parse_args(argv)
    python = shutil.which(os.path.expanduser(args.python)) or os.path.expanduser(args.python)
    if args.venv is not None and args.venv.exists():
        print(f"check_install: error: {args.venv} exists; the check needs a fresh environment", file=sys.stderr)
        return 2
    venv = args.venv or Path(tempfile.mkdtemp(prefix="vcam-lean-")) / "venv"
    try:
        seconds = install(python, venv)
        version = subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.version.split()[0])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        found = measure(venv)
        problems = report(found, version, seconds, args.max_mb)
        if args.table:
            print(table(found))
        if args.json:
            args.json.write_text(json.dumps({"python": version, "seconds": seconds, **found}, indent=1) + "\n")
        if args.smoke:
            problems += smoke(venv)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"check_install: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(venv.parent if args.venv is None else venv, ignore_errors=True)
    for problem in problems:
        print(f"check_install: FAIL: {problem}", file=sys.stderr)
    print("check_install: " + ("FAIL" if problems else "ok"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
