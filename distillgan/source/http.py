"""http(s) by byte ranges on urllib3, holding the server to FORMAT.md §12.

urllib3 (the client under ``requests``) gives the connections: keep-alive pools, TLS with
certificate and host-name verification, proxies. What it is asked is narrow: one ``GET`` of one
byte range, no redirect followed and no retry made by it, no content decoding. Everything else
is done here, the same for every request: the answer must be exactly the range asked of exactly
the pinned size with the pinned validators, unencoded, with one ``Content-Length``; the body is
read into the caller's buffer one socket read at a time and never past the requested length;
every exchange has a deadline (a watchdog shuts the socket down under a blocked read) and a
stall time (the socket's read timeout); redirects follow the rules of §12.1; a connection error
before an answer or a 5xx answer is retried a bounded number of times, within the deadline.

Configuration, read when a URL is opened (FORMAT.md §12.2): proxies from ``HTTP_PROXY``,
``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` (lower case too); extra request headers from
``storage_options={"headers": …}``, else ``DISTILLGAN_HTTP_HEADERS`` (a JSON object) and
``DISTILLGAN_HTTP_TOKEN`` (sent as ``Authorization: Bearer …``), sent only to the origin of the URL
opened, never to another host a redirect leads to; the CA certificates of TLS from
``DISTILLGAN_CA_BUNDLE``, else the system's (OpenSSL's defaults, which honour ``SSL_CERT_FILE``
and ``SSL_CERT_DIR``).
"""

from __future__ import annotations

import errno
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from http.client import HTTPException
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    InvalidHeader,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
)

from ..errors import ContainerError, FileAccessError, file_error, InputError
from .base import MAX_FILE_BYTES, REMOTE_MAX_REDIRECTS, REMOTE_RETRIES, Cancelled, Stats, too_large

if TYPE_CHECKING:
    import socket
    import ssl

    from urllib3.response import BaseHTTPResponse

REMOTE_RETRY_BACKOFF_S = 0.2  # the first wait before trying again; each further wait doubles it (never past the deadline)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
HEADERS_ENV = "DISTILLGAN_HTTP_HEADERS"
TOKEN_ENV = "DISTILLGAN_HTTP_TOKEN"
CA_BUNDLE_ENV = "DISTILLGAN_CA_BUNDLE"
_READ_MAX = 1 << 20  # at most this much per socket read: a cancelled transfer stops within one read
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")
_REDIRECTS = {301, 302, 303, 307, 308}
_USER_AGENT = "distillgan (+FORMAT.md §12)"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2: a field name
# what distillgan itself sends or what frames the exchange: a caller's header may not replace them
_RESERVED = frozenset({"range", "if-match", "if-unmodified-since", "if-none-match", "if-modified-since", "if-range", "accept-encoding",
                       "host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "proxy-authorization",
                       "keep-alive", "trailer", "expect"})
_URI_CHARS = "!#$%&'()*+,/:;=?@[]~-._"  # RFC 3986's reserved and unreserved marks (and '%'): kept as they are


def request_target(url: str) -> tuple[SplitResult, str]:
    """(parts, request target) of an http(s) URL; ValueError saying why when it cannot be requested.

    A port out of range or not a number, a malformed IPv6 literal or a host that IDNA cannot
    encode is refused. Characters a request line cannot carry (non-ASCII, spaces, controls) in the
    path and query are percent-encoded as UTF-8 (RFC 3987 §3.1, what browsers send): the same
    URL always gives the same request (FORMAT.md §12.1).
    """
    parts = urlsplit(url)  # ValueError: a malformed IPv6 literal
    _ = parts.port  # ValueError: a port out of range or not a number
    host = parts.hostname or ""
    if not host:
        raise ValueError("no host")
    try:
        host.encode("idna")
    except UnicodeError as e:
        raise ValueError(f"the host {host!r} cannot be encoded: {e}") from None
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=_URI_CHARS)
    return parts, target


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


# --- configuration from the caller and the environment -------------------------------------------


