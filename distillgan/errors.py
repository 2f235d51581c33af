"""The exception tree of distillgan.

Every failure caused by bad input — a hostile or damaged file, a legacy
pickle, a value that cannot be stored — is a :class:`DistillganError`, which
is a :class:`ValueError`, so callers that already catch ``ValueError`` keep
working. Each error carries a stable machine-readable ``code`` (listed in
``spec/FORMAT.md`` §9); the class says which layer found the defect::

    ValueError
     └── DistillganError            code: ErrorCode; message says expected / found / where
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
from typing import Any, Literal, get_args

__all__ = [
    "CODES",
    "AccessDeniedError",
    "ContainerError",
    "DistillganError",
    "ErrorCode",
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
    "describe",
]

# Every code, in the order of FORMAT.md §9's table (tests/test_spec.py checks that the two agree).
ErrorCode = Literal[
    # the file (§13.1), legacy detection (§7)
    "not-found", "not-regular-file", "io-error", "file-too-large", "file-changed", "pickle", "legacy-distill-v1",
    # the zip profile (§3)
    "not-zip", "safetensors-file", "truncated", "zip-eocd", "zip-comment", "zip64", "zip-entry-count", "zip-layout",
    "zip-member-name", "zip-attributes", "zip-flags", "zip-method", "zip-extra-field", "zip-version",
    "zip-header-mismatch", "zip-alignment",
    # integrity (§6)
    "crc-mismatch", "sha256-mismatch",
    # the manifest (§4)
    "manifest-too-large", "manifest-msgpack", "manifest-not-map", "manifest-duplicate-key", "manifest-ext-type",
    "manifest-value", "manifest-depth", "manifest-type", "manifest-tag", "manifest-format", "manifest-version",
    "version-newer", "manifest-missing-key", "manifest-unknown-key", "manifest-mismatch",
    # safetensors members (§5)
    "st-header-size", "st-header-json", "st-duplicate-key", "st-metadata", "st-name", "st-dtype", "st-shape",
    "st-offsets", "st-bool",
    # reading over a network (§12)
    "remote-unavailable", "remote-io", "remote-range", "remote-changed", "remote-encoding", "remote-timeout",
    "remote-redirect",
    # writing, the caller's values, converting
    "permission-denied", "read-only", "no-space", "not-a-directory", "file-exists", "device-unavailable",
    "invalid-input", "unsupported-dtype", "big-endian-host", "numpy-unavailable", "bad-checkpoint",
    "convert-unreadable", "convert-unsafe", "convert-limit", "convert-value", "export-unreadable",
    # the models folder (§15.2)
    "duplicate-model-id", "invalid-file-name", "file-in-use", "index-mismatch", "folder-unwritable", "lock-timeout",
    # signatures (§16)
    "signature-missing", "signature-too-large", "signature-malformed", "signature-invalid", "signature-mismatch",
    "key-invalid", "certificate-invalid", "signing-unavailable",
    # the command line only
    "usage", "ambiguous",
]
CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)


def describe(what: str, *, where: str = "", section: str = "") -> str:
    """The one shape of a distillgan error message: what is wrong (expected, found), where, then the rule.

    ``"{what} at {where} (FORMAT.md {section})"``, each part only when given; ``what`` says what was
    expected and what was found, as msgspec's "Expected `int`, got `str` - at `$.a`" does.
    """
    text = f"{what} at {where}" if where else what
    return f"{text} (FORMAT.md {section})" if section else text


class DistillganError(ValueError):
    """Base of every distillgan error; ``code`` is a stable identifier."""

    code: ErrorCode

    def __init__(self, message: str, *, code: ErrorCode) -> None:
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


_OS_CODES: dict[str, tuple[ErrorCode, str]] = {
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


def file_error(message: str, *, code: ErrorCode, error: OSError | None = None, path: object = None,
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
