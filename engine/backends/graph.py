"""The shipped ONNX graph: which graph a backend runs for a model, and whether a shipped one is current.

The network ships as `engine/weights/default.onnx` beside `default.safetensors`, made from them by
`scripts/export_onnx.py` (`make onnx`). The graph records what it was made from in its metadata
(`vcam.weights_sha256`, `vcam.model`, `vcam.graph_sources`): a graph whose weights hash is not the weights
file's is stale and never runs. Without torch it is the only graph there is (ONNX Runtime and TensorRT
build from it); with torch, a model that has no current shipped graph (an nn.Module, other weights, a
stale graph) is exported once into the user cache (engine.backends.onnx_cache).

Imports no torch; reads the metadata with ONNX Runtime (no `onnx` package at run time).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from engine.backends.base import torch_available

log = logging.getLogger(__name__)

ENGINE_DIR = Path(__file__).resolve().parents[1]
# The files that define the exported graph (the model, its statistics, the exporter). Others (harmonizer,
# lift, backends) do not change the ONNX file.
GRAPH_SOURCES = ("config.py", "phnet.py", "pn.py", "stats_transfer.py", "affine.py", "export.py")
WEIGHTS_KEY = "vcam.weights_sha256"
MODEL_KEY = "vcam.model"
SOURCES_KEY = "vcam.graph_sources"
REGENERATE = "python scripts/export_onnx.py (or make onnx)"


def sources_hash() -> str:
    """sha256 (16 hex digits) of GRAPH_SOURCES: recorded in the graph, so a reader can tell that the code
    it was exported from has changed since (the parity test then says whether that changed the graph)."""
    digest = hashlib.sha256()
    for name in GRAPH_SOURCES:
        path = ENGINE_DIR / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def graph_metadata(path: str | Path) -> dict[str, str]:
    """The `vcam.*` metadata an ONNX file records ({} where none), read with ONNX Runtime.

    Raises:
        RuntimeError: ONNX Runtime cannot load the file (missing, truncated, not ONNX).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only the metadata
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own types for a bad file
        raise RuntimeError(f"ONNX Runtime cannot load {path}: {str(exc).strip().splitlines()[0]}") from exc
    return session_metadata(session)


def session_metadata(session) -> dict[str, str]:
    """The `vcam.*` metadata of a loaded InferenceSession's model."""
    found = session.get_modelmeta().custom_metadata_map or {}
    return {k: v for k, v in found.items() if k.startswith("vcam.")}


def stale_reason(metadata: dict[str, str], info) -> str | None:
    """Why a graph with `metadata` is not the one for `info` (an engine.weights.ModelInfo), or None."""
    made_from = metadata.get(WEIGHTS_KEY)
    if made_from is None:
        return f"{info.graph_path.name} records no weights hash (not written by scripts/export_onnx.py)"
    if made_from != info.sha256:
        return (f"{info.graph_path.name} was made from other weights than {info.weights_path.name} "
                f"(sha256 {made_from[:12]} != {info.sha256[:12]})")
    return None


def shipped_graph(info) -> tuple[Path | None, str]:
    """(the current shipped graph of `info`, or None; the reason when None)."""
    path = info.graph_path
    if not path.is_file():
        return None, f"no ONNX graph ships beside {info.weights_path.name} ({path.name} is missing)"
    try:
        reason = stale_reason(graph_metadata(path), info)
    except RuntimeError as exc:
        reason = str(exc)
    return (None, reason) if reason else (path, "")


def onnx_for(model, opset: int = 17) -> Path:
    """The ONNX graph to run `model` (an engine.weights.ModelInfo or an nn.Module) with.

    A ModelInfo with a current shipped graph: that file (no torch). Otherwise an export through torch,
    cached in the user cache dir (engine.backends.onnx_cache).

    Raises:
        RuntimeError: no current graph ships and torch is not installed to export one; or the export failed.
    """
    from engine.weights import ModelInfo

    if isinstance(model, ModelInfo):
        path, reason = shipped_graph(model)
        if path is not None:
            return path
        if not torch_available():
            raise RuntimeError(f"{reason}; torch is not installed to export one: regenerate it with {REGENERATE} "
                               "in a full environment, or pip install 'vcam[train]'")
        log.warning("%s: exporting the model through torch instead (regenerate it: %s)", reason, REGENERATE)
        model = model.module()
    from engine.backends.onnx_cache import cached_onnx

    return cached_onnx(model, opset)
