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
    ``max_nodes``/``max_depth``: nodes visited (shared references counted each time) and nesting.
    """

    max_file_bytes: int = 64 << 30
    max_pickle_bytes: int = 256 << 20
    view_bytes_factor: int = 4
    view_bytes_extra: int = 64 << 20
    max_classes: int = 20_000
    max_nodes: int = 5_000_000
    max_depth: int = 64


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
