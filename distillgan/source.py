"""Where archive bytes come from: a local file mapped once, or an fsspec URL read by ranges.

Every reader layer asks a source for ``read(offset, n)`` and gets exactly
``n`` bytes or a :class:`~distillgan.DistillganError`; nothing above this
module knows whether the bytes are local. Local files are mapped from one
descriptor (so what is validated is what is loaded); remote files are read
with a few coalesced range requests and nothing the server says is trusted.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import sys
import threading
from typing import Any, Protocol

from .errors import ContainerError, FileAccessError

MAX_FILE_BYTES = 1 << 40  # FORMAT.md §8
REMOTE_TAIL_BYTES = 16 << 10  # first request: the end records and central directory (ours is < 1 KiB)
REMOTE_BLOCK_BYTES = 32 << 10  # later requests read at least this much, so a header usually arrives in one go
REMOTE_STREAM_BYTES = 8 << 20  # ranged reads of tensor data
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


class Source(Protocol):
    """Random access to the bytes of one file."""

    path: str
    size: int

    def read(self, offset: int, n: int) -> bytes: ...


def is_url(path: object) -> bool:
    """True for ``scheme://...`` strings (a Windows drive path like ``C:\\x`` is not a URL)."""
    return isinstance(path, str) and bool(_URL.match(path))


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
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags)  # O_NONBLOCK: a FIFO must not block open()
        except FileNotFoundError as e:
            raise FileAccessError(f"no such file: {self.path!r}", code="not-found") from e
        except IsADirectoryError as e:
            raise FileAccessError(f"{self.path!r} is a directory; expected a regular file", code="not-regular-file") from e
        except OSError as e:
            raise FileAccessError(f"cannot open {self.path!r}: {e.strerror}", code="io-error") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FileAccessError(
                    f"{self.path!r} is not a regular file (device, FIFO, socket or directory)", code="not-regular-file"
                )
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


class RemoteSource:
    """An fsspec URL read by byte ranges, with a small block cache.

    The first request fetches the file's last REMOTE_TAIL_BYTES (a suffix
    range, so no size request is needed); the file size is what the end
    records then imply. Later reads fetch at least REMOTE_BLOCK_BYTES.
    Every response must have exactly the requested length.
    """

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError as e:
            raise FileAccessError(
                f"{url!r} is a URL; reading URLs needs fsspec: pip install 'distillgan[remote]'", code="remote-unavailable"
            ) from e
        self.path = url
        self.requests = 0
        self.bytes_read = 0
        self._blocks: list[tuple[int, bytes]] = []
        try:
            self._fs, self._fspath = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as e:
            raise FileAccessError(f"cannot open {url!r}: {e}", code="remote-unavailable") from e
        tail = self._fetch(-REMOTE_TAIL_BYTES, None)
        if len(tail) > REMOTE_TAIL_BYTES:
            raise ContainerError(f"{url!r}: the server answered a {REMOTE_TAIL_BYTES}-byte suffix request with {len(tail)} bytes", code="remote-range")
        self.size = _size_from_tail(tail, url)
        if self.size > MAX_FILE_BYTES:
            raise FileAccessError(f"file is {self.size} bytes; the limit is {MAX_FILE_BYTES} (FORMAT.md §8)", code="file-too-large")
        self._blocks.append((self.size - len(tail), tail))

    def _fetch(self, start: int, end: int | None) -> bytes:
        self.requests += 1
        try:
            data = self._fs.cat_file(self._fspath, start=start, end=end)
        except FileNotFoundError as e:
            raise FileAccessError(f"no such file: {self.path!r}", code="not-found") from e
        except Exception as e:  # fsspec backends raise many types for network and server failures
            raise FileAccessError(f"cannot read {self.path!r}: {type(e).__name__}: {e}", code="remote-io") from e
        data = bytes(data)
        self.bytes_read += len(data)
        if end is not None and len(data) != end - start:
            raise ContainerError(
                f"{self.path!r}: asked for bytes {start}..{end}, got {len(data)} bytes (short read or a server ignoring ranges)",
                code="remote-range",
            )
        return data

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise _short(self.path, offset, n, self.size)
        for start, block in self._blocks:
            if start <= offset and offset + n <= start + len(block):
                return block[offset - start : offset - start + n]
        end = min(self.size, offset + max(n, REMOTE_BLOCK_BYTES))
        block = self._fetch(offset, end)
        self._blocks.append((offset, block))
        return block[:n]

    def read_stream(self, offset: int, n: int) -> Any:
        """Yield ``n`` bytes from ``offset`` in large ranged reads (not cached)."""
        pos, end = offset, offset + n
        while pos < end:
            step = min(REMOTE_STREAM_BYTES, end - pos)
            yield self._fetch(pos, pos + step)
            pos += step

    def close(self) -> None:
        self._blocks.clear()


def _size_from_tail(tail: bytes, url: str) -> int:
    """The file size implied by the end records in the last bytes of a file (FORMAT.md §3.5)."""
    if len(tail) < 22 or tail[-22:-18] != b"PK\x05\x06":
        # not our zip (or a legacy/pickle file): the size is only known if the whole file came back
        if len(tail) < REMOTE_TAIL_BYTES:
            return len(tail)
        raise ContainerError(
            f"{url!r}: no end of central directory record in the last 22 bytes (FORMAT.md §3.5)", code="zip-eocd"
        )
    cd_size = int.from_bytes(tail[-10:-6], "little")
    cd_off = int.from_bytes(tail[-6:-2], "little")
    if 0xFFFFFFFF in (cd_size, cd_off):
        if len(tail) < 22 + 20 + 56 or tail[-42:-38] != b"PK\x06\x07":
            raise ContainerError(f"{url!r}: zip64 end records missing (FORMAT.md §3.5)", code="zip64")
        rec = tail[-98:-42]
        cd_size = int.from_bytes(rec[40:48], "little")
        cd_off = int.from_bytes(rec[48:56], "little")
        return cd_off + cd_size + 56 + 20 + 22
    return cd_off + cd_size + 22


def open_source(path: str | os.PathLike[str]) -> MappedFile | RemoteSource:
    """A local path (``file://`` URLs included) is mapped; another URL is read remotely."""
    if is_url(path):
        assert isinstance(path, str)
        if path.lower().startswith("file://"):
            return MappedFile(path[len("file://") :])
        return RemoteSource(path)
    return MappedFile(path)
