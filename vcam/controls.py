"""Live controls: preview hotkeys and the config file re-read when it changes (no restart).

Both end in the same path: a queued `Pipeline.request(...)` that the frame loop applies between two frames
(`Pipeline.apply_config`), so a hotkey and a config edit behave alike and neither waits for the network.
Each names only the settings it changes (a key press one, a file edit the values it edited), so no source
ever puts back what another one set.
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
    """Turn one preview key into a queued setting change on `pipeline`; True when the user asked to quit.

    Never waits: the change goes through `pipeline.request` (applied between frames, the same path as a
    config-file edit), and toggles start from `pipeline.settings`, which includes changes still queued.
    """
    if key is None:
        return False
    char = chr(key).lower() if 0 <= key < 256 else ""
    if char == "q" or key == 27:
        return True
    settings = pipeline.settings
    if char in ("b", "n", " "):
        pipeline.request(next_background=True)
    elif char == "h":
        pipeline.request(harmonize=not settings.harmonize)
    elif char == "s":
        pipeline.request(smoothing=0.0 if settings.smoothing > 0 else pipeline.last_smoothing)
    elif char in ("+", "="):
        pipeline.request(strength=round(min(settings.strength + STRENGTH_STEP, 1.0), 3))
    elif char in ("-", "_"):
        pipeline.request(strength=round(max(settings.strength - STRENGTH_STEP, 0.0), 3))
    elif char == "v":
        pipeline.request(split=not settings.split)
    return False


class ConfigWatcher:
    """Polls a TOML config file's modification time; when it changed, the settings whose value in it changed.

    Only those: a setting the edit did not touch keeps whatever the control page, a hotkey or an earlier
    edit made of it (sending the whole file again would, say, turn harmonization back on after the page
    turned it off). A setting typed as a flag is never sent (the command line wins over the file), and
    one removed from the file keeps its running value. An invalid edit is reported once and nothing of it
    is sent (a typo must not stop a call); the next edit is compared with the last file that was sent.

    Args:
        path: the --config file.
        flags: the typed command-line flags (None = not typed), as given to `vcam.config.resolve`.
        interval: seconds between stat() calls.
    """

    def __init__(self, path: str, flags: dict[str, Any], interval: float = 0.5):
        self.path = path
        self.flags = {key: value for key, value in flags.items() if value is not None}
        self.interval = interval
        self._mtime = self._stat()
        self._last_poll = 0.0
        try:  # what the running settings were resolved from
            self._values = load_toml(self.path)
        except (ValueError, TypeError, OSError):
            self._values = {}

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return None

    def poll(self, now: float) -> dict[str, Any] | None:
        """{setting: new value} for what the file changed since the last poll (if it is valid), else None."""
        if now - self._last_poll < self.interval:
            return None
        self._last_poll = now
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return None
        self._mtime = mtime
        try:
            values = load_toml(self.path)
            resolve(self.flags, values)  # the file as a whole still makes a valid run (paths against each other)
        except (ValueError, TypeError, OSError) as exc:
            log.error("config %s not applied: %s", self.path, str(exc).splitlines()[0])
            return None
        changed = {key: value for key, value in values.items()
                   if key not in self.flags and (key not in self._values or self._values[key] != value)}
        self._values = values
        return changed or None


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
