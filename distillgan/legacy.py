"""Recognising pickles and legacy .distill files by their bytes — never unpickling (FORMAT.md §7).

The v1 marker search walks pickle opcodes with the table of FORMAT.md §7 (:data:`OPCODES`):
it decodes only the arguments of string opcodes, imports and executes nothing, and stops
within a byte, opcode and pickle budget.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from .errors import LegacyFormatError
from .manifest import LEGACY_FORMAT_MARKER

V1_MESSAGE = "This model was saved in v1 format which is no longer supported. Please retrain your model."
PICKLE_MESSAGE = (
    "{what}: distillgan never unpickles files, because loading a pickle can run arbitrary code. "
    "Convert it once with `distillgan convert FILE` (it reads the file without running anything in it); "
    "a models folder of such files converts in place, index and ids kept, with distillgan.convert_folder(folder) "
    "in Python or `distillgan convert --dir FOLDER FOLDER`; or re-save the model with distillgan.save_model "
    "from the program that trained it."
)

MAX_PICKLE_SCAN_BYTES = 16 << 20  # FORMAT.md §7: how much of a pickle is walked for the v1 marker
MAX_PICKLE_OPS = 200_000  # FORMAT.md §7: opcodes walked at most (bounds the time spent)
MAX_PICKLES = 8  # the pre-1.6 torch stream is several pickles in a row
MAX_CD_SCAN_BYTES = 16 << 20  # central directory bytes walked when looking for a torch checkpoint
TORCH_LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")  # pickled torch magic number
# FORMAT.md §7: matched as bytes against the whole name ([0-9], not \d; fullmatch, not $)
_TORCH_MEMBER = re.compile(rb"[^/]+/(data\.pkl|version|\.data/version|byteorder|data/[0-9]+|\.format_version|\.storage_alignment)")
MARKER = LEGACY_FORMAT_MARKER.encode("ascii")

# FORMAT.md §7, the opcode table: opcode byte -> argument kind. Kinds: "" none; "1" "2" "4" "8" that many
# bytes; "nl" bytes up to and including the next LF; "nl2" two such lines; "S" a quoted line with escapes
# (STRING); "V" a raw-unicode-escape line (UNICODE); "n1" "n4" "n8" an unsigned little-endian length of
# 1/4/8 bytes, then that many bytes; "s4" a signed 4-byte length (negative: malformed), then the bytes.
# A trailing "u" marks UTF-8 text (invalid UTF-8 is malformed; encoded surrogates are allowed), a
# trailing "*" a string opcode whose argument is compared with the marker.
OPCODES: dict[int, tuple[str, str]] = {
    0x28: ("MARK", ""), 0x29: ("EMPTY_TUPLE", ""), 0x2E: ("STOP", ""), 0x30: ("POP", ""), 0x31: ("POP_MARK", ""),
    0x32: ("DUP", ""), 0x42: ("BINBYTES", "n4*"), 0x43: ("SHORT_BINBYTES", "n1*"), 0x46: ("FLOAT", "nl"),
    0x47: ("BINFLOAT", "8"), 0x49: ("INT", "nl"), 0x4A: ("BININT", "4"), 0x4B: ("BININT1", "1"), 0x4C: ("LONG", "nl"),
    0x4D: ("BININT2", "2"), 0x4E: ("NONE", ""), 0x50: ("PERSID", "nl"), 0x51: ("BINPERSID", ""), 0x52: ("REDUCE", ""),
    0x53: ("STRING", "S*"), 0x54: ("BINSTRING", "s4*"), 0x55: ("SHORT_BINSTRING", "n1*"), 0x56: ("UNICODE", "V*"),
    0x58: ("BINUNICODE", "n4u*"), 0x5D: ("EMPTY_LIST", ""), 0x61: ("APPEND", ""), 0x62: ("BUILD", ""),
    0x63: ("GLOBAL", "nl2"), 0x64: ("DICT", ""), 0x65: ("APPENDS", ""), 0x67: ("GET", "nl"), 0x68: ("BINGET", "1"),
    0x69: ("INST", "nl2"), 0x6A: ("LONG_BINGET", "4"), 0x6C: ("LIST", ""), 0x6F: ("OBJ", ""), 0x70: ("PUT", "nl"),
    0x71: ("BINPUT", "1"), 0x72: ("LONG_BINPUT", "4"), 0x73: ("SETITEM", ""), 0x74: ("TUPLE", ""), 0x75: ("SETITEMS", ""),
    0x7D: ("EMPTY_DICT", ""), 0x80: ("PROTO", "1"), 0x81: ("NEWOBJ", ""), 0x82: ("EXT1", "1"), 0x83: ("EXT2", "2"),
    0x84: ("EXT4", "4"), 0x85: ("TUPLE1", ""), 0x86: ("TUPLE2", ""), 0x87: ("TUPLE3", ""), 0x88: ("NEWTRUE", ""),
    0x89: ("NEWFALSE", ""), 0x8A: ("LONG1", "n1"), 0x8B: ("LONG4", "s4"), 0x8C: ("SHORT_BINUNICODE", "n1u*"),
    0x8D: ("BINUNICODE8", "n8u*"), 0x8E: ("BINBYTES8", "n8*"), 0x8F: ("EMPTY_SET", ""), 0x90: ("ADDITEMS", ""),
    0x91: ("FROZENSET", ""), 0x92: ("NEWOBJ_EX", ""), 0x93: ("STACK_GLOBAL", ""), 0x94: ("MEMOIZE", ""),
    0x95: ("FRAME", "8"), 0x96: ("BYTEARRAY8", "n8"), 0x97: ("NEXT_BUFFER", ""), 0x98: ("READONLY_BUFFER", ""),
}
_SIMPLE_ESCAPES = {ord("\\"): 0x5C, ord("'"): 0x27, ord('"'): 0x22, ord("a"): 0x07, ord("b"): 0x08, ord("f"): 0x0C,
                   ord("n"): 0x0A, ord("r"): 0x0D, ord("t"): 0x09, ord("v"): 0x0B}
_HEX = b"0123456789abcdefABCDEF"


class _Malformed(Exception):
    """The pickle cannot be walked further (FORMAT.md §7: the search ends with no marker)."""


def _string_escapes(body: bytes) -> bytes:
    """STRING's argument between its quotes, escapes decoded as FORMAT.md §7 says."""
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c != 0x5C:
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise _Malformed("a backslash at the end of a STRING")
        e = body[i + 1]
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i += 2
        elif e == 0x0A:  # backslash-newline: dropped
            i += 2
        elif 0x30 <= e <= 0x37:  # one to three octal digits
            j = i + 1
            while j < n and j < i + 4 and 0x30 <= body[j] <= 0x37:
                j += 1
            out.append(int(body[i + 1 : j], 8) & 0xFF)
            i = j
        elif e == ord("x"):
            digits = body[i + 2 : i + 4]
            if len(digits) != 2 or not all(b in _HEX for b in digits):
                raise _Malformed("\\x without two hex digits in a STRING")
            out.append(int(digits, 16))
            i += 4
        else:  # any other escape stands for itself, backslash included
            out += body[i : i + 2]
            i += 2
    return bytes(out)


