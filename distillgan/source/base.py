"""What every source shares: the :class:`Source` interface, the file-size bound, and the errors of a read past the end.

A leaf of the package: the local, HTTP and fsspec modules import it, it imports none of them.
"""

from __future__ import annotations

import mmap
import re
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from ..errors import ContainerError, FileAccessError

MAX_FILE_BYTES = 1 << 40  # FORMAT.md §8
STREAM_CHUNK = 8 << 20  # bytes read per call when streaming a member (verify, hashing, private copies)
REMOTE_MAX_REDIRECTS = 5  # FORMAT.md §12
REMOTE_RETRIES = 3  # FORMAT.md §12.2: a connection error before an answer, or a 429/5xx answer, is tried again this many times
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


class Source(Protocol):
    """Random access to the bytes of one file: what every reader layer asks of where the bytes come from.

    ``read``, ``read_into``, ``read_stream`` and ``download`` (a private copy and its CRC-32)
    give exactly the bytes asked for or raise a :class:`~distillgan.DistillganError`.
    ``mappable`` says whether ``mapping()`` gives the file mapped into memory, for tensors to
    view without a copy; a source that cannot map (a URL) gives None, and its tensor members
    are downloaded instead. ``identity()`` names the version read:
    (size, validators) — for a local file its device, inode and modification time, for a URL
    the pinned ``ETag`` / ``Last-Modified`` or the backend's validators (FORMAT.md §12.1).
    ``exported`` is set once tensors view the mapping (then it is left to the garbage collector).
    """

    path: str
    size: int
    mappable: bool
    exported: bool

    def read(self, offset: int, n: int) -> bytes: ...

    def read_into(self, offset: int, view: memoryview) -> None: ...

    def read_stream(self, offset: int, n: int) -> Iterator[memoryview | bytes]: ...

    def download(self, offset: int, n: int, *, tick: Callable[[int], None] | None = None) -> tuple[mmap.mmap | bytearray, int]: ...

    def mapping(self) -> mmap.mmap | bytes | bytearray | None: ...

    def identity(self) -> tuple[int, tuple[tuple[str, str], ...]]: ...

    def close(self) -> None: ...


def is_url(path: object) -> bool:
    """True for ``scheme://...`` strings (a Windows drive path like ``C:\\x`` is not a URL)."""
    return isinstance(path, str) and bool(_URL.match(path))


def past_end(path: str, offset: int, n: int, size: int) -> ContainerError:
    """The error of a read of ``n`` bytes at ``offset`` that does not fit in a ``size``-byte file."""
    return ContainerError(
        f"{path!r}: {n} bytes at offset {offset} run past the end of the {size}-byte file", code="truncated"
    )


def too_large(name: str, size: int) -> FileAccessError:
    return FileAccessError(f"{name!r} is {size} bytes; the limit is {MAX_FILE_BYTES} (FORMAT.md §8)", code="file-too-large")


class Stats:
    """Requests made and body bytes received by one remote source (thread-safe: workers add to it)."""

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


class Cancelled(Exception):
    """Another request of the same transfer failed: this one stops."""
