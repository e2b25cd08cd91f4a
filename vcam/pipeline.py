"""The frame loop: capture -> segment -> background -> composite -> harmonize -> outputs.

One `Frame` goes through small stages, each timed into `frame.timings`. The capture and the harmonizer's
network run in their own threads; the loop itself never waits for either beyond the next frame:

    frame = capture.read()            # newest frame (latest wins), or every frame of a file
    segment, background, composite    # the mask is from this same frame
    harmonize                         # apply(latest correction); the network runs in its worker
    outputs.send(); metrics; keys; config; outputs.pace()   # pyvirtualcam's sleep_until_next_frame

While the camera is away, a "camera unavailable" frame is sent at the frame rate, so a call never drops;
when it comes back, the temporal states are reset (a new scene) and live frames flow again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from vcam.background import Backgrounds
from vcam.capture import Capture, Source, open_source
from vcam.composite import Compositor
from vcam.config import RunConfig
from vcam.controls import ConfigWatcher, changed_settings, handle_key
from vcam.frame import Frame
from vcam.harmonize import HarmonizeStage, create_harmonizer, parse_reference
from vcam.metrics import Metrics, write_json
from vcam.output import Outputs, make_placeholder
from vcam.segment import Segmenter

log = logging.getLogger("vcam.pipeline")

STALL_S = 0.5  # no frame from a "live" camera for this long: send placeholders until it is back


def _timed(frame: Frame, name: str, stage) -> Frame:
    started = time.perf_counter()
    frame = stage(frame)
    frame.timings[name] = (time.perf_counter() - started) * 1000.0
    return frame


class Pipeline:
    """Builds the stages from a `RunConfig` and runs the frame loop.

    Args:
        config: the resolved settings.
        source: a `vcam.capture.Source` to use instead of opening `config.input` (tests, the demo).
        harmonizer: an `engine.Harmonizer`-like object to use instead of building one.
        flags: the typed command-line flags, so that a live-reloaded --config file cannot override them.

    Raises:
        FileNotFoundError, ValueError, VcamError, RuntimeError: bad input, background, output, device or
            engine settings, with one clear message (nothing is left open).
    """

    def __init__(self, config: RunConfig, *, source: Source | None = None, harmonizer=None,
                 flags: dict | None = None):
        self.config = config
        self.capture: Capture | None = None
        self.backgrounds: Backgrounds | None = None
        self.segmenter: Segmenter | None = None
        self.compositor = Compositor()
        self.harmonize: HarmonizeStage | None = None
        self.outputs: Outputs | None = None
        self.metrics = Metrics(config.status_interval)
        self._watcher = ConfigWatcher(config.config, flags or {}) if config.config else None
        self._stage_errors: set[str] = set()
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
        self.backgrounds = Backgrounds(config.background)
        reference = parse_reference(config.reference, self.size)
        self.outputs = Outputs(config.output, self.size, self.fps, config.vcam_backend, config.vcam_device)
        if self.outputs.preview is not None:
            self.outputs.preview.split = config.split
        self.segmenter = Segmenter(config.segmentation_model, config.segmenter_model,
                                   smoothing=config.mask_smoothing)
        if harmonizer is None and config.harmonize:
            harmonizer = self._create_harmonizer(config)
        if harmonizer is not None:
            self.harmonize = HarmonizeStage(harmonizer, config.harmonize_mode, config.refresh_hz,
                                            config.threads, reference, enabled=config.harmonize)
        self._reference = reference
        self._placeholder = make_placeholder(self.size)
        log.info("input %s (%s) %dx%d @ %.1f fps%s; background %s; output %s; harmonize %s",
                 config.input if source is None else getattr(source, "spec", source.kind), source.kind,
                 self.size[0], self.size[1], self.fps, ", every frame" if fast else "",
                 self.backgrounds.current.name, ", ".join(config.output),
                 f"{self.harmonize.mode} on {self.harmonize.stats()['backend']}" if self.harmonize
                 and config.harmonize else "off")

    @staticmethod
    def _create_harmonizer(config: RunConfig):
        return create_harmonizer(config.model, config.weights, config.backend, config.device,
                                 config.net_size, config.smoothing, config.strength, config.threads)

    # -- live actions (hotkeys, config edits) ---------------------------------------------------------
    def next_background(self) -> None:
        self.backgrounds.next()
        if self.harmonize is not None:
            self.harmonize.reset()  # a new background is a new scene for the temporal statistics

    def set_harmonize(self, enabled: bool) -> None:
        if enabled and self.harmonize is None:
            log.info("loading the harmonizer...")
            try:
                self.harmonize = HarmonizeStage(self._create_harmonizer(self.config), self.config.harmonize_mode,
                                                self.config.refresh_hz, self.config.threads, self._reference)
            except Exception as exc:
                log.error("cannot start harmonization: %s", str(exc).splitlines()[0] if str(exc) else exc)
                return
        if self.harmonize is not None:
            self.harmonize.enabled = enabled

    def apply_config(self, new: RunConfig) -> None:
        """Apply an edited config: live settings now, the rest is reported as needing a restart."""
        live, restart = changed_settings(self.config, new)
        if "background" in live:
            try:
                backgrounds = Backgrounds(new.background)
            except Exception as exc:
                log.error("background not changed: %s", str(exc).splitlines()[0])
                new = new.replace(background=self.config.background)
                live.pop("background")  # not applied: the "config applied" line must not claim it
            else:
                self.backgrounds.close()
                self.backgrounds = backgrounds
                if self.harmonize is not None:
                    self.harmonize.reset()
        if "harmonize" in live:
            self.set_harmonize(new.harmonize)
        if self.harmonize is not None:
            if "smoothing" in live:
                self.harmonize.smoothing = new.smoothing
            if "strength" in live:
                self.harmonize.strength = new.strength
            if "refresh_hz" in live:
                self.harmonize.refresh_hz = new.refresh_hz
        if "mask_smoothing" in live:
            self.segmenter.smoothing = new.mask_smoothing
        if "split" in live and self.outputs.preview is not None:
            self.outputs.preview.split = new.split
        if live:
            log.info("config applied: %s", ", ".join(f"{k}={v}" for k, v in live.items()))
        if restart:
            log.warning("config: %s changed; restart vcam to apply", ", ".join(restart))
        self.config = new

    # -- the loop ---------------------------------------------------------------------------------
    def process(self, frame: Frame) -> Frame:
        """Run the stages on one live frame; a failing stage falls back to the camera picture."""
        try:
            _timed(frame, "segment", self.segmenter)
            _timed(frame, "background", self.backgrounds)
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
        """Run until --max-frames, the end of a file, quit/window close or Ctrl-C; returns the stats.

        The stats are also written to `config.stats_json` when set. Everything is closed on return.
        """
        config = self.config
        capture, outputs, metrics = self.capture, self.outputs, self.metrics
        period = 1.0 / self.fps
        reconnects = 0
        last_frame_at = time.perf_counter()
        interrupted = False
        capture.start()
        try:
            while config.max_frames is None or metrics.frames < config.max_frames:
                frame = capture.read(timeout=1.0 if capture.every_frame else period)
                now = time.perf_counter()
                if frame is None:
                    if capture.ended:
                        break
                    if capture.state == "live" and now - last_frame_at < STALL_S:
                        continue  # a little late; not a lost camera
                    frame = self._placeholder_frame(metrics.frames)
                else:
                    last_frame_at = now
                    if capture.reconnects != reconnects:  # the camera came back: a new scene
                        reconnects = capture.reconnects
                        self.segmenter.reset()
                        if self.harmonize is not None:
                            self.harmonize.reset()
                    self.process(frame)
                started = time.perf_counter()
                outputs.send(frame)
                sent_at = time.perf_counter()
                if frame.live:
                    frame.timings["output"] = (sent_at - started) * 1000.0
                metrics.record(frame, sent_at)
                if self._after_frame(sent_at):
                    break
                outputs.pace()
        except KeyboardInterrupt:
            interrupted = True
            log.info("interrupted; shutting down")
        finally:
            stats = self.summary(interrupted=interrupted)
            self.close()
        if config.stats_json:
            path = write_json(config.stats_json, stats)
            log.info("stats written to %s", path)
        return stats

    def _after_frame(self, now: float) -> bool:
        """Keys, config edits and the status line between frames; True to stop."""
        preview = self.outputs.preview
        if preview is not None:
            if handle_key(self, preview.poll_key()) or preview.closed_by_user:
                return True
        if self._watcher is not None:
            try:
                new = self._watcher.poll(now)
                if new is not None:
                    self.apply_config(new)
            except Exception as exc:  # a live edit must never stop the stream
                log.error("config not applied: %s", exc)
        self.metrics.maybe_status(self._status_extra)
        return False

    def _status_extra(self) -> str:
        """The harmonizer's rate and the input's state for the status line (computed only when it is due)."""
        extra = ""
        if self.harmonize is not None and self.harmonize.enabled:
            stats = self.harmonize.stats()
            extra = f"harmonizer {stats['refresh_hz']:.1f} Hz"
            if stats.get("failed"):
                extra = f"harmonizer failed, retrying in {stats['retry_in_s']:.0f} s"
        if self.capture.state != "live":
            extra = f"input {self.capture.state}" + (f", {extra}" if extra else "")
        return extra

    def summary(self, **extra) -> dict:
        harmonizer = self.harmonize.stats() if self.harmonize is not None else {"enabled": False}
        return self.metrics.summary(
            harmonizer=harmonizer,
            input={"spec": self.config.input, "kind": self.capture.source.kind if self.capture else None,
                   "every_frame": bool(self.capture and self.capture.every_frame),
                   "reconnects": self.capture.reconnects if self.capture else 0},
            size=list(getattr(self, "size", ())),
            target_fps=getattr(self, "fps", None),
            segmenter=self.segmenter.name if self.segmenter else None,
            background=self.backgrounds.current.name if self.backgrounds and self.backgrounds._items else None,
            config={k: v for k, v in asdict(self.config).items() if k != "config"},
            **extra,
        )

    def close(self) -> None:
        """Release the camera, the harmonizer, the outputs (files finalized); idempotent."""
        for name in ("capture", "harmonize", "segmenter", "backgrounds", "outputs"):
            stage = getattr(self, name, None)
            if stage is None:
                continue
            try:
                stage.close()
            except Exception as exc:  # keep closing the rest: a file must still be finalized
                log.warning("closing %s failed: %s", name, exc)
            setattr(self, name, None)
