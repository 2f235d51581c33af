"""Where archive bytes come from: a local file mapped once, or an fsspec URL read by ranges.

Every reader layer asks a source for ``read(offset, n)`` and gets exactly
``n`` bytes or a :class:`~distillgan.DistillganError`; nothing above this
module knows whether the bytes are local. Local files are mapped from one
descriptor (so what is validated is what is loaded); remote files are read
by byte ranges, pinned to one size and validator, each byte fetched once per
source, under a deadline, and nothing the server says is trusted
(FORMAT.md §12).
"""

from __future__ import annotations

import bisect
import mmap
import os
import re
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the network modules are imported when a URL is first read: a local open does not pay for them
    import http.client
    import queue
    import socket
    import ssl
    from concurrent.futures import Future
    from urllib.parse import SplitResult

from .crc import crc32, crc32_combine
from .errors import ContainerError, FileAccessError, InputError
from .fsio import open_regular

MAX_FILE_BYTES = 1 << 40  # FORMAT.md §8
REMOTE_TAIL_BYTES = 16 << 10  # first request: the end records and central directory (ours is < 1 KiB)
REMOTE_HEAD_BYTES = 64 << 10  # the first read from offset 0: local header, manifest and, for hundreds of tensors, the model's header
REMOTE_BLOCK_BYTES = 32 << 10  # later requests read at least this much, so a header usually arrives in one go
REMOTE_STREAM_BYTES = 8 << 20  # one range request of tensor data or of a whole-file stream
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


class Source(Protocol):
    """Random access to the bytes of one file."""

    path: str
    size: int

    def read(self, offset: int, n: int) -> bytes: ...


def is_url(path: object) -> bool:
    """True for ``scheme://...`` strings (a Windows drive path like ``C:\\x`` is not a URL)."""
    return isinstance(path, str) and bool(_URL.match(path))


_URI_CHARS = "!#$%&'()*+,/:;=?@[]~-._"  # RFC 3986's reserved and unreserved marks (and '%'): kept as they are


def request_target(url: str) -> tuple[SplitResult, str]:
    """(parts, request target) of an http(s) URL; ValueError saying why when it cannot be requested.

    A port out of range or not a number, a malformed IPv6 literal or a host that IDNA cannot
    encode is refused. Characters a request line cannot carry (non-ASCII, spaces, controls) in the
    path and query are percent-encoded as UTF-8 (RFC 3987 §3.1, what browsers send): the same
    URL always gives the same request (FORMAT.md §12.1).
    """
    from urllib.parse import quote, urlsplit

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


def _short(path: str, offset: int, n: int, size: int) -> ContainerError:
    return ContainerError(
        f"{path!r}: {n} bytes at offset {offset} run past the end of the {size}-byte file", code="truncated"
    )


_MAP_NORESERVE_LINUX = 0x4000  # <sys/mman.h> on x86, Arm, RISC-V (Python 3.11 does not export it)
_NORESERVE_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "armv7l", "riscv64"})
STREAM_CHUNK = 8 << 20  # bytes read per call when streaming a member (verify, hashing, private copies)


def _file_changed(path: str, offset: int, n: int, got: int) -> FileAccessError:
    return FileAccessError(
        f"{path!r}: {n} bytes at offset {offset} could not be read ({got} arrived): the file was truncated or "
        "replaced while it was being read (FORMAT.md §6)",
        code="file-changed",
    )


