"""ONNX exports cached in the user cache dir, shared by the ONNX Runtime and TensorRT backends, for models
that have no current shipped graph (engine.backends.graph); making one needs torch.

The key is a hash of the model (name, config, every weight) and of the engine's source files (a code
change can change the graph without changing a weight), plus the opset. Exports are written to a temporary
file created exclusively (O_EXCL, an unpredictable name: nothing planted there can be followed) and
renamed, so a crash never leaves a half file under the final name. Every code or weights change adds a
file, so the cache is bounded: after each export the oldest files go until it fits `max_cache_bytes()`
(`VCAM_CACHE_MAX_MB`, default 1024).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import tempfile
import time
from pathlib import Path

from engine import paths
from engine.backends.graph import ENGINE_DIR as _ENGINE_DIR
from engine.backends.graph import GRAPH_SOURCES as _GRAPH_SOURCES
from engine.errors import first_line
from engine.weights import model_fingerprint

log = logging.getLogger(__name__)


DEFAULT_MAX_MB = 1024
_STALE_TMP_S = 3600.0  # a temporary file this old is a crashed export's, not one being written now


def max_cache_bytes() -> int:
    """The cache's size cap in bytes: `VCAM_CACHE_MAX_MB` (a number > 0) or DEFAULT_MAX_MB.

    Raises:
        ValueError: VCAM_CACHE_MAX_MB is set but not a finite number > 0.
    """
    text = os.environ.get("VCAM_CACHE_MAX_MB", "").strip()
    if not text:
        return DEFAULT_MAX_MB << 20
    try:
        mb = float(text)
    except ValueError:
        mb = float("nan")
    if not (mb > 0 and mb < float("inf")):
        raise ValueError(f"VCAM_CACHE_MAX_MB must be a number of megabytes > 0, got {text!r}")
    return int(mb * (1 << 20))


def prune_cache(directory: Path, max_bytes: int, keep: tuple[Path, ...] = ()) -> list[Path]:
    """Delete the oldest files (by modification time) in `directory` until it holds at most `max_bytes`.

    Files in `keep` (the one just written) stay, and so do temporary files younger than an hour (another
    process may be exporting right now). Shared with the TensorRT engine cache.

    Returns:
        The deleted paths, oldest first.
    """
    keep_set = {Path(k).resolve() for k in keep}
    now = time.time()
    entries = []
    for path in directory.iterdir():
        try:
            stat = path.lstat()
        except OSError:
            continue
        if not path.is_file() or path.is_symlink():
            continue
        entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    removed = []
    for mtime, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if path.resolve() in keep_set or (".tmp" in path.name and now - mtime < _STALE_TMP_S):
            continue
        try:
            path.unlink()
        except OSError as exc:  # read-only or already gone: the cap is best effort, never an error
            log.debug("cache: cannot remove %s: %s", path, exc)
            continue
        total -= size
        removed.append(path)
    if removed:
        log.info("cache %s: removed %d old file(s) to stay under %d MB", directory, len(removed), max_bytes >> 20)
    return removed


def _source_hash(model) -> str:
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


def onnx_cache_path(model, opset: int = 17) -> Path:
    """Where `cached_onnx` keeps this model's dynamic-shape export (the file may not exist yet)."""
    name = str(getattr(model, "name", "model")).replace("/", "_")
    return paths.user_cache_dir() / "onnx" / f"{name}-{model_fingerprint(model)}-{_source_hash(model)}-op{opset}.onnx"


def cached_onnx(model, opset: int = 17, refresh: bool = False) -> Path:
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
    max_bytes = max_cache_bytes()
    paths.ensure_dir(path.parent)
    # mkstemp: O_CREAT|O_EXCL with a random name, so a file or link planted under a guessable name is never
    # written through. The suffix stays .onnx for the exporter.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    log.info("exporting %s to ONNX (opset %d, dynamic size): %s", getattr(model, "name", "model"), opset, path)
    try:
        export_onnx(model, tmp, height=None, width=None, opset=opset)
        os.replace(tmp, path)
    except Exception as exc:  # the exporter raises many types; the caller needs one clear reason
        for leftover in tmp.parent.glob(tmp.name + "*"):
            leftover.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX export of {getattr(model, 'name', 'model')} failed: {first_line(exc)}") from exc
    prune_cache(path.parent, max_bytes, keep=(path,))
    return path
