"""`vcam run` through `vcam.cli.main`: the virtual camera reached in-process, stats, config, bad input."""

from __future__ import annotations

import glob
import json
import os
import time

import cv2
import numpy as np
import pytest

from vcam.cli import main
from vcam.config import RunConfig, from_args, load_toml, resolve
from vcam.controls import ConfigWatcher, changed_settings
from vcam.output import MODPROBE


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("vcam: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_cli_reaches_the_registered_virtual_camera(person_video, recorder, tmp_path):
    stats_path = tmp_path / "stats.json"
    code = main(["run", "--input", person_video, "--size", "320x180", "--background", "color:#102030",
                 "--output", "virtualcam", "--vcam-backend", "vcam-test", "--max-frames", "4",
                 "--fps", "100", "--stats-json", str(stats_path), "--status-interval", "0"])
    assert code == 0
    assert [(b.width, b.height, b.fps) for b in recorder.instances] == [(320, 180, 100.0)]
    (camera,) = recorder.instances
    assert len(camera.frames) == 4
    assert all(f.size == 320 * 180 * 3 and f.dtype == np.uint8 for f in camera.frames)
    stats = json.loads(stats_path.read_text())
    assert stats["frames"] == 4 and stats["fps"] > 0
    for stage in ("capture", "segment", "background", "composite", "harmonize", "output"):
        assert stats["stages_ms"][stage]["p50"] is not None and stats["stages_ms"][stage]["p95"] is not None
    assert stats["latency_ms"]["p95"] > 0
    assert stats["harmonizer"]["mode"] in ("worker", "inline") and "refresh_hz" in stats["harmonizer"]


def test_cli_file_output_and_null(person_video, tmp_path):
    out = tmp_path / "out.mp4"
    code = main(["run", "--input", person_video, "--size", "320x180", "--no-harmonize", "--output",
                 f"file:{out}", "--output", "null", "--max-frames", "6", "--status-interval", "0"])
    assert code == 0
    cap = cv2.VideoCapture(str(out))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 6 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320


def test_image_input_with_image_background(tmp_path, shared_data, recorder):
    portraits = sorted((shared_data / "portraits").glob("volcomix_*.jpg"))
    backgrounds = sorted((shared_data / "backgrounds").glob("*.jpg"))
    if not portraits or not backgrounds:
        pytest.skip("portraits/backgrounds missing from the shared data")
    code = main(["run", "--input", str(portraits[0]), "--size", "256x144", "--background", str(backgrounds[0]),
                 "--output", "virtualcam", "--vcam-backend", "vcam-test", "--max-frames", "2",
                 "--no-harmonize", "--status-interval", "0"])
    assert code == 0 and len(recorder.instances[0].frames) == 2


@pytest.mark.parametrize("argv, expected", [
    (["--input", "/nonexistent/video.mp4"], "input not found"),
    (["--input", "NOTAVIDEO"], "cannot read input"),
    (["--background", "/nonexistent/bg.jpg"], "background not found"),
    (["--background", "BADIMAGE"], "cannot read background image"),
    (["--size", "12x"], "--size must look like"),
    (["--size", "641x360"], "--size must be even"),
    (["--output", "hologram"], "unknown --output"),
    (["--output", "virtualcam", "--vcam-backend", "nope"], "unknown --vcam-backend"),
    (["--background", "color:#12"], "colour must look like"),
    (["--smoothing", "2.5"], "--smoothing must be in"),
])
def test_bad_input_is_one_clear_line(argv, expected, tmp_path, capsys):
    image = tmp_path / "person.png"
    cv2.imwrite(str(image), np.full((90, 160, 3), 128, np.uint8))
    (tmp_path / "notavideo.mp4").write_text("this is not a video")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    argv = [a.replace("NOTAVIDEO", str(tmp_path / "notavideo.mp4")).replace("BADIMAGE", str(tmp_path / "bad.png"))
            for a in argv]
    base = ["run", "--input", str(image), "--output", "null", "--max-frames", "1", "--no-harmonize"]
    started = time.perf_counter()
    code = main(base + argv)
    assert code != 0
    assert expected in _one_error_line(capsys)
    assert time.perf_counter() - started < 10


def test_missing_virtual_camera_device_says_how_to_create_one(tmp_path, capsys, monkeypatch):
    image = tmp_path / "person.png"
    cv2.imwrite(str(image), np.full((90, 160, 3), 128, np.uint8))
    from pyvirtualcam.camera import BACKENDS

    if "v4l2loopback" not in BACKENDS:
        pytest.skip("the v4l2loopback backend exists only on Linux")
    for name in [n for n in BACKENDS if n != "v4l2loopback"]:  # recorders other tests registered
        monkeypatch.delitem(BACKENDS, name)
    code = main(["run", "--input", str(image), "--output", "virtualcam", "--vcam-device", "/dev/video99",
                 "--max-frames", "1", "--no-harmonize"])
    assert code != 0
    line = _one_error_line(capsys)
    assert "no virtual camera device" in line and MODPROBE in line


def test_config_file_fills_in_and_flags_override(tmp_path):
    config = tmp_path / "vcam.toml"
    config.write_text('background = ["blur:8", "color:#000000"]\nsmoothing = 0.5\nsize = "320x180"\n'
                      'no-harmonize = true\n')
    parser_args = type("Args", (), {"config": str(config), "smoothing": 0.9, "no_harmonize": None})()
    resolved, flags = from_args(parser_args)
    assert resolved.background == ["blur:8", "color:#000000"] and resolved.size == (320, 180)
    assert resolved.smoothing == 0.9, "a typed flag beats the file"
    assert resolved.harmonize is False
    with pytest.raises(ValueError, match="unknown setting"):
        config.write_text("colour = 3\n")
        load_toml(config)


def test_config_edits_are_picked_up_live(tmp_path):
    path = tmp_path / "live.toml"
    path.write_text("strength = 0.5\n")
    flags = {"smoothing": 0.3}
    watcher = ConfigWatcher(str(path), flags, interval=0.0)
    current = resolve(flags, load_toml(path))
    assert watcher.poll(time.perf_counter()) is None, "unchanged file: nothing to apply"
    path.write_text('strength = 0.7\nsmoothing = 0.1\nbackground = "color:#ffffff"\nsize = "640x360"\n')
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    changes = watcher.poll(time.perf_counter())  # what the edit changed; smoothing is a typed flag
    assert changes == {"strength": 0.7, "background": ["color:#ffffff"], "size": (640, 360)}
    live, restart = changed_settings(current, current.replace(**changes))
    assert live == {"strength": 0.7, "background": ["color:#ffffff"]} and restart == ["size"]
    path.write_text("strength = 7\n")  # an invalid edit keeps the running settings
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 20_000_000))
    assert watcher.poll(time.perf_counter()) is None


def test_live_config_applies_to_a_running_pipeline(tmp_path, shared_data):
    from vcam.pipeline import Pipeline

    portraits = sorted((shared_data / "portraits").glob("volcomix_*.jpg"))
    if not portraits:
        pytest.skip("portraits missing from the shared data")
    config = RunConfig(input=str(portraits[0]), size=(256, 144), background=["color:#000000"],
                       output=["null"], harmonize=False, status_interval=0, max_frames=3)
    pipeline = Pipeline(config)
    pipeline.apply_config(config.replace(background=["color:#ffffff", "blur"], mask_smoothing=False))
    assert pipeline.backgrounds.current.name == "color:#ffffff"
    assert pipeline.segmenter.smoothing is False
    pipeline.next_background()
    assert pipeline.backgrounds.current.name.startswith("blur")
    stats = pipeline.run()
    assert stats["frames"] == 3


def test_devices_lists_cameras_and_virtual_cameras(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cameras:") and "virtual cameras (pyvirtualcam backends:" in out
    if not glob.glob("/dev/video*"):
        assert "none found" in out and "modprobe v4l2loopback" in out
