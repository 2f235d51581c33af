"""The exception tree of distillgan.

Every failure caused by bad input — a hostile or damaged file, a legacy
pickle, a value that cannot be stored — is a :class:`DistillganError`, which
is a :class:`ValueError`, so callers that already catch ``ValueError`` keep
working. Each error carries a stable machine-readable ``code`` (listed in
``spec/FORMAT.md`` §9); the class says which layer found the defect::

    ValueError
     └── DistillganError            code: str; message says expected / found / where
          ├── FileAccessError       the path: missing, not a regular file, too large
          │    ├── NotFoundError         also a FileNotFoundError (so an OSError)
          │    ├── AccessDeniedError     also a PermissionError
          │    └── IsAFolderError        also an IsADirectoryError
          ├── ContainerError        the zip profile (FORMAT.md §3)
          ├── ManifestError         manifest.msgpack (FORMAT.md §4)
          │    └── VersionError     format version newer than this reader
          ├── TensorError           safetensors members (FORMAT.md §5)
          ├── IntegrityError        CRC-32 or pinned SHA-256 mismatch
          ├── LegacyFormatError     pickles and legacy .distill files (FORMAT.md §7)
          ├── InputError            a value handed to save_model cannot be stored
          ├── LibraryError          the model folder and its index
          └── SignatureError        a signature sidecar, key or certificate (FORMAT.md §16)

An ``OSError`` met on a path becomes the :class:`FileAccessError` subclass
its ``errno`` calls for (:func:`from_os_error`, :func:`open_error`), so code
written for the standard library (``except FileNotFoundError``, ``except
OSError``) catches distillgan's errors too; ``errno``, ``strerror`` and
``filename`` are set as on the ``OSError``.

Codes are part of the public interface: a code is never reused for a
different defect and never removed within a major version.
"""

from __future__ import annotations

import errno as _errno
import os as _os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "AccessDeniedError",
    "ContainerError",
    "DistillganError",
    "FileAccessError",
    "InputError",
    "IntegrityError",
    "IsAFolderError",
    "LegacyFormatError",
    "LibraryError",
    "ManifestError",
    "NotFoundError",
    "SignatureError",
    "TensorError",
    "VersionError",
]


class DistillganError(ValueError):
    """Base of every distillgan error; ``code`` is a stable identifier."""

    code: str

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self):  # keep the code when pickled across processes
        return (_rebuild, (type(self), str(self), self.code))


def _rebuild(cls, message, code):
    return cls(message, code=code)


class FileAccessError(DistillganError):
    """The path cannot be opened as a regular file within the size limit."""


class _OSErrorFace:
    """The ``OSError`` side of a :class:`FileAccessError` subclass: ``str()`` is distillgan's message."""

    args: tuple[Any, ...]

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotFoundError(_OSErrorFace, FileAccessError, FileNotFoundError):
    """The path does not exist (``not-found``); also a :class:`FileNotFoundError`."""


class AccessDeniedError(_OSErrorFace, FileAccessError, PermissionError):
    """Access refused by the system (``permission-denied``; ``io-error`` opening to read); also a :class:`PermissionError`."""


class IsAFolderError(_OSErrorFace, FileAccessError, IsADirectoryError):
    """A folder where a file is expected (``not-regular-file``); also an :class:`IsADirectoryError`."""


class ContainerError(DistillganError):
    """The file is not a zip of the strict distillgan profile."""


class ManifestError(DistillganError):
    """manifest.msgpack is malformed or disagrees with the members."""


class VersionError(ManifestError):
    """The file declares a format version newer than this reader supports."""


class TensorError(DistillganError):
    """A safetensors member is malformed or disagrees with the manifest."""


class IntegrityError(DistillganError):
    """Stored bytes do not match their checksum."""


class LegacyFormatError(DistillganError):
    """A pickle-based file (legacy .distill, torch.save, raw pickle): refused."""


class InputError(DistillganError):
    """A value given to the writer cannot be stored faithfully."""


class LibraryError(DistillganError):
    """The model folder or its index cannot be used as asked."""


class SignatureError(DistillganError):
    """A signature is missing, unreadable, untrusted or for other bytes; or a key or certificate is unusable."""


