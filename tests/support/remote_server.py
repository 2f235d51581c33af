"""An HTTP/1.1 server on 127.0.0.1 for the remote tests: honest by default, hostile on request.

It serves files held in memory (or generated: :class:`Sparse`) with
``Range`` support (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``), keep-alive,
a strong ``ETag`` and ``Last-Modified`` per file, ``If-Match`` (412 when it
differs), and counts every request, the body bytes sent and the most
requests in flight at once. A test makes it lie by setting ``hook``: a
function called with each request that may answer it itself (then it
returns True) or pick which bytes to serve (``Request.data``). Every loop
in it is bounded, so a client that hangs makes a test fail, not stall.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
LAST_MODIFIED = "Sat, 28 Nov 2026 00:00:00 GMT"
WRITE_CHUNK = 1 << 20


class Data(Protocol):
    size: int

    def read(self, offset: int, n: int) -> bytes | memoryview: ...


class Bytes:
    """A file held in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.size = len(data)

    def read(self, offset: int, n: int) -> memoryview:
        return self.data[offset : offset + n]


class Sparse:
    """A large file made of a few stored regions; zeros everywhere else (nothing allocated for them)."""

    def __init__(self, size: int, regions: dict[int, bytes]) -> None:
        self.size = size
        self.regions = sorted(regions.items())

    def read(self, offset: int, n: int) -> bytes:
        out = bytearray(n)
        for start, data in self.regions:
            a, b = max(offset, start), min(offset + n, start + len(data))
            if a < b:
                out[a - offset : b - offset] = data[a - start : b - start]
        return bytes(out)


@dataclass
class Request:
    """One request as the hook sees it: ``data`` may be replaced to serve other bytes."""

    index: int
    method: str
    path: str
    headers: Any
    range: tuple[int, int] | None  # [start, end) once resolved against the file size
    data: Data | None
    handler: BaseHTTPRequestHandler
    extra_headers: dict[str, str] = field(default_factory=dict)


def etag_of(data: Data) -> str:
    head = data.read(0, min(data.size, 1 << 16))
    return '"' + hashlib.sha256(bytes(head) + str(data.size).encode()).hexdigest()[:16] + '"'


class Server:
    def __init__(self, *, tls: tuple[str, str] | None = None) -> None:
        """``tls``: (certificate, key) PEM files to serve HTTPS instead."""
        self.files: dict[str, Data] = {}
        self.hook: Callable[[Request], bool] | None = None
        self.etags = True
        self._lock = threading.Lock()
        self.log: list[dict[str, Any]] = []
        self.bytes_sent = 0
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self)

            def do_HEAD(self) -> None:
                server._serve(self)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-http", daemon=True)
        self.thread.start()

    # --- set-up and counters

    def add(self, path: str, data: bytes | Data) -> str:
        self.files[path] = Bytes(data) if isinstance(data, (bytes, bytearray)) else data
        return self.url(path)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}{path}"

    @property
    def requests(self) -> list[str]:
        """The Range header of each request so far ('-' for none)."""
        with self._lock:
            return [r["range"] or "-" for r in self.log]

    def reset(self) -> None:
        with self._lock:
            self.log.clear()
            self.bytes_sent = 0
            self.max_in_flight = 0

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    # --- serving

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            index = len(self.log)
            rec: dict[str, Any] = {"method": h.command, "path": h.path, "range": h.headers.get("Range"), "status": None, "bytes": 0}
            self.log.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            data = self.files.get(h.path)
            req = Request(index, h.command, h.path, h.headers, None, data, h)
            if data is not None:
                req.range = resolve_range(h.headers.get("Range"), data.size)
            if self.hook is not None and self.hook(req):
                rec["status"] = "hook"
                return
            if req.data is None:
                rec["status"] = 404
                h.send_error(404)
                return
            rec["status"], rec["bytes"] = self.send(h, req)
            with self._lock:
                self.bytes_sent += rec["bytes"]
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
        finally:
            with self._lock:
                self.in_flight -= 1

    def send(self, h: BaseHTTPRequestHandler, req: Request) -> tuple[int, int]:
        """Answer honestly from ``req.data`` (which the hook may have swapped); return (status, body bytes)."""
        data = req.data
        assert data is not None
        tag = etag_of(data) if self.etags else None
        if tag is not None and h.headers.get("If-Match") not in (None, tag):
            h.send_response(412)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return 412, 0
        rng = req.range if h.headers.get("Range") else (0, data.size)
        if rng is None:  # unsatisfiable
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{data.size}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return 416, 0
        start, end = rng
        status = 206 if h.headers.get("Range") else 200
        h.send_response(status)
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{data.size}")
        h.send_header("Content-Length", str(end - start))
        h.send_header("Accept-Ranges", "bytes")
        if tag is not None:
            h.send_header("ETag", tag)
            h.send_header("Last-Modified", LAST_MODIFIED)
        for k, v in req.extra_headers.items():
            h.send_header(k, v)
        h.end_headers()
        if h.command == "HEAD":
            return status, 0
        return status, write_body(h, data, start, end)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-answer is what the hostile tests do; anything else is printed."""
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def resolve_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single-range header against ``size``; the whole file without one; None if unsatisfiable."""
    if not header:
        return 0, size
    m = _RANGE.match(header.strip())
    if not m or not (m.group(1) or m.group(2)):
        return 0, size
    a, b = m.groups()
    if a == "":
        return (max(0, size - int(b)), size) if int(b) and size else None
    start, end = int(a), min(size, int(b) + 1) if b else size
    return (start, end) if start < end else None


def write_body(h: BaseHTTPRequestHandler, data: Data, start: int, end: int) -> int:
    sent = 0
    for pos in range(start, end, WRITE_CHUNK):
        h.wfile.write(data.read(pos, min(WRITE_CHUNK, end - pos)))
        sent += min(WRITE_CHUNK, end - pos)
    return sent


def raw_response(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes = b"") -> None:
    """Send exactly these headers (none added but the status line) and body."""
    h.send_response_only(status)
    for k, v in headers.items():
        h.send_header(k, v)
    h.end_headers()
    if body:
        h.wfile.write(body)
    h.wfile.flush()


def drip(h: BaseHTTPRequestHandler, headers: dict[str, str], every_s: float, limit_s: float) -> int:
    """Headers, then one byte every ``every_s`` until the client leaves or ``limit_s`` passes; return bytes sent."""
    raw_response(h, 206, headers)
    sent = 0
    stop = time.monotonic() + limit_s
    try:
        while time.monotonic() < stop:
            h.wfile.write(b"\0")
            sent += 1
            time.sleep(every_s)
    except OSError:
        pass
    h.close_connection = True
    return sent


def stall(h: BaseHTTPRequestHandler, limit_s: float) -> None:
    """Say nothing until the client hangs up or ``limit_s`` passes."""
    sock: socket.socket = h.connection
    sock.settimeout(limit_s)
    try:
        sock.recv(1)  # returns when the client closes, or times out
    except OSError:
        pass
    h.close_connection = True
