"""Limits, error builders and the bounded repr shared by every part of the restricted reader."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass

from ..errors import InputError

TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER: first pickle of a legacy stream
TORCH_LEGACY_PROTOCOL_VERSION = 1001  # torch/serialization.py PROTOCOL_VERSION: second pickle
MAX_NUMBER_CHARS = 4300  # text INT/LONG/FLOAT/PUT/GET lines: CPython's default int_max_str_digits, so parsing stays cheap
MAX_DIRECTORY_BYTES = 64 << 20  # central directory of a torch zip read at most (zipfile reads all of it into memory)
MAX_NDIM = 64  # dimensions of one tensor or array
MAX_SMALL_MEMBER = 64  # byteorder / version members
INT64_MAX = (1 << 63) - 1
BUILTIN_MODULES = ("builtins", "__builtin__")  # protocols 0-2 spell builtins "__builtin__" (fix_imports)


@dataclass(frozen=True)
class PickleLimits:
    """Work and memory bounds of :func:`read_pickled` and :func:`to_plain_tree` (code ``convert-limit``).

    ``max_file_bytes``: input file size. ``max_pickle_bytes``: one pickle (``data.pkl``, one pickle
    of a legacy stream, a plain pickle), decompressed. ``view_bytes_factor``/``view_bytes_extra``:
    the distinct tensor views of a file may total at most factor x its storage bytes + extra.
    ``max_classes``: distinct unknown globals (each costs a class object, ~1 KiB).
    ``max_nodes``/``max_depth``: nodes of the plain tree (shared references counted each time) and nesting.
    :attr:`max_build_depth`: nesting a pickle may build while it is read, refused at the opcode that passes it.

    The conversion budget (FORMAT.md §15), one per conversion and proportional to the input's
    ``S`` bytes (the file's size; a compressed ``data.pkl`` counts with its stored bytes):

    - work: opcodes run + objects built + keys and items checked + tree nodes visited
      <= ``work_per_byte`` x S + ``work_extra``;
    - bytes materialised (storages, inflated pickles, copies the conversion makes)
      <= ``bytes_per_byte`` x S + ``bytes_extra``;
    - ``max_key_collisions``: keys of one dict (or items of one set) sharing one hash value.
    """

    max_file_bytes: int = 64 << 30
    max_pickle_bytes: int = 256 << 20
    view_bytes_factor: int = 4
    view_bytes_extra: int = 64 << 20
    max_classes: int = 20_000
    max_nodes: int = 5_000_000
    max_depth: int = 64
    work_per_byte: int = 8
    work_extra: int = 1 << 20
    bytes_per_byte: int = 2
    bytes_extra: int = 64 << 20
    max_key_collisions: int = 32

    @property
    def max_build_depth(self) -> int:
        """``4 * max_depth + 16``: a level of the value tree takes at most 4 in a pickle (protocols 0-2 write an
        ``OrderedDict`` as a call on a tuple of a list of ``[key, value]`` lists), and a leaf of the tree fewer
        than 16 (a parameter over a tensor over a storage is 6)."""
        return 4 * self.max_depth + 16


DEFAULT_LIMITS = PickleLimits()


def unreadable(message: str) -> InputError:
    return InputError(message, code="convert-unreadable")


def unsafe(message: str) -> InputError:
    return InputError(message, code="convert-unsafe")


def over_limit(message: str) -> InputError:
    return InputError(message, code="convert-limit")


class ShortRepr(reprlib.Repr):
    """reprlib bounds containers and strings; ints are bounded too (a huge int's decimal repr is quadratic)."""

    def repr_int(self, x: int, level: int) -> str:
        return repr(x) if x.bit_length() <= 64 else f"<int of {x.bit_length()} bits>"


SHORT_REPR = ShortRepr()
SHORT_REPR.maxstring = SHORT_REPR.maxother = 80
SHORT_REPR.maxlevel = 3


def show(value: object, width: int = 80) -> str:
    """A bounded-cost repr of an untrusted value, cut to ``width`` characters (control characters escaped)."""
    text = SHORT_REPR.repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


class Budget:
    """One conversion's budget (:class:`PickleLimits`): work and bytes charged as they happen.

    ``input_bytes`` None: no input to size it by (:func:`to_plain_tree` on a tree built elsewhere);
    only the absolute caps of the limits apply then.
    """

    def __init__(self, limits: PickleLimits, input_bytes: int | None) -> None:
        self.limits = limits
        if input_bytes is None:
            self.work_limit = max(limits.max_nodes, limits.work_extra)
            self.bytes_limit = limits.max_file_bytes
        else:
            self.work_limit = limits.work_per_byte * input_bytes + limits.work_extra
            self.bytes_limit = limits.bytes_per_byte * input_bytes + limits.bytes_extra
        self.input_bytes = input_bytes
        self.work = 0
        self.bytes = 0

    def charge_work(self, n: int, what: str) -> None:
        self.work += n
        if self.work > self.work_limit:
            raise over_limit(
                f"{what}: the conversion's work passes {self.work_limit} steps (opcodes, objects, keys, nodes) for an input "
                f"of {self.input_bytes} bytes (limits work_per_byte, work_extra; FORMAT.md §15)"
            )

    def charge_bytes(self, n: int, what: str) -> None:
        self.bytes += n
        if self.bytes > self.bytes_limit:
            raise over_limit(
                f"{what}: the conversion would materialise more than {self.bytes_limit} bytes for an input of "
                f"{self.input_bytes} bytes (limits bytes_per_byte, bytes_extra; FORMAT.md §15)"
            )

    def bytes_left(self) -> int:
        return max(0, self.bytes_limit - self.bytes)

    def work_left(self) -> int:
        return max(0, self.work_limit - self.work)