def request_headers(given: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's extra headers (``storage_options["headers"]``), else those of the environment; checked.

    A name must be a field name (RFC 9110) and not one distillgan sends itself (``Range``,
    ``If-Match``, ``Accept-Encoding``, ``Host``…); a value must be a string without CR, LF or NUL.
    Anything else is [invalid-input], naming the header but never showing its value.
    """
    where = "storage_options['headers']"
    if given is None:
        headers: dict[str, Any] = {}
        raw = os.environ.get(HEADERS_ENV)
        if raw:
            where = f"${HEADERS_ENV}"
            try:
                headers = json.loads(raw)
            except ValueError:
                raise InputError(f"${HEADERS_ENV} is not JSON; expected an object of header names to strings (FORMAT.md §12.2)",
                                 code="invalid-input") from None
            if not isinstance(headers, dict):
                raise InputError(f"${HEADERS_ENV} is a JSON {type(headers).__name__}; expected an object of header names to strings "
                                 "(FORMAT.md §12.2)", code="invalid-input")
        token = os.environ.get(TOKEN_ENV)
        if token and not any(k.lower() == "authorization" for k in headers if isinstance(k, str)):
            headers = {**headers, "Authorization": f"Bearer {token.strip()}"}
            where = f"${TOKEN_ENV}" if where.startswith("storage") else f"{where} / ${TOKEN_ENV}"
    elif isinstance(given, Mapping):
        headers = dict(given)
    else:
        raise InputError(f"{where} is a {type(given).__name__}; expected a mapping of header names to strings (FORMAT.md §12.2)",
                         code="invalid-input")
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise InputError(f"{where}: {ascii(name)[:60]} is not a header name (FORMAT.md §12.2)", code="invalid-input")
        if name.lower() in _RESERVED:
            raise InputError(f"{where}: {name!r} is a header distillgan sends or that frames the request; it cannot be given "
                             "(FORMAT.md §12.2)", code="invalid-input")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise InputError(f"{where}: the value of {name!r} must be a string without line breaks or NUL (FORMAT.md §12.2)",
                             code="invalid-input")
    return dict(headers)


def _ca_bundle() -> str | None:
    """$DISTILLGAN_CA_BUNDLE (checked to be a file), or None: the system's certificates (SSL_CERT_FILE / SSL_CERT_DIR honoured)."""
    path = os.environ.get(CA_BUNDLE_ENV)
    if not path:
        return None
    if not os.path.isfile(path):
        raise InputError(f"${CA_BUNDLE_ENV}={path!r}: no such file; expected a PEM file of CA certificates (FORMAT.md §12.2)",
                         code="invalid-input")
    return path


def proxy_for(parts: SplitResult) -> str | None:
    """The proxy the environment names for this URL (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``), or None (``NO_PROXY``)."""
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    bypass = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009  # public, but not in typeshed
    proxy = proxies.get(parts.scheme.lower()) or proxies.get("all")
    if not proxy:
        return None
    host = parts.hostname or ""
    if bypass(f"{host}:{parts.port}" if parts.port else host, proxies) or bypass(host, proxies):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    return proxy


# --- connections that tell the watchdog their socket ---------------------------------------------

_current = threading.local()  # the watchdog of the exchange this thread is making


class _Connection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        _watch(self.sock)


class _TlsConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        _watch(self.sock)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConnection


def _watch(sock: Any) -> None:
    dog: _Watchdog | None = getattr(_current, "dog", None)
    if dog is not None:
        dog.watch(sock)


class _Watchdog:
    """Ends the current exchange when its deadline passes: shuts the socket down under a blocked read."""

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self.sock: socket.socket | None = None  # kept even when the response lets go of it (a response that closes the connection)
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: Any) -> None:
        self.sock = getattr(sock, "socket", sock)  # TLS inside a proxy's TLS: the outer socket
        if self.fired:
            self._fire()

    def _fire(self) -> None:
        self.fired = True
        import socket

        sock = self.sock
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the socket's own shutdown, also under TLS: wakes the reader
            except (OSError, TypeError):
                pass

    def cancel(self) -> None:
        self._timer.cancel()


class _Retry(Exception):
    """An exchange to try again (a connection error before an answer, or a 5xx): carries the error to give if none is left."""

    def __init__(self, error: FileAccessError) -> None:
        self.error = error


