"""ONNX exports cached in the user cache dir, shared by the ONNX Runtime and TensorRT backends.

The key is a hash of the model (name, config, every weight) and of the engine's source files (a code
change can change the graph without changing a weight), plus the opset. Exports are written to a temporary
name and renamed, so a crash never leaves a half file under the final name.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from pathlib import Path

import torch

from engine import paths
from engine.weights import model_fingerprint

log = logging.getLogger(__name__)

_ENGINE_DIR = Path(__file__).resolve().parents[1]
# The files that define the exported graph (the model, its statistics, the exporter). Others (harmonizer,
# lift, backends) do not change the ONNX file, so editing them keeps the cache.
_GRAPH_SOURCES = ("config.py", "phnet.py", "pn.py", "stats_transfer.py", "export.py")


def _source_hash(model: torch.nn.Module) -> str:
    files = {_ENGINE_DIR / name for name in _GRAPH_SOURCES}
    try:
        files.add(Path(inspect.getsourcefile(type(model))).resolve())
    except TypeError:  # a class defined in an interactive session has no file
        pass
    digest = hashlib.sha256()
    for path in sorted(p for p in files if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def onnx_cache_path(model: torch.nn.Module, opset: int = 17) -> Path:
    """Where `cached_onnx` keeps this model's dynamic-shape export (the file may not exist yet)."""
    name = str(getattr(model, "name", "model")).replace("/", "_")
    return paths.user_cache_dir() / "onnx" / f"{name}-{model_fingerprint(model)}-{_source_hash(model)}-op{opset}.onnx"


def cached_onnx(model: torch.nn.Module, opset: int = 17, refresh: bool = False) -> Path:
    """A dynamic height/width ONNX export of `model`, made once and reused.

    Args:
        model: the nn.Module (from create_model / load_weights).
        opset: ONNX opset (>= 17).
        refresh: export again even if a cached file exists (after a corrupt file was found).

    Returns:
        The path of the .onnx file.

    Raises:
        RuntimeError: the export failed or the cache dir is not writable.
    """
    from engine.export import export_onnx

    path = onnx_cache_path(model, opset)
    if path.is_file() and path.stat().st_size > 0 and not refresh:
        return path
    paths.ensure_dir(path.parent)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.onnx")
    log.info("exporting %s to ONNX (opset %d, dynamic size): %s", getattr(model, "name", "model"), opset, path)
    try:
        export_onnx(model, tmp, height=None, width=None, opset=opset)
        os.replace(tmp, path)
    except Exception as exc:  # the exporter raises many types; the caller needs one clear reason
        for leftover in tmp.parent.glob(tmp.name + "*"):
            leftover.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(f"ONNX export of {getattr(model, 'name', 'model')} failed: {first}") from exc
    return path
