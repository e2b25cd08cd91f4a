"""Run settings: defaults < `--config FILE` (TOML) < command-line flags, and the parsers for their values.

The command line keeps every option's default at `None` so that an option the user did not type can be
told apart from one typed with the default value; `resolve()` then layers defaults, the TOML file and the
typed flags. When the file changes on disk, only the settings whose value in it changed are sent to the
running pipeline (`vcam.controls.ConfigWatcher`: what the control page or a hotkey set stays), and those in
`LIVE_KEYS` apply without a restart.

Every value, however it arrives (a flag, the TOML file, a live edit, `RunConfig.replace` from a control
page), passes one validation layer: `RunConfig` runs `validate` on construction, so a RunConfig that exists
is valid. Numbers are real, finite and in a sane range, booleans real booleans, strings strings, and no
output overwrites an input; a bad value is a `SettingError` naming the setting. One parser per value: the
background's (`background_kind`, `parse_blur`, `parse_color`, read by vcam.background and the control page
alike) here; the reference region's in `vcam.reference`, beside the mask it builds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcam.reference import check_reference

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10 uses the backport named in pyproject
    import tomli as tomllib

# Settings that take effect on a running pipeline when the config file changes; the rest need a restart.
LIVE_KEYS = ("background", "smoothing", "strength", "harmonize", "split", "mask_smoothing", "refresh_hz",
             "reference", "segmentation_model")


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
    smoothing: float = 0.1  # time constant (s) of the harmonization's temporal smoothing (0 = none)
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
    overlap: str = "auto"  # segment and composite in their own thread: on, off, auto (2+ cores, > 720p, harmonize)
    max_frames: int | None = None
    stats_json: str | None = None
    status_interval: float = 5.0
    loop: bool | None = None  # loop a video file (default: only when --max-frames asks for more)
    split: bool = False  # preview: before/after split view
    config: str | None = None
    # Control page (vcam.ui): served on ui_host:ui_port (0 = a free port) while the stream runs.
    ui: bool = False
    ui_port: int = 8765
    ui_host: str = "127.0.0.1"  # loopback only unless the user names another interface

    def __post_init__(self) -> None:
        validate(self)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with `changes`, validated like any RunConfig (the control page's and live edits' way in).

        Raises:
            SettingError: a changed value of the wrong type or out of range; `self` is unchanged.
        """
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}
_LISTS = ("background", "output")
# Fields whose None means "not set" (the rest always hold a value).
_OPTIONAL = {"size", "fps", "vcam_backend", "vcam_device", "model", "weights", "reference", "segmenter_model",
             "max_frames", "stats_json", "loop", "config"}


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


