"""scripts/check_install.py's judgement, without an install: pip's package sources are cut off, torch,
nvidia-* and triton fail the check, and so does a site-packages over the limit."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_install.py"


def _script():
    spec = importlib.util.spec_from_file_location("check_install", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pip_sees_no_local_wheels_config_or_extra_index(monkeypatch):
    script = _script()
    for key, value in (("PIP_FIND_LINKS", "/opt/wheels"), ("PIP_EXTRA_INDEX_URL", "file:///opt/pypi/simple"),
                       ("PIP_CONSTRAINT", "/etc/c.txt"), ("PIP_NO_INDEX", "1"), ("PIP_CERT", "/etc/ca.crt")):
        monkeypatch.setenv(key, value)
    env = script.pip_environment()
    assert env["PIP_CONFIG_FILE"] == os.devnull
    assert not {"PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_NO_INDEX"} & set(env)
    assert env["PIP_CERT"] == "/etc/ca.crt"  # how to reach PyPI stays


def test_torch_nvidia_triton_and_size_fail_the_check(capsys):
    script = _script()

    def found(names, mb):
        return {"site_packages": ["/x"], "bytes": int(mb * 1e6),
                "distributions": [{"name": n, "version": "1", "bytes": 1} for n in names]}

    assert script.report(found(["numpy", "onnxruntime", "vcam"], 550), "3.12.1", 30, 600) == []
    problems = script.report(found(["numpy", "torch", "nvidia-cublas-cu12", "triton"], 550), "3.12.1", 30, 600)
    assert problems == ["torch is installed", "nvidia-cublas-cu12 is installed", "triton is installed"]
    assert script.report(found(["numpy"], 634.0), "3.12.1", 30, 600) == ["site-packages is 634.0 MB > 600 MB"]
    out = capsys.readouterr().out
    assert "site-packages 550.0 MB" in out and "torch: torch" in out and "nvidia-*: nvidia-cublas-cu12" in out


def test_an_existing_venv_is_refused(tmp_path, capsys):
    assert _script().main(["--venv", str(tmp_path)]) == 2
    assert "needs a fresh environment" in capsys.readouterr().err


def test_the_table_lists_every_distribution_largest_first():
    found = {"site_packages": ["/x"], "bytes": 0,
             "distributions": [{"name": "pip", "version": "24.2", "bytes": 10_900_000},
                               {"name": "opencv-contrib-python", "version": "4.11.0.86", "bytes": 190_000_000}]}
    rows = _script().table(found).splitlines()
    assert rows[0] == "| distribution | version | MB |"
    assert rows[2:] == ["| opencv-contrib-python | 4.11.0.86 | 190.0 |", "| pip | 24.2 | 10.9 |"]
