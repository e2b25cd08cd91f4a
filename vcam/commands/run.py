"""`vcam run`: the real-time virtual camera (camera or file in, harmonized virtual camera / preview / file out).

    vcam run --input 0 --background office.jpg --background blur --output virtualcam --output preview
    vcam run --input talk.mp4 --size 1280x720 --output null --max-frames 300 --stats-json out/stats.json
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading

from vcam.config import from_args
from vcam.controls import HOTKEYS

log = logging.getLogger("vcam.run")

# How systemd, desktop sessions and terminals that close stop a program: finish like Ctrl-C.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

HELP = "run the virtual camera: capture, segment, composite, harmonize, output"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults are None here on purpose: vcam.config tells typed flags from untyped ones that way, so a
    # --config file fills in only what the command line left out (defaults in vcam.config.RunConfig).
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", "-i", help="camera index, /dev/videoN, video file, image file or stream URL "
                                          "(default 0)")
    io.add_argument("--size", help="WxH asked of the camera, applied to files (e.g. 1280x720)")
    io.add_argument("--fps", type=float, help="frame rate asked of the camera / pace of an image input")
    io.add_argument("--background", "-b", action="append",
                    help="image or video path, blur[:STRENGTH] (0-200, default 12) or color:#RRGGBB; repeat to cycle "
                         "with 'b' (default blur)")
    io.add_argument("--output", "-o", action="append",
                    help="virtualcam, preview, file:PATH or null; repeatable (default virtualcam)")
    io.add_argument("--vcam-backend", help="pyvirtualcam backend (v4l2loopback, obs, unitycapture, ...)")
    io.add_argument("--vcam-device", help="virtual camera device, e.g. /dev/video10 or 'OBS Virtual Camera'")
    io.add_argument("--loop", action="store_true", default=None,
                    help="loop a video file input (default: only when --max-frames asks for more frames)")

    harm = parser.add_argument_group("harmonization")
    harm.add_argument("--no-harmonize", action="store_true", default=None, help="composite only")
    add_engine_arguments(harm)
    harm.add_argument("--smoothing", type=float, help="temporal smoothing of the colour correction: its time constant in seconds, "
                      "0-2 (default 0.1: a change of the light is followed within a quarter second)")
    harm.add_argument("--strength", type=float, help="0 = composite, 1 = full harmonization (default 1)")
    harm.add_argument("--reference", help="background region to match: x,y,w,h (pixels or fractions) or a "
                                          "mask image")

    seg = parser.add_argument_group("segmentation")
    seg.add_argument("--segmentation-model", type=int, choices=(0, 1),
                     help="MediaPipe selfie model: 0 general, 1 landscape (default 1)")
    seg.add_argument("--segmenter-model", help="a MediaPipe Tasks image segmenter .tflite to use instead")
    seg.add_argument("--mask-smoothing", action=argparse.BooleanOptionalAction, default=None,
                     help="temporal mask smoothing (default on)")

    run = parser.add_argument_group("run control")
    run.add_argument("--max-frames", type=int, help="stop after N output frames (files then run as fast "
                                                    "as possible, every frame)")
    run.add_argument("--overlap", choices=("auto", "on", "off"),
                     help="segment and composite the next frame in a thread of their own while this one is "
                          "harmonized and sent (one frame of extra latency at most; default auto: on with 2+ cores "
                          "above 720p with harmonization)")
    run.add_argument("--stats-json", help="write FPS, stage p50/p95, latency and harmonizer rate here at exit")
    run.add_argument("--status-interval", type=float, help="seconds between status lines (0 = none; default 5)")
    run.add_argument("--split", action="store_true", default=None, help="preview: start in before/after view")
    run.add_argument("--config", help="TOML file with any of these settings (flags override; edits apply live)")
    ui = parser.add_argument_group("control page")
    ui.add_argument("--ui", action="store_true", default=None,
                    help="serve the control page (http://127.0.0.1:8765/ by default) while running")
    ui.add_argument("--ui-port", type=int, help="control page port (0 = a free one, printed; default 8765)")
    ui.add_argument("--ui-host", help="interface for the control page (default 127.0.0.1: this machine only)")
    parser.epilog = "preview hotkeys: " + ", ".join(f"{k} {v}" for k, v in HOTKEYS.items())


def add_engine_arguments(harm) -> None:
    """The harmonizer's engine flags, shared with `vcam bench pipeline` so that both read them alike."""
    harm.add_argument("--model", help="model name (phnet, phnet-s, phnet-xs, stats) or weights path")
    harm.add_argument("--weights", help="a .safetensors weights file (default: the shipped weights)")
    harm.add_argument("--backend", help="auto, torch, onnxruntime or tensorrt (default auto)")
    harm.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    harm.add_argument("--net-size", type=int, help="network input's longer side, multiple of 8 (default 256)")
    harm.add_argument("--harmonize-mode", choices=("auto", "inline", "worker"),
                      help="inline: network on every frame; worker: network at --refresh-hz in a thread, "
                           "correction applied to every frame (default auto: GPU inline, CPU worker)")
    harm.add_argument("--refresh-hz", type=float, help="worker: most network runs per second (default 10)")
    harm.add_argument("--threads", type=int, help="threads for the worker on a CPU, 1-64 (default 1)")


@contextlib.contextmanager
def stop_signals_interrupt():
    """While inside, SIGTERM and SIGHUP end the run the way SIGINT does: the frame loop stops, the output
    files are finalized and the stats written (the default action would kill the process mid-file).

    Only the first signal interrupts; more (a service manager repeating itself) are logged and ignored, so
    that the shutdown they asked for can finish. Signals can only be caught on the main thread; elsewhere
    this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum, _frame):
        if received:
            log.info("%s: already shutting down", signal.Signals(signum).name)
            return
        received.append(signum)
        log.info("%s received; finishing", signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old_handler in previous.items():
            signal.signal(sig, old_handler)


def run(args: argparse.Namespace) -> int:
    from vcam.output import check_writable
    from vcam.pipeline import Pipeline  # after argument checks: imports MediaPipe

    config, flags = from_args(args)
    if config.ui:
        from vcam.ui.app import resolve_with_saved
        config = resolve_with_saved(args, flags)
    if config.stats_json:  # before the run: a run's stats must not be lost at its end
        check_writable(config.stats_json, "--stats-json")
    with stop_signals_interrupt():
        if config.ui:
            from vcam.ui.app import run_with_page
            stats = run_with_page(config, flags)
        else:
            stats = Pipeline(config, flags=flags).run()
    if stats["frames"] == 0:
        print("vcam: no frames were produced", flush=True)
        return 1
    return 0
