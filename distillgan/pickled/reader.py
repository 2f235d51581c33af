"""The entry point: open the file, read it in one session, materialise the records."""

from __future__ import annotations

import io
import os
import stat
from typing import Any, BinaryIO

from ..errors import FileAccessError, not_regular_error, open_error
from ..fsio import open_regular
from .common import DEFAULT_LIMITS, Budget, PickleLimits, show
from .materialise import Materialiser
from .plain import to_plain_tree
from .session import SESSION, Session
from .streams import read_stream

# --------------------------------------------------------------------------------------------
# Public entry points


def open_input(path: str | os.PathLike[str], limits: PickleLimits) -> tuple[BinaryIO, int]:
    """Open ``path`` as a regular file without blocking on a FIFO or device (``fsio.open_regular``)."""
    shown = os.fspath(path)

    def refuse(what: str) -> FileAccessError:  # a folder is also an IsADirectoryError
        return not_regular_error(shown, stat.S_IFDIR if what == "a directory" else stat.S_IFIFO)

    try:
        fd, st = open_regular(shown, os.O_RDONLY, refuse)
    except OSError as e:
        raise open_error(e, shown) from e
    try:
        if st.st_size > limits.max_file_bytes:
            raise FileAccessError(
                f"{shown!r} is {st.st_size} bytes; the limit is {limits.max_file_bytes} (max_file_bytes)", code="file-too-large"
            )
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_pickled(path: str | os.PathLike[str], *, limits: PickleLimits = DEFAULT_LIMITS) -> Any:
    """Read a torch checkpoint (zip or legacy stream) or a plain pickle without running it.

    Returns the object tree the file holds: builtin containers and scalars, ``OrderedDict``,
    torch tensors and ``nn.Parameter`` (viewing buffers this call allocated and filled from the
    file), numpy arrays and scalars, ``torch.device``/``torch.Size``/dtypes, pure paths, and
    :class:`PickledObject` stand-ins for everything else. Raises
    :class:`~distillgan.errors.FileAccessError` for the path and
    :class:`~distillgan.errors.InputError` (codes in the package docstring) for the content.
    """
    return read_with_budget(path, limits)[0]


def read_plain_tree(path: str | os.PathLike[str], *, limits: PickleLimits = DEFAULT_LIMITS) -> Any:
    """:func:`read_pickled` then :func:`to_plain_tree`, within one budget sized by the file: what ``convert`` reads."""
    tree, budget = read_with_budget(path, limits)
    return to_plain_tree(tree, limits=limits, budget=budget)


def read_with_budget(path: str | os.PathLike[str], limits: PickleLimits) -> tuple[Any, Budget]:
    f, size = open_input(path, limits)
    where = show(os.fspath(path), 120)
    session = Session(limits, size)
    session.read_nested = lambda data, what: read_stream(io.BytesIO(data), len(data), session, what)
    token = SESSION.set(session)
    try:
        with f:
            root = read_stream(f, size, session, where)
        session.check_views()
        return Materialiser(session.budget).run(root), session.budget
    finally:
        SESSION.reset(token)
