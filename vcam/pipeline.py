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

Where each part lives: this module builds the stages, runs and closes them and reports the stats
(`Pipeline`); `vcam.frame_loop` is what happens to each frame and between frames (the two halves of a
frame's stages, the one-thread and overlapped loops); `vcam.live_settings` is the one path of a setting
change; `vcam.tuning` the process-wide settings made at start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict

from vcam.background import Backgrounds
from vcam.capture import Capture, Source, open_source
from vcam.composite import Compositor
from vcam.config import RunConfig
from vcam.controls import ConfigWatcher
from vcam.frame import Frame
from vcam.frame_loop import FRONT_STAGES, FrameLoop, close_stage
from vcam.harmonize import HarmonizeStage, create_harmonizer
from vcam.live_settings import LiveSettings
from vcam.loader import HarmonizerLoader
from vcam.metrics import CORES, Metrics, write_json
from vcam.output import Outputs, make_placeholder
from vcam.reference import reference_mask
from vcam.segment import Segmenter
from vcam.tuning import keep_freed_frames, limit_opencv_threads

log = logging.getLogger("vcam.pipeline")

OVERLAP_MIN_PIXELS = 1280 * 720  # overlap "auto": frames larger than this (see use_overlap)
_keep_freed_frames = keep_freed_frames  # its name here before vcam.tuning (tests, docs/benchmarks.md)


def use_overlap(setting: str, size: tuple[int, int], harmonize: bool) -> bool:
    """Whether the front runs in its own thread: "on", "off", or "auto": on with two cores or more for
    frames larger than 720p with harmonization. There one thread cannot keep 30 FPS (1080p: 26.6 FPS on a
    quiet 2-core machine, issue 21). At 720p it does (30.0 FPS, p95 29-33 ms), and so it does at 1080p
    without harmonization (29.9 FPS), where the loop would have nothing to do beside the front but hand
    frames over (measured on the loaded machine: 25 against 33 FPS as fast as possible). With one core the
    two halves would only take turns on it. Chosen at start: turning harmonization on later keeps it."""
    return setting == "on" or (setting == "auto" and harmonize and CORES >= 2
                               and size[0] * size[1] > OVERLAP_MIN_PIXELS)


class Pipeline(LiveSettings, FrameLoop):
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
        self.last_smoothing = config.smoothing or RunConfig.smoothing  # what "s" turns smoothing back on to
        self._watcher = ConfigWatcher(config.config, flags or {}) if config.config else None
        # Held by the front thread for each frame's work, by the loop to change what that work uses (a
        # segmenter, the backgrounds): reentrant, since a key's action may apply a setting (vcam.overlap).
        self._front_lock = threading.RLock()
        self._init_frame_loop()  # frames sent, the stop event, the camera's return (vcam.frame_loop)
        self._init_requests()  # the queue of setting changes (vcam.live_settings)
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
        limit_opencv_threads()
        keep_freed_frames()
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

    # -- run, report, close ------------------------------------------------------------------------
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
            close_stage(name, getattr(self, name, None))
            setattr(self, name, None)
