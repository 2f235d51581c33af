"""The pickle VM: each pickle is walked opcode by opcode, then run by the C unpickler with globals resolved by the session."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

from ..errors import DistillganError, InputError
from .allowlist import resolve_global
from .common import MAX_NUMBER_CHARS, PickleLimits, over_limit, show, unreadable, unsafe
from .session import Session

# --------------------------------------------------------------------------------------------
# Walking one pickle before unpickling it


_OPS = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
_LENGTH_PREFIX = {
    pickletools.TAKEN_FROM_ARGUMENT1: struct.Struct("<B"),
    pickletools.TAKEN_FROM_ARGUMENT4: struct.Struct("<i"),
    pickletools.TAKEN_FROM_ARGUMENT4U: struct.Struct("<I"),
    pickletools.TAKEN_FROM_ARGUMENT8U: struct.Struct("<Q"),
}
_NUMBER_LINES = {"INT", "LONG", "FLOAT", "PUT", "GET"}
_MEMO_WRITES = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}


def scan_pickle(f: BinaryIO, start: int, size: int, limits: PickleLimits, where: str) -> int:
    """Walk the opcodes of the pickle at ``start`` without building anything; return where it ends.

    Refuses what would make the C unpickler work out of proportion to the bytes: memo indices
    beyond the memo writes so far (the C memo is an array resized to twice the index), text
    numbers longer than MAX_NUMBER_CHARS (decimal parsing is quadratic), declared lengths past
    the end, EXT opcodes (resolved through a process-wide cache before find_class is asked).
    """
    cap = min(size, start + limits.max_pickle_bytes)
    f.seek(start)
    pos = start
    memo_writes = 0

    def past(n: int, what: str) -> InputError:
        if cap < size and pos + n <= size:
            return over_limit(f"{where}: the pickle runs past {limits.max_pickle_bytes} bytes (limit max_pickle_bytes)")
        return unreadable(f"{where}: {what} at byte {pos} runs past the end of the data (truncated pickle)")

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > cap:
            raise past(n, what)
        data = f.read(n)
        if len(data) != n:
            raise unreadable(f"{where}: {what} at byte {pos} is truncated")
        pos += n
        return data

    def line(limit: int, what: str) -> bytes:
        nonlocal pos
        n = min(limit + 1, cap - pos)
        data = f.readline(n) if n > 0 else b""
        if not data.endswith(b"\n"):
            if len(data) > limit:
                raise over_limit(f"{where}: {what} at byte {pos} is longer than {limit} characters")
            raise past(len(data) + 1, what)
        pos += len(data)
        return data

    while True:
        at = pos
        op = _OPS.get(take(1, "opcode"))
        if op is None:
            f.seek(at)
            raise unreadable(f"{where}: byte {f.read(1)!r} at {at} is not a pickle opcode")
        name, arg = op.name, op.arg
        if name in ("EXT1", "EXT2", "EXT4"):
            raise unsafe(f"{where}: {name} at byte {at}: extension-registry codes resolve through a process-wide cache; refused")
        value: Any = None
        if arg is None:
            pass
        elif arg.n >= 0:
            value = take(arg.n, name)
        elif arg.n == pickletools.UP_TO_NEWLINE:
            limit = MAX_NUMBER_CHARS + 2 if name in _NUMBER_LINES else cap - pos
            value = line(limit, name)
            if arg.name == "stringnl_noescape_pair":
                line(cap - pos, name)
        else:
            prefix = _LENGTH_PREFIX[arg.n]
            (n,) = prefix.unpack(take(prefix.size, name))
            if n < 0:
                raise unreadable(f"{where}: {name} at byte {at} declares a negative length {n}")
            if pos + n > cap:
                raise past(n, f"{name} of {n} bytes")
            f.seek(n, os.SEEK_CUR)
            pos += n
        if name == "PROTO" and value[0] > pickle.HIGHEST_PROTOCOL:
            raise unreadable(f"{where}: pickle protocol {value[0]} at byte {at}; at most {pickle.HIGHEST_PROTOCOL} is known")
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            try:
                index = int(value) if name == "PUT" else int.from_bytes(value, "little")
            except ValueError:
                raise unreadable(f"{where}: PUT argument {show(value)} at byte {at} is not a number") from None
            if not 0 <= index <= memo_writes:
                raise unsafe(
                    f"{where}: {name} {index} at byte {at} after {memo_writes} memo writes (picklers number them in order)"
                )
        if name in _MEMO_WRITES:
            memo_writes += 1
        if name == "FRAME" and pos + int.from_bytes(value, "little") > cap:
            raise past(int.from_bytes(value, "little"), "FRAME")
        if name == "STOP":
            return pos


class Unpickler(pickle.Unpickler):
    """The C unpickler with every global resolved by the session and persistent ids by the reader."""

    def __init__(self, data: bytes, session: Session, persistent: Callable[[Any], Any] | None, where: str) -> None:
        super().__init__(io.BytesIO(data), fix_imports=False, encoding="ASCII", errors="strict")
        self._session_ = session
        self._persistent = persistent
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        return resolve_global(self._session_, module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise unreadable(f"{self._where}: persistent id {show(pid)} in a pickle that is not part of a torch checkpoint")
        return self._persistent(pid)


def load_one(f: BinaryIO, start: int, size: int, session: Session, where: str,
              persistent: Callable[[Any], Any] | None = None) -> tuple[Any, int]:  # fmt: skip
    """Scan, then unpickle, the pickle at ``start``; return its value and where it ends."""
    end = scan_pickle(f, start, size, session.limits, where)
    f.seek(start)
    data = f.read(end - start)
    try:
        value = Unpickler(data, session, persistent, where).load()
    except DistillganError:
        raise
    except MemoryError as e:
        raise over_limit(f"{where}: out of memory while unpickling") from e
    except Exception as e:  # the C unpickler and the builtins it calls raise many types for malformed input
        raise unreadable(f"{where}: {type(e).__name__}: {show(str(e), 200)}") from e
    return value, end
