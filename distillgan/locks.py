"""The folder lock and the temporary files of a models folder: never a link, always ours, alive or abandoned.

Two rules hold here, on every platform:

* **Nothing outside the folder is opened for writing.** The lock file is opened with
  ``O_NOFOLLOW`` (where the platform lacks it, as on Windows, ``lstat`` refuses links and reparse
  points before opening and the opened file is compared with it after) and must be a regular
  file; temporary files are created with ``O_CREAT | O_EXCL``, which never follows a link.
  Nothing is ever chmod'ed by path.
* **A temporary file is recognised as ours, and as abandoned, by liveness, not age.** Its name is
  ``.<stem>.<pid>.<12 hex>.distillgan-tmp``; its writer creates it while holding the folder lock
  and holds an advisory lock on it (``flock`` / ``msvcrt.locking``) until it is published or
  removed. The operating system drops that lock when the writer dies, however it dies, so a
  temporary file whose lock can be taken belongs to nobody any more: ``repair`` (under the folder
  lock) may remove it, whatever its age. Other files, hidden ``.tmp`` files included, are never
  touched.

The folder lock is re-entrant within a process (one lock per folder and process, shared by every
``ModelLibrary``), exclusive between threads and between processes, and compatible with the
``filelock`` package that earlier versions used (``flock`` on ``.model_library.lock`` on POSIX,
``msvcrt.locking`` of its first byte on Windows).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import LibraryError, from_os_error
from .fsio import NOFOLLOW, open_regular

LOCK_NAME = ".model_library.lock"
LOCK_TIMEOUT_S = 120.0  # FORMAT.md §8
TEMP_SUFFIX = ".distillgan-tmp"
_TEMP_NAME = re.compile(r"\.(?P<stem>[^/\\]+)\.(?P<pid>[0-9]{1,10})\.[0-9a-f]{12}" + re.escape(TEMP_SUFFIX) + r"\Z", re.DOTALL)

_COMMON = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOINHERIT", 0) | getattr(os, "O_BINARY", 0)

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # retries for 10 s: only a prober's instant can be in the way

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _not_regular(path: str, what: str) -> LibraryError:
    return LibraryError(
        f"{path!r} is {what}, not a regular file: refused, nothing it points to is opened "
        "(remove it; distillgan recreates it)",
        code="not-regular-file",
    )


def open_library_file(path: str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` of a file of the model folder: a regular file that is not a link (to anything, dangling included).

    Raises LibraryError ``not-regular-file`` for a link, FIFO, directory or device, and
    OSError for everything else (missing, permission...).
    """
    fd, _ = open_regular(path, flags, lambda what: _not_regular(path, what), follow_links=False, mode=mode)
    return fd


# --- the folder lock --------------------------------------------------------------------------------