class SettingError(ValueError):
    """A setting with the wrong type or an unusable value; the message names the setting.

    Args:
        message: one line: the setting, what is allowed, what was given.
        setting: the RunConfig field name.
        exit_code: 2 (a usage error) for a flag; `load_toml` makes it 1 (a bad file).
    """

    def __init__(self, message: str, setting: str, exit_code: int = 2):
        super().__init__(message)
        self.setting = setting
        self.exit_code = exit_code


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _number(key: str, value: Any, low: float, high: float, *, integer: bool = False,
            high_open: bool = False) -> float | int:
    """A real, finite number in [low, high] (or [low, high)); bools and strings are refused.

    The upper bounds are sanity limits, not tuning advice: a value past them cannot be meant (100,000
    threads, a blur wider than any frame) and would hang or exhaust the machine instead of failing.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingError(f"{_flag(key)} must be {kind}, got {value!r} ({type(value).__name__})", key)
    if not math.isfinite(value):
        raise SettingError(f"{_flag(key)} must be a finite number, got {value!r}", key)
    if integer:
        if value != int(value):
            raise SettingError(f"{_flag(key)} must be an integer, got {value!r}", key)
        value = int(value)
    above = value >= high if high_open else value > high
    if value < low or above:
        bracket = ")" if high_open else "]"
        raise SettingError(f"{_flag(key)} must be in [{low:g}, {high:g}{bracket}, got {value!r}", key)
    return value if integer else float(value)


# name: (low, high, integer, high_open). Everything numeric in RunConfig is listed here: one place for the
# ranges, whichever way a value arrives (flag, TOML, live edit, control page).
_NUMBERS: dict[str, tuple[float, float, bool, bool]] = {
    "fps": (1, 240, False, False),
    "smoothing": (0, 2, False, False),  # seconds: engine.harmonizer.MAX_SMOOTHING
    "strength": (0, 1, False, False),
    "net_size": (8, 2048, True, False),
    "refresh_hz": (0, 1000, False, False),
    "threads": (1, 64, True, False),
    "segmentation_model": (0, 1, True, False),
    "max_frames": (1, 10**9, True, False),
    "status_interval": (0, 86400, False, False),
    "ui_port": (0, 65535, True, False),
}
_BOOLS = ("harmonize", "mask_smoothing", "split", "loop", "ui")
_CHOICES = {"harmonize_mode": ("auto", "inline", "worker"), "overlap": ("auto", "on", "off")}
_STRINGS = ("model", "weights", "backend", "device", "reference", "vcam_backend", "vcam_device",
            "segmenter_model", "stats_json", "config", "ui_host")
DEFAULT_BLUR = 12.0  # blur background: Gaussian sigma in full-resolution pixels at 720p
MAX_BLUR = 200.0  # blur sigma (720p pixels): wider than the frame is no longer a blur, and costs minutes


def parse_blur(arg: str) -> float:
    """The STRENGTH of `blur:STRENGTH` (empty: the default), finite and in (0, MAX_BLUR].

    Raises:
        ValueError: not a number, not finite or out of range.
    """
    if not str(arg).strip():
        return DEFAULT_BLUR
    try:
        sigma = float(arg)
    except ValueError:
        raise ValueError(f"blur strength must be a number, got {arg!r}") from None
    if not math.isfinite(sigma) or not 0 < sigma <= MAX_BLUR:
        raise ValueError(f"blur strength must be a finite number in (0, {MAX_BLUR:g}], got {arg!r}")
    return sigma


def background_kind(spec: str) -> tuple[str, str]:
    """("blur" | "color" | "file", the argument after the colon) of a --background value."""
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "blur":
        return "blur", arg
    if kind in ("color", "colour"):
        return "color", arg
    return "file", spec.strip()


def check_background(spec: str) -> str:
    """Check a --background value's syntax (blur, colour) without opening files; returns it stripped.

    Raises:
        ValueError: a malformed blur strength or colour, or an empty value.
    """
    spec = spec.strip()
    kind, arg = background_kind(spec)
    if kind == "blur":
        parse_blur(arg)
    elif kind == "color":
        parse_color(arg)
    elif not spec:
        raise ValueError("an empty background")
    return spec


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or any(ord(c) < 32 for c in value):
        raise SettingError(f"{_flag(key)} must be a non-empty string on one line, got {value!r}", key)
    return value


def _coerce(key: str, value: Any) -> Any:
    """Bring a flag, TOML or live value to the type RunConfig holds; anything else is a SettingError.

    Raises:
        SettingError: naming the setting, what is allowed and what was given.
    """
    if value is None:
        return None
    try:
        return _coerce_value(key, value)
    except SettingError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:  # the parsers' messages, tagged with the name
        message = str(exc).strip()
        if _flag(key) not in message:
            message = f"{_flag(key)}: {message}"
        raise SettingError(message, key) from None


def _coerce_value(key: str, value: Any) -> Any:
    if key in _LISTS:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list | tuple) or not values or not all(isinstance(v, str) and v.strip()
                                                                          for v in values):
            raise SettingError(f"{_flag(key)} must be a string or a list of strings, got {value!r}", key)
        return [check_background(v) for v in values] if key == "background" else [v.strip() for v in values]
    if key == "size":
        if not isinstance(value, str | list | tuple):
            raise SettingError(f"--size must look like 1280x720, got {value!r}", key)
        return parse_size(value)
    if key == "input":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)  # TOML `input = 0`: a camera index
        return _string(key, value).strip()
    if key in _NUMBERS:
        low, high, integer, high_open = _NUMBERS[key]
        return _number(key, value, low, high, integer=integer, high_open=high_open)
    if key in _BOOLS:
        if not isinstance(value, bool):  # "no" is a true string: never negate or truth-test a non-bool
            raise SettingError(f"{key} must be true or false, got {value!r} ({type(value).__name__})", key)
        return value
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise SettingError(f"{_flag(key)} must be one of {', '.join(_CHOICES[key])}, got {value!r}", key)
        return value
    if key == "reference":
        return check_reference(_string(key, value))
    if key in _STRINGS:
        return _string(key, value)
    raise SettingError(f"unknown setting {key!r}", key)


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (also through links); cheap, never opens either."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


def _check_paths(config: RunConfig) -> None:
    """Refuse an output that would overwrite something the run reads (input, background, config...)."""
    reads = [("--input", config.input)] + [("--background", b) for b in config.background]
    reads += [(_flag(k), getattr(config, k)) for k in ("reference", "weights", "segmenter_model", "config")]
    reads = [(name, path) for name, path in reads if path and not str(path).isdigit() and "://" not in str(path)]
    writes = [("output", "--output file:", arg) for kind, arg in map(parse_output, config.output) if kind == "file"]
    if config.stats_json:
        writes.append(("stats_json", "--stats-json ", config.stats_json))
    for i, (setting, label, path) in enumerate(writes):
        for other_name, other in reads + [(w[1].split()[0], w[2]) for w in writes[:i]]:
            if _same_file(path, other):
                raise SettingError(f"{label}{path} is also the {other_name}: it would be overwritten while in "
                                   f"use; choose another path", setting)


def validate(config: RunConfig) -> RunConfig:
    """Check every field's type and range, and the paths against each other, at the boundary.

    `RunConfig` runs this on construction (and so on `replace`), so a RunConfig that exists is valid,
    however its values arrived.

    Raises:
        SettingError: the first bad value, naming the setting, what is allowed and what was given.
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None and f.name not in _OPTIONAL:
            raise SettingError(f"{_flag(f.name)} must be set", f.name)
        object.__setattr__(config, f.name, _coerce(f.name, value))
    if config.net_size % 8:
        raise SettingError(f"--net-size must be a multiple of 8 >= 8, got {config.net_size}", "net_size")
    for spec in config.output:
        try:
            parse_output(spec)
        except ValueError as exc:
            raise SettingError(str(exc), "output") from None
    _check_paths(config)
    return config


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into RunConfig keys (dashes or underscores both accepted).

    Every value goes through the same checks as a flag; a bad one names the file and the setting.

    Raises:
        FileNotFoundError: the file does not exist.
        SettingError: not valid TOML, an unknown key, or a value of the wrong type or out of range (exit 1:
            a bad file rather than a usage error).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    if not path.is_file():  # a FIFO or device would block the read, a directory cannot be read
        raise SettingError(f"config file {path} is not a regular file", "config", exit_code=1)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingError(f"config file {path} is not valid TOML: {exc}", "config", exit_code=1) from None
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "no_harmonize":
            if not isinstance(value, bool):  # negating a string ("no") would silently mean "off"
                raise SettingError(f"config file {path}: setting {key!r} must be true or false, got {value!r}",
                                   "harmonize", exit_code=1)
            name, value = "harmonize", not value
        if name not in _FIELDS or name == "config":
            raise SettingError(f"config file {path}: unknown setting {key!r}", name, exit_code=1)
        try:
            values[name] = _coerce(name, value)
        except SettingError as exc:
            raise SettingError(f"config file {path}: setting {key!r}: {exc}", name, exit_code=1) from None
    return values


def resolve(flags: dict[str, Any], file_values: dict[str, Any] | None = None) -> RunConfig:
    """Layer defaults < file values < flags (flags given as None count as not typed).

    Raises:
        SettingError: a value of the wrong type or out of range, naming the setting.
    """
    values = dict(file_values or {})
    for key, value in flags.items():
        if key in _FIELDS and value is not None:
            values[key] = _coerce(key, value)
    return RunConfig(**values)  # validates


def from_args(args: Any) -> tuple[RunConfig, dict[str, Any]]:
    """Build the RunConfig from parsed `vcam run` arguments; returns it and the typed flags.

    Raises:
        FileNotFoundError, SettingError: from the config file or a bad value.
    """
    flags = {name: getattr(args, name) for name in _FIELDS if hasattr(args, name)}
    if getattr(args, "no_harmonize", None):
        flags["harmonize"] = False
    file_values = load_toml(args.config) if getattr(args, "config", None) else {}
    return resolve(flags, file_values), flags
