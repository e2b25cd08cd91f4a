"""What the frame loop does with each frame, and between two frames.

A frame's stages come in two halves: the front (segment, background, composite: `_front`) and the back
(harmonize: `_back`); `process()` runs both. The loop reads a frame (`_read`: the camera's, a placeholder
while it is away, or the end of a file), runs the halves, sends the result (`_send`: outputs, metrics,
`on_frame`), then between frames reads keys, config-file edits and queued settings (`_between_frames`)
and paces to the frame rate. `_loop` does all of this in one thread; `_loop_overlapped` runs the front in
a thread of its own, one frame ahead (`vcam.overlap.FrontStage`).

`FrameLoop` is a part of `vcam.pipeline.Pipeline` (a mixin): it runs the stages the pipeline built
(`capture`, `segmenter`, `backgrounds`, `compositor`, `harmonize`, `outputs`, `metrics`, `on_frame`,
`config`, `fps`, `_front_lock`, `_placeholder`, `_watcher`) and owns the loop's own state
(`_init_frame_loop()`).
"""

from __future__ import annotations

import logging
import threading
import time

from vcam.controls import handle_key
from vcam.errors import first_line
from vcam.frame import Frame
from vcam.overlap import END, FrontStage

log = logging.getLogger("vcam.pipeline")  # the pipeline's log: one name for the whole frame loop

STALL_S = 0.5  # no frame from a "live" camera for this long: send placeholders until it is back
FRONT_STAGES = frozenset({"segment", "background", "composite"})  # what the front thread runs with overlap on


def _timed(frame: Frame, name: str, stage) -> Frame:
    started, cpu = time.perf_counter(), time.thread_time()
    frame = stage(frame)
    frame.timings[name] = (time.perf_counter() - started) * 1000.0
    frame.cpu_ms[name] = (time.thread_time() - cpu) * 1000.0
    return frame