class MappedFile:
    """A regular local file, read through one descriptor; mapped copy-on-write only when tensors view it.

    Every read that validates (headers, manifest, CRCs, hashes, private copies) goes through the
    descriptor with ``pread``, so a file truncated by another process gives a ``file-changed``
    error, never a SIGBUS, and the bytes validated are the bytes used. The mapping — the
    zero-copy path of ``load_model`` — is made from the same descriptor on first use of
    :attr:`buffer`; on Linux without reserving swap for it (``MAP_NORESERVE``), so a file larger
    than RAM still maps. A mapped file truncated later can still fault when a tensor viewing it
    is touched: FORMAT.md §6 says so, and ``load_model(copy=True)`` or ``verify=True`` avoid it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.exported = False  # set once tensors view the mapping: then never unmap explicitly
        self._map: mmap.mmap | None = None
        not_regular = FileAccessError(
            f"{self.path!r} is not a regular file (device, FIFO, socket or directory)", code="not-regular-file"
        )
        try:
            fd, st = open_regular(self.path, os.O_RDONLY, lambda what: not_regular)  # a FIFO never blocks the open
        except FileNotFoundError as e:
            raise FileAccessError(f"no such file: {self.path!r}", code="not-found") from e
        except IsADirectoryError as e:
            raise FileAccessError(f"{self.path!r} is a directory; expected a regular file", code="not-regular-file") from e
        except OSError as e:
            raise FileAccessError(f"cannot open {self.path!r}: {e.strerror}", code="io-error") from e
        try:
            self.size = st.st_size
            if self.size > MAX_FILE_BYTES:
                raise FileAccessError(
                    f"file is {self.size} bytes; the limit is {MAX_FILE_BYTES} (FORMAT.md §8)", code="file-too-large"
                )
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        self._lock = threading.Lock()  # Windows has no pread: seek + read under a lock

    def _pread(self, n: int, offset: int) -> bytes:
        if self._fd is None:
            raise FileAccessError(f"{self.path!r} is closed", code="io-error")
        try:
            if hasattr(os, "pread"):
                return os.pread(self._fd, n, offset)
            with self._lock:
                os.lseek(self._fd, offset, os.SEEK_SET)
                return os.read(self._fd, n)
        except OSError as e:
            raise FileAccessError(f"cannot read {self.path!r}: {e.strerror}", code="io-error") from e

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise _short(self.path, offset, n, self.size)
        data = self._pread(n, offset)
        while len(data) < n:  # a regular file returns short reads only at its (new) end
            more = self._pread(n - len(data), offset + len(data))
            if not more:
                raise _file_changed(self.path, offset, n, len(data))
            data += more
        return data

    def readinto(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the bytes at ``offset`` (``file-changed`` if the file got shorter)."""
        n = view.nbytes
        if offset < 0 or offset + n > self.size:
            raise _short(self.path, offset, n, self.size)
        done = 0
        preadv = getattr(os, "preadv", None)
        while done < n:
            step = min(STREAM_CHUNK, n - done)
            if preadv is not None and self._fd is not None:
                try:
                    got = preadv(self._fd, [view[done : done + step]], offset + done)
                except OSError as e:
                    raise FileAccessError(f"cannot read {self.path!r}: {e.strerror}", code="io-error") from e
            else:
                chunk = self._pread(step, offset + done)
                got = len(chunk)
                view[done : done + got] = chunk
            if got == 0:
                raise _file_changed(self.path, offset, n, done)
            done += got

    def read_stream(self, offset: int, n: int) -> Any:
        """Yield ``n`` bytes from ``offset`` in chunks of at most STREAM_CHUNK, read through the descriptor.

        Each chunk is a view of one buffer that is reused for the next chunk (fresh 8 MiB
        allocations would cost a page fault per 4 KiB): use it before asking for the next.
        """
        buf = bytearray(min(STREAM_CHUNK, n))
        view = memoryview(buf)
        end = offset + n
        while offset < end:
            step = min(STREAM_CHUNK, end - offset)
            self.readinto(offset, view[:step])
            yield view[:step]
            offset += step

    @property
    def buffer(self) -> mmap.mmap | bytes:
        """The file mapped privately (copy-on-write: tensors viewing it may be written without touching the file)."""
        if self._map is None:
            if self.size == 0:
                return b""
            if self._fd is None:
                raise FileAccessError(f"{self.path!r} is closed", code="io-error")
            try:
                import platform

                if sys.platform.startswith("linux") and platform.machine().lower() in _NORESERVE_MACHINES:
                    self._map = mmap.mmap(
                        self._fd, self.size, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE_LINUX, prot=mmap.PROT_READ | mmap.PROT_WRITE
                    )
                else:
                    self._map = mmap.mmap(self._fd, self.size, access=mmap.ACCESS_COPY)
            except (OSError, ValueError) as e:
                raise FileAccessError(f"cannot map {self.path!r}: {e}", code="io-error") from e
        return self._map

    def close(self) -> None:
        """Close the descriptor; unmap unless tensors were made from the mapping.

        ``torch.frombuffer`` keeps a reference to the mmap object but no
        buffer export, so ``mmap.close()`` would succeed and leave those
        tensors pointing at unmapped memory. Once ``exported`` is set the
        mapping is left to the garbage collector, which frees it with the
        last tensor.
        """
        if self._map is not None and not self.exported:
            try:
                self._map.close()
            except BufferError:
                pass  # a memoryview is still open; the mapping dies with it
        self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> MappedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SnapshotFile(MappedFile):
    """A file's bytes read once into memory of their own: every later read — validation, tensors — comes from them.

    A signed load (FORMAT.md §16.3) reads the whole file through one descriptor (or downloads it
    once), hashes exactly those bytes, and only then parses them: there is no window in which
    the file on disk could differ from what was checked. Tensors view this memory (it is not a
    mapping of the file, so nothing keeps the file open or in use).
    """

    def __init__(self, path: str | os.PathLike[str], data: bytearray | mmap.mmap) -> None:  # no file to open: the bytes are given
        self.path = os.fspath(path)
        self.exported = False
        self._map = None
        self._fd = None
        self._lock = threading.Lock()
        self._data = data
        self.size = len(data)

    def _pread(self, n: int, offset: int) -> bytes:
        return bytes(self._data[offset : offset + n])

    def readinto(self, offset: int, view: memoryview) -> None:
        n = view.nbytes
        if offset < 0 or offset + n > self.size:
            raise _short(self.path, offset, n, self.size)
        view[:] = memoryview(self._data)[offset : offset + n]

    @property
    def buffer(self) -> mmap.mmap | bytes:
        return self._data  # type: ignore[return-value]  # a bytearray: torch.frombuffer views it as it views the mapping

    def close(self) -> None:
        """Nothing to close: the memory lives as long as the tensors that view it."""