_OS_CODES = {
    "EACCES": ("permission-denied", "you have no permission to {action} at {path}; check the folder's permissions or choose another folder"),
    "EPERM": ("permission-denied", "you have no permission to {action} at {path}; check the folder's permissions or choose another folder"),
    "EROFS": ("read-only", "{path} is on a read-only file system, so you cannot {action} there; choose a writable folder"),
    "ENOSPC": ("no-space", "no space left on the device of {path} to {action}; free some space or choose another disk"),
    "EDQUOT": ("no-space", "your disk quota is exhausted on the device of {path}, so you cannot {action}; free some space"),
    "EFBIG": ("no-space", "{path} would grow beyond the largest file allowed here (a file size limit), so you cannot {action}"),
    "ENOTDIR": ("not-a-directory", "a part of {path} is a file, not a folder, so you cannot {action} there"),
    "EEXIST": ("not-a-directory", "{path} exists and is not a folder, so you cannot {action} there"),
    "ENOENT": ("not-found", "{path} does not exist, so you cannot {action} there"),
}


_CLASSES: dict[int, type[FileAccessError]] = {
    _errno.ENOENT: NotFoundError,
    _errno.EACCES: AccessDeniedError,
    _errno.EPERM: AccessDeniedError,
    _errno.EISDIR: IsAFolderError,
}


def file_error(message: str, *, code: str, error: OSError | None = None, path: object = None,
               errno: int | None = None) -> FileAccessError:
    """The :class:`FileAccessError` whose class the errno calls for (that of ``error``, or ``errno``).

    ``ENOENT`` gives a :class:`NotFoundError`, ``EACCES``/``EPERM`` an
    :class:`AccessDeniedError`, ``EISDIR`` an :class:`IsAFolderError` (each also the
    matching ``OSError``, with ``errno``, ``strerror`` and ``filename`` set); any
    other errno a plain :class:`FileAccessError`.
    """
    number = error.errno if error is not None else errno
    cls = _CLASSES.get(number or 0, FileAccessError)
    out = cls(message, code=code)
    if cls is not FileAccessError:
        oserror: Any = out
        oserror.errno = number
        oserror.strerror = (error.strerror if error is not None else None) or _os.strerror(number or 0)
        filename = error.filename if error is not None and error.filename is not None else path
        oserror.filename = _os.fspath(filename) if isinstance(filename, (str, bytes, _os.PathLike)) else filename
    return out


def open_error(error: OSError, path: object) -> FileAccessError:
    """The error for a file that cannot be opened to read: ``not-found``, ``not-regular-file`` (a folder), else ``io-error``."""
    shown = _os.fspath(path) if isinstance(path, (str, bytes, _os.PathLike)) else str(path)
    if error.errno == _errno.ENOENT:
        return file_error(f"no such file: {shown!r}", code="not-found", error=error, path=path)
    if error.errno == _errno.EISDIR or (error.errno == _errno.EACCES and _os.path.isdir(shown)):  # Windows: EACCES for a folder
        return file_error(f"{shown!r} is a directory; expected a regular file", code="not-regular-file", path=path,
                          errno=_errno.EISDIR)
    return file_error(f"cannot open {shown!r}: {error.strerror}", code="io-error", error=error, path=path)


def not_regular_error(path: object, mode: int) -> FileAccessError:
    """``not-regular-file`` for what ``fstat`` found at ``path`` (``mode``): a folder is also an :class:`IsADirectoryError`."""
    import stat

    shown = _os.fspath(path) if isinstance(path, (str, bytes, _os.PathLike)) else str(path)
    if stat.S_ISDIR(mode):
        return file_error(f"{shown!r} is a directory; expected a regular file", code="not-regular-file", path=path,
                          errno=_errno.EISDIR)
    return file_error(f"{shown!r} is not a regular file (device, FIFO, socket or directory)", code="not-regular-file")


def from_os_error(error: OSError, action: str, path: object) -> DistillganError:
    """The :class:`FileAccessError` for an ``OSError`` met while trying to ``action`` at ``path``.

    Codes: ``permission-denied``, ``read-only``, ``no-space``, ``not-a-directory``,
    ``not-found``, else ``io-error``; the message names the path and what to do. The class
    follows the errno (:func:`file_error`): a missing path is also a ``FileNotFoundError``.
    """
    name = _errno.errorcode.get(error.errno or 0, "")
    where = repr(_os.fspath(error.filename)) if error.filename is not None else repr(str(path))
    code, text = _OS_CODES.get(name, ("io-error", "cannot {action} at {path}"))
    detail = f" ({error.strerror})" if error.strerror else f" ({error})"
    return file_error(text.format(action=action, path=where) + detail, code=code, error=error, path=path)


@contextmanager
def os_errors(action: str, path: object) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into :func:`from_os_error`'s error, naming ``path`` and what to do."""
    try:
        yield
    except DistillganError:
        raise
    except OSError as e:
        raise from_os_error(e, action, path) from e