class _FolderLock:
    """One per folder and process: a re-entrant mutex for threads, an OS lock on the lock file for processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.mutex = threading.RLock()
        self.depth = 0  # touched only by the thread that holds the mutex
        self.fd = -1

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if not self.mutex.acquire(blocking=timeout > 0, timeout=timeout if timeout > 0 else -1):
            raise self._timeout(timeout)
        try:
            if self.depth == 0:
                self.fd = self._lock_file(deadline, timeout)
            self.depth += 1
        except BaseException:
            self.mutex.release()
            raise

    def release(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            fd, self.fd = self.fd, -1
            try:
                _unlock(fd)
            finally:
                os.close(fd)
        self.mutex.release()

    def _lock_file(self, deadline: float, timeout: float) -> int:
        try:
            fd = open_library_file(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            if isinstance(e, FileNotFoundError):
                raise LibraryError(f"no such folder: {os.path.dirname(self.path)!r}", code="not-found") from e
            # the folder cannot be changed by this user: the same code as anywhere else this failure is met
            # (errors.py: permission-denied for EACCES/EPERM, read-only for EROFS), saying what to do
            error = from_os_error(e, "create the models folder's lock file (changing the folder needs write access)", self.path)
            if error.code == "io-error":  # anything else: this folder's lock cannot be used
                error = LibraryError(f"cannot open the folder lock {self.path!r}: {e.strerror or e}", code="folder-unwritable")
            raise error from e
        try:
            pause = 0.001
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    raise self._timeout(timeout)
                time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
                pause = min(pause * 2, 0.05)
        except OSError as e:  # ENOLCK and the like: this file system cannot lock
            os.close(fd)
            raise LibraryError(f"cannot lock {self.path!r}: {e.strerror}", code="folder-unwritable") from e
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _timeout(self, timeout: float) -> LibraryError:
        return LibraryError(f"another process has held {self.path!r} for {timeout:.0f} s", code="lock-timeout")


_locks: dict[str, _FolderLock] = {}
_locks_mutex = threading.Lock()


def _forget_locks_in_child() -> None:  # a forked child holds none of its parent's locks
    global _locks, _locks_mutex, _held
    _locks, _locks_mutex, _held = {}, threading.Lock(), {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


@contextmanager
def folder_locked(folder: str | os.PathLike[str], timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold ``folder``'s lock (re-entrant in a process). ``timeout=0`` tries once.

    Raises LibraryError: ``lock-timeout``; ``not-regular-file`` (a planted link or other
    non-regular file as the lock); ``folder-unwritable`` (no locking, or another reason the lock
    cannot be used); ``not-found`` (no such folder: nothing is created). FileAccessError
    ``permission-denied`` (no write permission) or ``read-only`` (read-only file system), as
    ``errors.from_os_error`` names those failures everywhere.
    """
    key = os.path.join(os.path.realpath(folder), LOCK_NAME)
    with _locks_mutex:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = _FolderLock(key)
    lock.acquire(timeout)
    try:
        yield
    finally:
        lock.release()


# --- temporary files --------------------------------------------------------------------------------

_held: dict[str, int] = {}  # temporary file path -> its open, locked descriptor, until released


def create_temporary(folder: str | os.PathLike[str], stem: str) -> tuple[int, str]:
    """Create a new temporary file in ``folder``, locked for as long as it is held; return (fd, path).

    The descriptor stays open (and the file locked) until ``release_temporary`` or
    ``discard_temporary``; the caller writes through it without closing it. Created under the
    folder lock, so that a repair never sees it before its lock is taken.
    """
    with folder_locked(folder):
        for _ in range(100):
            path = os.path.join(os.fspath(folder), f".{stem}.{os.getpid()}.{os.urandom(6).hex()}{TEMP_SUFFIX}")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW | _COMMON, 0o644)
            except FileExistsError:
                continue
            try:
                _lock(fd)  # a prober may hold it for an instant: wait
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, 0o644)  # an ordinary readable file once published, whatever the umask; never chmod by path
            except BaseException:
                os.close(fd)
                os.unlink(path)
                raise
            _held[path] = fd
            return fd, path
    raise LibraryError(f"cannot find a free temporary file name in {os.fspath(folder)!r}", code="folder-unwritable")


def release_temporary(path: str) -> None:
    """Close a held temporary file (dropping its lock): call under the folder lock, just before renaming it."""
    fd = _held.pop(path, None)
    if fd is not None:
        os.close(fd)


def discard_temporary(path: str) -> None:
    """Release and remove a temporary file (quietly if it is already gone)."""
    release_temporary(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is the name of one of our temporary files (nothing else is ever removed)."""
    return _TEMP_NAME.match(name) is not None


def abandoned_size(folder: str | os.PathLike[str], name: str) -> int | None:
    """The size of our temporary file ``name`` if its writer is gone (its lock can be taken), else None.

    None too for anything that is not one of our temporary files, or not a regular file.
    """
    if not is_temporary_name(name):
        return None
    path = os.path.join(os.fspath(folder), name)
    try:
        fd = open_library_file(path, os.O_RDONLY)
    except (OSError, LibraryError):
        return None
    try:
        if not _try_lock(fd):
            return None
        _unlock(fd)
        return os.fstat(fd).st_size
    except OSError:
        return None
    finally:
        os.close(fd)


def remove_abandoned(folder: Path, names: list[str]) -> dict[str, int]:
    """Remove the abandoned temporary files among ``names``; the caller holds the folder lock. Name -> size."""
    removed: dict[str, int] = {}
    for name in names:
        size = abandoned_size(folder, name)
        if size is None:
            continue
        try:
            os.unlink(folder / name)
        except OSError:
            continue
        removed[name] = size
    return removed