# --- remote ---------------------------------------------------------------------------------
#
# One source of truth per read (FORMAT.md §12): a remote file is pinned at its first response
# (size from the transport, ETag / Last-Modified), every later response must show the same
# pin, and each byte is fetched at most once per source: the bytes a reader validated are
# served again from the cache, never fetched a second time, so what is hashed, what is
# validated and what is used are the same bytes.

REMOTE_CONNECTIONS = 8  # range requests in flight at once for tensor data and whole-file streams
REMOTE_TIMEOUT_S = 60.0  # FORMAT.md §12: deadline of an operation (opening a URL: every request inspect makes)
REMOTE_STALL_S = 30.0  # FORMAT.md §12: no byte for this long ends a request
REMOTE_MIN_RATE = 1 << 20  # FORMAT.md §12: a transfer of n bytes gets n / this many more seconds (1 s per MiB)
REMOTE_MAX_REDIRECTS = 5  # FORMAT.md §12
REMOTE_SIGNED_URL_S = 6 * 3600  # lifetime of a signed URL made for s3://, gs://, az:// (the request is then plain HTTPS)
_ENV = {"timeout": "DISTILLGAN_REMOTE_TIMEOUT_S", "stall": "DISTILLGAN_REMOTE_STALL_S", "min_rate": "DISTILLGAN_REMOTE_MIN_RATE"}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")
_REDIRECTS = {301, 302, 303, 307, 308}
_USER_AGENT = "distillgan (+FORMAT.md §12)"
_VALIDATOR_KEYS = ("etag", "e_tag", "md5", "md5hash", "crc32c", "generation", "version_id", "versionid", "mtime", "last_modified",
                   "lastmodified", "modified", "created")  # what fsspec backends report in info() that changes with the content


def _setting(key: str, given: float | None, default: float) -> float:
    """A remote setting: the argument, else its environment variable (_ENV), else the default; positive."""
    if given is None:
        raw = os.environ.get(_ENV[key])
        if raw is None:
            return default
        try:
            given = float(raw)
        except ValueError:
            given = -1.0
        where = f"${_ENV[key]}={raw!r}"
    else:
        where = f"{key}={given!r}"
    if not (0 < given < float("inf")):
        raise InputError(f"{where}: expected a positive number (FORMAT.md §12)", code="invalid-input")
    return given


