"""The exception tree of distillgan.

Every failure caused by bad input — a hostile or damaged file, a legacy
pickle, a value that cannot be stored — is a :class:`DistillganError`, which
is a :class:`ValueError`, so callers that already catch ``ValueError`` keep
working. Each error carries a stable machine-readable ``code`` (listed in
``spec/FORMAT.md`` §9); the class says which layer found the defect::

    ValueError
     └── DistillganError            code: str; message says expected / found / where
          ├── FileAccessError       the path: missing, not a regular file, too large
          ├── ContainerError        the zip profile (FORMAT.md §3)
          ├── ManifestError         manifest.msgpack (FORMAT.md §4)
          │    └── VersionError     format version newer than this reader
          ├── TensorError           safetensors members (FORMAT.md §5)
          ├── IntegrityError        CRC-32 or pinned SHA-256 mismatch
          ├── LegacyFormatError     pickles and legacy .distill files (FORMAT.md §7)
          ├── InputError            a value handed to save_model cannot be stored
          ├── LibraryError          the model folder and its index
          └── SignatureError        a signature sidecar, key or certificate (FORMAT.md §16)

Codes are part of the public interface: a code is never reused for a
different defect and never removed within a major version.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "ContainerError",
    "DistillganError",
    "FileAccessError",
    "InputError",
    "IntegrityError",
    "LegacyFormatError",
    "LibraryError",
    "ManifestError",
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


def from_os_error(error: OSError, action: str, path: object) -> DistillganError:
    """The :class:`FileAccessError` for an ``OSError`` met while trying to ``action`` at ``path``.

    Codes: ``permission-denied``, ``read-only``, ``no-space``, ``not-a-directory``,
    ``not-found``, else ``io-error``; the message names the path and what to do.
    """
    import errno as _errno
    import os as _os

    name = _errno.errorcode.get(error.errno or 0, "")
    where = repr(_os.fspath(error.filename)) if error.filename is not None else repr(str(path))
    code, text = _OS_CODES.get(name, ("io-error", "cannot {action} at {path}"))
    detail = f" ({error.strerror})" if error.strerror else f" ({error})"
    return FileAccessError(text.format(action=action, path=where) + detail, code=code)


@contextmanager
def os_errors(action: str, path: object) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into :func:`from_os_error`'s error, naming ``path`` and what to do."""
    try:
        yield
    except DistillganError:
        raise
    except OSError as e:
        raise from_os_error(e, action, path) from e
