"""The pickle VM: each pickle is walked opcode by opcode, then run by the C unpickler with globals resolved by the session."""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

from ..errors import DistillganError, InputError
from .allowlist import resolve_global
from .common import MAX_NUMBER_CHARS, over_limit, show, unreadable, unsafe
from .session import Session

# --------------------------------------------------------------------------------------------
# Walking one pickle before unpickling it


_LENGTH_PREFIX = {
    pickletools.TAKEN_FROM_ARGUMENT1: struct.Struct("<B"),
    pickletools.TAKEN_FROM_ARGUMENT4: struct.Struct("<i"),
    pickletools.TAKEN_FROM_ARGUMENT4U: struct.Struct("<I"),
    pickletools.TAKEN_FROM_ARGUMENT8U: struct.Struct("<Q"),
}
_NUMBER_LINES = {"INT", "LONG", "FLOAT", "PUT", "GET"}
_MEMO_WRITES = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}


# The reader's own rewrites (see scan_pickle): containers whose items CPython would hash in C are
# built through these allowlisted globals instead, so every key and item is checked first.
DICT_GLOBAL = b"cdistillgan.pickled\ndict\n"
SET_GLOBAL = b"cdistillgan.pickled\nset\n"
FROZENSET_GLOBAL = b"cdistillgan.pickled\nfrozenset\n"
_MARK_OPS = frozenset(op.name for op in pickletools.opcodes if pickletools.markobject in op.stack_before)

# How deep each opcode builds (scan_pickle keeps a depth per stack item and memo slot, never the objects):
# atoms are 0 deep, a container or call 1 + its deepest part, and adding to one makes it at least that.
_VALUE, _ATOM, _NEW, _NEW_MARK, _ADD, _ADD_MARK, _POP, _DUP, _MARK, _POP_MARK, _GET, _PUT, _MEMOIZE = range(13)
_NEW_OPS = {"EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET", "TUPLE1", "TUPLE2", "TUPLE3", "REDUCE", "NEWOBJ",
            "NEWOBJ_EX", "PERSID", "BINPERSID"}  # fmt: skip
_SPECIAL = {"LIST": _NEW_MARK, "TUPLE": _NEW_MARK, "DICT": _NEW_MARK, "FROZENSET": _NEW_MARK, "INST": _NEW_MARK,
            "OBJ": _NEW_MARK, "APPEND": _ADD, "SETITEM": _ADD, "BUILD": _ADD, "APPENDS": _ADD_MARK, "SETITEMS": _ADD_MARK,
            "ADDITEMS": _ADD_MARK, "POP": _POP, "DUP": _DUP, "MARK": _MARK, "POP_MARK": _POP_MARK, "GET": _GET,
            "BINGET": _GET, "LONG_BINGET": _GET, "PUT": _PUT, "BINPUT": _PUT, "LONG_BINPUT": _PUT, "MEMOIZE": _MEMOIZE}  # fmt: skip


def _effect(op: pickletools.OpcodeInfo) -> tuple[int, int, int]:
    """(kind, items popped, items pushed) of one opcode, for the depth kept by scan_pickle."""
    fixed = sum(1 for x in op.stack_before if x is not pickletools.markobject and x is not pickletools.stackslice)
    kind = _NEW if op.name in _NEW_OPS else _SPECIAL.get(op.name, _ATOM)
    if kind == _ATOM and fixed == 0 and len(op.stack_after) == 1:
        kind = _VALUE  # most opcodes: one value of depth 0 pushed, nothing popped
    return kind, fixed, len(op.stack_after)


_OPS = {op.code.encode("latin-1"): (op, *_effect(op)) for op in pickletools.opcodes}


