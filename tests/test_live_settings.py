"""Live settings from every source (the --config file, the control page, hotkeys) change only the keys they
name; one parser per value; the control page's API takes the settings in the shape it returns them.

Real components: a real Pipeline (real MediaPipe) on an in-memory source, a real TOML file on disk watched
by the real frame loop, the real control-page server on 127.0.0.1; the harmonizer is the fake of
tests/fakes.py (the network's maths are not what is tested here).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from fakes import SlowHarmonizer
from ui_process import request

from vcam.capture import ArraySource
from vcam.config import RunConfig, SettingError, load_toml, resolve
from vcam.controls import ConfigWatcher
from vcam.pipeline import Pipeline
from vcam.ui.server import UiServer

FRAME = (320, 180)
HANG_GUARD_S = 300  # only so that a broken build fails instead of hanging; never reached when it works


def _image() -> np.ndarray:
    return np.full((FRAME[1], FRAME[0], 3), 120, np.uint8)


def _touch(path, text: str, step: int = 1) -> None:
    """Rewrite the file with a modification time that surely differs (coarse file-system clocks)."""
    stat = path.stat()
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + step * 10_000_000))


def _flags(path, **values) -> dict:
    return {"input": "test", "output": ["null"], "harmonize_mode": "inline", "status_interval": 0,
            "max_frames": 10**6, "loop": True, "config": str(path), **values}


# -- the config file never reverts what the page or a hotkey set -------------------------------------------

def test_a_file_edit_changes_only_what_it_changed_not_what_the_page_set(tmp_path):
    """Issue 22: the page turned harmonization off and strength down; an edit of the file's background
    turned harmonization back on (the watcher re-sent every field of defaults < file < flags)."""
    path = tmp_path / "vcam.toml"
    path.write_text('background = "color:#000000"\nsmoothing = 0.5\n')
    flags = _flags(path)
    config = resolve(flags, load_toml(path))
    steps = {"frames": 0, "edited": False}
    started = time.monotonic()

    def on_frame(frame):
        steps["frames"] += 1
        if time.monotonic() - started > HANG_GUARD_S:
            pipeline.stop()
        elif steps["frames"] == 2:
            pipeline.request(harmonize=False, strength=0.3)  # what the page's POST and the `h` key do
        elif not steps["edited"] and pipeline.config.strength == 0.3:
            _touch(path, 'background = "color:#ffffff"\nsmoothing = 0.5\n')
            steps["edited"] = True
        elif steps["edited"] and pipeline.config.background == ["color:#ffffff"]:
            pipeline.stop()

    pipeline = Pipeline(config, source=ArraySource([_image()]), harmonizer=SlowHarmonizer(delay=0.0),
                        flags=flags, on_frame=on_frame)
    stats = pipeline.run()
    applied = stats["config"]
    assert applied["background"] == ["color:#ffffff"], "the file's edit applied"
    assert applied["harmonize"] is False and applied["strength"] == 0.3, "and nothing else changed"
    assert applied["smoothing"] == 0.5


def test_the_watcher_sends_only_the_keys_whose_value_in_the_file_changed(tmp_path):
    path = tmp_path / "vcam.toml"
    path.write_text('strength = 0.5\nsmoothing = 0.4\nbackground = "blur"\n')
    watcher = ConfigWatcher(str(path), {"smoothing": 0.9, "strength": None}, interval=0.0)
    assert watcher.poll(time.perf_counter()) is None, "unchanged file: nothing to send"
    _touch(path, 'strength = 0.5\nsmoothing = 0.1\nbackground = ["color:#ffffff"]\nsplit = true\n')
    assert watcher.poll(time.perf_counter()) == {"background": ["color:#ffffff"], "split": True}, \
        "smoothing is a typed flag (the command line wins); strength did not change; nothing else is sent"
    _touch(path, 'strength = 0.6\n', step=2)  # a key left out of the file keeps its running value
    assert watcher.poll(time.perf_counter()) == {"strength": 0.6}
    _touch(path, 'strength = 7\n', step=3)  # refused whole: nothing of it is sent
    assert watcher.poll(time.perf_counter()) is None
    _touch(path, 'strength = 0.6\nsplit = false\n', step=4)  # compared with the last file that was sent
    assert watcher.poll(time.perf_counter()) == {"split": False}


# -- one parser for the reference region ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipeline():
    config = RunConfig(input="test", output=["null"], harmonize_mode="inline", strength=0.5, status_interval=0)
    pipeline = Pipeline(config, source=ArraySource([_image()]), harmonizer=SlowHarmonizer(delay=0.0))
    yield pipeline
    pipeline.close()


REFERENCES = [  # spec, accepted without a frame (flag, file, RunConfig), accepted for a 320x180 frame
    ("0.1,0.2,0.3,0.4", True, True),
    ("0,0,320,180", True, True),
    (" 0.5, 0.0, 0.5 ,1.0", True, True),
    ("0.5,0.5,0.9,0.9", False, False),  # fractions past the edge: no frame holds it
    ("10,10,0,5", False, False),  # an empty rectangle
    ("0,0,0.0,0.5", False, False),
    ("-1,0,5,5", False, False),
    ("0,0,inf,5", False, False),
    ("a,b,c,d", False, False),
    ("0,0,400,200", True, False),  # pixels: only the frame can tell
    ("300,10,30,10", True, False),
]


@pytest.mark.parametrize("spec, anywhere, in_frame", REFERENCES, ids=[s for s, _, _ in REFERENCES])
def test_one_reference_parser_for_every_way_in(pipeline, spec, anywhere, in_frame):
    try:
        RunConfig(reference=spec, output=["null"])
        accepted = True
    except SettingError as exc:
        assert "--reference" in str(exc) and "\n" not in str(exc)
        accepted = False
    assert accepted == anywhere, "RunConfig judges what it can without the frame"
    try:
        pipeline.request(reference=spec)
        queued = True
    except ValueError as exc:
        assert "--reference" in str(exc) and "\n" not in str(exc)
        queued = False
    assert queued == in_frame, "the running pipeline judges against its frame, before anything is queued"
    pipeline.apply_pending()
    if in_frame:
        assert pipeline.config.reference == spec.strip()
        assert pipeline.harmonize.reference.shape == (FRAME[1], FRAME[0])
        pipeline.request(reference=None)
        pipeline.apply_pending()


def test_a_rectangle_outside_the_frame_never_takes_other_settings_with_it(pipeline):
    """Issue 22: it passed RunConfig's checks, was queued, and aborted the whole batch between frames."""
    before = pipeline.config.strength
    pipeline.request(strength=0.3)  # e.g. from the page, in the same frame
    with pytest.raises(ValueError, match="not a rectangle inside the 320x180 frame"):
        pipeline.request(reference="0,0,400,200")  # e.g. from an edit of the config file
    pipeline.apply_pending()
    assert pipeline.config.strength == 0.3 and pipeline.config.reference is None
    pipeline.request(strength=before)
    pipeline.apply_pending()


