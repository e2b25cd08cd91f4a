"""Shared fixtures and the rules that skip gpu / tensorrt / camera tests with a reason where absent."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

# Keep tests polite on a 2-core machine and independent of the user's cache/config: ONNX exports and
# engines the tests make go to a throw-away directory, not ~/.cache/vcam.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("VCAM_CACHE_DIR", tempfile.mkdtemp(prefix="vcam-test-cache-"))
os.environ.setdefault("VCAM_CONFIG_DIR", tempfile.mkdtemp(prefix="vcam-test-config-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VCAM_SHARED_DATA", REPO.parent / "shared" / "data"))


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _camera_available() -> bool:
    if os.environ.get("VCAM_TEST_CAMERA") is None:
        return False  # opening cameras in CI is slow and side-effectful: opt in explicitly
    import cv2

    cap = cv2.VideoCapture(int(os.environ["VCAM_TEST_CAMERA"] or 0))
    ok = cap.isOpened() and cap.read()[0]
    cap.release()
    return bool(ok)


def pytest_collection_modifyitems(config, items):
    reasons = {}
    if not _cuda_available():
        reasons["gpu"] = "needs a CUDA GPU; torch.cuda.is_available() is False here"
    if importlib.util.find_spec("tensorrt") is None:
        reasons["tensorrt"] = "needs the tensorrt package (pip install 'vcam[trt]' on an NVIDIA machine)"
    elif "gpu" in reasons:
        reasons["tensorrt"] = "tensorrt imports but there is no CUDA GPU to build an engine on"
    if not _camera_available():
        reasons["camera"] = "needs a webcam: set VCAM_TEST_CAMERA=<index> on a machine that has one"
    for item in items:
        for marker, reason in reasons.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The development data beside the checkout (../shared/data); skips with a reason where missing."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"development data not found at {SHARED_DATA} (set VCAM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny tensors: intra-op thread hand-offs cost more than they save (6x slower on a loaded 2-core box).

    Use with `pytestmark = pytest.mark.usefixtures("torch_one_thread")`.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class RecordingBackend:
    """A pyvirtualcam backend (its documented contract) that keeps every frame it is sent."""

    instances: list[RecordingBackend] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps = width, height, fps
        self.frames: list = []
        self.closed = False
        RecordingBackend.instances.append(self)

    def send(self, frame):
        self.frames.append(frame.copy())

    def close(self):
        self.closed = True

    def device(self):
        return "recording"

    def native_fourcc(self):
        return None


@pytest.fixture()
def recorder():
    """pyvirtualcam backend "vcam-test", registered through pyvirtualcam's own API; `.instances` holds
    every camera opened during the test, each with the frames it was sent."""
    import pyvirtualcam

    RecordingBackend.instances.clear()
    pyvirtualcam.register_backend("vcam-test", RecordingBackend)
    yield RecordingBackend
    RecordingBackend.instances.clear()


@pytest.fixture(scope="session")
def person_video(shared_data) -> str:
    """A real video of a person at a desk (webcam-like), from the development data."""
    path = shared_data / "videos" / "volcomix_Thoughtful_-_35590.mp4"
    if not path.is_file():
        pytest.skip(f"person video missing: {path}")
    return str(path)


def read_video(path) -> tuple[list, float]:
    """Every frame of a video file (BGR, as OpenCV decodes it) and its frame rate."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames, fps


def photos_with_published_masks(shared_data: Path, per_group: int) -> list:
    """[(RGB photo, its published person mask: uint8 0/255 at the photo's size)] for the first `per_group`
    photos of each of portraits_more's two masked groups (ccp, humanseg); skips where they are missing."""
    import cv2

    folder = shared_data / "portraits_more"
    masks = [path for group in ("ccp", "humanseg")
             for path in sorted((folder / "masks").glob(f"{group}_*.png"))[:per_group]]
    if len(masks) < 2 * per_group:
        pytest.skip("no portraits_more/masks in the shared data")
    pairs = []
    for path in masks:
        photo = cv2.cvtColor(cv2.imread(str(folder / f"{path.stem}.jpg")), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        pairs.append((photo, cv2.resize(mask, photo.shape[1::-1], interpolation=cv2.INTER_NEAREST)))
    return pairs
