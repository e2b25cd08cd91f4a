"""The control page's JSON API on a real `vcam run --ui --ui-port 0` (real MediaPipe, a real video):
bad writes get 400 and change nothing, cross-origin writes are refused, the server is on loopback only;
and the store's uploads and saved settings."""

from __future__ import annotations

import http.client
import socket
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from ui_process import request, state, vcam_ui, wait_frames

from vcam.config import SettingError
from vcam.ui import store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page(person_video, tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-api")
    args = ["--input", person_video, "--size", "320x180", "--output", "null", "--loop", "--no-harmonize",
            "--status-interval", "0"]
    with vcam_ui(args, home) as (process, url):
        wait_frames(url, 5, process)
        yield process, url, home


BAD_SETTINGS = [
    ({"colour": "red"}, "unknown setting 'colour'"),
    ({"strength": "high"}, "--strength must be a number"),
    ({"strength": 1.5}, "--strength must be in [0, 1]"),
    ({"smoothing": float("nan")}, "--smoothing must be a finite number"),
    ({"harmonize": "yes"}, "harmonize must be true or false"),
    ({"segmentation_model": 3}, "--segmentation-model must be in [0, 1]"),
    ({"background": "color:#12345"}, "colour must look like #RRGGBB"),
    ({"background": "/etc/passwd"}, "is not in the gallery"),
    ({"background": []}, "background must be a string or a list"),
    ({"reference": "0.5,0.5,0.9,0.9"}, "reaches past the frame's edge"),
    ({"reference": "0,0,400,200"}, "not a rectangle inside the 320x180 frame"),
    ({"reference": 7}, "--reference must be a non-empty string"),
    ({"strength": 0.5, "net_size": 64}, "unknown setting 'net_size'"),  # one bad key: nothing applies
]
SHAPE = 'expected {"settings": {...}}'
BAD_WRITES = [({"settings": changes}, reason) for changes, reason in BAD_SETTINGS] + [
    ([1, 2], SHAPE), ({}, SHAPE), ({"settings": {}}, SHAPE), ({"strength": 0.5}, SHAPE),  # flat: GET's shape only
    ({"settings": {"strength": 0.5}, "gallery": []}, SHAPE),
]


@pytest.mark.parametrize("changes, reason", BAD_WRITES, ids=[str(c)[:40] for c, _ in BAD_WRITES])
def test_a_bad_write_is_refused_and_changes_nothing(page, changes, reason):
    process, url, home = page
    before = state(url)["settings"]
    status, data = request(url + "/api/state", changes)
    assert status == 400
    assert reason in data["error"] and "\n" not in data["error"]
    wait_frames(url, 3, process)  # had anything been queued, the loop would have applied it by now
    assert state(url)["settings"] == before
    assert process.poll() is None


def test_a_huge_or_malformed_body_is_refused(page):
    process, url, _ = page
    before = state(url)["settings"]
    huge = b'{"strength": 0.5, "pad": "' + b"x" * 100_000 + b'"}'
    assert request(url + "/api/state", huge)[0] == 400
    status, data = request(url + "/api/state", b"{not json")
    assert status == 400 and "not JSON" in data["error"]
    status, data = request(url + "/api/state", b'{"settings": {"strength": 0.5}}',
                           headers={"Content-Type": "text/plain"})
    assert status == 400 and "application/json" in data["error"]
    assert state(url)["settings"] == before


def test_a_good_write_applies_and_is_saved(page):
    process, url, home = page
    status, data = request(url + "/api/state", {"settings": {"strength": 0.35, "reference": "0.1,0.2,0.3,0.4",
                                                             "segmentation_model": 0}})
    assert status == 200 and data["settings"]["strength"] == 0.35
    wait_frames(url, 10, process)  # the new segmenter runs (a broken swap would stop the frames)
    assert state(url)["settings"]["reference"] == "0.1,0.2,0.3,0.4"
    assert state(url)["settings"]["segmentation_model"] == 0
    saved = store.load_settings(home / "config" / "ui.toml")
    assert saved["strength"] == 0.35 and saved["reference"] == "0.1,0.2,0.3,0.4"


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Host": "evil.example"}, {"Origin": "http://evil.example", "Host": "evil.example"}])
def test_a_cross_origin_write_is_refused(page, headers):
    process, url, _ = page
    before = state(url)["settings"]
    port = url.rsplit(":", 1)[1]
    headers = {k: v.replace("evil.example", f"evil.example:{port}") if k == "Host" else v for k, v in headers.items()}
    status, data = request(url + "/api/state", {"settings": {"strength": 0.1}}, headers=headers)
    assert status == 403 and "refused" in data["error"]
    assert state(url)["settings"] == before


def test_a_same_origin_write_is_accepted(page):
    _, url, _ = page
    status, _ = request(url + "/api/state", {"settings": {"split": True}}, headers={"Origin": url})
    assert status == 200


def test_the_server_listens_on_loopback_only(page):
    _, url, _ = page
    port = int(url.rsplit(":", 1)[1])
    if sys.platform.startswith("linux"):  # the kernel's own table: every socket listening on this port
        listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == port]
        assert listening == [f"0100007F:{port:04X}"]  # 127.0.0.1, nothing else
    others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    for address in others - {"127.0.0.1"}:
        if address.startswith("127."):
            continue
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=5).close()


