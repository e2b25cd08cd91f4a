"""engine: PHNet and how it runs (model, PN statistics, export, backends, the Harmonizer).

Knows nothing of `vcam` or `trainer`. Public names are imported lazily so that `import engine` stays
cheap (torch loads on first use) and each lives in the module named after what it does.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "create_model": "engine.phnet",
    "PHNetConfig": "engine.config",
    "MODEL_NAMES": "engine.phnet",
    "Harmonizer": "engine.harmonizer",
    "export_onnx": "engine.export",
    "load_weights": "engine.weights",
    "save_weights": "engine.weights",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
