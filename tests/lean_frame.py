"""One frame through engine.Harmonizer and through `vcam run`, in a process where torch does not import.

    python tests/lean_frame.py --block-torch       # tests/test_lean_runtime.py runs this in a subprocess
    .venv-lean/bin/python tests/lean_frame.py      # CI's lean environment (pip install ., no torch at all)

Run as a script (tests/ on sys.path, not the checkout), so in a lean environment it exercises the installed
package, its shipped graph and its demo photos. Prints one JSON line; exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import logging
import sys
import tempfile
from pathlib import Path

BLOCKED = ("torch", "onnx", "skimage")  # the training stack: none of it may be needed at run time


class Blocker(importlib.abc.MetaPathFinder):
    """Makes the BLOCKED packages unimportable, as in an environment that lacks them."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the runtime must not need it")
        return None


class _Keep(logging.Handler):
    """Keeps the log's messages (the start-up line is checked)."""

    def __init__(self, records: list[str]):
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-torch", action="store_true", help="make torch, onnx and skimage unimportable")
    args = parser.parse_args(argv)
    if args.block_torch:
        sys.meta_path.insert(0, Blocker())
    records: list[str] = []
    logging.getLogger().addHandler(_Keep(records))
    logging.getLogger().setLevel(logging.INFO)

    import numpy as np

    from engine import Harmonizer
    from vcam.cli import main as vcam_main
    from vcam.commands.demo import load_bundled

    photo = load_bundled("astronaut")
    mask = np.zeros(photo.shape[:2], np.float32)
    mask[120:512, 130:400] = 1.0
    with Harmonizer() as harmonizer:
        out = harmonizer.harmonize(photo, mask)
        backend = harmonizer.backend_name
    changed = float(np.abs(out.astype(int) - photo)[mask > 0].mean())
    with tempfile.TemporaryDirectory() as tmp:
        still = Path(tmp) / "still.png"
        import cv2

        cv2.imwrite(str(still), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
        video = Path(tmp) / "out.mp4"
        code = vcam_main(["run", "--input", str(still), "--background", str(still.parent / "bg.png"),
                          "--output", f"file:{video}", "--max-frames", "3"]) if _background(still) else 1
        frames = _count_frames(video)
    result = {"backend": backend, "person_changed": round(changed, 2), "run_exit": code, "run_frames": frames,
              "torch_imported": "torch" in sys.modules,
              "startup_line": next((r for r in records if r.startswith("backend:")), None)}
    print(json.dumps(result))
    ok = changed > 1.0 and code == 0 and frames == 3 and not result["torch_imported"]
    return 0 if ok and backend.startswith("onnxruntime (cpu") else 1


def _background(still: Path) -> bool:
    import cv2

    from vcam.commands.demo import load_bundled

    rocket = load_bundled("rocket")
    return bool(cv2.imwrite(str(still.parent / "bg.png"), cv2.cvtColor(rocket, cv2.COLOR_RGB2BGR)))


def _count_frames(path: Path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


if __name__ == "__main__":
    sys.exit(main())
