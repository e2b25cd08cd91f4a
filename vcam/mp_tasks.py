"""MediaPipe's ImageSegmenter without the rest of MediaPipe.

`import mediapipe` (1.x) imports every task package: the audio tasks import sounddevice, which looks for
PortAudio by running ldconfig and gcc in subprocesses, and the vision drawing utilities import
matplotlib.pyplot. Measured on a 2-core machine with mediapipe 1.2.3: importing the segmenter through the
package costs ~0.86 s (sounddevice 0.12 s, matplotlib.pyplot 0.44 s); importing only the segmenter's own
modules costs ~0.2 s and starts no subprocess.

So the four parent packages are put in `sys.modules` as bare packages (their real `__init__` files are
skipped) while the segmenter's modules import, and every `mediapipe` module imported in that window is
forgotten again afterwards: the loaded modules stay alive through the references returned here, and a
later plain `import mediapipe` elsewhere in the process runs the real package from scratch. Where this
does not work (a MediaPipe with another layout), the plain import is used.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path

# The packages between `mediapipe` and the modules vcam needs; their __init__ files pull in everything.
_PARENTS = ("mediapipe", "mediapipe.tasks", "mediapipe.tasks.python", "mediapipe.tasks.python.vision")
_LOCK = threading.Lock()  # sys.modules is patched for a moment: one thread at a time


def _import_segmenter_modules() -> types.SimpleNamespace:
    vision = importlib.import_module("mediapipe.tasks.python.vision.image_segmenter")
    base_options = importlib.import_module("mediapipe.tasks.python.core.base_options")
    running_mode = importlib.import_module("mediapipe.tasks.python.vision.core.vision_task_running_mode")
    try:
        image = importlib.import_module("mediapipe.tasks.python.vision.core.image")
    except ModuleNotFoundError:  # MediaPipe 0.10.x (the parity reference's): Image is in its pybind core
        image = importlib.import_module("mediapipe")
    # MediaPipe 1.x loads its C library on first use, finding it with importlib.resources, which imports
    # `mediapipe.tasks.c` and so the real `mediapipe` package: load it now, while the bare parents stand.
    bindings = sys.modules.get("mediapipe.tasks.python.core.mediapipe_c_bindings")
    if bindings is not None and hasattr(bindings, "load_raw_library"):
        bindings.load_raw_library()
    return types.SimpleNamespace(
        ImageSegmenter=vision.ImageSegmenter, ImageSegmenterOptions=vision.ImageSegmenterOptions,
        BaseOptions=base_options.BaseOptions, RunningMode=running_mode.VisionTaskRunningMode,
        Image=image.Image, ImageFormat=image.ImageFormat)


def _forget_mediapipe_modules(keep: set[str]) -> None:
    for name in [name for name in sys.modules if name not in keep]:
        if name == "mediapipe" or name.startswith("mediapipe."):
            del sys.modules[name]


def load() -> types.SimpleNamespace:
    """The MediaPipe Tasks names vcam uses: ImageSegmenter(Options), BaseOptions, RunningMode, Image(Format).

    Raises:
        ModuleNotFoundError: mediapipe is not installed.
    """
    with _LOCK:
        return _load()


@functools.cache
def _load() -> types.SimpleNamespace:
    if "mediapipe" in sys.modules:  # already imported for real in this process: nothing left to save
        return _import_segmenter_modules()
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'mediapipe'", name="mediapipe")
    root = Path(next(iter(spec.submodule_search_locations)))
    before = set(sys.modules)
    for name in _PARENTS:
        package = types.ModuleType(name)
        package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
        sys.modules[name] = package
    try:
        names = _import_segmenter_modules()
    except Exception:  # another layout (MediaPipe 0.10.x imports its pybind framework from the package)
        _forget_mediapipe_modules(before)
        return _import_segmenter_modules()
    _forget_mediapipe_modules(before)
    return names