class FrameLoop:
    """`process`, `stop` and the two loops of the pipeline (`run()` picks one)."""

    def _init_frame_loop(self) -> None:
        self.frames = 0  # frames sent by run()
        self._stage_errors: set[str] = set()
        self._stop = threading.Event()
        self._scene_change = threading.Event()  # set by the front on a camera's return: the loop resets harmonize
        self._last_frame_at = time.perf_counter()
        self._reconnects = 0

    def stop(self) -> None:
        """End `run()` after the current frame; any thread, returns at once."""
        self._stop.set()

    # -- one frame's stages -------------------------------------------------------------------------
    def process(self, frame: Frame) -> Frame:
        """Run the stages on one live frame; a failing stage falls back to the last good picture."""
        return self._back(self._front(frame))

    def _front(self, frame: Frame) -> Frame:
        """Segment, background, composite (the front thread's work with overlap on, under `_front_lock`).

        A failure sets `frame.output` to the last good picture (the back then leaves the frame alone)."""
        if not frame.live:
            return frame
        capture = self.capture
        if capture is not None and capture.reconnects != self._reconnects:  # the camera came back: a new scene
            self._reconnects = capture.reconnects
            self.segmenter.reset()
            self._scene_change.set()  # the harmonizer's state is the loop's: reset there
        try:
            _timed(frame, "segment", self.segmenter)
            _timed(frame, "background", self.backgrounds)
            # Only harmonization reads the person's own colours: no copy of them while it is off.
            self.compositor.keep_foreground = self.harmonize is not None and self.harmonize.enabled
            _timed(frame, "composite", self.compositor)
        except Exception as exc:  # never stop the stream for one bad frame; say so once per stage kind
            key = type(exc).__name__
            if key not in self._stage_errors:
                self._stage_errors.add(key)
                log.error("frame %d: %s: %s (sending the last good picture)", frame.index, key, exc)
            # Privacy first: never the camera picture (the room) while a virtual background is chosen.
            last = getattr(self, "_last_output", None)  # any size: the outputs resize to theirs
            frame.output = last if last is not None else self._placeholder
        return frame

    def _back(self, frame: Frame) -> Frame:
        """Harmonize (the frame loop's own work); a frame whose output is set already is left as it is."""
        if self._scene_change.is_set():
            self._scene_change.clear()
            if self.harmonize is not None:
                self.harmonize.reset()
        if frame.output is not None:  # a placeholder, or the front's fallback after a failure
            return frame
        if self.harmonize is not None:
            _timed(frame, "harmonize", self.harmonize)
        else:
            frame.output = frame.composite
        self._last_output = frame.output
        return frame

    def _placeholder_frame(self, index: int) -> Frame:
        now = time.perf_counter()
        return Frame(index=index, captured_at=now, image=self._placeholder, output=self._placeholder, live=False)

    # -- the loops ---------------------------------------------------------------------------------
    def _read(self):
        """The next frame to work on: the camera's, a placeholder while the input is away, None (nothing yet:
        a little late, not a lost camera) or END (a file played out)."""
        capture = self.capture
        frame = capture.read(timeout=1.0 if capture.every_frame else 1.0 / self.fps)
        now = time.perf_counter()
        if frame is not None:
            self._last_frame_at = now
            return frame
        if capture.ended:
            return END
        if capture.state == "live" and now - self._last_frame_at < STALL_S:
            return None
        return self._placeholder_frame(self.frames)

    def _more(self) -> bool:
        return not self._stop.is_set() and (self.config.max_frames is None or self.frames < self.config.max_frames)

    def _loop(self) -> None:
        """One thread: read, front, back, send, settings, pace."""
        while self._more():
            frame = self._read()
            if frame is END:
                break
            if frame is None:
                continue
            self._send(self.process(frame))
            if self._between_frames():
                break
            self.outputs.pace()

    def _loop_overlapped(self) -> None:
        """The front in its own thread, one frame ahead; here the back, send, settings, pace."""
        front = FrontStage(self._read, self._front, self._front_lock).start()
        try:
            while self._more():
                frame = front.take(timeout=0.1)  # short: stop() and Ctrl-C are seen at once
                if frame is END:
                    break
                if frame is None:
                    continue
                self._send(self._back(frame))
                if self._between_frames():
                    break
                self.outputs.pace()
        finally:
            self._stop_front(front)

    def _stop_front(self, front: FrontStage) -> None:
        """Stop the front thread; what it uses is closed after its last use (vcam.overlap)."""
        owned = {"segmenter": self.segmenter, "backgrounds": self.backgrounds}

        def close_late() -> None:
            for name, stage in owned.items():
                close_stage(name, stage)

        if not front.close(close_late):
            self.segmenter = self.backgrounds = None  # the front thread closes them

    def _send(self, frame: Frame) -> None:
        started = time.perf_counter()
        self.outputs.send(frame)
        sent_at = time.perf_counter()
        if frame.live:
            frame.timings["output"] = (sent_at - started) * 1000.0
        self.frames += 1
        self.metrics.record(frame, sent_at)
        if self.on_frame is not None:
            self.on_frame(frame)

    def _between_frames(self) -> bool:
        """Keys, config edits, queued settings and the status line; True to stop."""
        preview = self.outputs.preview
        if preview is not None and (handle_key(self, preview.poll_key()) or preview.closed_by_user):
            return True
        if self._watcher is not None:
            changes = self._watcher.poll(time.perf_counter())
            if changes:  # only the settings whose value in the file changed: the others stay as set
                try:
                    self.request(**changes)
                except (ValueError, OSError) as exc:  # e.g. a reference region the frame cannot hold
                    log.error("config %s not applied: %s", self.config.config, first_line(exc))
        self.apply_pending()
        self.metrics.maybe_status(self._status_extra)
        return False


def close_stage(name: str, stage) -> None:
    """`stage.close()`, a failure logged: shutdown goes on closing the rest."""
    if stage is None:
        return
    try:
        stage.close()
    except Exception as exc:  # keep closing the rest: a file must still be finalized
        log.warning("closing %s failed: %s", name, exc)