class Http:
    """One URL read by byte ranges (FORMAT.md §12): pins size and validators at :meth:`open`, checks every answer against them.

    Every request asks for one byte range with ``Accept-Encoding: identity``
    and, after the first, the pinned validator (``If-Match`` for a strong
    ETag, else ``If-Unmodified-Since``). Every response must answer exactly
    that range of exactly the pinned size with the pinned validators,
    unencoded, with a ``Content-Length`` (no chunked bodies); the body is read
    into the caller's buffer and never past the requested length.
    Redirects are followed (at most REMOTE_MAX_REDIRECTS, http/https only,
    never from https to http) and the final URL is kept for later requests.
    """

    def __init__(self, url: str, name: str, stats: Stats, stall_s: float, headers: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.name = name  # the user's URL, for messages (never a signed URL)
        self.stats = stats
        self.stall_s = stall_s
        self.headers = request_headers(headers)
        self.origin = _origin(urlsplit(url))  # the caller's headers go to this origin only
        self.size = -1
        self.etag: str | None = None
        self.last_modified: str | None = None
        self._managers: dict[tuple[str | None, str], urllib3.PoolManager] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._tls: ssl.SSLContext | None = None

    # --- the two requests

    def open(self, n: int, deadline: float) -> tuple[int, bytes]:
        """(size, last min(n, size) bytes) from a suffix range request; pins size and validators."""
        resp, dog = self._exchange(f"bytes=-{n}", deadline, first=True)
        ok = False
        try:
            length = self._length(resp)
            if resp.status == 416:
                m = _UNSATISFIED_RANGE.match(self._header(resp, "Content-Range") or "")
                if not m or int(m.group(1)) != 0:
                    raise self._range_error(f"answered a {n}-byte suffix request with 416 (range not satisfiable)")
                self.size, start, length = 0, 0, 0
            elif resp.status == 200:
                if length > n:
                    raise self._range_error(
                        f"ignored the Range header: status 200 with {length} bytes for a {n}-byte suffix request (refused unread)"
                    )
                self.size, start = length, 0
            else:
                start, end, self.size = self._content_range(resp)
                if end != self.size or start != max(0, self.size - n) or length != end - start:
                    raise self._range_error(f"answered a {n}-byte suffix request with bytes {start}..{end} of {self.size}")
            self.etag, self.last_modified = self._header(resp, "ETag"), self._header(resp, "Last-Modified")
            data = bytearray(length)
            self._read_body(resp, memoryview(data), dog, deadline, None)
            ok = True
            return self.size, bytes(data)
        finally:
            self._done(resp, dog, ok)

    def get_into(self, start: int, dest: memoryview, deadline: float, cancel: threading.Event | None = None) -> None:
        """Fill ``dest`` with the bytes at ``start``: one range request."""
        end = start + len(dest)
        resp, dog = self._exchange(f"bytes={start}-{end - 1}", deadline, first=False)
        ok = False
        try:
            length = self._length(resp)
            if resp.status == 200:
                if start != 0 or end != self.size or length != self.size:
                    raise self._range_error(f"ignored the Range header: status 200 with {length} bytes for bytes {start}..{end} (refused unread)")
            elif resp.status != 206:
                raise self._range_error(f"answered a request for bytes {start}..{end} with status {resp.status}")
            else:
                got = self._content_range(resp)
                if got[2] != self.size:
                    raise FileAccessError(
                        f"{self.name!r}: the file was {self.size} bytes and is now {got[2]} (it changed while being read; FORMAT.md §12)",
                        code="remote-changed",
                    )
                if got[:2] != (start, end) or length != end - start:
                    raise self._range_error(f"answered a request for bytes {start}..{end} with bytes {got[0]}..{got[1]} ({length} byte body)")
            self._read_body(resp, dest, dog, deadline, cancel)
            ok = True
        finally:
            self._done(resp, dog, ok)

    # --- one exchange: retries, redirects, checks common to every response

    def _exchange(self, rng: str, deadline: float, *, first: bool) -> tuple[BaseHTTPResponse, _Watchdog]:
        """The checked answer (headers read, body not) to one range request, after redirects and retries."""
        wait = REMOTE_RETRY_BACKOFF_S
        for attempt in range(REMOTE_RETRIES + 1):
            dog = _Watchdog(deadline)
            try:
                resp = self._follow(rng, deadline, dog, first, last_try=attempt == REMOTE_RETRIES)
                try:
                    self._check(resp, first)
                except BaseException:
                    self._done(resp, dog, False)
                    raise
                return resp, dog
            except _Retry as r:
                dog.cancel()
                if attempt == REMOTE_RETRIES or time.monotonic() + wait >= deadline:
                    raise r.error from r.error.__cause__
                time.sleep(wait)
                wait *= 2
            except BaseException:
                dog.cancel()
                raise
        raise AssertionError  # pragma: no cover

    def _follow(self, rng: str, deadline: float, dog: _Watchdog, first: bool, *, last_try: bool) -> BaseHTTPResponse:
        url = self.url
        for hop in range(REMOTE_MAX_REDIRECTS + 1):
            try:
                resp = self._send(url, rng, deadline, dog, first)
            except (OSError, HTTPError, HTTPException) as e:
                error = self._network_error(e, dog, deadline)
                if isinstance(e, InvalidHeader):
                    raise self._range_error(f"sent headers that cannot be read: {e}") from e
                if error.code == "remote-io" and _retriable(e) and not last_try:
                    error.__cause__ = e
                    raise _Retry(error) from e
                raise error from e
            if resp.status in RETRY_STATUSES and not last_try:
                self._done(resp, dog, False, keep_dog=True)
                raise _Retry(self._status_error(resp))
            if resp.status not in _REDIRECTS:
                if first:
                    self.url = url  # later requests go straight to where the redirects led
                return resp
            try:
                url = self._redirect(url, resp, hop)
            finally:
                self._done(resp, dog, False, keep_dog=True)
        raise AssertionError  # pragma: no cover

    def _send(self, url: str, rng: str, deadline: float, dog: _Watchdog, first: bool) -> BaseHTTPResponse:
        parts, target = request_target(url)  # checked before: the user's URL when opened, each redirect's target
        host = parts.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port is not None else "")
        headers = {"User-Agent": _USER_AGENT}
        if _origin(parts) == self.origin:
            headers.update(self.headers)  # the caller's headers: never to another host a redirect leads to
        headers["Accept-Encoding"] = "identity"
        headers["Range"] = rng
        if not first and self.etag is not None and not self.etag.startswith("W/"):
            headers["If-Match"] = self.etag
        elif not first and self.etag is None and self.last_modified is not None:
            headers["If-Unmodified-Since"] = self.last_modified
        if dog.fired:
            raise TimeoutError("deadline")
        left = deadline - time.monotonic()
        timeout = urllib3.Timeout(connect=max(0.001, min(self.stall_s, left)), read=self.stall_s)
        manager = self._manager(parts)
        self.stats.request()
        _current.dog = dog
        try:
            return manager.urlopen("GET", f"{parts.scheme.lower()}://{netloc}{target}", headers=headers, redirect=False, retries=False,
                                   preload_content=False, decode_content=False, release_conn=False, timeout=timeout)
        finally:
            _current.dog = None

    def _manager(self, parts: SplitResult) -> urllib3.PoolManager:
        """The pools for this URL: direct, or through the proxy the environment names for it."""
        proxy = proxy_for(parts)
        scheme = parts.scheme.lower()
        key = (proxy, scheme)
        with self._lock:
            manager = self._managers.get(key)
            if manager is not None:
                return manager
            kw: dict[str, Any] = {"num_pools": 4, "maxsize": 16, "block": False, "retries": False}
            if scheme == "https":
                if self._tls is None:
                    import ssl

                    self._tls = ssl.create_default_context(cafile=_ca_bundle())
                kw["ssl_context"] = self._tls
            if proxy is None:
                manager = urllib3.PoolManager(**kw)
            else:
                p = urlsplit(proxy)
                if p.scheme.lower() not in ("http", "https"):
                    raise FileAccessError(f"{self.name!r}: the proxy of the environment is {p.scheme}://…; only http(s) proxies are "
                                          "supported (FORMAT.md §12.2)", code="remote-unavailable")
                proxy_headers = None
                if p.username is not None:
                    auth = f"{unquote(p.username)}:{unquote(p.password or '')}"
                    proxy_headers = urllib3.make_headers(proxy_basic_auth=auth)
                    proxy = proxy.replace(p.netloc, p.netloc.rpartition("@")[2], 1)
                manager = urllib3.ProxyManager(proxy, proxy_headers=proxy_headers, **kw)
            manager.pool_classes_by_scheme = {"http": _Pool, "https": _TlsPool}
            self._managers[key] = manager
            return manager

    def _redirect(self, url: str, resp: BaseHTTPResponse, hop: int) -> str:
        location = self._header(resp, "Location")
        if location is None:
            raise FileAccessError(f"{self.name!r}: redirect (status {resp.status}) without a Location (FORMAT.md §12)", code="remote-redirect")
        try:
            target = urljoin(url, location)
            scheme = urlsplit(target).scheme.lower()
            if scheme in ("http", "https"):
                request_target(target)
        except ValueError as e:
            raise FileAccessError(
                f"{self.name!r}: redirected to {ascii(location)[:200]}, which cannot be requested: {e} (FORMAT.md §12.1)",
                code="remote-redirect",
            ) from e
        if scheme not in ("http", "https") or (urlsplit(url).scheme == "https" and scheme == "http"):
            raise FileAccessError(
                f"{self.name!r}: redirected from {urlsplit(url).scheme} to {scheme or 'no scheme'}; only http(s), never from https "
                "to http (FORMAT.md §12)",
                code="remote-redirect",
            )
        if hop == REMOTE_MAX_REDIRECTS:
            raise FileAccessError(f"{self.name!r}: more than {REMOTE_MAX_REDIRECTS} redirects (FORMAT.md §12)", code="remote-redirect")
        return target

    def _check(self, resp: BaseHTTPResponse, first: bool) -> None:
        """Status, encoding, framing and validators: what every answer must satisfy before its body is read."""
        if resp.status in (404, 410):
            raise file_error(f"no such file: {self.name!r} (HTTP {resp.status})", code="not-found", errno=errno.ENOENT, path=self.name)
        if resp.status == 412:
            raise FileAccessError(f"{self.name!r} changed while being read: the server refused If-Match (HTTP 412; FORMAT.md §12)",
                                  code="remote-changed")
        if resp.status not in (200, 206, 416):
            raise self._status_error(resp)
        encoding = self._header(resp, "Content-Encoding")
        if encoding is not None and encoding.strip().lower() != "identity":
            raise FileAccessError(
                f"{self.name!r}: the server sent a {encoding[:40]!r}-encoded body to a request for identity; refused unread (FORMAT.md §12)",
                code="remote-encoding",
            )
        if resp.headers.get("Transfer-Encoding") is not None:
            raise self._range_error("sent a body without Content-Length (Transfer-Encoding); a range must come with its length")
        if not first:
            etag, modified = self._header(resp, "ETag"), self._header(resp, "Last-Modified")
            if (etag, modified) != (self.etag, self.last_modified):
                raise FileAccessError(
                    f"{self.name!r} changed while being read: ETag {etag!r} / Last-Modified {modified!r} after {self.etag!r} / "
                    f"{self.last_modified!r} (FORMAT.md §12)",
                    code="remote-changed",
                )

    def _status_error(self, resp: BaseHTTPResponse) -> FileAccessError:
        reason = (resp.reason or "")[:80]
        hint = ""
        if resp.status in (401, 403):
            hint = (f"; a private server needs credentials: storage_options={{'headers': {{'Authorization': …}}}}, or ${TOKEN_ENV} / "
                    f"${HEADERS_ENV} (FORMAT.md §12.2)")
        return FileAccessError(f"cannot read {self.name!r}: HTTP {resp.status} {reason!r}{hint}", code="remote-io")

    def _header(self, resp: BaseHTTPResponse, name: str) -> str | None:
        values = resp.headers.getlist(name)
        if len(values) > 1:
            raise self._range_error(f"sent {len(values)} {name} headers")
        return values[0] if values else None

    def _length(self, resp: BaseHTTPResponse) -> int:
        raw = self._header(resp, "Content-Length")
        if raw is None:
            if resp.status == 416:
                return 0
            raise self._range_error(f"sent status {resp.status} without a Content-Length")
        if not raw.isdigit() or not raw.isascii():
            raise self._range_error(f"sent Content-Length {raw[:40]!r}")
        return int(raw)

    def _content_range(self, resp: BaseHTTPResponse) -> tuple[int, int, int]:
        """[start, end) and total size of a 206 answer."""
        raw = self._header(resp, "Content-Range") or ""
        m = _CONTENT_RANGE.match(raw)
        if not m:
            raise self._range_error(f"sent a partial answer with Content-Range {raw[:60]!r}; expected 'bytes a-b/size'")
        a, b, total = (int(x) for x in m.groups())
        if not a <= b < total:
            raise self._range_error(f"sent Content-Range {raw!r}")
        if total > MAX_FILE_BYTES:
            raise too_large(self.name, total)
        return a, b + 1, total

    def _read_body(self, resp: BaseHTTPResponse, dest: memoryview, dog: _Watchdog, deadline: float, cancel: threading.Event | None) -> None:
        """Read exactly len(dest) body bytes into dest, one socket read at a time (never more than asked)."""
        pos, n = 0, len(dest)
        # Straight into dest through the http.client response urllib3 wraps: urllib3's read1 returns a new
        # bytes object per call, which cost a copy and an allocation per MiB (256 MiB over loopback: 298 ms
        # against 179 ms with http.client's readinto). http.client stops at Content-Length by itself.
        raw = getattr(resp, "_fp", None)
        readinto = getattr(raw, "readinto", None)
        try:
            while pos < n:
                if cancel is not None and cancel.is_set():
                    raise Cancelled
                step = min(n - pos, _READ_MAX)
                if readinto is not None:
                    got = readinto(dest[pos : pos + step])
                else:  # pragma: no cover - another urllib3 layout: its public read1, one copy more
                    chunk = resp.read1(step, decode_content=False)
                    got = len(chunk)
                    dest[pos : pos + got] = chunk
                if not got:
                    break
                pos += got
                self.stats.received(got)
        except (OSError, HTTPError, HTTPException) as e:
            if dog.fired or isinstance(e, (ReadTimeoutError, TimeoutError)):
                raise self._network_error(e, dog, deadline) from e
            raise self._range_error(f"ended the body after {pos} of {n} bytes ({type(e).__name__})") from e
        if pos < n:
            if dog.fired:
                raise self._network_error(TimeoutError("deadline"), dog, deadline)
            raise self._range_error(f"ended the body after {pos} of {n} bytes")

    def _done(self, resp: BaseHTTPResponse, dog: _Watchdog, ok: bool, *, keep_dog: bool = False) -> None:
        """Give the connection back to its pool after a whole body; close it otherwise (the rest is never read)."""
        if not keep_dog:
            dog.cancel()
        if not ok or self._closed:  # a transfer still running when the source closed closes its connection
            resp.close()
        resp.release_conn()

    # --- errors and closing

    def _range_error(self, what: str) -> ContainerError:
        return ContainerError(f"{self.name!r}: the server {what} (FORMAT.md §12)", code="remote-range")

    def _network_error(self, e: BaseException, dog: _Watchdog, deadline: float) -> FileAccessError:
        if dog.fired or (isinstance(e, (TimeoutError, ReadTimeoutError, ConnectTimeoutError)) and time.monotonic() >= deadline):
            return FileAccessError(f"{self.name!r}: no complete answer before the operation's deadline (FORMAT.md §12)", code="remote-timeout")
        if isinstance(e, (TimeoutError, ReadTimeoutError)) or (isinstance(e, ConnectTimeoutError) and not isinstance(e, NewConnectionError)):
            return FileAccessError(f"{self.name!r}: no byte from the server for {self.stall_s:g} s (FORMAT.md §12)", code="remote-timeout")
        return FileAccessError(f"cannot read {self.name!r}: {_reason(e)}", code="remote-io")

    def pinned(self) -> tuple[tuple[str, str], ...]:
        """The validators pinned by the first answer (FORMAT.md §12.1)."""
        return tuple((k, v) for k, v in (("etag", self.etag), ("last-modified", self.last_modified)) if v is not None)

    def recheck(self, deadline: float) -> None:
        """Nothing to do: every answer was checked against the pinned validators as it came."""

    def close(self) -> None:
        with self._lock:
            managers, self._managers, self._closed = list(self._managers.values()), {}, True
        for manager in managers:
            manager.clear()


def _retriable(e: BaseException) -> bool:
    """A connection refused, reset or closed before an answer: another try may succeed (a name that does not resolve will not)."""
    if isinstance(e, NameResolutionError):
        return False
    return isinstance(e, (NewConnectionError, ProtocolError, ProxyError, ConnectionError))


def _reason(e: BaseException) -> str:
    """What went wrong, without urllib3's object addresses or the URL (a signed URL carries credentials)."""
    inner: BaseException = e
    while isinstance(inner, HTTPError) and inner.args and isinstance(inner.args[-1], BaseException):
        inner = inner.args[-1]
    text = str(inner)
    if isinstance(inner, NewConnectionError):
        text = text.rpartition(": ")[2] if ": " in text else text
    text = re.sub(r"<[^>]* at 0x[0-9a-f]+>", "connection", text)
    text = re.sub(r"https?://\S+", "<url>", text)
    return f"{type(inner).__name__}: {text[:200]}"
