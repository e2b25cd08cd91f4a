"""The control page's HTTP server: the page, a JSON API, a preview; every change through `pipeline.request`.

    GET  /                 the page (vcam/ui/static: plain HTML/CSS/JS, no build step, nothing from a CDN)
    GET  /api/state        {"settings": {...}, "status": {...}, "gallery": [...]}
    POST /api/state        {"settings": {...}}: the same shape, with any part of the page's settings
                           (vcam.ui.store.PAGE_KEYS); answers with the state as GET does. Validated by
                           RunConfig and the running pipeline; 400 with {"error": one line} and nothing
                           changed on any bad key or value (status and gallery are read-only)
    POST /api/upload?name= an image or video as the raw body; validated and kept under the user's data dir
    GET  /preview          the latest output frame as a small JPEG (before/after split when `split` is on)
    GET  /thumb?spec=      a gallery image, small

Why the standard library's `http.server`: it parses HTTP itself (nothing hand-written here), costs no
dependency, and a `ThreadingHTTPServer` keeps every request off the frame loop's thread. The page polls a
handful of small requests per second on loopback; an async framework would buy nothing at that rate.

Nothing here reads a stage from an HTTP thread: the frame loop hands over the latest frame and a status
snapshot in `on_frame` (two attribute assignments), and settings go in through `pipeline.request`, which
queues them for the loop to apply between frames. Writes are refused unless their Origin (when sent) is
this server and Host names it (a web page the user visits cannot change the camera, nor reach it through
DNS rebinding); `POST /api/state` also needs `Content-Type: application/json`, which a cross-site form
cannot send without a preflight this server never answers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from vcam.config import SettingError, background_kind, check_background
from vcam.ui import store

log = logging.getLogger("vcam.ui")

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".png": "image/png"}
MAX_STATE_BODY = 16 * 1024  # a settings update is a few hundred bytes
PREVIEW_WIDTH = 480  # the preview is scaled down: it must cost the stream little
STATUS_EVERY_S = 0.5  # how often the frame loop snapshots the status for the page
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BadRequest(ValueError):
    """A request refused with HTTP 400 (or `status`) and one line for the page."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


