"""Local files: a regular file read through one descriptor (:class:`MappedFile`), or bytes read once (:class:`SnapshotFile`).

What is validated is what is loaded: every validating read goes through the descriptor with
``pread``, and the mapping tensors view is made from the same descriptor (FORMAT.md §6).
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from collections.abc import Callable, Iterator

from ..errors import FileAccessError
from ..fsio import open_regular
from .base import MAX_FILE_BYTES, STREAM_CHUNK, past_end

_MAP_NORESERVE_LINUX = 0x4000  # <sys/mman.h> on x86, Arm, RISC-V (Python 3.11 does not export it)
_NORESERVE_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "armv7l", "riscv64"})


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
    :meth:`mapping`; on Linux without reserving swap for it (``MAP_NORESERVE``), so a file larger
    than RAM still maps. A mapped file truncated later can still fault when a tensor viewing it
    is touched: FORMAT.md §6 says so, and ``load_model(copy=True)`` or ``verify=True`` avoid it.
    """

    mappable = True

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
        self._identity: tuple[int, tuple[tuple[str, str], ...]] = (st.st_size, (("dev", str(st.st_dev)), ("ino", str(st.st_ino)), ("mtime_ns", str(st.st_mtime_ns))))
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
            raise past_end(self.path, offset, n, self.size)
        data = self._pread(n, offset)
        while len(data) < n:  # a regular file returns short reads only at its (new) end
            more = self._pread(n - len(data), offset + len(data))
            if not more:
                raise _file_changed(self.path, offset, n, len(data))
            data += more
        return data

    def read_into(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the bytes at ``offset`` (``file-changed`` if the file got shorter)."""
        n = view.nbytes
        if offset < 0 or offset + n > self.size:
            raise past_end(self.path, offset, n, self.size)
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

    def read_stream(self, offset: int, n: int) -> Iterator[memoryview | bytes]:
        """Yield ``n`` bytes from ``offset`` in chunks of at most STREAM_CHUNK, read through the descriptor.

        Each chunk is a view of one buffer that is reused for the next chunk (fresh 8 MiB
        allocations would cost a page fault per 4 KiB): use it before asking for the next.
        """
        buf = bytearray(min(STREAM_CHUNK, n))
        view = memoryview(buf)
        end = offset + n
        while offset < end:
            step = min(STREAM_CHUNK, end - offset)
            self.read_into(offset, view[:step])
            yield view[:step]
            offset += step

    def download(self, offset: int, n: int, *, tick: Callable[[int], None] | None = None) -> tuple[mmap.mmap | bytearray, int]:
        """(a private copy of bytes [offset, offset+n), their CRC-32), read through the descriptor."""
        from ..crc import crc32

        data = bytearray(n)
        self.read_into(offset, memoryview(data))
        if tick is not None:
            tick(n)
        return data, crc32(data)

    def mapping(self) -> mmap.mmap | bytes | bytearray:
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

    @property
    def buffer(self) -> mmap.mmap | bytes | bytearray:
        """:meth:`mapping` (the name earlier versions used)."""
        return self.mapping()

    def identity(self) -> tuple[int, tuple[tuple[str, str], ...]]:
        """(size, (device, inode, modification time)) of the file as opened."""
        return self._identity

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
        self._identity = (self.size, ())

    def _pread(self, n: int, offset: int) -> bytes:
        return bytes(self._data[offset : offset + n])

    def read_into(self, offset: int, view: memoryview) -> None:
        n = view.nbytes
        if offset < 0 or offset + n > self.size:
            raise past_end(self.path, offset, n, self.size)
        view[:] = memoryview(self._data)[offset : offset + n]

    def mapping(self) -> mmap.mmap | bytes | bytearray:
        return self._data  # memory of its own: torch.frombuffer views it as it views a mapping

    def close(self) -> None:
        """Nothing to close: the memory lives as long as the tensors that view it."""
