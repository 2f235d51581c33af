"""A URL read by byte ranges: pinned at its first response, each byte fetched at most once (FORMAT.md §12.1).

:class:`RemoteSource` keeps the bytes read so far (the cache), fetches the rest by ranges —
concurrently for tensor data and whole-file passes — and hands every read to its transport:
:class:`~distillgan.source.http.Http` for ``http(s)`` URLs and the signed URLs of object stores,
:class:`~distillgan.source.fsspec_backend.Fsspec` for any other fsspec backend.
"""

from __future__ import annotations

import bisect
import mmap
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the network modules are imported when a URL is first read: a local open does not pay for them
    from concurrent.futures import Future

    from .fsspec_backend import Fsspec
    from .http import Http

from ..crc import crc32, crc32_combine
from ..errors import FileAccessError, InputError
from .base import MAX_FILE_BYTES, Cancelled, Stats, past_end, too_large

REMOTE_TAIL_BYTES = 16 << 10  # first request: the end records and central directory (ours is < 1 KiB)
REMOTE_HEAD_BYTES = 64 << 10  # the first read from offset 0: local header, manifest and, for hundreds of tensors, the model's header
REMOTE_BLOCK_BYTES = 32 << 10  # later requests read at least this much, so a header usually arrives in one go
REMOTE_STREAM_BYTES = 8 << 20  # one range request of tensor data or of a whole-file stream

# One source of truth per read (FORMAT.md §12): a remote file is pinned at its first response
# (size from the transport, ETag / Last-Modified), every later response must show the same
# pin, and each byte is fetched at most once per source: the bytes a reader validated are
# served again from the cache, never fetched a second time, so what is hashed, what is
# validated and what is used are the same bytes.

REMOTE_CONNECTIONS = 8  # range requests in flight at once for tensor data and whole-file streams
REMOTE_TIMEOUT_S = 60.0  # FORMAT.md §12: deadline of an operation (opening a URL: every request inspect makes)
REMOTE_STALL_S = 30.0  # FORMAT.md §12: no byte for this long ends a request
REMOTE_MIN_RATE = 1 << 20  # FORMAT.md §12: a transfer of n bytes gets n / this many more seconds (1 s per MiB)
REMOTE_SIGNED_URL_S = 6 * 3600  # lifetime of a signed URL made for s3://, gs://, az:// (the request is then plain HTTPS)
_ENV = {"timeout": "DISTILLGAN_REMOTE_TIMEOUT_S", "stall": "DISTILLGAN_REMOTE_STALL_S", "min_rate": "DISTILLGAN_REMOTE_MIN_RATE"}


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


