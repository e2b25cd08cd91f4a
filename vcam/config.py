"""Run settings: defaults < `--config FILE` (TOML) < command-line flags, and the parsers for their values.

The command line keeps every option's default at `None` so that an option the user did not type can be
told apart from one typed with the default value; `resolve()` then layers defaults, the TOML file and the
typed flags. The same layering runs again when the file changes on disk (`vcam.controls.ConfigWatcher`),
and the settings in `LIVE_KEYS` are applied to the running pipeline without a restart.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10 uses the backport named in pyproject
    import tomli as tomllib

# Settings that take effect on a running pipeline when the config file changes; the rest need a restart.
LIVE_KEYS = ("background", "smoothing", "strength", "harmonize", "split", "mask_smoothing", "refresh_hz")


@dataclass
class RunConfig:
    """Everything `vcam run` needs; field names are the long flags with `_` for `-`."""

    input: str = "0"  # camera index, /dev/videoN, video file, image file or stream URL
    size: tuple[int, int] | None = None  # (width, height) asked of the camera / applied to files
    fps: float | None = None  # asked of the camera; for files and images the default pace
    background: list[str] = field(default_factory=lambda: ["blur"])  # cycled live
    output: list[str] = field(default_factory=lambda: ["virtualcam"])
    vcam_backend: str | None = None  # pyvirtualcam backend name
    vcam_device: str | None = None  # pyvirtualcam device, e.g. /dev/video10
    # Harmonization (engine.Harmonizer arguments).
    harmonize: bool = True
    model: str | None = None
    weights: str | None = None
    backend: str = "auto"
    device: str = "auto"
    net_size: int = 256
    smoothing: float = 0.8  # temporal smoothing of the PN statistics (0 = none)
    strength: float = 1.0
    reference: str | None = None  # "x,y,w,h" (pixels, or fractions of the frame) or a mask image
    harmonize_mode: str = "auto"  # auto (GPU: every frame, CPU: worker), inline, worker
    refresh_hz: float = 10.0  # worker: most network runs per second (0 = as fast as it goes)
    threads: int = 1  # torch threads for the worker on a CPU: leave the other core to the frame loop
    # Segmentation.
    segmentation_model: int = 1  # MediaPipe selfie: 0 general (256x256), 1 landscape (256x144)
    segmenter_model: str | None = None  # a MediaPipe Tasks .tflite segmenter instead
    mask_smoothing: bool = True
    # Run control.
    max_frames: int | None = None
    stats_json: str | None = None
    status_interval: float = 5.0
    loop: bool | None = None  # loop a video file (default: only when --max-frames asks for more)
    split: bool = False  # preview: before/after split view
    config: str | None = None

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}
_LISTS = ("background", "output")


def parse_size(text: str | list | tuple) -> tuple[int, int]:
    """Parse "WxH" (or a two-item list from TOML) into (width, height).

    Raises:
        ValueError: not two positive integers, or not even (video encoders need even sizes).
    """
    if isinstance(text, list | tuple):
        text = "x".join(str(v) for v in text)
    match = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", str(text))
    if not match:
        raise ValueError(f"--size must look like 1280x720, got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if not (16 <= width <= 7680 and 16 <= height <= 4320) or width % 2 or height % 2:
        raise ValueError(f"--size must be even and between 16x16 and 7680x4320, got {width}x{height}")
    return width, height


def parse_color(text: str) -> tuple[int, int, int]:
    """Parse "#RRGGBB" / "RRGGBB" into an (R, G, B) tuple.

    Raises:
        ValueError: not six hex digits.
    """
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})", text.strip())
    if not match:
        raise ValueError(f"colour must look like #RRGGBB, got {text!r}")
    value = match.group(1)
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def parse_output(spec: str) -> tuple[str, str | None]:
    """Split an --output value into (kind, argument): virtualcam, preview, null or file:PATH.

    Raises:
        ValueError: unknown kind or file: without a path.
    """
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("virtualcam", "preview", "null") and not arg:
        return kind, None
    if kind == "file" and arg:
        return kind, arg
    if kind == "file":
        raise ValueError("--output file: needs a path, e.g. file:out.mp4")
    raise ValueError(f"unknown --output {spec!r}: expected virtualcam, preview, null or file:PATH")


def _coerce(key: str, value: Any) -> Any:
    """Bring a TOML or flag value to the type RunConfig holds, with a clear error."""
    if value is None:
        return None
    if key in _LISTS:
        values = [value] if isinstance(value, str) else list(value)
        if not values or not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"{key} must be a string or a list of strings, got {value!r}")
        return values
    if key == "size":
        return parse_size(value)
    if key == "input":
        return str(value)
    if key in ("fps", "smoothing", "strength", "refresh_hz", "status_interval"):
        return float(value)
    if key in ("net_size", "segmentation_model", "max_frames", "threads"):
        if isinstance(value, bool) or int(value) != float(value):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if key in ("harmonize", "mask_smoothing", "split", "loop"):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
    return value


def validate(config: RunConfig) -> RunConfig:
    """Check value ranges once, at the boundary.

    Raises:
        ValueError: the first value out of range, naming the option, what is allowed and what was given.
    """
    if config.fps is not None and not 1 <= config.fps <= 240:
        raise ValueError(f"--fps must be in 1..240, got {config.fps}")
    if not 0 <= config.smoothing < 1:
        raise ValueError(f"--smoothing must be in [0, 1), got {config.smoothing}")
    if not 0 <= config.strength <= 1:
        raise ValueError(f"--strength must be in [0, 1], got {config.strength}")
    if config.net_size < 8 or config.net_size % 8:
        raise ValueError(f"--net-size must be a multiple of 8 >= 8, got {config.net_size}")
    if config.segmentation_model not in (0, 1):
        raise ValueError(f"--segmentation-model must be 0 (general) or 1 (landscape), got {config.segmentation_model}")
    if config.harmonize_mode not in ("auto", "inline", "worker"):
        raise ValueError(f"--harmonize-mode must be auto, inline or worker, got {config.harmonize_mode!r}")
    if config.max_frames is not None and config.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {config.max_frames}")
    if config.refresh_hz < 0:
        raise ValueError(f"--refresh-hz must be >= 0, got {config.refresh_hz}")
    if config.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {config.threads}")
    for spec in config.output:
        parse_output(spec)
    return config


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into RunConfig keys (dashes or underscores both accepted).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not valid TOML, or a key vcam does not know.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "no_harmonize":
            name, value = "harmonize", not value
        if name not in _FIELDS or name == "config":
            raise ValueError(f"config file {path}: unknown setting {key!r}")
        values[name] = _coerce(name, value)
    return values


def resolve(flags: dict[str, Any], file_values: dict[str, Any] | None = None) -> RunConfig:
    """Layer defaults < file values < flags (flags given as None count as not typed).

    Raises:
        ValueError: a value of the wrong type or out of range.
    """
    values = dict(file_values or {})
    for key, value in flags.items():
        if key in _FIELDS and value is not None:
            values[key] = _coerce(key, value)
    return validate(RunConfig(**values))


def from_args(args: Any) -> tuple[RunConfig, dict[str, Any]]:
    """Build the RunConfig from parsed `vcam run` arguments; returns it and the typed flags.

    Raises:
        FileNotFoundError, ValueError: from the config file or a bad value.
    """
    flags = {name: getattr(args, name) for name in _FIELDS if hasattr(args, name)}
    if getattr(args, "no_harmonize", None):
        flags["harmonize"] = False
    file_values = load_toml(args.config) if getattr(args, "config", None) else {}
    return resolve(flags, file_values), flags
