"""Hotkeys: `handle_key` turns each key into a queued request on a real Pipeline (real MediaPipe, a real
image source), applied between frames through the same path as a config-file edit."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import SlowHarmonizer

from vcam.capture import ArraySource
from vcam.config import RunConfig
from vcam.controls import HOTKEYS, handle_key
from vcam.pipeline import Pipeline


@pytest.fixture()
def pipeline():
    image = np.full((72, 128, 3), 120, np.uint8)
    config = RunConfig(input="test", background=["color:#000000", "color:#ffffff"], output=["null"],
                       harmonize_mode="inline", smoothing=0.6, strength=0.5, status_interval=0, max_frames=2)
    fake = SlowHarmonizer(delay=0.0)
    pipeline = Pipeline(config, source=ArraySource([image, image]), harmonizer=fake)
    yield pipeline, fake
    pipeline.close()


def _press(pipeline, char: str) -> bool:
    quit_ = handle_key(pipeline, ord(char))
    pipeline.apply_pending()
    return quit_


def test_keys_queue_changes_that_apply_between_frames(pipeline):
    pipeline, fake = pipeline
    assert handle_key(pipeline, ord("+")) is False
    assert fake.strength == 0.5 and fake.smoothing == 0.6, "an injected harmonizer gets the config's settings"
    assert pipeline.config.strength == 0.5 and fake.strength == 0.5, "nothing applies before the frame ends"
    assert pipeline.settings.strength == pytest.approx(0.6), "settings include what is queued"
    handle_key(pipeline, ord("+"))  # a second press in the same frame builds on the first
    pipeline.apply_pending()
    assert pipeline.config.strength == pytest.approx(0.7) and fake.strength == pytest.approx(0.7)
    for _ in range(10):
        _press(pipeline, "-")
    assert pipeline.config.strength == 0.0 and fake.strength == 0.0, "strength stops at 0"
    _press(pipeline, "=")
    assert fake.strength == pytest.approx(0.1)


def test_smoothing_toggles_off_and_back_to_the_last_value(pipeline):
    pipeline, fake = pipeline
    _press(pipeline, "s")
    assert pipeline.config.smoothing == 0.0 and fake.smoothing == 0.0
    _press(pipeline, "S")
    assert pipeline.config.smoothing == 0.6 and fake.smoothing == 0.6


def test_background_harmonize_and_split_keys(pipeline):
    pipeline, fake = pipeline
    assert pipeline.backgrounds.current.name == "color:#000000"
    _press(pipeline, "b")
    assert pipeline.backgrounds.current.name == "color:#ffffff" and fake.resets == 1, "a new scene"
    _press(pipeline, " ")
    assert pipeline.backgrounds.current.name == "color:#000000" and fake.resets == 2
    _press(pipeline, "h")
    assert pipeline.harmonize.enabled is False and pipeline.config.harmonize is False
    _press(pipeline, "h")
    assert pipeline.harmonize.enabled is True
    _press(pipeline, "v")
    assert pipeline.config.split is True


@pytest.mark.parametrize("key", [ord("q"), ord("Q"), 27])
def test_quit_keys(pipeline, key):
    pipeline, _ = pipeline
    assert handle_key(pipeline, key) is True


@pytest.mark.parametrize("key", [None, ord("x"), 300, -1])
def test_other_keys_change_nothing(pipeline, key):
    pipeline, fake = pipeline
    before = pipeline.config
    assert handle_key(pipeline, key) is False
    pipeline.apply_pending()
    assert pipeline.config == before and fake.resets == 0


def test_every_documented_hotkey_does_something(pipeline):
    pipeline, _ = pipeline
    for char in HOTKEYS:
        before = pipeline.settings, pipeline.backgrounds.current.name
        if handle_key(pipeline, ord(char)):
            assert char == "q"
            continue
        pipeline.apply_pending()
        assert (pipeline.settings, pipeline.backgrounds.current.name) != before, f"key {char!r} did nothing"


def test_request_rejects_unknown_settings_and_bad_values(pipeline):
    pipeline, _ = pipeline
    with pytest.raises(ValueError, match="unknown setting"):
        pipeline.request(colour="red")
    with pytest.raises(ValueError, match="smoothing"):
        pipeline.request(smoothing=2.5)  # refused here (over 2 s), never sent to the engine
    pipeline.apply_pending()
    assert pipeline.config.smoothing == 0.6

def test_settings_show_a_change_while_the_frame_loop_applies_it(pipeline):
    """A reader (the control page's POST answer) in the middle of apply_pending sees the change being
    applied: it has left the queue but is not in `config` yet (a segmenter swap takes tens of ms)."""
    pipeline, fake = pipeline
    seen = []
    fake.on_smoothing = lambda value: seen.append((pipeline.settings.smoothing, pipeline.config.smoothing))
    pipeline.request(smoothing=0.3)
    pipeline.apply_pending()
    assert seen == [(0.3, 0.6)]  # mid-apply: settings already 0.3 while config still says 0.6
    assert pipeline.settings.smoothing == pipeline.config.smoothing == 0.3