def _raw_unicode_escape(line: bytes) -> str:
    """UNICODE's argument: Latin-1 text with \\uXXXX and \\UXXXXXXXX escapes (FORMAT.md §7)."""
    out = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == 0x5C and i + 1 < n and line[i + 1] in (ord("u"), ord("U")):
            # an odd run of backslashes escapes; an even run is literal backslashes
            run = 1
            while i - run >= 0 and line[i - run] == 0x5C:
                run += 1
            if run % 2 == 1:
                width = 4 if line[i + 1] == ord("u") else 8
                digits = line[i + 2 : i + 2 + width]
                if len(digits) != width or not all(b in _HEX for b in digits):
                    raise _Malformed("a truncated \\u escape in UNICODE")
                code = int(digits, 16)
                if code > 0x10FFFF:
                    raise _Malformed("a \\U escape beyond U+10FFFF in UNICODE")
                out.append(chr(code))
                i += 2 + width
                continue
        out.append(chr(c))
        i += 1
    return "".join(out)


def _utf8_surrogatepass(data: bytes) -> bool:
    try:
        data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return False
    return True


def is_raw_pickle(head: bytes) -> bool:
    """A pickle of protocol 2..5 starts with PROTO (0x80) and its number."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def pickle_holds_v1_marker(data: bytes) -> bool:
    """Walk up to MAX_PICKLES consecutive pickles looking for the string "distill_model" (FORMAT.md §7)."""
    data = data[:MAX_PICKLE_SCAN_BYTES]
    try:
        return _find_marker(data)
    except _Malformed:
        return False


def _line(data: bytes, pos: int) -> int:
    """The position after the LF that ends the line starting at ``pos``."""
    end = data.find(b"\n", pos)
    if end < 0:
        raise _Malformed("a line argument without LF")
    return end + 1


def _find_marker(data: bytes) -> bool:
    n = len(data)
    pos = 0
    budget = MAX_PICKLE_OPS
    for _ in range(MAX_PICKLES):
        while True:  # one pickle: opcodes up to STOP
            if pos >= n:
                raise _Malformed("the data ends inside a pickle")
            budget -= 1
            if budget < 0:
                return False
            entry = OPCODES.get(data[pos])
            if entry is None:
                raise _Malformed(f"unknown opcode 0x{data[pos]:02x}")
            name, kind = entry
            pos += 1
            arg: bytes | str | None = None
            if kind == "":
                pass
            elif kind in ("1", "2", "4", "8"):
                pos += int(kind)
                if pos > n:
                    raise _Malformed("a truncated argument")
            elif kind == "nl":
                pos = _line(data, pos)
            elif kind == "nl2":
                pos = _line(data, _line(data, pos))
            elif kind == "S*":
                end = _line(data, pos)
                line = data[pos : end - 1]
                if len(line) < 2 or line[0] not in b"'\"" or line[-1] != line[0]:
                    raise _Malformed("a STRING argument not in matching quotes")
                arg = _string_escapes(line[1:-1])
                pos = end
            elif kind == "V*":
                end = _line(data, pos)
                arg = _raw_unicode_escape(data[pos : end - 1])
                pos = end
            else:  # a length, then that many bytes
                width = {"n1": 1, "n4": 4, "s4": 4, "n8": 8}[kind[:2]]
                if pos + width > n:
                    raise _Malformed("a truncated length")
                size = int.from_bytes(data[pos : pos + width], "little", signed=kind.startswith("s"))
                if size < 0:
                    raise _Malformed("a negative length")
                pos += width
                if pos + size > n:
                    raise _Malformed("a truncated argument")
                arg = data[pos : pos + size]
                pos += size
                if "u" in kind and not _utf8_surrogatepass(arg):
                    raise _Malformed("a text argument that is not UTF-8")
            if kind.endswith("*") and (arg == MARKER or arg == LEGACY_FORMAT_MARKER):
                return True
            if name == "STOP":
                break
        if pos >= n:
            return False  # the data ends right after a pickle
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
        name = cd[pos + 46 : pos + 46 + nlen]
        extra = cd[pos + 46 + nlen : pos + 46 + nlen + xlen]
        if extra[:2] == b"\x01\x00" and len(extra) >= 4:  # zip64: the sentinel fields, in order
            values = list(struct.unpack_from(f"<{max(0, min(3, (len(extra) - 4) // 8))}Q", extra, 4))
            if _usize == 0xFFFFFFFF and values:
                values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            if lho == 0xFFFFFFFF and values:
                lho = values.pop(0)
        if _TORCH_MEMBER.fullmatch(name):
            is_torch = True
            if name.endswith(b"/data.pkl") and method == 0 and pkl is None and lho + 30 <= size:
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
