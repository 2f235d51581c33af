"""A small loopback HTTP server for the remote phase of the benchmark.

It serves registered files from disk, with ``Range`` support
(``bytes=a-b``, ``bytes=a-``, ``bytes=-n``), HTTP/1.1 keep-alive,
``TCP_NODELAY``, one thread per connection, and the body sent with ``socket.sendfile`` (no copy
through Python). Like nginx it sends an ``ETag`` made of the file's mtime and size and a
``Last-Modified``, and answers a failed ``If-Match`` with 412, so a reader's validator checks
cost what they cost against a real server. It counts the requests, the body bytes it sends
(the response headers are not counted) and the most requests in flight at once.

``GET /_stats`` returns the counters as JSON and is not counted itself. A
child process uses it to read the figures of exactly one ``inspect``.

    srv = RangeServer()
    url = srv.add("/tmp/x/model.distillgan", "16MiB/model.distillgan")
    srv.reset(); ...; srv.stats()
    srv.close()
"""

from __future__ import annotations

import json
import os
import re
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
STATS_PATH = "/_stats"


class RangeServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.files: dict[str, str] = {}  # URL path -> file on disk
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.bytes_sent = 0
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real server would offer
            # TCP_NODELAY, as nginx and most servers set: the headers and the body are two writes, and with
            # Nagle the body's last short segment waits for the client's delayed ACK (~40 ms per request)
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self, head: bool) -> None:
                if self.path == STATS_PATH:
                    body = json.dumps(server.stats()).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if not head:
                        self.wfile.write(body)
                    return
                rng = self.headers.get("Range")
                rec: dict[str, Any] = {"method": self.command, "path": self.path, "range": rng}
                sent = 0
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    fpath = server.files.get(self.path)
                    if fpath is None:
                        rec["status"] = 404
                        self.send_error(404)
                        return
                    st = os.stat(fpath)
                    size = st.st_size
                    etag = f'"{int(st.st_mtime):x}-{size:x}"'  # nginx's form
                    if self.headers.get("If-Match") not in (None, etag):
                        rec["status"] = 412
                        self.send_response(412)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    start, end, status = 0, size, 200  # end exclusive
                    if rng:
                        m = _RANGE.match(rng.strip())
                        if m and m.group(1) + m.group(2):
                            a, b = m.groups()
                            if a == "":  # suffix: the last n bytes
                                start, end = max(0, size - int(b)), size
                            else:
                                start, end = int(a), min(size, int(b) + 1) if b else size
                            if start >= size or start >= end:
                                rec["status"] = 416
                                self.send_response(416)
                                self.send_header("Content-Range", f"bytes */{size}")
                                self.send_header("Content-Length", "0")
                                self.end_headers()
                                return
                            status = 206
                        # anything else (multiple ranges, other units): ignored, the whole file is sent (RFC 9110 allows it)
                    rec["status"] = status
                    self.send_response(status)
                    if status == 206:
                        self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                    self.send_header("Content-Length", str(end - start))
                    self.send_header("Accept-Ranges", "bytes")
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", formatdate(st.st_mtime, usegmt=True))
                    self.end_headers()
                    if head or end == start:
                        return
                    with open(fpath, "rb") as f:
                        sent = self.connection.sendfile(f, start, end - start)
                finally:
                    rec["bytes"] = sent
                    with server._lock:
                        server.in_flight -= 1
                        server.requests.append(rec)
                        server.bytes_sent += sent

            def do_GET(self) -> None:
                self._serve(head=False)

            def do_HEAD(self) -> None:
                self._serve(head=True)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="bench-http", daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.httpd.server_address[1]}"

    def add(self, fpath: str, name: str) -> str:
        """Serve ``fpath`` at ``/<name>``; return its URL."""
        p = "/" + name.lstrip("/")
        self.files[p] = os.path.abspath(fpath)
        return self.base_url + p

    def reset(self) -> None:
        with self._lock:
            self.requests = []
            self.bytes_sent = 0
            self.max_in_flight = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            reqs = list(self.requests)
            return {"requests": len(reqs), "bytes_sent": self.bytes_sent, "max_in_flight": self.max_in_flight, "log": reqs}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
