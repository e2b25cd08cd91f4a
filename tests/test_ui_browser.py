"""The control page driven in a real headless Chromium (Debian's chromium + chromedriver, through Selenium)
against a real `vcam run --ui --ui-port 0` on a person video (MediaPipe, the shipped weights on ONNX
Runtime), measured on the output frames the page previews.

Set VCAM_UI_SCREENSHOT=docs/ui.png to keep the browser's screenshot (the README's picture).
"""

from __future__ import annotations

import os
import shutil
import time

import cv2
import numpy as np
import pytest
from ui_process import preview, state, vcam_ui, wait_frames

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Without the background-networking flags Chromium keeps trying a closed network (see .ci/run).
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1280,900")
RED, BLUE = (200, 30, 30), (30, 60, 200)
SIZE = (320, 180)
SPLIT_X = 100  # the test background: red left of this column, blue right of it
SETTLE_FRAMES = 75  # frames for the smoothed statistics to follow a new reference (smoothing 0.5)


def _browser(profile):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install chromium chromium-driver (.ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _background():
    image = np.empty((SIZE[1], SIZE[0], 3), np.uint8)
    image[:, :SPLIT_X], image[:, SPLIT_X:] = RED, BLUE
    return image


@pytest.fixture(scope="module")
def person_core(person_video) -> np.ndarray:
    """Where the person is in every frame of the video (MediaPipe on every 5th frame, intersected and
    eroded): the output's colour there is the person's, whatever the harmonizer made of it."""
    from vcam.segment import Segmenter

    segmenter, core = Segmenter(1, smoothing=False), None
    cap = cv2.VideoCapture(person_video)
    index = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        if index % 5 == 0:
            rgb = cv2.cvtColor(cv2.resize(image, SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            mask = segmenter.mask_for(rgb) > 0.5
            core = mask if core is None else core & mask
        index += 1
    cap.release()
    segmenter.close()
    core = cv2.erode(core.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert core.mean() > 0.03, "the person video has no steady person"
    return core


def _redness(url: str, person: np.ndarray) -> float:
    """Mean R - B over the person in a few output frames."""
    values = []
    for _ in range(5):
        rgb = preview(url)[person].astype(np.float64)
        values.append(float((rgb[:, 0] - rgb[:, 2]).mean()))
        time.sleep(0.1)
    return float(np.mean(values))


def _drag(driver, x0: float, y0: float, x1: float, y1: float) -> None:
    """Drag on the preview from (x0, y0) to (x1, y1), in fractions of the picture."""
    from selenium.webdriver.common.action_chains import ActionChains

    img = driver.find_element("id", "preview")
    w, h = img.size["width"], img.size["height"]
    (ActionChains(driver).move_to_element_with_offset(img, round((x0 - 0.5) * w), round((y0 - 0.5) * h))
     .click_and_hold().move_by_offset(round((x1 - x0) * w), round((y1 - y0) * h)).release().perform())


def _wait_for(condition, what: str, process, tries: int = 300):
    for _ in range(tries):
        value = condition()
        if value:
            return value
        assert process.poll() is None, f"vcam exited while waiting for {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def session(person_video, tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-browser")
    background = home / "red_blue.png"
    cv2.imwrite(str(background), cv2.cvtColor(_background(), cv2.COLOR_RGB2BGR))
    # The shipped weights, as a user gets them: the person takes on the dragged region's light
    # (engine.corrections.reference_light_gain on top of the network's correction).
    args = ["--input", person_video, "--size", f"{SIZE[0]}x{SIZE[1]}", "--output", "null", "--loop",
            "--background", str(background), "--smoothing", "0.5", "--status-interval", "0"]
    with vcam_ui(args, home) as (process, url):
        driver = _browser(home / "chromium")
        try:
            driver.get(url + "/")
            yield driver, process, url, home
        finally:
            driver.quit()


def test_the_preview_shows_frames(session):
    driver, process, url, _ = session
    _wait_for(lambda: int(driver.find_element("id", "preview").get_attribute("data-frames")) >= 3,
              "three preview frames", process)
    assert driver.execute_script("return document.getElementById('preview').naturalWidth") == SIZE[0]
    assert "fps" in driver.find_element("id", "status").text


def test_a_reference_over_red_moves_the_person_towards_red(session, person_core):
    driver, process, url, _ = session
    _drag(driver, 0.75, 0.05, 0.98, 0.3)  # over the blue part
    _wait_for(lambda: (state(url)["settings"]["reference"] or "").startswith("0.7"), "the blue reference", process)
    wait_frames(url, SETTLE_FRAMES, process)
    blue = _redness(url, person_core)
    _drag(driver, 0.02, 0.05, 0.25, 0.3)  # over the red part
    _wait_for(lambda: (state(url)["settings"]["reference"] or "").startswith("0.0"), "the red reference", process)
    x, y, w, h = map(float, state(url)["settings"]["reference"].split(","))
    assert x + w <= SPLIT_X / SIZE[0] and w > 0.15 and h > 0.15
    wait_frames(url, SETTLE_FRAMES, process)
    red = _redness(url, person_core)
    assert red > blue + 10, f"person R-B: {blue:.1f} with the blue reference, {red:.1f} with the red one"
    driver.find_element("id", "reference-reset").click()
    _wait_for(lambda: state(url)["settings"]["reference"] is None, "the reference reset", process)
    # The page shows the server's state at its next poll: wait for it rather than read it at once.
    _wait_for(lambda: "whole background" in driver.find_element("id", "reference-text").text,
              "the page showing the whole background", process)


def test_a_colour_background_changes_the_output(session):
    driver, process, url, _ = session
    corner = preview(url)[:20, :20].reshape(-1, 3).mean(axis=0)
    assert np.abs(corner - RED).max() < 25
    driver.find_element("css selector", ".swatch[data-color='#2e7d32']").click()
    _wait_for(lambda: state(url)["settings"]["background"] == ["color:#2e7d32"], "the colour background", process)
    wait_frames(url, 3, process)
    corner = preview(url)[:20, :20].reshape(-1, 3).mean(axis=0)
    assert np.abs(corner - (0x2E, 0x7D, 0x32)).max() < 25, corner
    # The page marks the selection from the server's state at its next poll.
    _wait_for(lambda: "selected" in driver.find_element("css selector", ".swatch[data-color='#2e7d32']")
              .get_attribute("class"), "the page marking the green swatch", process)


def test_a_bad_upload_shows_the_error_and_the_stream_runs_on(session):
    driver, process, url, home = session
    bad = home / "holiday.jpg"
    bad.write_bytes(b"this is not a picture")
    before = state(url)["settings"]
    driver.find_element("id", "upload").send_keys(str(bad))
    message = driver.find_element("id", "message")
    _wait_for(lambda: message.is_displayed() and "not an image" in message.text, "the upload error", process)
    assert "holiday.jpg" in message.text
    wait_frames(url, 10, process)  # still streaming
    assert state(url)["settings"] == before
    assert not (home / "data" / "backgrounds").exists() or not any((home / "data" / "backgrounds").iterdir())


def test_the_before_after_split(session):
    driver, process, url, _ = session
    driver.find_element("id", "split").click()
    _wait_for(lambda: state(url)["settings"]["split"], "split on", process)
    wait_frames(url, 3, process)
    seam = preview(url)[:, SIZE[0] // 2 - 1:SIZE[0] // 2 + 1]
    assert seam.min() > 200  # the white line between before (left) and after (right)
    driver.find_element("id", "split").click()
    _wait_for(lambda: not state(url)["settings"]["split"], "split off", process)
    wait_frames(url, 3, process)
    assert preview(url)[:, SIZE[0] // 2 - 1:SIZE[0] // 2 + 1].min() < 200


def test_two_tabs_stay_in_sync_and_a_screenshot(session, tmp_path):
    driver, process, url, _ = session
    driver.find_element("css selector", "#gallery button[data-kind=builtin]").click()
    _wait_for(lambda: "assets" in state(url)["settings"]["background"][0], "a built-in background", process)
    driver.switch_to.new_window("tab")
    driver.get(url + "/")
    first = driver.window_handles[0]
    driver.find_element("id", "harmonize").click()  # off, in the second tab
    driver.switch_to.window(first)
    _wait_for(lambda: not driver.find_element("id", "harmonize").is_selected(), "the first tab to follow", process)
    driver.find_element("id", "harmonize").click()  # back on
    _wait_for(lambda: state(url)["settings"]["harmonize"], "harmonization back on", process)
    _drag(driver, 0.05, 0.1, 0.3, 0.45)
    _wait_for(lambda: int(driver.find_element("id", "preview").get_attribute("data-frames")) >= 10,
              "the preview", process)
    time.sleep(1.5)  # let the status line and the reference box draw before the picture is taken
    driver.save_screenshot(str(tmp_path / "ui.png"))
    assert cv2.imread(str(tmp_path / "ui.png")) is not None
    if os.environ.get("VCAM_UI_SCREENSHOT"):
        shutil.copyfile(tmp_path / "ui.png", os.environ["VCAM_UI_SCREENSHOT"])