class _Stats:
    """Requests made and body bytes received by one source (thread-safe: workers add to it)."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def request(self) -> None:
        with self._lock:
            self.requests += 1

    def received(self, n: int) -> None:
        with self._lock:
            self.bytes += n


class _Cancelled(Exception):
    """Another request of the same transfer failed: this one stops."""


class _Watchdog:
    """Ends the current exchange when its deadline passes: shuts the socket down under a blocked read."""

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self.sock: socket.socket | None = None  # kept even when http.client lets go of it (a response that closes the connection)
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        import socket

        sock = self.sock
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the socket's own shutdown, also under TLS: wakes the reader
            except OSError:
                pass

    def cancel(self) -> None:
        self._timer.cancel()


class _Http:
    """distillgan's own HTTP/1.1 range client (http.client on keep-alive connections, one per thread at a time).

    Every request asks for one byte range with ``Accept-Encoding: identity``
    and, after the first, the pinned validator (``If-Match`` for a strong
    ETag, else ``If-Unmodified-Since``). Every response must answer exactly
    that range of exactly the pinned size with the pinned validators,
    unencoded, with a ``Content-Length`` (no chunked bodies); the body is read
    into the caller's buffer and never past the requested length.
    Redirects are followed (at most REMOTE_MAX_REDIRECTS, http/https only,
    never from https to http) and the final URL is kept for later requests.
    """

    def __init__(self, url: str, name: str, stats: _Stats, stall_s: float) -> None:
        self.url = url
        self.name = name  # the user's URL, for messages (never a signed URL)
        self.stats = stats
        self.stall_s = stall_s
        self.size = -1
        self.etag: str | None = None
        self.last_modified: str | None = None
        self._idle: list[tuple[tuple[str, str], http.client.HTTPConnection]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._tls: ssl.SSLContext | None = None

    # --- the two requests

    def open(self, n: int, deadline: float) -> tuple[int, bytes]:
        """(size, last min(n, size) bytes) from a suffix range request; pins size and validators."""
        with self._exchange(f"bytes=-{n}", deadline, first=True) as (resp, dog):
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
            self._read_body(resp, memoryview(data), dog, None)
            return self.size, bytes(data)

    def get_into(self, start: int, dest: memoryview, deadline: float, cancel: threading.Event | None = None) -> None:
        """Fill ``dest`` with the bytes at ``start``: one range request."""
        end = start + len(dest)
        with self._exchange(f"bytes={start}-{end - 1}", deadline, first=False) as (resp, dog):
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
            self._read_body(resp, dest, dog, cancel)

    # --- one exchange: connection, request, redirects, checks common to every response

    @contextmanager
    def _exchange(self, rng: str, deadline: float, *, first: bool) -> Iterator[tuple[http.client.HTTPResponse, _Watchdog]]:
        import http.client
        from urllib.parse import urlsplit

        dog = _Watchdog(deadline)
        conn: http.client.HTTPConnection | None = None
        resp: http.client.HTTPResponse | None = None
        try:
            url = self.url
            for hop in range(REMOTE_MAX_REDIRECTS + 1):
                conn, resp = self._send(url, rng, deadline, dog, first)
                if resp.status not in _REDIRECTS:
                    break
                url = self._redirect(url, resp, hop)
                resp.close()
                conn.close()
            if first:
                self.url = url  # later requests go straight to where the redirects led
            assert conn is not None and resp is not None
            self._check(resp, first)
            yield resp, dog
            resp.close()
            if not resp.will_close:
                with self._lock:
                    if not self._closed:  # a transfer still running when the source closed closes its connection
                        self._idle.append(((urlsplit(url).scheme, urlsplit(url).netloc), conn))
                        conn = None
        except (OSError, http.client.HTTPException) as e:
            raise self._network_error(e, dog, deadline) from e
        finally:
            dog.cancel()
            if resp is not None:
                resp.close()
            if conn is not None:
                conn.close()

    def _send(self, url: str, rng: str, deadline: float, dog: _Watchdog, first: bool) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        import http.client

        parts, target = request_target(url)  # checked before: the user's URL when opened, each redirect's target
        for attempt in (0, 1):
            conn, reused = self._connection(parts, deadline, fresh=attempt > 0)
            if dog.fired:
                conn.close()
                raise TimeoutError("deadline")
            try:
                self.stats.request()
                conn.putrequest("GET", target)  # Host, and Accept-Encoding: identity
                conn.putheader("Range", rng)
                conn.putheader("User-Agent", _USER_AGENT)
                if not first and self.etag is not None and not self.etag.startswith("W/"):
                    conn.putheader("If-Match", self.etag)
                elif not first and self.etag is None and self.last_modified is not None:
                    conn.putheader("If-Unmodified-Since", self.last_modified)
                conn.endheaders()  # connects a new connection (its timeout: the stall time or what is left)
                dog.sock = conn.sock
                resp = conn.getresponse()
                if conn.sock is not None:
                    conn.sock.settimeout(self.stall_s)
                return conn, resp
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not reused or attempt or dog.fired:
                    raise  # a kept-alive connection the server had closed is retried once on a new one
            except BaseException:
                conn.close()
                raise
        raise AssertionError  # pragma: no cover

    def _connection(self, parts: SplitResult, deadline: float, *, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        import http.client

        key = (parts.scheme, parts.netloc)
        with self._lock:
            for i, (k, conn) in enumerate(self._idle):
                if k == key and not fresh:
                    del self._idle[i]
                    return conn, True
        timeout = max(0.001, min(self.stall_s, deadline - time.monotonic()))
        host, port = parts.hostname or "", parts.port
        if parts.scheme == "https":
            if self._tls is None:
                import ssl

                self._tls = ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls), False
        return http.client.HTTPConnection(host, port, timeout=timeout), False

    def _redirect(self, url: str, resp: http.client.HTTPResponse, hop: int) -> str:
        from urllib.parse import urljoin, urlsplit

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

    def _check(self, resp: http.client.HTTPResponse, first: bool) -> None:
        """Status, encoding, framing and validators: what every answer must satisfy before its body is read."""
        if resp.status in (404, 410):
            raise FileAccessError(f"no such file: {self.name!r} (HTTP {resp.status})", code="not-found")
        if resp.status == 412:
            raise FileAccessError(f"{self.name!r} changed while being read: the server refused If-Match (HTTP 412; FORMAT.md §12)",
                                  code="remote-changed")
        if resp.status not in (200, 206, 416):
            raise FileAccessError(f"cannot read {self.name!r}: HTTP {resp.status} {resp.reason[:80]!r}", code="remote-io")
        encoding = self._header(resp, "Content-Encoding")
        if encoding is not None and encoding.strip().lower() != "identity":
            raise FileAccessError(
                f"{self.name!r}: the server sent a {encoding[:40]!r}-encoded body to a request for identity; refused unread (FORMAT.md §12)",
                code="remote-encoding",
            )
        if resp.getheader("Transfer-Encoding") is not None:
            raise self._range_error("sent a body without Content-Length (Transfer-Encoding); a range must come with its length")
        if not first:
            etag, modified = self._header(resp, "ETag"), self._header(resp, "Last-Modified")
            if (etag, modified) != (self.etag, self.last_modified):
                raise FileAccessError(
                    f"{self.name!r} changed while being read: ETag {etag!r} / Last-Modified {modified!r} after {self.etag!r} / "
                    f"{self.last_modified!r} (FORMAT.md §12)",
                    code="remote-changed",
                )

    def _header(self, resp: http.client.HTTPResponse, name: str) -> str | None:
        values = resp.headers.get_all(name) or []
        if len(values) > 1:
            raise self._range_error(f"sent {len(values)} {name} headers")
        return values[0] if values else None

    def _length(self, resp: http.client.HTTPResponse) -> int:
        raw = self._header(resp, "Content-Length")
        if raw is None:
            if resp.status == 416:
                return 0
            raise self._range_error(f"sent status {resp.status} without a Content-Length")
        if not raw.isdigit() or not raw.isascii():
            raise self._range_error(f"sent Content-Length {raw[:40]!r}")
        return int(raw)

    def _content_range(self, resp: http.client.HTTPResponse) -> tuple[int, int, int]:
        """[start, end) and total size of a 206 answer."""
        raw = self._header(resp, "Content-Range") or ""
        m = _CONTENT_RANGE.match(raw)
        if not m:
            raise self._range_error(f"sent a partial answer with Content-Range {raw[:60]!r}; expected 'bytes a-b/size'")
        a, b, total = (int(x) for x in m.groups())
        if not a <= b < total:
            raise self._range_error(f"sent Content-Range {raw!r}")
        if total > MAX_FILE_BYTES:
            raise FileAccessError(f"{self.name!r} is {total} bytes; the limit is {MAX_FILE_BYTES} (FORMAT.md §8)", code="file-too-large")
        return a, b + 1, total

    def _read_body(self, resp: http.client.HTTPResponse, dest: memoryview, dog: _Watchdog, cancel: threading.Event | None) -> None:
        """Read exactly len(dest) body bytes into dest, one socket read at a time (never more than asked)."""
        fp = resp.fp
        pos, n = 0, len(dest)
        while pos < n:
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            got = fp.readinto1(dest[pos:]) if fp is not None else 0
            if not got:
                if dog.fired:
                    raise TimeoutError("deadline")
                raise self._range_error(f"ended the body after {pos} of {n} bytes")
            pos += got
            self.stats.received(got)

    # --- errors and closing

    def _range_error(self, what: str) -> ContainerError:
        return ContainerError(f"{self.name!r}: the server {what} (FORMAT.md §12)", code="remote-range")

    def _network_error(self, e: BaseException, dog: _Watchdog, deadline: float) -> FileAccessError:
        if dog.fired or (isinstance(e, TimeoutError) and time.monotonic() >= deadline):
            return FileAccessError(f"{self.name!r}: no complete answer before the operation's deadline (FORMAT.md §12)", code="remote-timeout")
        if isinstance(e, TimeoutError):
            return FileAccessError(f"{self.name!r}: no byte from the server for {self.stall_s:g} s (FORMAT.md §12)", code="remote-timeout")
        return FileAccessError(f"cannot read {self.name!r}: {type(e).__name__}: {e}", code="remote-io")

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for _, conn in idle:
            conn.close()


class _Fsspec:
    """Any other fsspec backend: size and validators from ``info()``, bytes from ``cat_file`` by ranges.

    The backend reads the bodies itself, so the bound on memory per
    response is the backend's; the lengths, the size and (after each bulk
    transfer) the validators are checked here, and each call is waited for
    at most until the deadline.
    """

    def __init__(self, fs: Any, fspath: str, name: str, stats: _Stats) -> None:
        self.fs, self.fspath, self.name, self.stats = fs, fspath, name, stats
        self.size = -1
        self.validator: tuple[tuple[str, str], ...] = ()

    def _call(self, deadline: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.stats.request()
        result: list[Any] = []

        def run() -> None:
            try:
                result.append((True, fn(*args, **kwargs)))
            except BaseException as e:  # handed to the caller's thread
                result.append((False, e))

        t = threading.Thread(target=run, name="distillgan-fsspec", daemon=True)  # a hung backend call is left behind, not waited for
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
        if not result:
            raise FileAccessError(f"{self.name!r}: no answer before the operation's deadline (FORMAT.md §12)", code="remote-timeout")
        ok, value = result[0]
        if ok:
            return value
        if isinstance(value, FileNotFoundError):
            raise FileAccessError(f"no such file: {self.name!r}", code="not-found") from value
        raise FileAccessError(f"cannot read {self.name!r}: {type(value).__name__}: {value}", code="remote-io") from value

    def _identity(self, deadline: float) -> tuple[int, tuple[tuple[str, str], ...]]:
        info = self._call(deadline, self.fs.info, self.fspath)
        size = info.get("size") if isinstance(info, dict) else None
        if type(size) is not int or size < 0:
            raise FileAccessError(f"{self.name!r}: the backend reports no size ({size!r})", code="remote-io")
        if info.get("type", "file") != "file":
            raise FileAccessError(f"{self.name!r} is a {info.get('type')!r}; expected a file", code="not-regular-file")
        return size, tuple((k, str(v)) for k, v in sorted(info.items()) if k.lower() in _VALIDATOR_KEYS)

    def open(self, n: int, deadline: float) -> tuple[int, bytes]:
        self.size, self.validator = self._identity(deadline)
        if self.size > MAX_FILE_BYTES:
            raise FileAccessError(f"{self.name!r} is {self.size} bytes; the limit is {MAX_FILE_BYTES} (FORMAT.md §8)", code="file-too-large")
        start = max(0, self.size - n)
        tail = bytearray(self.size - start)
        self.get_into(start, memoryview(tail), deadline)
        return self.size, bytes(tail)

    def get_into(self, start: int, dest: memoryview, deadline: float, cancel: threading.Event | None = None) -> None:
        if not len(dest):
            return
        data = self._call(deadline, self.fs.cat_file, self.fspath, start=start, end=start + len(dest))
        if len(data) != len(dest):
            raise ContainerError(
                f"{self.name!r}: asked for bytes {start}..{start + len(dest)}, got {len(data)} bytes (FORMAT.md §12)", code="remote-range"
            )
        self.stats.received(len(data))
        dest[:] = data

    def recheck(self, deadline: float) -> None:
        if self._identity(deadline) != (self.size, self.validator):
            raise FileAccessError(f"{self.name!r} changed while being read (size or {dict(self.validator)}; FORMAT.md §12)", code="remote-changed")

    def close(self) -> None:
        pass


class _Workers:
    """Daemon threads running the range requests of bulk transfers (a hung backend call never blocks exit)."""

    def __init__(self, n: int) -> None:
        self._n = n
        import queue

        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        from concurrent.futures import Future

        if len(self._threads) < self._n:
            t = threading.Thread(target=self._run, name="distillgan-range", daemon=True)
            t.start()
            self._threads.append(t)
        fut: Future[Any] = Future()
        self._queue.put((fut, fn, args))
        return fut

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn, args = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # handed to the waiting thread
                fut.set_exception(e)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        self._threads.clear()


def _signed_url(fs: Any, fspath: str) -> str | None:
    """A plain http(s) URL for the object, when the backend can sign one (s3fs, gcsfs, adlfs); None otherwise."""
    from urllib.parse import urlsplit

    sign = getattr(fs, "sign", None)
    if sign is None:
        return None
    try:
        url = sign(fspath, expiration=REMOTE_SIGNED_URL_S)
    except Exception:  # NotImplementedError, or credentials that cannot sign: the backend reads it itself
        return None
    return url if isinstance(url, str) and urlsplit(url).scheme in ("http", "https") else None


def _allocate(n: int, name: str) -> mmap.mmap | bytearray:
    """n bytes of anonymous memory whose pages are committed only as they are written (never a zero-filled copy)."""
    if n == 0:
        return bytearray()
    try:
        if not hasattr(mmap, "MAP_ANONYMOUS"):
            return mmap.mmap(-1, n)
        return mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, ValueError, OverflowError) as e:
        raise FileAccessError(f"{name!r}: cannot reserve {n} bytes of memory for a download: {e}", code="io-error") from e


class RemoteSource:
    """A URL read by byte ranges: pinned at its first response, each byte fetched at most once (FORMAT.md §12.1).

    The first request fetches the last REMOTE_TAIL_BYTES (a suffix range,
    so no size request is needed over HTTP); the file size is the
    transport's (``Content-Range`` total, ``Content-Length``, or the
    backend's ``info()``), never what the end records imply. Small reads
    fetch at least REMOTE_BLOCK_BYTES (REMOTE_HEAD_BYTES from offset 0) of
    what is not cached yet and keep it;
    :meth:`download` and :meth:`read_stream` fetch tensor data and whole files
    with REMOTE_CONNECTIONS concurrent range requests of REMOTE_STREAM_BYTES,
    taking the bytes already read from the cache. ``http(s)`` URLs (and the
    signed URLs of backends that make them) are read by distillgan's own
    HTTP client; other schemes through fsspec.

    Raises :class:`~distillgan.FileAccessError` (``remote-*`` codes,
    ``not-found``) and :class:`~distillgan.ContainerError` (``remote-range``).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = None,
        stall: float | None = None,
        min_rate: float | None = None,
        connections: int | None = None,
    ) -> None:
        try:
            import fsspec
        except ImportError as e:
            raise FileAccessError(
                f"{url!r} is a URL; reading URLs needs fsspec: pip install 'distillgan[remote]'", code="remote-unavailable"
            ) from e
        if url.split(":", 1)[0].lower() in ("http", "https"):
            try:
                request_target(url)
            except ValueError as e:
                raise InputError(f"{ascii(url)[:300]} is not a URL that can be requested: {e}", code="invalid-input") from e
        self.path = url
        self.timeout = _setting("timeout", timeout, REMOTE_TIMEOUT_S)
        self.stall = _setting("stall", stall, REMOTE_STALL_S)
        self.min_rate = _setting("min_rate", min_rate, REMOTE_MIN_RATE)
        self._deadline = time.monotonic() + self.timeout  # opening is one operation: all of inspect's requests
        self._stats = _Stats()
        self._cache: list[tuple[int, bytes]] = []  # disjoint, sorted: every byte read so far, as first received
        self._connections = max(1, connections or REMOTE_CONNECTIONS)
        self._workers = _Workers(self._connections)
        weakref.finalize(self, self._workers.close)  # the worker threads end with the source even if it is never closed
        self._transport: _Http | _Fsspec
        if url.split(":", 1)[0].lower() in ("http", "https"):
            self._transport = _Http(url, url, self._stats, self.stall)
        else:
            try:
                fs, fspath = fsspec.core.url_to_fs(url)
            except (ImportError, ValueError) as e:
                raise FileAccessError(f"cannot open {url!r}: {e}", code="remote-unavailable") from e
            signed = _signed_url(fs, fspath)
            self._transport = _Http(signed, url, self._stats, self.stall) if signed else _Fsspec(fs, fspath, url, self._stats)
        try:
            self.size, tail = self._transport.open(REMOTE_TAIL_BYTES, self._deadline)
        except BaseException:
            self.close()
            raise
        if self.size > MAX_FILE_BYTES:
            self.close()
            raise FileAccessError(f"file is {self.size} bytes; the limit is {MAX_FILE_BYTES} (FORMAT.md §8)", code="file-too-large")
        if tail:
            self._cache.append((self.size - len(tail), tail))

    @property
    def requests(self) -> int:
        """Requests made so far (for an fsspec backend: its info() and cat_file calls)."""
        return self._stats.requests

    @property
    def bytes_read(self) -> int:
        """Body bytes received so far."""
        return self._stats.bytes

    # --- the cache: each byte is fetched once

    def _pieces(self, offset: int, end: int) -> list[tuple[int, int, bytes | None]]:
        """[offset, end) as consecutive (start, stop, cached bytes or None for a gap)."""
        out: list[tuple[int, int, bytes | None]] = []
        pos = offset
        for start, data in self._cache:
            stop = start + len(data)
            if stop <= pos:
                continue
            if start >= end:
                break
            if start > pos:
                out.append((pos, start, None))
            a, b = max(pos, start), min(end, stop)
            out.append((a, b, data[a - start : b - start]))
            pos = b
        if pos < end:
            out.append((pos, end, None))
        return out

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise _short(self.path, offset, n, self.size)
        if n == 0:
            return b""
        pieces = self._pieces(offset, offset + n)
        gaps = [(start, stop) for start, stop, data in pieces if data is None]
        if gaps:
            start, stop = gaps[-1]
            if stop == offset + n:  # read ahead from the last gap, up to REMOTE_BLOCK_BYTES from offset or the next cached byte
                reach = min(self.size, offset + max(n, REMOTE_HEAD_BYTES if offset == 0 else REMOTE_BLOCK_BYTES))
                gaps[-1] = (start, max(stop, min(reach, next((s for s, _ in self._cache if s >= stop), self.size))))
            for start, stop in gaps:
                block = bytearray(stop - start)
                self._transport.get_into(start, memoryview(block), self._deadline)
                bisect.insort(self._cache, (start, bytes(block)))
            pieces = self._pieces(offset, offset + n)
        return b"".join(data for _, _, data in pieces if data is not None)

    # --- bulk transfers

    def _ranges(self, offset: int, n: int) -> list[tuple[int, int, bytes | None]]:
        """The pieces of [offset, offset+n), gaps cut into requests of at most REMOTE_STREAM_BYTES."""
        out: list[tuple[int, int, bytes | None]] = []
        for start, stop, data in self._pieces(offset, offset + n):
            if data is not None:
                out.append((start, stop, data))
                continue
            for a in range(start, stop, REMOTE_STREAM_BYTES):
                out.append((a, min(stop, a + REMOTE_STREAM_BYTES), None))
        return out

    def _bulk_deadline(self, n: int) -> float:
        self._deadline = max(self._deadline, time.monotonic() + self.timeout + n / self.min_rate)
        return self._deadline

    def _wait(self, futures: list[Future[Any]], deadline: float, cancel: threading.Event) -> None:
        from concurrent.futures import FIRST_EXCEPTION, wait

        done, pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and not f.cancelled() and f.exception() is not None
                  and not isinstance(f.exception(), _Cancelled)]
        if failed or pending:
            cancel.set()
            for f in pending:
                f.cancel()
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            raise FileAccessError(f"{self.path!r}: no complete answer before the operation's deadline (FORMAT.md §12)", code="remote-timeout")

    def _fetch_job(
        self,
        start: int,
        dest: memoryview,
        deadline: float,
        cancel: threading.Event,
        want_crc: bool,
        tick: Callable[[int], None] | None,
    ) -> int:
        if cancel.is_set():
            raise _Cancelled
        self._transport.get_into(start, dest, deadline, cancel)
        crc = crc32(dest) if want_crc else 0  # on the worker: CRC-32 releases the GIL, so it overlaps the other transfers
        if tick is not None:
            tick(len(dest))
        return crc

    def download(self, offset: int, n: int, *, tick: Callable[[int], None] | None = None) -> tuple[mmap.mmap | bytearray, int]:
        """(buffer holding bytes [offset, offset+n), their CRC-32), fetched concurrently straight into the buffer.

        Memory grows with the bytes received: the buffer is reserved, not
        zero-filled. Bytes read before (headers) are copied from the cache.
        """
        from concurrent.futures import Future

        if offset < 0 or n < 0 or offset + n > self.size:
            raise _short(self.path, offset, n, self.size)
        deadline = self._bulk_deadline(n)
        buf = _allocate(n, self.path)
        view = memoryview(buf)
        cancel = threading.Event()
        parts: list[tuple[int, int, Future[Any] | int]] = []
        for start, stop, data in self._ranges(offset, n):
            dest = view[start - offset : stop - offset]
            if data is not None:
                dest[:] = data
                parts.append((start, stop, crc32(data)))
            else:
                parts.append((start, stop, self._workers.submit(self._fetch_job, start, dest, deadline, cancel, True, tick)))
        futures = [f for _, _, f in parts if isinstance(f, Future)]
        self._wait(futures, deadline, cancel)
        crc = 0
        for start, stop, f in parts:
            crc = crc32_combine(crc, f.result() if isinstance(f, Future) else f, stop - start)
        self._recheck(deadline)
        return buf, crc

    def read_stream(self, offset: int, n: int) -> Iterator[memoryview | bytes]:
        """Bytes [offset, offset+n) in order, as chunks valid until the next one is asked for.

        REMOTE_CONNECTIONS requests run ahead of the consumer; memory is
        bounded by (REMOTE_CONNECTIONS + 1) × REMOTE_STREAM_BYTES.
        """
        if offset < 0 or n < 0 or offset + n > self.size:
            raise _short(self.path, offset, n, self.size)
        deadline = self._bulk_deadline(n)
        cancel = threading.Event()
        ranges = self._ranges(offset, n)
        free: list[bytearray] = []
        ahead: deque[tuple[bytes | memoryview, Future[Any] | None, bytearray | None]] = deque()  # chunk, its request, its buffer
        i = 0
        try:
            while i < len(ranges) or ahead:
                while i < len(ranges) and len(ahead) <= self._connections:
                    start, stop, data = ranges[i]
                    i += 1
                    if data is not None:
                        ahead.append((data, None, None))
                        continue
                    buf = free.pop() if free else bytearray(REMOTE_STREAM_BYTES)
                    view = memoryview(buf)[: stop - start]
                    ahead.append((view, self._workers.submit(self._fetch_job, start, view, deadline, cancel, False, None), buf))
                chunk, fut, used = ahead.popleft()
                if fut is not None:
                    self._wait([fut], deadline, cancel)
                yield chunk
                if used is not None:
                    free.append(used)
        finally:
            cancel.set()
        self._recheck(deadline)

    def _recheck(self, deadline: float) -> None:
        if isinstance(self._transport, _Fsspec):
            self._transport.recheck(deadline)

    def close(self) -> None:
        self._cache.clear()
        self._workers.close()
        self._transport.close()


def open_source(path: str | os.PathLike[str]) -> MappedFile | RemoteSource:
    """A local path (``file://`` URLs included) is mapped; another URL is read remotely."""
    if is_url(path):
        assert isinstance(path, str)
        if path.lower().startswith("file://"):
            return MappedFile(path[len("file://") :])
        return RemoteSource(path)
    return MappedFile(path)


def sha256_of(src: MappedFile | RemoteSource) -> str:
    """SHA-256 of all of ``src``'s bytes, hex, read in chunks (remotely each byte once; cached ones from the cache)."""
    import hashlib

    h = hashlib.sha256()
    for chunk in src.read_stream(0, src.size):  # hashlib releases the GIL; remotely each byte once, cached ones from the cache
        h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a whole file (path or URL), hex: a stable identity of a deterministic archive."""
    src = open_source(path)
    try:
        return sha256_of(src)
    finally:
        src.close()
