"""Where archive bytes come from: a local file (mapped once), an http(s) URL, or an fsspec URL read by ranges.

Every reader layer asks a :class:`Source` for bytes — ``read(offset, n)``, ``read_into``,
``read_stream``, ``download`` — and gets exactly those bytes or a
:class:`~distillgan.DistillganError`; what a source can do beyond that it says itself
(``mapping()`` is None for a URL), so nothing above this package branches on where the bytes
are. Local files are read through one descriptor and mapped from it (so what is validated is
what is loaded); remote files are read by byte ranges, pinned to one size and validator, each
byte fetched once per source, under a deadline, and nothing the server says is trusted
(FORMAT.md §12).

The modules: ``base`` (the interface, the bounds), ``local`` (:class:`MappedFile`,
:class:`SnapshotFile`), ``remote`` (:class:`RemoteSource`: the cache and the concurrent
transfers), ``http`` (http(s) on urllib3) and ``fsspec_backend`` (any other fsspec scheme);
the network modules are imported when a URL is first opened.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .base import MAX_FILE_BYTES, REMOTE_MAX_REDIRECTS, REMOTE_RETRIES, STREAM_CHUNK, Source, is_url, past_end
from .local import MappedFile, SnapshotFile
from .remote import (
    REMOTE_BLOCK_BYTES,
    REMOTE_CONNECTIONS,
    REMOTE_HEAD_BYTES,
    REMOTE_MIN_RATE,
    REMOTE_SIGNED_URL_S,
    REMOTE_STALL_S,
    REMOTE_STREAM_BYTES,
    REMOTE_TAIL_BYTES,
    REMOTE_TIMEOUT_S,
    RemoteSource,
)

__all__ = [
    "MAX_FILE_BYTES", "REMOTE_BLOCK_BYTES", "REMOTE_CONNECTIONS", "REMOTE_HEAD_BYTES", "REMOTE_MAX_REDIRECTS", "REMOTE_MIN_RATE", "REMOTE_RETRIES", "REMOTE_SIGNED_URL_S",
    "REMOTE_STALL_S", "REMOTE_STREAM_BYTES", "REMOTE_TAIL_BYTES", "REMOTE_TIMEOUT_S", "STREAM_CHUNK", "MappedFile", "RemoteSource",
    "SnapshotFile", "Source", "file_sha256", "is_url", "open_source", "past_end", "request_target", "sha256_of",
]


def request_target(url: str) -> Any:
    """:func:`distillgan.source.http.request_target` (imported on use: it needs urllib3's module to be importable)."""
    from .http import request_target as target

    return target(url)


def open_source(path: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> Source:
    """A local path (``file://`` URLs included) is mapped; another URL is read remotely.

    ``storage_options`` go to the remote reader: ``{"headers": {...}}`` for http(s) (FORMAT.md
    §12.2), the backend's own options for another fsspec scheme. Given with a local path they
    are [invalid-input]: nothing would use them.
    """
    if is_url(path):
        assert isinstance(path, str)
        if not path.lower().startswith("file://"):
            return RemoteSource(path, storage_options=storage_options)
        path = path[len("file://") :]
    if storage_options:
        from ..errors import InputError

        raise InputError(f"storage_options were given for the local file {os.fspath(path)!r}; they apply to URLs only (FORMAT.md §12)",
                         code="invalid-input")
    return MappedFile(path)


def sha256_of(src: Source) -> str:
    """SHA-256 of all of ``src``'s bytes, hex, read in chunks (remotely each byte once; cached ones from the cache)."""
    import hashlib

    h = hashlib.sha256()
    for chunk in src.read_stream(0, src.size):  # hashlib releases the GIL; remotely each byte once, cached ones from the cache
        h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of a whole file (path or URL), hex: a stable identity of a deterministic archive."""
    src = open_source(path, storage_options)
    try:
        return sha256_of(src)
    finally:
        src.close()