def test_an_unreadable_mask_image_changes_only_the_reference(pipeline, tmp_path, caplog):
    mask = tmp_path / "mask.png"
    mask.write_bytes(b"not an image")
    pipeline.apply_config(pipeline.config.replace(reference=str(mask), strength=0.25))
    assert pipeline.config.strength == 0.25 and pipeline.config.reference is None
    assert "reference not changed" in caplog.text
    pipeline.apply_config(pipeline.config.replace(strength=0.5))


# -- the control page: one shape for GET and POST, one background parser -------------------------------------

@pytest.fixture(scope="module")
def page():
    config = RunConfig(input="test", output=["null"], background=["color:#000000"], harmonize_mode="inline",
                       status_interval=0, max_frames=10**6, loop=True)
    server = UiServer("127.0.0.1", 0, persist=False)
    pipeline = Pipeline(config, source=ArraySource([_image()]), harmonizer=SlowHarmonizer(delay=0.0),
                        on_frame=server.on_frame)
    server.attach(pipeline)
    url = server.start().rstrip("/")
    thread = threading.Thread(target=pipeline.run, name="test-frame-loop")
    thread.start()
    yield url, pipeline
    pipeline.stop()
    thread.join()
    server.close()


def test_get_and_post_of_the_state_take_one_shape(page):
    url, pipeline = page
    status, got = request(url + "/api/state")
    assert status == 200 and set(got) == {"settings", "status", "gallery"}
    status, answer = request(url + "/api/state", {"settings": got["settings"]})  # GET's settings, posted back
    assert status == 200, answer
    assert answer["settings"] == got["settings"]
    status, answer = request(url + "/api/state", {"settings": {"strength": 0.4}})  # a part of them
    assert status == 200 and set(answer) == {"settings", "status", "gallery"}
    assert answer["settings"] == {**got["settings"], "strength": 0.4}
    for wrong in ({"strength": 0.4}, {"settings": {"strength": 0.4}, "status": {}}, {"settings": 0.4}):
        status, answer = request(url + "/api/state", wrong)
        assert status == 400 and '{"settings": {' in answer["error"] and "\n" not in answer["error"], answer
    assert pipeline.settings.strength == 0.4


@pytest.mark.parametrize("spec", [" blur:5", "BLUR:7 ", " Colour:#102030"])
def test_the_page_reads_a_background_as_the_stream_does(page, spec):
    """One parser for the background's kind: the page called a padded "blur" a file outside the gallery."""
    url, pipeline = page
    status, answer = request(url + "/api/state", {"settings": {"background": [spec]}})
    assert status == 200, answer
    assert answer["settings"]["background"] == [spec.strip()]
