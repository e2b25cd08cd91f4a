"""Live controls: preview hotkeys and the config file re-read when it changes (no restart).

Both end in the same small set of actions on the running stages (next background, harmonization on/off,
smoothing on/off, strength up/down, split view, quit), so a hotkey and a config edit behave alike.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Any

from vcam.config import LIVE_KEYS, RunConfig, load_toml, resolve

log = logging.getLogger("vcam.controls")

HOTKEYS = {
    "b": "next background",
    "h": "harmonization on/off",
    "s": "smoothing on/off",
    "+": "strength up",
    "-": "strength down",
    "v": "before/after split view",
    "q": "quit (also Esc or closing the window)",
}
STRENGTH_STEP = 0.1


def handle_key(pipeline, key: int | None) -> bool:
    """Apply one preview key to `pipeline`; returns True when the user asked to quit."""
    if key is None:
        return False
    char = chr(key).lower() if 0 <= key < 256 else ""
    if char == "q" or key == 27:
        return True
    if char in ("b", "n", " "):
        pipeline.next_background()
    elif char == "h":
        stage = pipeline.harmonize
        if stage is not None:
            stage.enabled = not stage.enabled
            log.info("harmonization %s", "on" if stage.enabled else "off")
    elif char == "s" and pipeline.harmonize is not None:
        on = pipeline.harmonize.toggle_smoothing()
        log.info("temporal smoothing %s", f"on ({pipeline.harmonize.smoothing:.2f})" if on else "off")
    elif char in ("+", "=") and pipeline.harmonize is not None:
        pipeline.harmonize.strength = pipeline.harmonize.strength + STRENGTH_STEP
        log.info("strength %.1f", pipeline.harmonize.strength)
    elif char in ("-", "_") and pipeline.harmonize is not None:
        pipeline.harmonize.strength = pipeline.harmonize.strength - STRENGTH_STEP
        log.info("strength %.1f", pipeline.harmonize.strength)
    elif char == "v" and pipeline.outputs is not None and pipeline.outputs.preview is not None:
        pipeline.outputs.preview.split = not pipeline.outputs.preview.split
    return False


class ConfigWatcher:
    """Polls a TOML config file's modification time and re-resolves the settings when it changes.

    Flags typed on the command line keep overriding the file. An invalid edit is reported once and the
    running settings stay (a typo must not stop a call).

    Args:
        path: the --config file.
        flags: the typed command-line flags (None = not typed), as given to `vcam.config.resolve`.
        interval: seconds between stat() calls.
    """

    def __init__(self, path: str, flags: dict[str, Any], interval: float = 0.5):
        self.path = path
        self.flags = flags
        self.interval = interval
        self._mtime = self._stat()
        self._last_poll = 0.0

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return None

    def poll(self, now: float) -> RunConfig | None:
        """The new settings if the file changed since the last poll (and is valid), else None."""
        if now - self._last_poll < self.interval:
            return None
        self._last_poll = now
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return None
        self._mtime = mtime
        try:
            return resolve(self.flags, load_toml(self.path))
        except (ValueError, TypeError, OSError) as exc:
            log.error("config %s not applied: %s", self.path, str(exc).splitlines()[0])
            return None


def changed_settings(old: RunConfig, new: RunConfig) -> tuple[dict[str, Any], list[str]]:
    """Split what changed into live-applicable settings and the names that need a restart."""
    old_values, new_values = asdict(old), asdict(new)
    live, restart = {}, []
    for key, value in new_values.items():
        if value == old_values[key]:
            continue
        if key in LIVE_KEYS:
            live[key] = value
        else:
            restart.append(key)
    return live, restart
