"""`vcam run --ui`: the pipeline with the control page beside it (the page's settings saved and restored)."""

from __future__ import annotations

import logging
import os

from vcam.config import RunConfig, background_kind, load_toml, resolve
from vcam.ui import store

log = logging.getLogger("vcam.ui")


def resolve_with_saved(args, flags: dict) -> RunConfig:
    """The settings for a run with the page: defaults < the page's last settings < --config file < flags.

    Raises:
        SettingError: a bad value in the saved settings, the config file or a flag (names which).
    """
    values = store.load_settings()
    missing = [spec for spec in values.get("background", []) if _is_missing_file(spec)]
    if missing:  # an upload deleted since: start with the default rather than fail
        log.warning("saved background %s no longer exists; using the default", missing[0])
        values.pop("background")
    if getattr(args, "config", None):
        values.update(load_toml(args.config))
    return resolve(flags, values)


def _is_missing_file(spec: str) -> bool:
    return background_kind(spec)[0] == "file" and not os.path.exists(os.path.expanduser(spec))


def run_with_page(config: RunConfig, flags: dict) -> dict:
    """Build the pipeline, serve the page for it, run until the stream ends; returns the run's stats.

    Raises:
        OSError: the page's port cannot be bound (nothing is left open).
    """
    from vcam.pipeline import Pipeline
    from vcam.ui.server import UiServer

    page = UiServer(config.ui_host, config.ui_port)
    pipeline = Pipeline(config, flags=flags, on_frame=page.on_frame)
    page.attach(pipeline)
    try:
        url = page.start()
    except OSError:
        pipeline.close()
        raise
    print(f"vcam: control page at {url}", flush=True)
    if config.ui_host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the control page listens on %s: anyone who can reach it can change the camera",
                    config.ui_host)
    try:
        return pipeline.run()
    finally:
        page.close()