class UiServer:
    """Serves the control page for one running pipeline.

    Args:
        host: interface to listen on (loopback by default; another only when the user says so).
        port: TCP port; 0 picks a free one (`url` says which).
        persist: write the page's settings to the user config file after every accepted change.

    Raises:
        OSError: the port is taken or the host cannot be bound (from `start`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, *, persist: bool = True):
        self.host, self.port, self.persist = host, port, persist
        self.pipeline = None
        self._frame = None  # the latest frame the loop sent (a reference, never copied here)
        self._status: dict = {"camera": "starting"}
        self._status_at = 0.0
        self._latency: deque = deque(maxlen=120)
        self._cpu = (time.perf_counter(), time.process_time())
        self._preview_cache: tuple | None = None  # (frame index, split, JPEG bytes)
        self._preview_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- the frame loop's side (keep it to a few assignments) ---------------------------------------
    def attach(self, pipeline) -> None:
        """The pipeline whose settings the page changes (`request`, `settings`, `size`)."""
        self.pipeline = pipeline

    def on_frame(self, frame) -> None:
        """`Pipeline(on_frame=...)`: keep the newest frame; every STATUS_EVERY_S, a status snapshot."""
        self._frame = frame
        now = time.perf_counter()
        if frame.live:  # on_frame runs right after the send: this is the stream's latency
            self._latency.append((now - frame.captured_at) * 1000.0)
        if now - self._status_at >= STATUS_EVERY_S and self.pipeline is not None:
            self._status_at = now
            self._status = self._snapshot(now)

    def _snapshot(self, now: float) -> dict:
        pipeline = self.pipeline
        metrics, latency = pipeline.metrics, list(self._latency)
        harmonize = pipeline.harmonize.status() if pipeline.harmonize is not None else None
        cpu_now = time.process_time()
        wall0, cpu0 = self._cpu
        self._cpu = (now, cpu_now)
        return {
            "fps": round(metrics.fps(60), 1),
            "latency_p95_ms": round(float(np.percentile(latency, 95)), 1) if latency else None,
            "harmonizer": None if harmonize is None or not harmonize["enabled"] else {
                "backend": harmonize["backend"], "mode": harmonize["mode"], "refresh_hz": harmonize["refresh_hz"],
                "failed": harmonize["failed"]},
            "cpu_percent": round(100.0 * (cpu_now - cpu0) / max(now - wall0, 1e-6), 0),
            "cpus": os.cpu_count(),
            "camera": pipeline.capture.state if pipeline.capture is not None else "closed",
            "frames": pipeline.frames,
            "size": list(pipeline.size),
        }

    # -- state ------------------------------------------------------------------------------------
    def state(self) -> dict:
        settings = self.pipeline.settings
        return {"settings": {key: getattr(settings, key) for key in store.PAGE_KEYS},
                "status": self._status, "gallery": store.gallery()}

    def _check_background(self, value) -> list[str]:
        specs = [value] if isinstance(value, str) else value
        if not isinstance(specs, list) or not specs or not all(isinstance(s, str) for s in specs):
            raise BadRequest(f"background must be a string or a list of strings, got {value!r}")
        current = set(self.pipeline.settings.background)
        checked = []
        for spec in specs:
            try:
                spec = check_background(spec)  # the stream's own parser (vcam.config), so both read it alike
            except ValueError as exc:
                raise BadRequest(f"background: {exc}") from None
            if background_kind(spec)[0] == "file" and spec not in current and not store.is_gallery_file(spec):
                raise BadRequest(f"background {spec!r} is not in the gallery (upload it first)")
            checked.append(spec)
        return checked

    def update(self, document) -> dict:
        """Validate a partial settings update, `{"settings": {...}}` (the shape `state()` returns), and queue
        it; returns the new state.

        Raises:
            BadRequest: not that shape, an unknown key or a bad value; nothing was queued.
        """
        changes = document.get("settings") if isinstance(document, dict) and set(document) == {"settings"} else None
        if not isinstance(changes, dict) or not changes:
            raise BadRequest('expected {"settings": {...}} with the settings to change (the shape GET /api/state '
                             'returns; status and gallery are read-only), e.g. {"settings": {"strength": 0.5}}')
        unknown = sorted(set(changes) - set(store.PAGE_KEYS))
        if unknown:
            raise BadRequest(f"unknown setting {unknown[0]!r}; the page sets {', '.join(store.PAGE_KEYS)}")
        if "background" in changes:
            changes = {**changes, "background": self._check_background(changes["background"])}
        try:  # RunConfig checks every type and range, the pipeline what only the frame can tell; then queued
            self.pipeline.request(**changes)
        except (SettingError, ValueError, TypeError, OSError) as exc:
            raise BadRequest(str(exc).strip().splitlines()[0]) from None
        if self.persist:
            self._save()
        return self.state()

    def _save(self) -> None:
        settings = self.pipeline.settings
        try:
            store.save_settings({key: getattr(settings, key) for key in store.PAGE_KEYS})
        except OSError as exc:  # a read-only home must not break the page
            log.warning("control page: settings not saved: %s", exc)

    # -- preview ----------------------------------------------------------------------------------
    def preview(self, width: int = PREVIEW_WIDTH) -> bytes | None:
        """The latest output as a JPEG, `width` pixels wide; one encode per frame whatever the clients."""
        frame = self._frame
        if frame is None or frame.output is None:
            return None
        split = bool(self.pipeline.config.split) if self.pipeline is not None else False  # as applied
        width = min(width, frame.output.shape[1])  # scaled down, never up
        key = (frame.index, split, width, frame.live)
        with self._preview_lock:
            if self._preview_cache is not None and self._preview_cache[0] == key:
                return self._preview_cache[1]
            image = frame.output
            if split and frame.composite is not None:  # before (left) | after (right)
                image = image.copy()
                half = image.shape[1] // 2
                image[:, :half] = frame.composite[:, :half]
                image[:, half - 1:half + 1] = 255
            height = max(2, round(image.shape[0] * width / image.shape[1]))
            small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
            self._preview_cache = (key, data.tobytes())
            return self._preview_cache[1]

    # -- life -------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> str:
        """Listen and serve in a daemon thread; returns the page's URL (the real port when 0 was asked).

        Raises:
            OSError: the address cannot be bound (a port in use names it).
        """
        server_class = _Server6 if ":" in self.host else _Server
        try:
            self._httpd = server_class((self.host, self.port), _handler_for(self))
        except OSError as exc:
            raise OSError(f"control page: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        daemon=True, name="vcam-ui")
        self._thread.start()
        return self.url

    def close(self) -> None:
        """Stop serving; idempotent."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a browser holding a connection open never delays vcam's exit

    def handle_error(self, request, client_address) -> None:
        """One line, not a traceback on the user's terminal (a closed tab resets its connections)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("control page: %s from %s", type(exc).__name__, client_address[0])
        else:
            log.warning("control page: request failed: %s: %s", type(exc).__name__, exc)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _handler_for(ui: UiServer) -> type[BaseHTTPRequestHandler]:
    return type("_Handler", (_Handler,), {"ui": ui})


class _Handler(BaseHTTPRequestHandler):
    ui: UiServer
    server_version = "vcam-ui"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        log.debug("ui: " + format, *args)

    # -- responses --------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200, close: bool = False) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", close)

    def _error(self, exc: BadRequest) -> None:
        # A refused body may be unread: close the connection rather than parse it as the next request.
        self._json({"error": str(exc)}, exc.status, close=True)

    # -- checks -----------------------------------------------------------------------------------
    def _check_host(self) -> None:
        """Host must name this server (DNS rebinding: another site's name resolving to 127.0.0.1)."""
        host = (self.headers.get("Host") or "").strip().lower()
        name, port = host, "80"  # a browser leaves out the default port
        if host.startswith("[") or host.count(":") == 1:
            name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "80")
        name = name.strip("[]")
        # A wildcard --ui-host (0.0.0.0, ::) is reached by any of the machine's names: the user chose that.
        wildcard = self.ui.host in ("0.0.0.0", "::")
        if port != str(self.ui.port) or not (wildcard or name in set(LOOPBACK) | {self.ui.host.lower()}):
            raise BadRequest(f"refused: Host {host!r} is not this server", HTTPStatus.FORBIDDEN)

    def _check_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin is None:  # not a browser's cross-site request (browsers send Origin on every POST)
            return
        parts = urlsplit(origin)
        if parts.scheme != "http" or parts.netloc.lower() != (self.headers.get("Host") or "").lower():
            raise BadRequest(f"refused: a write from another origin ({origin})", HTTPStatus.FORBIDDEN)

    def _body(self, limit: int) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise BadRequest("Content-Length required") from None
        if length < 0 or length > limit:
            raise BadRequest(f"request body too large ({length} bytes; at most {limit})")
        return self.rfile.read(length)

    # -- routes -----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        try:
            self._check_host()
            self._get(urlsplit(self.path))
        except BadRequest as exc:
            self._error(exc)

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        try:
            self._check_host()
            self._check_origin()
            self._post(urlsplit(self.path))
        except BadRequest as exc:
            self._error(exc)

    def _get(self, url) -> None:
        if url.path == "/api/state":
            return self._json(self.ui.state())
        if url.path == "/preview":
            data = self.ui.preview()
            if data is None:
                return self._send(503, b"no frame yet", "text/plain", close=False)
            return self._send(200, data, "image/jpeg")
        if url.path == "/thumb":
            return self._thumb(parse_qs(url.query).get("spec", [""])[0])
        name = "index.html" if url.path == "/" else url.path.removeprefix("/static/")
        path = STATIC_DIR / name
        if "/" in name or path.suffix not in STATIC_TYPES or not path.is_file():
            raise BadRequest(f"not found: {url.path}", HTTPStatus.NOT_FOUND)
        self._send(200, path.read_bytes(), STATIC_TYPES[path.suffix])

    def _thumb(self, spec: str) -> None:
        if not store.is_gallery_file(spec) or Path(spec).suffix.lower() not in store.IMAGE_TYPES:
            raise BadRequest("not a gallery image", HTTPStatus.NOT_FOUND)
        image = cv2.imread(spec, cv2.IMREAD_REDUCED_COLOR_4)
        if image is None:
            raise BadRequest("unreadable image", HTTPStatus.NOT_FOUND)
        small = cv2.resize(image, (160, max(2, round(image.shape[0] * 160 / image.shape[1]))),
                           interpolation=cv2.INTER_AREA)
        self._send(200, cv2.imencode(".jpg", small)[1].tobytes(), "image/jpeg")

    def _post(self, url) -> None:
        if url.path == "/api/state":
            if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
                raise BadRequest("POST /api/state needs Content-Type: application/json")
            body = self._body(MAX_STATE_BODY)
            try:
                changes = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BadRequest(f"not JSON: {exc}") from None
            return self._json(self.ui.update(changes))
        if url.path == "/api/upload":
            name = parse_qs(url.query).get("name", [""])[0]
            try:
                store.check_upload_size(name, int(self.headers.get("Content-Length") or 0))
                path = store.save_upload(name, self._body(store.MAX_VIDEO_BYTES))
            except store.UploadError as exc:
                raise BadRequest(str(exc)) from None
            log.info("control page: background uploaded: %s", path)
            return self._json({"spec": str(path), "gallery": store.gallery()})
        raise BadRequest(f"not found: {url.path}", HTTPStatus.NOT_FOUND)
