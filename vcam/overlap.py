"""The frame loop in two overlapped halves: a front thread and the loop itself, one frame apart.

    front thread:  read frame N+1 -> segment -> background -> composite -> hand over (one slot)
    frame loop:    take frame N   -> harmonize (apply the cached correction) -> send -> settings -> pace

Why a thread pays here: MediaPipe's graph, OpenCV's kernels and NumPy's large array operations release the
GIL for their heavy work, so on two cores the halves run at once and a frame costs the longer half's time,
not the sum (measured at 1080p in docs/benchmarks.md).

Order and latency: one front thread and one slot, so frames come out in the order they were read. The front
reads the camera only once the slot is empty: a finished frame waits at most for the loop to finish the
frame before it, one frame of extra latency at most, and it is always the newest picture the camera had
when the front was free.

Who owns what. While the thread runs, it is the only one to read the capture and to call the segmenter, the
backgrounds and the compositor; it does each frame's work holding `lock`, which the frame loop takes to change
any of them (a live setting, the next background), so a change lands between two frames of the front as it
does between two frames of the loop. The lock is never held while waiting for the slot or the camera.

Closing follows the harmonize worker's rule: `close(then)` stops the thread; when it has ended, the caller
closes what it used; when it is still inside a frame (a stuck driver call), `then` is called by the thread
itself after that frame, never under it. Exactly one of the two closes them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("vcam.pipeline")

END = object()  # the input has ended: the front's last item
JOIN_S = 5.0  # how long closing waits for the front's current frame before leaving the close to the thread


class FrontStage:
    """Runs `work(read())` in a thread, one item ahead of the frame loop.

    Args:
        read: the next item, without the lock: a `Frame`, `END`, or None (nothing yet; asked again).
        work: an item -> the item, under `lock` (segment, background, composite).
        lock: the lock the frame loop takes to change what `work` uses (a `threading.RLock`).
        name: the thread's name.
        join_s: how long `close` waits for the frame the thread is in.
    """

    def __init__(self, read: Callable[[], object], work: Callable[[object], object], lock, name: str = "vcam-front",
                 join_s: float = JOIN_S):
        self._read, self._work, self.lock, self._join_s = read, work, lock, join_s
        self._cond = threading.Condition()  # guards the slot and the flags below, never a frame's work
        self._slot = None
        self._stop = False
        self._finished = False
        self._then: Callable[[], None] | None = None
        self._handed = False  # `then` was left to the thread: it, not the caller, closes
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> FrontStage:
        self._thread.start()
        return self

    # -- the front thread -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._wait_for_room():
                item = self._read()
                if item is None:
                    continue
                if item is not END:
                    with self.lock:
                        item = self._work(item)
                with self._cond:
                    self._slot = item
                    self._cond.notify_all()
                if item is END:
                    return
        except BaseException as exc:  # handed to the frame loop, which raises it (never a silent stop)
            self.error = exc
        finally:
            with self._cond:
                self._finished = True
                then, self._then = self._then, None
                self._cond.notify_all()
            if then is not None:  # closed while this thread was inside a frame: it closes what it used
                then()

    def _wait_for_room(self) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._stop or self._slot is None)
            return not self._stop

    # -- the frame loop ---------------------------------------------------------------------------
    def take(self, timeout: float):
        """The next item (a `Frame` or `END`), or None after `timeout` seconds.

        Raises:
            BaseException: the error that ended the front thread.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._finished, timeout)
            item, self._slot = self._slot, None
            finished = self._finished
            self._cond.notify_all()
        if item is None and finished:
            if self.error is not None:
                raise self.error
            return END
        return item

    def close(self, then: Callable[[], None]) -> bool:
        """Stop the thread; True when it has ended (the caller closes what it used), False when `then` was
        left to the thread, which calls it after the frame it is in (and again on every later call: the
        thread owns the close). Idempotent."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=self._join_s)
        with self._cond:
            if self._handed:
                return False
            if self._finished or not self._thread.is_alive():
                return True
            self._then, self._handed = then, True
        log.info("the front stage is still inside a frame; it closes what it uses when that frame ends")
        return False