def _import_http(url: str) -> Any:
    """distillgan.source.http, imported when the first http(s) URL is read; remote-unavailable without urllib3."""
    try:
        from . import http
    except ImportError as e:
        raise FileAccessError(
            f"{url!r} is a URL; reading http(s) needs urllib3: pip install 'distillgan[remote]'", code="remote-unavailable"
        ) from e
    return http


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

    mappable = False

    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = None,
        stall: float | None = None,
        min_rate: float | None = None,
        connections: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        options = dict(storage_options or {})
        self.path = url
        self.timeout = _setting("timeout", timeout, REMOTE_TIMEOUT_S)
        self.stall = _setting("stall", stall, REMOTE_STALL_S)
        self.min_rate = _setting("min_rate", min_rate, REMOTE_MIN_RATE)
        self.exported = False
        self._deadline = time.monotonic() + self.timeout  # opening is one operation: all of inspect's requests
        self._stats = Stats()
        self._cache: list[tuple[int, bytes]] = []  # disjoint, sorted: every byte read so far, as first received
        self._connections = max(1, connections or REMOTE_CONNECTIONS)
        self._transport: Http | Fsspec
        if url.split(":", 1)[0].lower() in ("http", "https"):
            unknown = sorted(set(options) - {"headers"})
            if unknown:
                raise InputError(f"storage_options {unknown} for {ascii(url)[:200]}: distillgan's own HTTP client takes only 'headers' "
                                 "(FORMAT.md §12.2)", code="invalid-input")
            http = _import_http(url)
            try:
                http.request_target(url)
            except ValueError as e:
                raise InputError(f"{ascii(url)[:300]} is not a URL that can be requested: {e}", code="invalid-input") from e
            self._transport = http.Http(url, url, self._stats, self.stall, options.get("headers"))
        else:
            try:
                import fsspec
            except ImportError as e:
                raise FileAccessError(
                    f"{url!r} is a URL; reading URLs needs fsspec: pip install 'distillgan[remote]'", code="remote-unavailable"
                ) from e
            from .fsspec_backend import Fsspec

            try:
                fs, fspath = fsspec.core.url_to_fs(url, **options)
            except (ImportError, ValueError, TypeError) as e:
                raise FileAccessError(f"cannot open {url!r}: {e}", code="remote-unavailable") from e
            signed = _signed_url(fs, fspath)
            if signed:  # an object store's signed URL: plain HTTPS, carrying its own credentials (no extra headers)
                self._transport = _import_http(url).Http(signed, url, self._stats, self.stall, {})
            else:
                self._transport = Fsspec(fs, fspath, url, self._stats)
        self._workers = _Workers(self._connections)
        weakref.finalize(self, self._workers.close)  # the worker threads end with the source even if it is never closed
        try:
            self.size, tail = self._transport.open(REMOTE_TAIL_BYTES, self._deadline)
        except BaseException:
            self.close()
            raise
        if self.size > MAX_FILE_BYTES:
            self.close()
            raise too_large(url, self.size)
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
            raise past_end(self.path, offset, n, self.size)
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
                  and not isinstance(f.exception(), Cancelled)]
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
            raise Cancelled
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
        if offset < 0 or n < 0 or offset + n > self.size:
            raise past_end(self.path, offset, n, self.size)
        buf = _allocate(n, self.path)
        return buf, self._fill(offset, memoryview(buf), tick, want_crc=True)

    def read_into(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the bytes at ``offset``: the cached ones copied, the rest fetched concurrently into it."""
        view = view.cast("B")
        if offset < 0 or offset + view.nbytes > self.size:
            raise past_end(self.path, offset, view.nbytes, self.size)
        self._fill(offset, view, None, want_crc=False)

    def _fill(self, offset: int, view: memoryview, tick: Callable[[int], None] | None, *, want_crc: bool) -> int:
        from concurrent.futures import Future

        n = len(view)
        deadline = self._bulk_deadline(n)
        cancel = threading.Event()
        parts: list[tuple[int, int, Future[Any] | int]] = []
        for start, stop, data in self._ranges(offset, n):
            dest = view[start - offset : stop - offset]
            if data is not None:
                dest[:] = data
                parts.append((start, stop, crc32(data) if want_crc else 0))
            else:
                parts.append((start, stop, self._workers.submit(self._fetch_job, start, dest, deadline, cancel, want_crc, tick)))
        futures = [f for _, _, f in parts if isinstance(f, Future)]
        self._wait(futures, deadline, cancel)
        crc = 0
        if want_crc:
            for start, stop, f in parts:
                crc = crc32_combine(crc, f.result() if isinstance(f, Future) else f, stop - start)
        self._recheck(deadline)
        return crc

    def read_stream(self, offset: int, n: int) -> Iterator[memoryview | bytes]:
        """Bytes [offset, offset+n) in order, as chunks valid until the next one is asked for.

        REMOTE_CONNECTIONS requests run ahead of the consumer; memory is
        bounded by (REMOTE_CONNECTIONS + 1) × REMOTE_STREAM_BYTES.
        """
        if offset < 0 or n < 0 or offset + n > self.size:
            raise past_end(self.path, offset, n, self.size)
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
        self._transport.recheck(deadline)  # fsspec: info() again; HTTP: every answer was checked as it came

    # --- what a source can do (distillgan.source.Source)

    def mapping(self) -> None:
        """A URL cannot be mapped (None): tensor members are downloaded (:meth:`download`)."""

    def identity(self) -> tuple[int, tuple[tuple[str, str], ...]]:
        """(size, validators) pinned by the first answer (FORMAT.md §12.1)."""
        return self.size, self._transport.pinned()

    def close(self) -> None:
        self._cache.clear()
        self._workers.close()
        self._transport.close()


