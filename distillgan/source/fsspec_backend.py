"""Any other fsspec backend (``memory://``, or one that cannot sign a URL): size and validators from ``info()``, bytes from ``cat_file``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import ContainerError, FileAccessError
from .base import MAX_FILE_BYTES, Stats, too_large

_VALIDATOR_KEYS = ("etag", "e_tag", "md5", "md5hash", "crc32c", "generation", "version_id", "versionid", "mtime", "last_modified",
                   "lastmodified", "modified", "created")  # what fsspec backends report in info() that changes with the content


class Fsspec:
    """Any other fsspec backend: size and validators from ``info()``, bytes from ``cat_file`` by ranges.

    The backend reads the bodies itself, so the bound on memory per
    response is the backend's; the lengths, the size and (after each bulk
    transfer) the validators are checked here, and each call is waited for
    at most until the deadline.
    """

    def __init__(self, fs: Any, fspath: str, name: str, stats: Stats) -> None:
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
            raise too_large(self.name, self.size)
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

    def pinned(self) -> tuple[tuple[str, str], ...]:
        """The validators pinned at :meth:`open` (FORMAT.md §12.1)."""
        return self.validator

    def close(self) -> None:
        pass


