"""Per-user cache and config directories (ONNX exports, TensorRT engines, user settings).

Platform conventions, without a third-party dependency:
    Linux/BSD: $XDG_CACHE_HOME/vcam (default ~/.cache/vcam), $XDG_CONFIG_HOME/vcam (default ~/.config/vcam)
    macOS:     ~/Library/Caches/vcam, ~/Library/Application Support/vcam
    Windows:   %LOCALAPPDATA%\\vcam\\Cache, %APPDATA%\\vcam (LOCALAPPDATA when APPDATA is unset)
`VCAM_CACHE_DIR` / `VCAM_CONFIG_DIR` override either (tests and read-only homes use that).
The functions only compute paths; `ensure_dir` creates one when a caller is about to write.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "vcam"


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def user_cache_dir(platform: str | None = None) -> Path:
    """The directory for rebuildable files (exported ONNX models, TensorRT engines).

    Args:
        platform: a `sys.platform` value; the running one by default (tests pass others).

    Returns:
        The path (not created).
    """
    override = os.environ.get("VCAM_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    platform = platform or sys.platform
    if platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or str(_home() / "AppData" / "Local")
        return Path(base) / APP_NAME / "Cache"
    if platform == "darwin":
        return _home() / "Library" / "Caches" / APP_NAME
    base = os.environ.get("XDG_CACHE_HOME") or str(_home() / ".cache")
    return Path(base) / APP_NAME


def user_config_dir(platform: str | None = None) -> Path:
    """The directory for user settings (the app's config file).

    Args:
        platform: a `sys.platform` value; the running one by default.

    Returns:
        The path (not created).
    """
    override = os.environ.get("VCAM_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    platform = platform or sys.platform
    if platform.startswith("win"):
        base = os.environ.get("APPDATA") or os.environ.get("LOCALAPPDATA") or str(_home() / "AppData" / "Roaming")
        return Path(base) / APP_NAME
    if platform == "darwin":
        return _home() / "Library" / "Application Support" / APP_NAME
    base = os.environ.get("XDG_CONFIG_HOME") or str(_home() / ".config")
    return Path(base) / APP_NAME


def ensure_dir(path: Path) -> Path:
    """Create `path` (and parents) if missing and return it.

    Raises:
        RuntimeError: the directory cannot be created (read-only home, a file in the way).
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeError(f"cannot create directory {path}: {exc} (set VCAM_CACHE_DIR to a writable place)") from exc
    return path


def cache_subdir(name: str) -> Path:
    """`user_cache_dir() / name`, created (e.g. "onnx", "tensorrt")."""
    return ensure_dir(user_cache_dir() / name)
