"""What the control page keeps on disk: the last settings (TOML, atomic), uploaded backgrounds, built-ins.

    <user config>/ui.toml            the page's last settings; `vcam ui` / `vcam run --ui` start from them
    <user data>/backgrounds/         uploaded images and videos (validated before they are kept)
    vcam/assets/backgrounds/         the built-in backgrounds (licences in vcam/assets/NOTICE)

Nothing else on disk is written: an upload is decoded from a temporary file in the uploads folder and
either renamed into place or deleted.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from engine.paths import user_config_dir
from vcam.config import load_toml

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "assets" / "backgrounds"
IMAGE_TYPES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
VIDEO_TYPES = (".mp4", ".webm", ".mov", ".mkv", ".avi")
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_VIDEO_BYTES = 200 * 1024 * 1024
MAX_PIXELS = 7680 * 4320  # an image larger than 8K is refused before it is decoded in full
RECENT = 8  # uploads shown in the gallery, newest first
# The settings the page changes, and so the ones it persists.
PAGE_KEYS = ("background", "harmonize", "strength", "smoothing", "segmentation_model", "reference", "split",
             "mask_smoothing", "refresh_hz")


class UploadError(ValueError):
    """An upload that is refused; the message is one line for the page."""


def user_data_dir(platform: str | None = None) -> Path:
    """The directory for the user's own files (uploaded backgrounds); `VCAM_DATA_DIR` overrides.

    Linux: $XDG_DATA_HOME/vcam (~/.local/share/vcam); macOS: ~/Library/Application Support/vcam;
    Windows: %LOCALAPPDATA%\\vcam.
    """
    override = os.environ.get("VCAM_DATA_DIR")
    if override:
        return Path(override).expanduser()
    platform = platform or sys.platform
    home = Path(os.path.expanduser("~"))
    if platform.startswith("win"):
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / "vcam"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "vcam"
    return Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share") / "vcam"


def settings_path() -> Path:
    return user_config_dir() / "ui.toml"


def load_settings(path: Path | None = None) -> dict:
    """The page's last settings (RunConfig keys), or {} when none were saved.

    Raises:
        SettingError: a file that is not valid TOML or holds a bad value (names the file and the setting).
    """
    path = path or settings_path()
    return load_toml(path) if path.is_file() else {}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    # JSON strings, numbers and arrays of strings are valid TOML basic strings, numbers and arrays.
    return json.dumps(value, ensure_ascii=False)


def save_settings(values: dict, path: Path | None = None) -> Path:
    """Write `values` (None ones left out) as TOML atomically: a temporary file renamed over the old one."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# vcam control page: the last settings (rewritten by the page)\n" + "".join(
        f"{key.replace('_', '-')} = {_toml_value(value)}\n" for key, value in values.items() if value is not None)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def uploads_dir() -> Path:
    return user_data_dir() / "backgrounds"


def gallery() -> list[dict]:
    """The built-in backgrounds, then the user's uploads (newest first): [{name, spec, kind, video}]."""
    items = [{"name": p.stem.replace("_", " "), "spec": str(p), "kind": "builtin", "video": False}
             for p in sorted(BUILTIN_DIR.glob("*.jpg"))]
    folder = uploads_dir()
    uploads = [p for p in folder.glob("*") if p.is_file() and not p.name.startswith(".")] if folder.is_dir() else []
    uploads.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    items += [{"name": p.name, "spec": str(p), "kind": "recent", "video": p.suffix.lower() in VIDEO_TYPES}
              for p in uploads[:RECENT]]
    return items


def is_gallery_file(spec: str) -> bool:
    """Whether `spec` names a file inside the built-in or the uploads folder (the only files the page may pick)."""
    try:
        path = Path(spec).resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return path.is_file() and any(path.parent == folder.resolve() for folder in (BUILTIN_DIR, uploads_dir()))


def _safe_name(name: str) -> tuple[str, str]:
    stem, suffix = os.path.splitext(os.path.basename(name or ""))
    suffix = suffix.lower()
    if suffix not in IMAGE_TYPES + VIDEO_TYPES:
        raise UploadError(f"{name!r} is not a supported image or video (expected one of "
                          f"{', '.join(IMAGE_TYPES + VIDEO_TYPES)})")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:60] or "background"
    return stem, suffix


def check_upload_size(name: str, size: int) -> None:
    """Refuse an upload by its declared size before reading it.

    Raises:
        UploadError: an unsupported file type, an empty file or one over the size limit.
    """
    _, suffix = _safe_name(name)
    limit = MAX_VIDEO_BYTES if suffix in VIDEO_TYPES else MAX_IMAGE_BYTES
    if size <= 0:
        raise UploadError(f"{name!r} is empty")
    if size > limit:
        raise UploadError(f"{name!r} is {size / 2**20:.1f} MB; at most {limit // 2**20} MB")


def _check_decodes(path: Path, video: bool) -> None:
    if video:
        cap = cv2.VideoCapture(str(path))
        ok, image = cap.read() if cap.isOpened() else (False, None)
        cap.release()
        if not ok or image is None:
            raise UploadError("not a video this machine can decode (OpenCV read no frame)")
        return
    data = np.fromfile(str(path), np.uint8)
    header = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)  # cheap size check before the full decode
    if header is None:
        raise UploadError("not an image this machine can decode")
    if header.shape[0] * header.shape[1] * 64 > MAX_PIXELS:
        raise UploadError(f"image too large (at most {MAX_PIXELS // 10**6} megapixels)")
    if cv2.imdecode(data, cv2.IMREAD_COLOR) is None:
        raise UploadError("not an image this machine can decode")


def save_upload(name: str, data: bytes) -> Path:
    """Validate an uploaded background (type, size, a real decode) and keep it in the uploads folder.

    Returns:
        The saved file's path (a new name when one with that name exists).

    Raises:
        UploadError: refused, with one line saying why; nothing is left on disk.
    """
    check_upload_size(name, len(data))
    stem, suffix = _safe_name(name)
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            _check_decodes(Path(tmp), suffix in VIDEO_TYPES)
        except UploadError as exc:
            raise UploadError(f"{name!r}: {exc}") from None
        target, n = folder / f"{stem}{suffix}", 1
        while target.exists():
            n += 1
            target = folder / f"{stem}-{n}{suffix}"
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
