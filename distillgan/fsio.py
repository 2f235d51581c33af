"""Opening a regular file without blocking, link checks and folder fsync: the file-system calls every writer and reader shares.

A leaf. ``open_regular`` is the one way distillgan opens a file it did not just create: never
blocking on a FIFO or a device (``O_NONBLOCK``), never handing a descriptor to a child process,
binary on Windows, and — when asked — never following a link (``O_NOFOLLOW``; where the platform
lacks it, as on Windows, ``lstat`` refuses links and reparse points before the open and the
descriptor is compared with the path after it).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # 0 on Windows
OPEN_FLAGS = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOINHERIT", 0) | getattr(os, "O_BINARY", 0)


def is_link(st: os.stat_result) -> bool:
    """A symbolic link, or on Windows any reparse point (junction, mount point)."""
    return stat.S_ISLNK(st.st_mode) or bool(getattr(st, "st_file_attributes", 0) & stat.FILE_ATTRIBUTE_REPARSE_POINT)


def open_regular(
    path: str | os.PathLike[str],
    flags: int,
    refuse: Callable[[str], BaseException],
    *,
    follow_links: bool = True,
    mode: int = 0o644,
) -> tuple[int, os.stat_result]:
    """``os.open`` of a regular file, without blocking; the descriptor and its ``fstat``.

    ``refuse(what)`` builds the error raised when ``path`` is something else: ``what`` is
    ``"a directory"``, ``"a FIFO, socket or device"`` or, with ``follow_links=False``, a phrase
    naming the link (``"a symbolic link to '...'"``, ``"a link"``). Every other failure is the
    ``OSError`` of the open (missing, permission...), for the caller to turn into its own error.
    """
    shown = os.fspath(path)
    nofollow = not follow_links
    if nofollow and not NOFOLLOW:  # pragma: no cover - Windows: check before opening, compare after
        try:
            before = os.lstat(shown)
        except FileNotFoundError:
            before = None
        if before is not None and is_link(before):
            raise refuse("a link")
    try:
        fd = os.open(shown, flags | OPEN_FLAGS | (NOFOLLOW if nofollow else 0), mode)
    except OSError as e:
        if nofollow and os.path.islink(shown):  # ELOOP (Linux), EMLINK (FreeBSD), EFTYPE (NetBSD)
            raise refuse(f"a symbolic link to {os.readlink(shown)!r}") from e
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device")
        if nofollow and not NOFOLLOW:  # pragma: no cover - Windows
            after = os.lstat(shown)
            if is_link(after) or (after.st_dev, after.st_ino) != (st.st_dev, st.st_ino):
                raise refuse("a link (it changed while being opened)")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename in the folder ``path`` durable (POSIX); Windows has no directory handles to sync."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

