"""The frame loop: capture -> segment -> background -> composite -> harmonize -> outputs.

One `Frame` goes through small stages, each timed into `frame.timings`. The capture and the harmonizer's
network run in their own threads; the loop itself never waits for either beyond the next frame:

    frame = capture.read()            # newest frame (latest wins), or every frame of a file  } the front
    segment, background, composite    # the mask is from this same frame                      } (`_front`)
    harmonize                         # apply(latest correction); the network runs in its worker
    outputs.send(); metrics.record(); on_frame(frame)
    keys; config file; apply_pending()   # every setting change, applied here, between frames
    outputs.pace()                    # pyvirtualcam's sleep_until_next_frame

With `overlap` on (by default with 2+ cores above 720p with harmonization), the front runs in a thread of
its own, one frame ahead of the rest (`vcam.overlap.FrontStage`): frame N+1 is segmented and composited
while frame N is harmonized and sent, at most one frame of extra latency. Off, one thread does it all, in
this order.

Public hooks, so that nobody needs to replace a method: `on_frame(frame)` is called with every frame
after it was sent; `metrics` may be passed in; `stop()` ends the loop after the current frame (from any
thread); `request(**changes)` queues a setting change (from any thread: hotkeys, the config file, a
control page) that the loop applies between two frames through `apply_config`, the one path.

While the camera is away, a "camera unavailable" frame is sent at the frame rate, so a call never drops;
when it comes back, the temporal states are reset (a new scene) and live frames flow again.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict

import cv2

from vcam.background import Backgrounds
from vcam.capture import Capture, Source, open_source
from vcam.composite import Compositor
from vcam.config import LIVE_KEYS, RunConfig, validate
from vcam.controls import ConfigWatcher, changed_settings, handle_key
from vcam.errors import first_line
from vcam.frame import Frame
from vcam.harmonize import HarmonizeStage, create_harmonizer
from vcam.loader import HarmonizerLoader
from vcam.metrics import CORES, Metrics, write_json
from vcam.output import Outputs, make_placeholder
from vcam.overlap import END, FrontStage
from vcam.reference import check_reference, reference_mask
from vcam.segment import Segmenter

log = logging.getLogger("vcam.pipeline")

STALL_S = 0.5  # no frame from a "live" camera for this long: send placeholders until it is back
FRONT_STAGES = frozenset({"segment", "background", "composite"})  # what the front thread runs with overlap on
OVERLAP_MIN_PIXELS = 1280 * 720  # overlap "auto": frames larger than this (see use_overlap)
NEXT_BACKGROUND = "next_background"  # a request that is an action, not a RunConfig field


def _timed(frame: Frame, name: str, stage) -> Frame:
    started, cpu = time.perf_counter(), time.thread_time()
    frame = stage(frame)
    frame.timings[name] = (time.perf_counter() - started) * 1000.0
    frame.cpu_ms[name] = (time.thread_time() - cpu) * 1000.0
    return frame


def use_overlap(setting: str, size: tuple[int, int], harmonize: bool) -> bool:
    """Whether the front runs in its own thread: "on", "off", or "auto": on with two cores or more for
    frames larger than 720p with harmonization. There one thread cannot keep 30 FPS (1080p: 26.6 FPS on a
    quiet 2-core machine, issue 21). At 720p it does (30.0 FPS, p95 29-33 ms), and so it does at 1080p
    without harmonization (29.9 FPS), where the loop would have nothing to do beside the front but hand
    frames over (measured on the loaded machine: 25 against 33 FPS as fast as possible). With one core the
    two halves would only take turns on it. Chosen at start: turning harmonization on later keeps it."""
    return setting == "on" or (setting == "auto" and harmonize and CORES >= 2
                               and size[0] * size[1] > OVERLAP_MIN_PIXELS)


def _limit_opencv_threads() -> None:
    """One OpenCV thread for the frame loop on small machines (4 cores or fewer).

    The loop's OpenCV passes are a few milliseconds each and work in the person's box; spreading them
    over a pool saves little wall time there, costs CPU time in hand-offs, and takes the core that the
    harmonizer's worker and the video call need. Larger machines keep OpenCV's default pool.
    """
    if CORES <= 4:
        cv2.setNumThreads(1)


FRAME_HEAP_BYTES = 32 << 20  # buffers up to this size come from the heap, which keeps this much when freed


def _keep_freed_frames() -> bool:
    """Let glibc's malloc keep freed frame-sized buffers for the next frame (Linux; a no-op elsewhere).

    Every frame allocates a few planes of 1-4 MB (the mask, the composite, OpenCV's intermediates) and
    frees the last frame's. glibc serves such sizes with a fresh mmap, or trims them off the heap once freed,
    so each frame touched new pages: measured at 720p, about 3.5 ms of the composite's and 4 ms of the
    segmenter's CPU per frame went to page faults. With the mmap threshold raised to FRAME_HEAP_BYTES and
    the trim threshold to twice that (glibc's own ratio), freed buffers are reused; the process keeps up to
    that much spare memory. Returns whether the setting took.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows): their allocators keep their own caches
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(mallopt(m_mmap_threshold, FRAME_HEAP_BYTES)) and bool(mallopt(m_trim_threshold,
                                                                                2 * FRAME_HEAP_BYTES))


class Pipeline:
    """Builds the stages from a `RunConfig` and runs the frame loop.

    Args:
        config: the resolved settings.
        source: a `vcam.capture.Source` to use instead of opening `config.input` (tests, the demo).
        harmonizer: an `engine.Harmonizer`-like object to use instead of building one (see HarmonizeStage).
        flags: the typed command-line flags, so that a live-reloaded --config file cannot override them.
        metrics: the collector every sent frame is recorded into (default: a new `Metrics`).
        on_frame: called with every frame after it was sent, in the frame loop (keep it short).
        load_harmonizer: builds the harmonizer from the settings when one is needed and none was given (at
            start, or in a loader thread when harmonization is turned on later); default `create_harmonizer`.

    Raises:
        FileNotFoundError, ValueError, VcamError, RuntimeError: bad input, background, output, device or
            engine settings, with one clear message (nothing is left open).
    """

    def __init__(self, config: RunConfig, *, source: Source | None = None, harmonizer=None,
                 flags: dict | None = None, metrics: Metrics | None = None,
                 on_frame: Callable[[Frame], None] | None = None,
                 load_harmonizer: Callable[[RunConfig], object] | None = None):
        self.config = config
        self.capture: Capture | None = None
        self.backgrounds: Backgrounds | None = None
        self.segmenter: Segmenter | None = None
        self.compositor = Compositor()
        self.harmonize: HarmonizeStage | None = None
        self.outputs: Outputs | None = None
        self.metrics = metrics if metrics is not None else Metrics(config.status_interval)
        self.on_frame = on_frame
        self.frames = 0  # frames sent by run()
        self.last_smoothing = config.smoothing or RunConfig.smoothing  # what "s" turns smoothing back on to
        self._watcher = ConfigWatcher(config.config, flags or {}) if config.config else None
        self._stage_errors: set[str] = set()
        self._requests: list[dict] = []
        # The batch the frame loop is applying now: still part of `settings` until it is in `config` (a
        # segmenter swap takes tens of milliseconds, and a reader then must not see the old value).
        self._applying: list[dict] = []
        self._requests_lock = threading.Lock()  # held for a list append or swap, nothing else
        self._stop = threading.Event()
        # Held by the front thread for each frame's work, by the loop to change what that work uses (a
        # segmenter, the backgrounds): reentrant, since a key's action may apply a setting (vcam.overlap).
        self._front_lock = threading.RLock()
        self._scene_change = threading.Event()  # set by the front on a camera's return: the loop resets harmonize
        self._last_frame_at = time.perf_counter()
        self._reconnects = 0
        self.overlap = False  # decided once the frame size is known (`_open`)
        self._load_harmonizer = load_harmonizer or self._create_harmonizer
        self._loader = HarmonizerLoader(self._load_harmonizer)  # when `harmonize` is turned on later
        try:
            self._open(source, harmonizer)
        except BaseException:
            self.close()
            raise

    # -- set-up -----------------------------------------------------------------------------------
    def _open(self, source: Source | None, harmonizer) -> None:
        config = self.config
        # Cheap checks first, so that bad input fails in milliseconds, before torch and MediaPipe load.
        if source is None:
            source = open_source(config.input, config.size, config.fps)
        else:
            source.open()  # an injected source is opened here, like open_source() does
        fast = config.max_frames is not None and source.kind in ("file", "image")
        loop = config.loop if config.loop is not None else config.max_frames is not None
        self.capture = Capture(source, config.size, every_frame=fast, loop=loop)
        self.size = tuple(self.capture.size)
        self.fps = float(config.fps or self.capture.fps or 30.0)
        self.overlap = use_overlap(config.overlap, self.size, config.harmonize)
        self.backgrounds = Backgrounds(config.background)
        self._reference = reference_mask(config.reference, self.size)
        self.outputs = Outputs(config.output, self.size, self.fps, config.vcam_backend, config.vcam_device)
        if self.outputs.preview is not None:
            self.outputs.preview.split = config.split
        self.segmenter = Segmenter(config.segmentation_model, config.segmenter_model,
                                   smoothing=config.mask_smoothing)
        _limit_opencv_threads()
        _keep_freed_frames()
        if harmonizer is None and config.harmonize:
            harmonizer = self._load_harmonizer(config)
        if harmonizer is not None:
            self.harmonize = self._stage(harmonizer, config)
        self._placeholder = make_placeholder(self.size)
        log.info("input %s (%s) %dx%d @ %.1f fps%s; background %s; output %s; harmonize %s; %s",
                 config.input, source.kind, self.size[0], self.size[1], self.fps,
                 ", every frame" if fast else "", self.backgrounds.current.name, ", ".join(config.output),
                 f"{self.harmonize.mode} on {self.harmonize.status()['backend']}"
                 if self.harmonize and config.harmonize else "off",
                 "segment and composite one frame ahead in a thread (overlap)" if self.overlap else "one thread")

    @staticmethod
    def _create_harmonizer(config: RunConfig):
        return create_harmonizer(config.model, config.weights, config.backend, config.device,
                                 config.net_size, config.smoothing, config.strength, config.threads)

    def _stage(self, harmonizer, config: RunConfig) -> HarmonizeStage:
        """The stage around `harmonizer`, set to the current settings (they may have changed since it was built)."""
        stage = HarmonizeStage(harmonizer, config.harmonize_mode, config.refresh_hz, self._reference,
                               enabled=config.harmonize, overlapped=FRONT_STAGES if self.overlap else ())
        stage.configure(smoothing=config.smoothing, strength=config.strength)
        return stage

    # -- live settings: one path --------------------------------------------------------------------
    def request(self, **changes) -> None:
        """Queue a setting change; it is applied between two frames. Returns at once; any thread.

        Args:
            **changes: RunConfig fields with their new values (live ones apply, others are reported as
                needing a restart), or `next_background=True`.

        Raises:
            ValueError: an unknown setting, a value out of range or a reference region outside the frame
                (checked here, at the boundary, so that a bad value never reaches a running stage nor
                takes the other changes queued beside it down with it).
            FileNotFoundError: a reference mask image that does not exist.
        """
        unknown = set(changes) - set(asdict(self.config)) - {NEXT_BACKGROUND}
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; live ones: {', '.join(LIVE_KEYS)}")
        fields = {k: v for k, v in changes.items() if k != NEXT_BACKGROUND}
        if fields:
            validate(self.settings.replace(**fields))
            if fields.get("reference") is not None:  # what only the frame can tell, before it is queued
                check_reference(fields["reference"], self.size)
        with self._requests_lock:
            self._requests.append(dict(changes))

    @property
    def settings(self) -> RunConfig:
        """The settings as they will be once the queued requests are applied (what a key toggles from)."""
        with self._requests_lock:
            pending = self._applying + self._requests
        merged = {}
        for change in pending:
            merged.update({k: v for k, v in change.items() if k != NEXT_BACKGROUND})
        return self.config.replace(**merged) if merged else self.config

    def apply_pending(self) -> None:
        """Apply the queued requests (the frame loop calls this between frames)."""
        if not self._requests and not self._loader.loading:  # every frame: the common case is two reads
            return
        with self._requests_lock:
            pending, self._requests = self._requests, []
            self._applying = pending
        merged, cycle = {}, False
        for change in pending:
            cycle = cycle or bool(change.get(NEXT_BACKGROUND))
            merged.update({k: v for k, v in change.items() if k != NEXT_BACKGROUND})
        if merged:
            try:
                self.apply_config(self.config.replace(**merged))
            except Exception as exc:  # a live change must never stop the stream
                log.error("settings not applied: %s", first_line(exc))
        with self._requests_lock:
            self._applying = []
        if cycle:
            self.next_background()
        self._adopt_loaded_harmonizer()

    def next_background(self) -> None:
        with self._front_lock:
            self.backgrounds.next()
        if self.harmonize is not None:
            self.harmonize.reset()  # a new background is a new scene for the temporal statistics

    def apply_config(self, new: RunConfig) -> None:
        """Apply changed settings now: live ones to the stages, the rest reported as needing a restart.

        Called from the frame loop only (`apply_pending`), or before `run()`.
        """
        with self._front_lock:  # between two frames of the front thread too
            self._apply_config(new)

    def _apply_config(self, new: RunConfig) -> None:
        live, restart = changed_settings(self.config, new)
        if "reference" in live and not self._set_reference(new.reference):
            new = new.replace(reference=self.config.reference)
            live.pop("reference")
        if "segmentation_model" in live:
            segmenter = Segmenter(new.segmentation_model, new.segmenter_model, smoothing=new.mask_smoothing)
            self.segmenter.close()
            self.segmenter = segmenter
        if "background" in live and not self._swap_backgrounds(new.background):
            new = new.replace(background=self.config.background)
            live.pop("background")
        if "harmonize" in live:
            self._set_harmonize(new)
        if self.harmonize is not None:
            self.harmonize.configure(smoothing=live.get("smoothing"), strength=live.get("strength"),
                                     refresh_hz=live.get("refresh_hz"))
        if live.get("smoothing"):
            self.last_smoothing = live["smoothing"]
        if "mask_smoothing" in live:
            self.segmenter.smoothing = new.mask_smoothing
        if "split" in live and self.outputs.preview is not None:
            self.outputs.preview.split = new.split
        if live:
            log.info("config applied: %s", ", ".join(f"{k}={v}" for k, v in live.items()))
        if restart:
            log.warning("config: %s changed; restart vcam to apply", ", ".join(restart))
        self.config = new

    def _set_reference(self, spec: str | None) -> bool:
        """Build the reference mask for the frame; a failure (an unreadable mask image) changes nothing else."""
        try:
            self._reference = reference_mask(spec, self.size)
        except Exception as exc:
            log.error("reference not changed: %s", first_line(exc))
            return False
        if self.harmonize is not None:
            self.harmonize.reference = self._reference
        return True

    def _swap_backgrounds(self, specs: list[str]) -> bool:
        try:
            backgrounds = Backgrounds(specs)
        except Exception as exc:
            log.error("background not changed: %s", first_line(exc))
            return False
        self.backgrounds.close()
        self.backgrounds = backgrounds
        if self.harmonize is not None:
            self.harmonize.reset()
        return True

    def _set_harmonize(self, new: RunConfig) -> None:
        if self.harmonize is not None:
            self.harmonize.enabled = new.harmonize
            log.info("harmonization %s", "on" if new.harmonize else "off")
        elif new.harmonize and not self._loader.loading:
            # Loading an engine and its weights takes seconds: built beside the loop, adopted when ready.
            log.info("loading the harmonizer...")
            self._loader.start(new)

    def _adopt_loaded_harmonizer(self) -> None:
        if not self._loader.loading:  # every frame: the common case is one attribute read
            return
        try:
            harmonizer = self._loader.take()
        except Exception as exc:
            log.error("cannot start harmonization: %s", first_line(exc))
            self.config = self.config.replace(harmonize=False)
            return
        if harmonizer is None:
            return
        self.harmonize = self._stage(harmonizer, self.config)
        log.info("harmonization on (%s on %s)", self.harmonize.mode, self.harmonize.status()["backend"])

    def stop(self) -> None:
        """End `run()` after the current frame; any thread, returns at once."""
        self._stop.set()

    # -- the loop ---------------------------------------------------------------------------------
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

    def run(self) -> dict:
        """Run until --max-frames, the end of a file, `stop()`, quit/window close or Ctrl-C; returns the stats.

        The stats are also written to `config.stats_json` when set. Everything is closed on return.
        """
        interrupted = False
        self.capture.start()
        try:
            if self.overlap:
                self._loop_overlapped()
            else:
                self._loop()
        except KeyboardInterrupt:
            interrupted = True
            log.info("interrupted; shutting down")
        finally:
            stats = self.summary(interrupted=interrupted)
            self.close()
        if self.config.stats_json:
            log.info("stats written to %s", write_json(self.config.stats_json, stats))
        return stats

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
                _close(name, stage)

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

    def _status_extra(self) -> str:
        """The harmonizer's rate and the input's state for the status line (computed only when it is due)."""
        extra = ""
        if self.harmonize is not None and self.harmonize.enabled:
            stats = self.harmonize.status()
            extra = f"harmonizer {stats['refresh_hz']:.1f} Hz"
            if stats.get("failed"):
                extra = f"harmonizer failed, retrying in {stats['retry_in_s']:.0f} s"
        if self.capture.state != "live":
            extra = f"input {self.capture.state}" + (f", {extra}" if extra else "")
        return extra

    def summary(self, **extra) -> dict:
        harmonizer = self.harmonize.stats() if self.harmonize is not None else {"enabled": False}
        backgrounds = self.backgrounds
        return self.metrics.summary(
            harmonizer=harmonizer,
            input={"spec": self.config.input, "kind": self.capture.source.kind if self.capture else None,
                   "every_frame": bool(self.capture and self.capture.every_frame),
                   "reconnects": self.capture.reconnects if self.capture else 0},
            size=list(getattr(self, "size", ())),
            target_fps=getattr(self, "fps", None),
            segmenter=self.segmenter.name if self.segmenter else None, overlap=self.overlap,
            background=backgrounds.current.name if backgrounds and backgrounds._items else None,
            config={k: v for k, v in asdict(self.config).items() if k != "config"},
            **extra,
        )

    def close(self) -> None:
        """Release the camera, the harmonizer, the outputs (files finalized); idempotent."""
        self._loader.close()  # a harmonizer still loading is closed by its loader's thread once it exists
        for name in ("capture", "harmonize", "segmenter", "backgrounds", "outputs"):
            _close(name, getattr(self, name, None))
            setattr(self, name, None)


def _close(name: str, stage) -> None:
    if stage is None:
        return
    try:
        stage.close()
    except Exception as exc:  # keep closing the rest: a file must still be finalized
        log.warning("closing %s failed: %s", name, exc)
