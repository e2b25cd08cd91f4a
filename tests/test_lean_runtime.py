"""The runtime without torch (issue 21): a frame through engine.Harmonizer and `vcam run` with torch, onnx and
scikit-image unimportable (tests/lean_frame.py in a subprocess), and what the lean runtime says and refuses.
CI also runs tests/lean_frame.py in a fresh `pip install .` environment (scripts/check_install.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

BLOCK = ("import importlib.abc, sys\n"
         "class B(importlib.abc.MetaPathFinder):\n"
         "    def find_spec(self, name, path, target=None):\n"
         "        if name.split('.')[0] == 'torch': raise ModuleNotFoundError('blocked', name=name)\n"
         "sys.meta_path.insert(0, B())\n")


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VCAM_CACHE_DIR": str(tmp_path / "cache")}  # an empty cache: nothing exported before
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)


def test_a_frame_runs_through_the_harmonizer_and_the_pipeline_without_torch(tmp_path):
    done = _run([str(HERE / "lean_frame.py"), "--block-torch"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"].startswith("onnxruntime (cpu") and not result["torch_imported"]
    assert result["run_frames"] == 3 and result["person_changed"] > 1.0
    assert "torch not installed" in result["startup_line"]
    assert not (tmp_path / "cache" / "onnx").exists(), "the shipped graph ran: nothing was exported"


def test_without_torch_a_model_with_no_graph_is_one_clear_error(tmp_path):
    """Weights without their graph beside them cannot be exported without torch: `vcam`-style one line."""
    from engine.weights import DEFAULT_WEIGHTS

    for suffix in (".safetensors", ".json"):
        (tmp_path / f"w{suffix}").write_bytes(DEFAULT_WEIGHTS.with_suffix(suffix).read_bytes())
    prior = DEFAULT_WEIGHTS.parent / "colour_prior.safetensors"  # the config names it, beside the weights
    (tmp_path / prior.name).write_bytes(prior.read_bytes())
    code = BLOCK + ("from engine import Harmonizer\n"
                    "try:\n    Harmonizer(weights='w.safetensors')\n"
                    "except RuntimeError as e:\n    print(e)\n")
    done = _run(["-c", code], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no ONNX graph ships beside w.safetensors" in done.stdout
    assert "torch is not installed to export one" in done.stdout and "make onnx" in done.stdout


def test_without_torch_named_torch_backends_say_so(tmp_path):
    code = BLOCK + ("from engine import Harmonizer\n"
                    "for name in ('torch', 'tensorrt'):\n"
                    "    try:\n        Harmonizer(backend=name, device='cpu')\n"
                    "    except RuntimeError as e:\n        print(e)\n")
    done = _run(["-c", code], tmp_path)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and all("torch is not installed" in line for line in lines), done.stdout + done.stderr


def test_the_cpu_state_is_numpy_and_the_colour_prior_identity_is_engine_affines():
    from engine import Harmonizer, affine, colour_prior

    assert np.array_equal(colour_prior.IDENTITY, np.array(affine.IDENTITY).reshape(4, 3))
    image = np.full((64, 96, 3), 120, np.uint8)
    mask = np.zeros((64, 96), np.float32)
    mask[16:, 30:70] = 1
    image[16:, 30:70] = (200, 150, 120)
    with Harmonizer(device="cpu", smoothing=0.5) as h:
        h.estimate(image, mask)
        assert isinstance(h._stats, np.ndarray) and h._stats.dtype == np.float32
        assert h.device.type == "cpu"


def test_vcam_devices_lists_the_backends_with_and_without_torch(tmp_path, capsys):
    from vcam.cli import main

    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "harmonization backends:" in out and "CPUExecutionProvider" in out and "torch 2" in out
    assert "--backend auto tries first: " in out
    done = _run(["-c", BLOCK + "from vcam.cli import main; main(['devices'])"], tmp_path)
    assert "torch: not installed" in done.stdout and "auto tries first: onnxruntime (cpu)" in done.stdout, done.stderr


def test_a_command_that_needs_torch_names_the_extra_in_one_line(tmp_path):
    code = BLOCK + "from vcam.cli import main; sys.exit(main(['bench', 'engine', '--sizes', '32']))"
    done = _run(["-c", code], tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == ("vcam: error: bench needs torch, which is not installed "
                                                     "(pip install 'vcam[train]')"), done.stderr

