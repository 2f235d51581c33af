"""Recognising pickles and legacy .distill files by their bytes — never unpickling (FORMAT.md §7).

``pickletools.genops`` only decodes opcodes; it imports and executes nothing,
so it is safe to walk a hostile pickle with it, within a byte budget.
"""

from __future__ import annotations

import io
import pickletools
import re
import struct
from typing import Any

from .errors import LegacyFormatError
from .manifest import LEGACY_FORMAT_MARKER

V1_MESSAGE = "This model was saved in v1 format which is no longer supported. Please retrain your model."
PICKLE_MESSAGE = (
    "{what}: distillgan never unpickles files, because loading a pickle can run arbitrary code. "
    "Convert it once with `distillgan convert FILE` (it reads the file without running anything in it), "
    "or re-save the model with distillgan.save_model from the program that trained it."
)

MAX_PICKLE_SCAN_BYTES = 16 << 20  # FORMAT.md §7: how much of a pickle is walked for the v1 marker
MAX_PICKLE_OPS = 200_000  # FORMAT.md §7: opcodes walked at most (bounds the time spent)
MAX_PICKLES = 8  # the pre-1.6 torch stream is several pickles in a row
MAX_CD_SCAN_BYTES = 16 << 20  # central directory bytes walked when looking for a torch checkpoint
TORCH_LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")  # pickled torch magic number
_TORCH_MEMBER = re.compile(r"^[^/]+/(data\.pkl|version|\.data/version|byteorder|data/\d+|\.format_version|\.storage_alignment)$")
_STRING_OPS = {
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING",
    "SHORT_BINBYTES", "BINBYTES", "BINBYTES8",
}


def is_raw_pickle(head: bytes) -> bool:
    """A pickle of protocol 2..5 starts with PROTO (0x80) and its number."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def pickle_holds_v1_marker(data: bytes) -> bool:
    """Walk up to MAX_PICKLES consecutive pickles looking for the string "distill_model"."""
    stream = io.BytesIO(data[:MAX_PICKLE_SCAN_BYTES])
    budget = MAX_PICKLE_OPS
    for _ in range(MAX_PICKLES):
        try:
            for op, arg, _pos in pickletools.genops(stream):
                budget -= 1
                if budget < 0:
                    return False
                if op.name in _STRING_OPS and arg in (LEGACY_FORMAT_MARKER, LEGACY_FORMAT_MARKER.encode()):
                    return True
        except Exception:  # a truncated or malformed pickle: no marker found in it
            return False
        if stream.tell() >= len(stream.getbuffer()):
            return False
    return False


def _peek(src: Any, offset: int, n: int) -> bytes:
    """Up to ``n`` bytes at ``offset`` (fewer at the end of the file, none past it)."""
    n = max(0, min(n, src.size - offset))
    return src.read(offset, n) if offset >= 0 and n else b""


def _u(fmt: str, src: Any, pos: int) -> tuple[int, ...]:
    data = _peek(src, pos, struct.calcsize(fmt))
    if len(data) != struct.calcsize(fmt):
        raise _Short
    return struct.unpack(fmt, data)


class _Short(Exception):
    """A structure runs past the end of the file while identifying it."""


def _torch_zip_pickle(src: Any) -> tuple[bool, bytes | None]:
    """Is this a torch.save zip? If so, also the bytes of its data.pkl when stored.

    torch writes data descriptors (sizes only in the central directory), so
    this walks the central directory, tolerantly but within MAX_CD_SCAN_BYTES.
    It only identifies the file; the strict reader would refuse it anyway.
    """
    try:
        return _walk_torch_zip(src)
    except (_Short, struct.error):
        return False, None


def _walk_torch_zip(src: Any) -> tuple[bool, bytes | None]:
    size = src.size
    tail_start = max(0, size - (0xFFFF + 22))
    eocd = _peek(src, tail_start, size - tail_start).rfind(b"PK\x05\x06")
    if eocd < 0 or tail_start + eocd + 22 > size:
        return False, None
    eocd += tail_start
    cd_size, cd_off = _u("<II", src, eocd + 12)
    if 0xFFFFFFFF in (cd_size, cd_off) and eocd >= 20 and _peek(src, eocd - 20, 4) == b"PK\x06\x07":
        (rec,) = _u("<Q", src, eocd - 12)
        if rec + 56 <= size and _peek(src, rec, 4) == b"PK\x06\x06":
            cd_size, cd_off = _u("<QQ", src, rec + 40)
    if cd_size > MAX_CD_SCAN_BYTES or cd_off + cd_size > size:
        return False, None
    is_torch, pkl = False, None
    cd = _peek(src, cd_off, cd_size)
    pos, end = 0, len(cd)
    while pos + 46 <= end and cd[pos : pos + 4] == b"PK\x01\x02":
        (method,) = struct.unpack_from("<H", cd, pos + 10)
        csize, _usize, nlen, xlen, klen = struct.unpack_from("<IIHHH", cd, pos + 20)
        (lho,) = struct.unpack_from("<I", cd, pos + 42)
        name = cd[pos + 46 : pos + 46 + nlen].decode("utf-8", "replace")
        extra = cd[pos + 46 + nlen : pos + 46 + nlen + xlen]
        if extra[:2] == b"\x01\x00" and len(extra) >= 4:  # zip64: the sentinel fields, in order
            values = list(struct.unpack_from(f"<{max(0, min(3, (len(extra) - 4) // 8))}Q", extra, 4))
            if _usize == 0xFFFFFFFF and values:
                values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            if lho == 0xFFFFFFFF and values:
                lho = values.pop(0)
        if _TORCH_MEMBER.match(name):
            is_torch = True
            if name.endswith("/data.pkl") and method == 0 and pkl is None and lho + 30 <= size:
                lnlen, lxlen = _u("<HH", src, lho + 26)
                start = lho + 30 + lnlen + lxlen
                pkl = _peek(src, start, min(csize, MAX_PICKLE_SCAN_BYTES))
        pos += 46 + nlen + xlen + klen
    return is_torch, pkl


def check_not_legacy(src: Any) -> None:
    """Raise :class:`LegacyFormatError` if ``src`` is a pickle, torch checkpoint or legacy .distill."""
    head = _peek(src, 0, 16)
    if is_raw_pickle(head):
        if pickle_holds_v1_marker(_peek(src, 0, MAX_PICKLE_SCAN_BYTES)):
            raise LegacyFormatError(V1_MESSAGE, code="legacy-distill-v1")
        what = "This file is a legacy torch.save stream" if head.startswith(TORCH_LEGACY_MAGIC) else "This file is a pickle"
        raise LegacyFormatError(PICKLE_MESSAGE.format(what=what), code="pickle")
    if head.startswith(b"PK\x03\x04") and _peek(src, 30, 16) != b"manifest.msgpack":
        is_torch, pkl = _torch_zip_pickle(src)
        if is_torch:
            if pkl is not None and pickle_holds_v1_marker(pkl):
                raise LegacyFormatError(V1_MESSAGE, code="legacy-distill-v1")
            raise LegacyFormatError(PICKLE_MESSAGE.format(what="This file is a torch.save checkpoint (a zip holding a pickle)"), code="pickle")
