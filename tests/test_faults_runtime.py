"""Fault injection, continued: signals during a recording, the harmonizer's retry, scene changes, the ONNX
cache, weights, the stats file and the CLI error policy (issue "never show the room, never hang, never lose
the recording")."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO

from engine.errors import first_line, report_error
from trainer.cli import run_main
from vcam.frame import Frame
from vcam.harmonize import HarmonizeStage
from vcam.metrics import write_json

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# -- SIGTERM / SIGHUP during a recording (row 2, acceptance 3) -------------------------------------------------

def _room_video(path: Path, frames: int = 20, size=(160, 120)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(frames):
        image = np.full((size[1], size[0], 3), 60, np.uint8)
        cv2.circle(image, (20 + 5 * i, 60), 15, (0, 0, 255), -1)
        writer.write(image)
    writer.release()
    return path


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_during_recording_leaves_a_playable_file_and_the_stats(signum, tmp_path):
    """SIGTERM/SIGHUP used to kill vcam mid-file: an mp4 without its moov atom, no stats JSON."""
    video = _room_video(tmp_path / "in.avi")
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    # A noisy background: the recording grows by kilobytes a frame (a flat colour compresses to almost
    # nothing, and the wait below would last until its deadline).
    background = tmp_path / "noise.png"
    cv2.imwrite(str(background), np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "vcam", "run", "-i", str(video), "--loop", "--no-harmonize",
                             "-b", str(background), "-o", f"file:{out}", "--stats-json", str(stats),
                             "--status-interval", "0"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Frames are being written once the hidden temporary file beside out.mp4 holds data; the deadline
        # only bounds a broken run (a slow machine waits longer, it does not fail).
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            parts = list(tmp_path.glob(".out.*.partial.mp4"))
            if parts and parts[0].stat().st_size > 20_000:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    cap = cv2.VideoCapture(str(out))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    assert decoded > 0 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 160, "the mp4 must be finalized"
    data = json.loads(stats.read_text())
    assert data["frames"] >= decoded > 0 and data["interrupted"] is True
    assert not list(tmp_path.glob(".*")), "no temporary file is left"


# -- the harmonizer retries after a failure (also seen) ------------------------------------------------------

class FlakyHarmonizer:
    """A real engine.Harmonizer (the "stats" model) whose first `failures` calls raise, as a transient
    backend error does; everything else is the real engine."""

    def __init__(self, failures: int):
        from engine import Harmonizer

        self._real = Harmonizer(model="stats", backend="torch", device="cpu")
        self.failures = failures
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._real, name)

    def _maybe_fail(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (transient)")

    def harmonize(self, composite, mask, reference=None):
        self._maybe_fail()
        return self._real.harmonize(composite, mask, reference)

    def estimate(self, composite, mask, reference=None, timestamp=None):
        self._maybe_fail()
        return self._real.estimate(composite, mask, reference, timestamp)


def _portrait_frame(index: int) -> Frame:
    image = np.full((72, 128, 3), (40, 90, 200), np.uint8)
    mask = np.zeros((72, 128), np.float32)
    mask[20:60, 40:90] = 1.0
    image[20:60, 40:90] = (200, 150, 120)
    return Frame(index, 0.0, image, mask=mask, composite=image.copy())


def test_inline_harmonizer_retries_after_a_transient_failure(caplog):
    stage = HarmonizeStage(FlakyHarmonizer(failures=1), mode="inline", retry_initial=0.0)
    with caplog.at_level(logging.INFO, logger="vcam.harmonize"):
        first = stage(_portrait_frame(0))
        assert first.output is first.composite and stage.failed
        assert stage.stats()["failed"] and stage.stats()["retry_in_s"] is not None
        second = stage(_portrait_frame(1))
    assert not stage.failed and not np.array_equal(second.output, second.composite), "harmonized again"
    assert stage.stats()["failures"] == 1 and stage.stats()["retry_in_s"] is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("retrying in" in m for m in messages) and any("retrying harmonization" in m for m in messages)
    stage.close()


def test_worker_harmonizer_retries_after_a_transient_failure():
    stage = HarmonizeStage(FlakyHarmonizer(failures=2), mode="worker", refresh_hz=0, retry_initial=0.0)
    deadline = time.monotonic() + 120
    harmonized = False
    index = 0
    while time.monotonic() < deadline and not harmonized:
        frame = stage(_portrait_frame(index))
        harmonized = not np.array_equal(frame.output, frame.composite)
        index += 1
        time.sleep(0.005)
    stats = stage.stats()
    stage.close()
    assert harmonized, "after the worker's failures it must be restarted and deliver a correction"
    assert stats["failures"] == 2 and not stats["failed"]


def test_backoff_grows_while_failing_and_the_status_says_so():
    stage = HarmonizeStage(FlakyHarmonizer(failures=10**6), mode="inline", retry_initial=30.0, retry_max=60.0)
    stage(_portrait_frame(0))
    stats = stage.stats()
    assert stats["failed"] and 0 < stats["retry_in_s"] <= 30.0
    for i in range(5):  # within the back-off nothing is retried: the engine is not hammered every frame
        stage(_portrait_frame(i + 1))
    assert stage.harmonizer.calls == 1
    stage.close()


# -- scene changes (also seen, acceptance 4) ---------------------------------------------------------------

@pytest.mark.slow
def test_scene_change_fires_on_a_background_switch_not_on_a_talking_person(shared_data):
    """On a static background a talking person gives at most one reset per minute of video; a switch of the
    background is a reset on the very next estimate."""
    from engine import Harmonizer
    from vcam.capture import cover_crop
    from vcam.composite import composite
    from vcam.segment import Segmenter

    video = shared_data / "videos" / "volcomix_Thoughtful_-_35590.mp4"
    backgrounds = [shared_data / "backgrounds" / name for name in ("mate_Dune.jpg", "bgmatting_0001_back.jpg")]
    if not video.is_file() or not all(p.is_file() for p in backgrounds):
        pytest.skip("talking-person video or backgrounds missing from the shared data")
    size = (320, 180)
    first, second = (cover_crop(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), size) for p in backgrounds)
    segmenter = Segmenter(1)
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    resets, estimates, frames = 0, 0, 0
    with Harmonizer(backend="onnxruntime", device="cpu", smoothing=0.8) as harmonizer:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            image = cover_crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size)
            mask = segmenter.mask_for(image)
            frames += 1
            if frames % 3:  # the CPU worker's pace: about every third frame at 30 fps
                continue
            correction = harmonizer.estimate(composite(image, first, mask), mask)
            estimates += 1
            resets += correction.scene_change
        cap.release()
        minutes = frames / fps / 60
        assert estimates > 100
        assert resets <= int(minutes), f"{resets} resets in {minutes:.2f} min of a static background"
        switched = harmonizer.estimate(composite(image, second, mask), mask)
        assert switched.scene_change, "a new background is a new scene"
    segmenter.close()


def test_person_moving_over_a_contrasty_background_is_not_a_scene_change():
    """The class of false reset: a person uncovering and covering different parts of a striped background
    changes the mean colour of "the background" a lot, though the background never changed."""
    from engine import Harmonizer

    h, w = 144, 256
    stripes = np.where((np.arange(w) // 24) % 2 == 0, 20, 235).astype(np.uint8)
    background = np.repeat(np.repeat(stripes[None, :, None], h, 0), 3, 2)
    yy, xx = np.mgrid[0:h, 0:w]
    resets = []
    with Harmonizer(model="stats", backend="torch", device="cpu", smoothing=0.8) as harmonizer:
        for step in range(24):
            cx = 50 + 7 * step  # the person walks across the frame
            mask = ((((xx - cx) / 45.0) ** 2 + ((yy - 100) / 70.0) ** 2) <= 1).astype(np.float32)
            composite = np.where(mask[..., None] > 0, np.uint8((200, 150, 120)), background).astype(np.uint8)
            resets.append(harmonizer.estimate(composite, mask).scene_change)
        assert not any(resets), f"person movement reset the statistics at steps {np.flatnonzero(resets)}"
        new_background = np.where(mask[..., None] > 0, np.uint8((200, 150, 120)), np.uint8((40, 80, 200)))
        assert harmonizer.estimate(new_background.astype(np.uint8), mask).scene_change


# -- the ONNX cache: bounded, exclusive temporary files (also seen) --------------------------------------------

def test_onnx_cache_is_bounded_and_never_writes_through_a_planted_link(tmp_path, monkeypatch):
    from engine.backends.onnx_cache import cached_onnx, onnx_cache_path
    from engine.phnet import create_model

    monkeypatch.setenv("VCAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VCAM_CACHE_MAX_MB", "1")
    torch.manual_seed(0)
    model = create_model("phnet-xs", widths=(4, 4, 8, 8, 8, 8)).eval()
    final = onnx_cache_path(model)
    final.parent.mkdir(parents=True)
    old = []
    for i in range(4):  # earlier exports (other weights, older code): 400 KB each, oldest first
        path = final.parent / f"phnet-old{i}.onnx"
        path.write_bytes(b"\0" * 400_000)
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
        old.append(path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for pid in range(os.getpid() - 2, os.getpid() + 3):  # the old, guessable temporary names
        (final.parent / f"{final.stem}.{pid}.tmp.onnx").symlink_to(victim)
    path = cached_onnx(model)
    assert path == final and path.is_file() and path.stat().st_size > 0
    assert victim.read_text() == "precious", "a link planted at a predictable name must not be written through"
    files = [p for p in final.parent.iterdir() if p.is_file() and not p.is_symlink()]
    assert sum(p.stat().st_size for p in files) <= 1 << 20
    assert not old[0].exists() and path.exists(), "the oldest go first; the new export stays"
    assert not list(final.parent.glob(".*.tmp.onnx")), "no temporary file is left"


def test_cache_cap_setting_is_checked(monkeypatch):
    from engine.backends.onnx_cache import max_cache_bytes

    for bad in ("nan", "inf", "-1", "lots"):
        monkeypatch.setenv("VCAM_CACHE_MAX_MB", bad)
        with pytest.raises(ValueError, match="VCAM_CACHE_MAX_MB"):
            max_cache_bytes()


# -- weights: a dtype mismatch is refused (row 16) -----------------------------------------------------------

def test_weights_with_an_int_tensor_where_float_belongs_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from engine.phnet import create_model
    from engine.weights import file_sha256, load_weights, save_weights

    torch.manual_seed(0)
    path = save_weights(create_model("phnet-xs", widths=(4, 4, 8, 8, 8, 8)), tmp_path / "w.safetensors")
    tensors = load_file(str(path))
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[name] = tensors[name].round().to(torch.int32)
    save_file(tensors, str(path))
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = file_sha256(path)  # a consistent file, only the dtype is wrong
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{name} is int32, expected float32"):
        load_weights(path)


# -- stats written atomically (row 15) ------------------------------------------------------------------------

def test_stats_json_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "stats.json"
    write_json(path, {"frames": 1})
    with pytest.raises(TypeError):
        write_json(path, {"frames": object()})  # fails half-way through serialising
    assert json.loads(path.read_text()) == {"frames": 1}, "the previous file is intact"
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"], "no temporary file is left"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask, "the usual mode, not the temporary file's 0600"


# -- the CLI error policy (issue 10's, both CLIs) ------------------------------------------------------------

def test_first_line_helper():
    assert first_line(ValueError("\n  bad value\ndetails")) == "bad value"
    assert first_line(KeyError()) == "KeyError"


@pytest.mark.parametrize("exc, code, expected", [
    (ValueError("bad value\nmore"), 1, "error: bad value"),
    (FileNotFoundError("input not found: x"), 1, "error: input not found: x"),
    (RuntimeError("no CUDA"), 1, "error: no CUDA"),
    (TypeError("unsupported operand"), 1, "internal error (a bug"),
    (KeyError("width"), 1, "internal error (a bug"),
    (NotImplementedError("later"), 1, "internal error (a bug"),
])
def test_error_policy_one_line(exc, code, expected, capsys):
    assert report_error(exc, "vcam: ") == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err


def test_error_policy_verbose_shows_the_traceback(capsys):
    try:
        raise TypeError("oops")
    except TypeError as exc:
        assert report_error(exc, "vcam: ", verbose=True) == 1
    err = capsys.readouterr().err
    assert "internal error (a bug" in err and "Traceback" in err and "raise TypeError" in err


def test_trainer_run_main_follows_the_same_policy(capsys):
    def bad_input(argv):
        raise FileNotFoundError("dataset directory not found: /nope")

    def bug(argv):
        return [][1]

    def usage(argv):
        raise SystemExit(2)

    assert run_main(bad_input, []) == 1
    assert capsys.readouterr().err.strip() == "error: dataset directory not found: /nope"
    assert run_main(bug, []) == 1
    err = capsys.readouterr().err
    assert "internal error (a bug" in err and "IndexError" in err and "Traceback" not in err
    assert run_main(bug, ["-v"]) == 1 and "Traceback" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        run_main(usage, [])
    assert info.value.code == 2


def test_vcam_usage_error_in_a_setting_is_exit_2_and_a_bad_file_exit_1(tmp_path, capsys):
    from vcam.cli import main

    image = tmp_path / "p.png"
    cv2.imwrite(str(image), np.full((90, 160, 3), 128, np.uint8))
    assert main(["run", "-i", str(image), "-o", "null", "--threads", "0"]) == 2
    assert main(["run", "-i", str(tmp_path / "missing.mp4"), "-o", "null"]) == 1
    err = capsys.readouterr().err
    assert err.count("vcam: error:") == 2 and "Traceback" not in err


# -- start-up spawns no processes (also seen: MediaPipe's sounddevice ran gcc and ldconfig) -----------------------

def test_segmenter_start_runs_no_subprocess():
    """In a fresh interpreter (imports happen once), an audit hook sees every process started."""
    script = (
        "import sys\n"
        "spawned = []\n"
        "sys.addaudithook(lambda event, args: spawned.append(args[1]) "
        "if event in ('subprocess.Popen', 'os.posix_spawn', 'os.exec') else None)\n"
        "from vcam.segment import Segmenter\n"
        "Segmenter(1).close()\n"
        "print('SPAWNED', spawned)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SPAWNED []" in proc.stdout, proc.stdout