def scan_pickle(f: BinaryIO, start: int, size: int, session: Session, where: str) -> tuple[int, bytes]:
    """Walk the opcodes of the pickle at ``start`` without building anything; return where it ends and the pickle to run.

    Refuses what would make the C unpickler work out of proportion to the bytes: memo indices
    beyond the memo writes so far (the C memo is an array resized to twice the index), text
    numbers longer than MAX_NUMBER_CHARS (decimal parsing is quadratic), declared lengths past
    the end, EXT opcodes (resolved through a process-wide cache before find_class is asked).
    Each opcode is charged to the session's work budget before anything runs. It also keeps how
    deep each value on the stack and in the memo is built (a container or call is one level over
    its deepest part; adding items to one afterwards counts, but not for copies already taken from
    the memo, so this is a lower bound) and refuses, at the opcode that builds it, a value nested
    deeper than ``limits.max_build_depth``: a tuple a million deep fails at its 273rd level, not
    after walking the other million opcodes (the tree's own ``max_depth`` check still follows).

    The pickle handed back is the same program with four opcodes rewritten: ``EMPTY_DICT``,
    ``DICT``, ``EMPTY_SET`` and ``FROZENSET`` build their container through :data:`DICT_GLOBAL`,
    :data:`SET_GLOBAL` or :data:`FROZENSET_GLOBAL` (``SETITEM``/``ADDITEMS`` then call the
    builder's methods, never CPython's C insertion), so no key or item is hashed before its depth
    and type are checked and its hash collisions counted. ``FRAME`` opcodes are dropped (their
    lengths no longer hold; framing is optional).
    """
    limits = session.limits
    budget = session.budget
    cap = min(size, start + limits.max_pickle_bytes)
    f.seek(start)
    pos = start
    memo_writes = 0
    chunks: list[bytes] = []
    marks: list[int] = []  # index in chunks of each open MARK
    depths: list[int] = []  # how deep each value on the unpickler's stack is built
    fences: list[int] = []  # len(depths) at each open MARK
    memo: dict[int, int] = {}  # memo index -> how deep the value stored there was built
    max_build = limits.max_build_depth

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

    def too_deep(name: str, at: int, built: int) -> InputError:
        return over_limit(
            f"{where}: {name} at byte {at} builds a value nested {built} levels deep, more than {max_build} "
            f"(limit max_depth: a pickle may nest 4 x max_depth + 16 levels while it is read; FORMAT.md §7.1)"
        )

    ops = 0
    while True:
        at = pos
        code = take(1, "opcode")
        entry = _OPS.get(code)
        if entry is None:
            raise unreadable(f"{where}: byte {code!r} at {at} is not a pickle opcode")
        op, kind, popped, pushed = entry
        ops += 1
        if ops & 0xFFF == 0:
            budget.charge_work(0x1000, f"{where}, opcode at byte {at}")
        name, arg = op.name, op.arg
        if name in ("EXT1", "EXT2", "EXT4"):
            raise unsafe(f"{where}: {name} at byte {at}: extension-registry codes resolve through a process-wide cache; refused")
        value: Any = None
        parts = [code]
        if arg is None:
            pass
        elif arg.n >= 0:
            value = take(arg.n, name)
            parts.append(value)
        elif arg.n == pickletools.UP_TO_NEWLINE:
            limit = MAX_NUMBER_CHARS + 2 if name in _NUMBER_LINES else cap - pos
            value = line(limit, name)
            parts.append(value)
            if arg.name == "stringnl_noescape_pair":
                parts.append(line(cap - pos, name))
        else:
            prefix = _LENGTH_PREFIX[arg.n]
            head = take(prefix.size, name)
            (n,) = prefix.unpack(head)
            if n < 0:
                raise unreadable(f"{where}: {name} at byte {at} declares a negative length {n}")
            if pos + n > cap:
                raise past(n, f"{name} of {n} bytes")
            parts.append(head)
            parts.append(take(n, name))
        if name == "PROTO" and value[0] > pickle.HIGHEST_PROTOCOL:
            raise unreadable(f"{where}: pickle protocol {value[0]} at byte {at}; at most {pickle.HIGHEST_PROTOCOL} is known")
        if kind == _PUT:
            try:
                index = int(value) if name == "PUT" else int.from_bytes(value, "little")
            except ValueError:
                raise unreadable(f"{where}: PUT argument {show(value)} at byte {at} is not a number") from None
            if not 0 <= index <= memo_writes:
                raise unsafe(
                    f"{where}: {name} {index} at byte {at} after {memo_writes} memo writes (picklers number them in order)"
                )
            memo[index] = depths[-1] if depths else 0
        if name in _MEMO_WRITES:
            memo_writes += 1
        if kind == _VALUE:  # the depth kept per stack item, in the order opcodes are most common
            depths.append(0)
        elif kind == _PUT:
            pass  # stored above, where its index is checked
        elif kind == _MEMOIZE:
            memo[len(memo)] = depths[-1] if depths else 0
        elif kind == _GET:
            try:
                depths.append(memo.get(int(value) if name == "GET" else int.from_bytes(value, "little"), 0))
            except ValueError:
                depths.append(0)  # a GET line that is no number: the unpickler refuses it
        elif kind == _NEW or kind == _ADD:
            if kind == _ADD:  # APPEND, SETITEM, BUILD: the container added to, then one or two values
                deepest = depths.pop() + 1 if depths else 1
                if popped == 3 and depths:
                    deepest = max(deepest, depths.pop() + 1)
                built = max(depths.pop() if depths else 0, deepest)
            elif popped == 0:
                built = 1
            elif popped == 1:
                built = depths.pop() + 1 if depths else 1
            else:
                inner = depths[-popped:]
                del depths[-popped:]
                built = max(inner, default=0) + 1
            if built > max_build:
                raise too_deep(name, at, built)
            depths.append(built)
        elif kind == _ATOM:
            if popped:
                del depths[-popped:]
            if pushed:
                depths.append(0)
        elif kind == _MARK:
            fences.append(len(depths))
        elif kind == _POP:
            if fences and fences[-1] == len(depths):  # as the C unpickler does: POP right after MARK pops the mark
                fences.pop()
                if marks:
                    marks.pop()
            elif depths:
                depths.pop()
        elif kind == _DUP:
            depths.append(depths[-1] if depths else 0)
        else:  # _NEW_MARK, _ADD_MARK, _POP_MARK: the values above the last MARK
            fence = fences.pop() if fences else 0
            inner = depths[fence:]
            del depths[fence:]
            if kind == _NEW_MARK:
                built = max(inner, default=0) + 1
            elif kind == _ADD_MARK:  # APPENDS, SETITEMS, ADDITEMS: the container under the MARK
                built = max(depths.pop() if depths else 0, max(inner, default=-1) + 1)
            if kind != _POP_MARK:
                if built > max_build:
                    raise too_deep(name, at, built)
                depths.append(built)
        if name == "FRAME":
            if pos + int.from_bytes(value, "little") > cap:
                raise past(int.from_bytes(value, "little"), "FRAME")
            continue
        if name == "MARK":
            marks.append(len(chunks))
        elif name in _MARK_OPS:
            if not marks:
                raise unreadable(f"{where}: {name} at byte {at} without a MARK before it")
            mark = marks.pop()
            if name == "DICT":
                chunks[mark] = DICT_GLOBAL + b"("
                parts = [b"tR"]
            elif name == "FROZENSET":
                chunks[mark] = FROZENSET_GLOBAL + b"("
                parts = [b"tR"]
        elif name == "EMPTY_DICT":
            parts = [DICT_GLOBAL, b")R"]
        elif name == "EMPTY_SET":
            parts = [SET_GLOBAL, b")R"]
        chunks.append(b"".join(parts) if len(parts) > 1 else parts[0])
        if name == "STOP":
            budget.charge_work(ops & 0xFFF, f"{where}, opcode at byte {at}")
            data = b"".join(chunks)
            return pos, data


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
    end, data = scan_pickle(f, start, size, session, where)
    try:
        value = Unpickler(data, session, persistent, where).load()
    except DistillganError:
        raise
    except MemoryError as e:
        raise over_limit(f"{where}: out of memory while unpickling") from e
    except RecursionError as e:
        raise over_limit(f"{where}: nested deeper than the interpreter allows while unpickling") from e
    except Exception as e:  # the C unpickler and the builtins it calls raise many types for malformed input
        raise unreadable(f"{where}: {type(e).__name__}: {show(str(e), 200)}") from e
    finally:
        del data
    return value, end
