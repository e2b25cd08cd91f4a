"""Building the harmonizer beside the frame loop, when harmonization is turned on after the start.

Loading an engine and its weights takes seconds: `HarmonizerLoader.start(config)` builds it in a thread
while the loop keeps sending the plain composite, and `take()` hands it over between two frames. Until it
is handed over the harmonizer is the loader's: `close()` (the pipeline's shutdown) closes one that was
built and never taken, and a build that ends after `close()` is closed by the loader's thread itself. So
whatever it builds is closed exactly once, after its last use, however long the build takes; shutdown
never waits for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger("vcam.pipeline")


class HarmonizerLoader:
    """Builds one harmonizer at a time in a thread (name "vcam-load-harmonizer").

    Args:
        build: the settings -> a harmonizer (`engine.Harmonizer`-like, with `close()`).
    """

    def __init__(self, build: Callable):
        self._build = build
        self._future: Future | None = None  # the build under way, or built and not taken yet
        self._lock = threading.Lock()  # held to hand a built harmonizer over, or to close; never to build
        self._closed = False

    @property
    def loading(self) -> bool:
        """A build is under way or waits to be taken."""
        return self._future is not None

    def start(self, config) -> None:
        """Start building for `config` unless a build is already under way or the loader is closed."""
        with self._lock:
            if self._future is not None or self._closed:
                return
            future = self._future = Future()
        threading.Thread(target=self._run, args=(future, config), daemon=True, name="vcam-load-harmonizer").start()

    def _run(self, future: Future, config) -> None:
        try:
            harmonizer = self._build(config)
        except Exception as exc:
            future.set_exception(exc)
            return
        with self._lock:
            closed = self._closed
            if not closed:
                future.set_result(harmonizer)  # whoever takes it owns it from now on
        if closed:  # the pipeline closed while this was built: no one else will ever use it
            log.info("harmonizer loaded after shutdown; closing it")
            harmonizer.close()

    def take(self):
        """The built harmonizer, now the caller's; None while it is still being built (or none was asked for).

        Raises:
            Exception: the build's own error, once (the next `start` tries again).
        """
        with self._lock:
            future = self._future
            if future is None or not future.done():
                return None
            self._future = None
        return future.result()

    def close(self) -> None:
        """Close a harmonizer that was built and never taken; a build still under way closes its own. Idempotent."""
        with self._lock:
            self._closed = True
            future, self._future = self._future, None
        if future is not None and future.done() and future.exception() is None:
            future.result().close()
