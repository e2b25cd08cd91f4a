"""Starts a real `vcam run --ui --ui-port 0` in a subprocess for the control-page tests, and talks to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from queue import Empty, Queue

import cv2
import numpy as np

START_TIMEOUT_S = 240  # MediaPipe, ONNX Runtime and maybe an ONNX export on a loaded 2-core machine


@contextmanager
def vcam_ui(args: list[str], home):
    """Yield (process, base URL) of `vcam run --ui --ui-port 0 ARGS`, user dirs under `home`; stop it after."""
    env = dict(os.environ, VCAM_CONFIG_DIR=str(home / "config"), VCAM_DATA_DIR=str(home / "data"))
    process = subprocess.Popen([sys.executable, "-m", "vcam", "run", "--ui", "--ui-port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    # A thread reads the lines: select() on the pipe cannot see lines that an earlier readline() already
    # pulled into Python's buffer (on a loaded machine the start-up line and the address arrive together,
    # and the address would then wait there unseen until the timeout).
    queue: Queue = Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, queue), daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        url = None
        while url is None and time.monotonic() < deadline:
            try:
                line = queue.get(timeout=1.0)
            except Empty:
                if process.poll() is not None and queue.empty():
                    break
                continue
            if line is None:  # the process closed its output
                break
            lines.append(line)
            if "control page at " in line:
                url = line.split("control page at ")[1].strip().rstrip("/")
        if url is None:
            raise RuntimeError("vcam run --ui did not print its page's address:\n" + "".join(lines[-30:]))
        yield process, url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read_lines(stream, queue: Queue) -> None:
    """Every line of `stream` into `queue`, then None."""
    for line in stream:
        queue.put(line)
    queue.put(None)


def request(url: str, data=None, headers: dict | None = None, method: str | None = None):
    """(status, parsed JSON or raw bytes) of one HTTP request; HTTP errors are returned, not raised."""
    body = json.dumps(data).encode() if data is not None and not isinstance(data, bytes) else data
    headers = {"Content-Type": "application/json", **(headers or {})} if data is not None else headers or {}
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, payload, kind = response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, payload, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    return status, json.loads(payload) if "json" in kind else payload


def state(url: str) -> dict:
    status, data = request(url + "/api/state")
    assert status == 200, data
    return data


def wait_frames(url: str, count: int, process) -> None:
    """Wait until the stream has sent `count` more frames since everything queued so far was applied.

    The status snapshot is taken on a frame every STATUS_EVERY_S, so its counter is stale, and the
    first fresh snapshot can come from a frame that was already being made when a change was queued
    (the change is applied between frames, after it). The second fresh snapshot comes from a frame
    made after that gap, so the count starts there.
    """
    frames = state(url)["status"].get("frames", 0)
    for _ in range(2):
        frames = _next_snapshot(url, frames, process)
    target = frames + count
    while state(url)["status"].get("frames", 0) < target:
        assert process.poll() is None, "vcam exited"
        time.sleep(0.1)


def _next_snapshot(url: str, frames: int, process) -> int:
    """The frame counter of the first status snapshot newer than the one that read `frames`."""
    while (now := state(url)["status"].get("frames", 0)) <= frames:
        assert process.poll() is None, "vcam exited"
        time.sleep(0.05)
    return now


def preview(url: str) -> np.ndarray:
    """The page's preview (the output, scaled down) as RGB."""
    status, data = request(url + "/preview")
    assert status == 200, data
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
