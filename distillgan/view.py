"""``distillgan view FILE``: the inspector page and one model file, served on 127.0.0.1 for one session.

The page (``web/``) and the JavaScript reader (``js/``) are static files; the page reads the model
with HTTP range requests, headers only, as it reads a local file with ``Blob.slice``. The server
binds the loopback interface only, puts a random token in every path (another local program or a
web page cannot guess the URL), serves nothing but the page's files and the one model, and stops
when interrupted (Ctrl+C) or after ``idle_s`` seconds without a request.
"""

from __future__ import annotations

import http.server
import os
import secrets
import sys
import threading
import time
import urllib.parse
import webbrowser
from pathlib import Path
from typing import Any

from .errors import DistillganError
from .source import MappedFile

ASSET_DIRS = ("web", "js")  # served under /<token>/web/ and /<token>/js/
TYPES = {".html": "text/html; charset=utf-8", ".mjs": "text/javascript; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".md": "text/plain; charset=utf-8"}


def assets_root() -> Path:
    """Where web/ and js/ are: inside the installed package (``distillgan/_web``), else the source tree."""
    here = Path(__file__).resolve().parent
    installed = here / "_web"
    return installed if (installed / "web" / "index.html").is_file() else here.parent


class ViewServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, path: str, port: int = 0) -> None:
        self.source = MappedFile(path)  # the reader's own opener: a regular file, opened without blocking (FORMAT.md §13.1)
        self.size = self.source.size
        self.name = os.path.basename(path)
        self.token = secrets.token_urlsafe(16)
        self.root = assets_root()
        self.last_request = time.monotonic()
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        query = urllib.parse.urlencode({"src": f"/{self.token}/model", "name": self.name})
        return f"http://127.0.0.1:{self.server_address[1]}/{self.token}/web/index.html?{query}"

    def server_close(self) -> None:
        super().server_close()
        self.source.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ViewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8", extra: dict[str, str] | None = None,
              head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        srv = self.server
        srv.last_request = time.monotonic()
        path = urllib.parse.urlsplit(self.path).path
        prefix = f"/{srv.token}/"
        if not path.startswith(prefix):
            self._send(404, b"not found", head=head)
            return
        rest = path[len(prefix):]
        if rest == "model":
            self._model(head)
            return
        parts = rest.split("/")
        if len(parts) != 2 or parts[0] not in ASSET_DIRS or not parts[1] or parts[1].startswith(".") or "\\" in parts[1]:
            self._send(404, b"not found", head=head)
            return
        file = srv.root / parts[0] / parts[1]
        ctype = TYPES.get(file.suffix)
        if ctype is None or not file.is_file():
            self._send(404, b"not found", head=head)
            return
        self._send(200, file.read_bytes(), ctype, head=head)

    def _model(self, head: bool) -> None:
        srv = self.server
        size = srv.size
        rng = self.headers.get("Range")
        if rng is None:
            if head:  # the size, for the page's reader
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                return
            self._send(416, b"ask for a range", head=head)
            return
        try:
            unit, _, spec = rng.partition("=")
            first, _, last = spec.partition("-")
            a, b = int(first), int(last)
            if unit.strip() != "bytes" or a < 0 or b < a or b >= size:
                raise ValueError(rng)
        except ValueError:
            self._send(416, b"bad range", extra={"Content-Range": f"bytes */{size}"}, head=head)
            return
        try:
            body = srv.source.read(a, b - a + 1)
        except DistillganError as e:  # the file got shorter meanwhile
            self._send(416, str(e).encode(), extra={"Content-Range": f"bytes */{size}"}, head=head)
            return
        self._send(206, body, "application/octet-stream", {"Content-Range": f"bytes {a}-{a + len(body) - 1}/{size}",
                                                           "Accept-Ranges": "bytes"}, head=head)


def serve_view(path: str, *, port: int = 0, open_browser: bool = True, idle_s: float | None = None, ready: Any = None) -> int:
    """Serve the page and ``path`` on 127.0.0.1 until Ctrl+C (or ``idle_s`` without a request); open a browser on it."""
    srv = ViewServer(path, port)
    url = srv.url
    print(f"distillgan view: {srv.name} at {url}", flush=True)
    print("(served on 127.0.0.1 for this session only; press Ctrl+C to stop)", file=sys.stderr, flush=True)
    if open_browser:
        try:
            opened = webbrowser.open(url)
        except (webbrowser.Error, OSError):  # a broken browser setting must not stop the server; the URL is printed
            opened = False
        if not opened:
            print("no browser found: open the URL above", file=sys.stderr, flush=True)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    if ready is not None:
        ready(srv)
    try:
        while thread.is_alive():
            time.sleep(0.2)
            if idle_s is not None and time.monotonic() - srv.last_request > idle_s:
                break
    finally:
        srv.shutdown()
        srv.server_close()
    return 0