def test_static_files_only_from_the_package(page):
    _, url, _ = page
    assert request(url + "/")[0] == 200
    assert request(url + "/static/app.js")[0] == 200
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/static/../server.py")
    assert conn.getresponse().status == 404
    assert request(url + "/thumb?spec=/etc/passwd")[0] == 404


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VCAM_DATA_DIR", str(tmp_path / "data"))  # the user's data dir, for this test only
    return tmp_path / "data"


def test_upload_validation(data_dir):
    image = np.zeros((90, 160, 3), np.uint8)
    good = cv2.imencode(".png", image)[1].tobytes()
    saved = store.save_upload("my photo!.png", good)
    assert saved.parent == store.uploads_dir() and saved.name == "my_photo.png"
    assert store.is_gallery_file(str(saved)) and any(i["spec"] == str(saved) for i in store.gallery())
    with pytest.raises(store.UploadError, match="not an image this machine can decode"):
        store.save_upload("bad.jpg", b"not an image")
    with pytest.raises(store.UploadError, match="not a video"):
        store.save_upload("bad.mp4", b"not a video")
    with pytest.raises(store.UploadError, match="not a supported image or video"):
        store.save_upload("run.sh", b"#!/bin/sh")
    with pytest.raises(store.UploadError, match="at most 20 MB"):
        store.check_upload_size("big.jpg", 21 * 2**20)
    assert sorted(p.name for p in store.uploads_dir().iterdir()) == ["my_photo.png"]  # nothing else left


def test_saved_settings_round_trip(tmp_path):
    path = tmp_path / "ui.toml"
    values = {"background": ['color:#00ff00', 'C:\\photos\\"a".jpg'], "strength": 0.25, "harmonize": False,
              "reference": None, "segmentation_model": 0}
    store.save_settings(values, path)
    assert store.load_settings(path) == {k: v for k, v in values.items() if v is not None}
    path.write_text("strength = 3\n")
    with pytest.raises(SettingError, match="strength"):
        store.load_settings(path)


def test_vcam_ui_starts_from_the_saved_settings(person_video, tmp_path):
    (tmp_path / "config").mkdir()
    store.save_settings({"background": ["color:#204060"], "strength": 0.4, "reference": "0.0,0.0,0.5,0.5",
                         "harmonize": False}, tmp_path / "config" / "ui.toml")
    args = ["--input", person_video, "--size", "320x180", "--output", "null", "--loop", "--status-interval", "0"]
    with vcam_ui(args, tmp_path) as (process, url):
        settings = state(url)["settings"]
    assert settings["background"] == ["color:#204060"] and settings["strength"] == 0.4
    assert settings["reference"] == "0.0,0.0,0.5,0.5" and settings["harmonize"] is False


def test_a_saved_background_that_is_gone_falls_back_to_the_default(person_video, tmp_path):
    (tmp_path / "config").mkdir()
    store.save_settings({"background": [str(tmp_path / "deleted.jpg")], "strength": 0.4},
                        tmp_path / "config" / "ui.toml")
    args = ["--input", person_video, "--size", "320x180", "--output", "null", "--loop", "--no-harmonize",
            "--status-interval", "0"]
    with vcam_ui(args, tmp_path) as (process, url):
        settings = state(url)["settings"]
    assert settings["background"] == ["blur"] and settings["strength"] == 0.4


def test_the_page_flags_are_checked(capsys):
    from vcam.cli import main

    assert main(["run", "--ui", "--ui-port", "70000", "--input", "talk.mp4"]) == 2
    assert "--ui-port must be in [0, 65535], got 70000" in capsys.readouterr().err
    assert main(["ui", "--ui-host", "", "--input", "talk.mp4"]) == 2
    assert "--ui-host must be a non-empty string" in capsys.readouterr().err


def test_a_taken_port_is_one_clear_line(person_video, capsys):
    from vcam.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["run", "--ui", "--ui-port", str(port), "--input", person_video, "--size", "320x180",
                     "--output", "null", "--no-harmonize", "--max-frames", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith(f"vcam: error: control page: cannot listen on 127.0.0.1:{port}:"), err[-1]
