"""The strict zip profile of a .distillgan file (FORMAT.md §3).

Reading accepts exactly one layout — members in a fixed order, STORED,
contiguous from offset 0 to the end record, local headers agreeing with the
central directory, zip64 records exactly when needed — so that every
conforming zip reader sees the same members we do. Writing produces that
layout deterministically and streams member data, computing CRC-32 on a
second thread while the first one writes.

Structures and field names follow PKWARE APPNOTE 6.3.10 (cited as §4.x).
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from .crc import crc32
from .errors import ContainerError, ErrorCode, describe
from .source import Source

_HAS_WRITEV = hasattr(os, "writev")  # POSIX; not on Windows

# --- constants (FORMAT.md §3, APPNOTE §4.3) ---------------------------------
MANIFEST_NAME = "manifest.msgpack"
MODEL_NAME = "model.safetensors"
VOCODER_NAME = "vocoder.safetensors"
MEMBER_ORDER = (MANIFEST_NAME, MODEL_NAME, VOCODER_NAME)  # FORMAT.md §3.1
MAX_MEMBERS = 16  # FORMAT.md §8: entries a reader parses before it knows the format version
_MEMBER_NAME = re.compile(rb"(?!\.\.?\Z)[a-z0-9._-]{1,64}")  # FORMAT.md §3.1, matched against the whole name

ALIGNMENT = 64  # FORMAT.md §3.4: tensor member data starts at a multiple of this
PADDING_EXTRA_ID = 0x6764  # FORMAT.md §3.4: "dg" padding extra field
ZIP64_EXTRA_ID = 0x0001  # APPNOTE §4.5.3

LOCAL_SIG = b"PK\x03\x04"  # APPNOTE §4.3.7
CENTRAL_SIG = b"PK\x01\x02"  # APPNOTE §4.3.12
EOCD_SIG = b"PK\x05\x06"  # APPNOTE §4.3.16
ZIP64_EOCD_SIG = b"PK\x06\x06"  # APPNOTE §4.3.14
ZIP64_LOCATOR_SIG = b"PK\x06\x07"  # APPNOTE §4.3.15

LOCAL_FMT = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
CENTRAL_FMT = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
EOCD_FMT = struct.Struct("<4sHHHHIIH")  # 22 bytes
ZIP64_EOCD_FMT = struct.Struct("<4sQHHIIQQQQ")  # 56 bytes
ZIP64_LOCATOR_FMT = struct.Struct("<4sIQI")  # 20 bytes

VERSION_PLAIN = 20  # "version needed to extract" without zip64 (APPNOTE §4.4.3)
VERSION_ZIP64 = 45
MADE_BY = (3 << 8) | VERSION_ZIP64  # host Unix, spec 4.5
EXTERNAL_ATTR = (stat.S_IFREG | 0o644) << 16
ALLOWED_FLAGS = 0x0800  # only bit 11 (UTF-8 names) may be set (FORMAT.md §3.2)
DOS_TIME = 0  # 00:00:00
DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01: fixed, for byte-identical output
U16_MAX = 0xFFFF
U32_MAX = 0xFFFFFFFF  # sentinel: the value lives in a zip64 record

MAX_CENTRAL_DIRECTORY_BYTES = 64 << 10  # FORMAT.md §8: three entries need < 1 KiB
MIN_ARCHIVE_BYTES = LOCAL_FMT.size * 2 + CENTRAL_FMT.size * 2 + EOCD_FMT.size

_THREAD_CRC_BYTES = 1 << 20  # chunks from this size have their CRC-32 computed on the worker thread
_MAX_PENDING = 64 << 20  # bytes written but not yet through CRC (bounds memory)


@dataclass(frozen=True)
class Member:
    """One member as located by the reader or written by the writer."""

    name: str
    header_offset: int
    data_offset: int
    size: int
    crc32: int

    @property
    def data_end(self) -> int:
        return self.data_offset + self.size


# --- reading: three parsers over bytes, one per part of FORMAT.md §13, and a thin driver --------------
#
# Each parser takes the bytes the driver read and returns named records, raising ContainerError at the
# first check of FORMAT.md §13 that fails; check labels (E1, D5, LH7, ...) are §13's. Only
# read_container reads from the source.

END_RECORDS_MAX_BYTES = ZIP64_EOCD_FMT.size + ZIP64_LOCATOR_FMT.size + EOCD_FMT.size  # 98: the most end records there can be


@dataclass(slots=True)  # not frozen: a frozen dataclass takes 4x as long to build, and the reader builds 7 per file
class EndRecords:
    """The end records (FORMAT.md §3.5, §13.2), with the zip64 values in place of their 32-bit fields."""

    entry_count: int
    directory_offset: int
    directory_size: int
    directory_end: int  # where the end records start: the zip64 end record if there is one, else the end record
    zip64: bool


@dataclass(slots=True)
class CentralEntry:
    """One central directory entry (APPNOTE §4.3.12) that passed FORMAT.md §13.3, zip64 values in place."""

    name: str
    version_needed: int
    flags: int
    time: int
    date: int
    crc32: int
    size: int  # compressed = uncompressed: members are STORED
    header_offset: int


@dataclass(slots=True)
class LocalHeader:
    """The 30 fixed bytes of a local header (APPNOTE §4.3.7) at ``header_offset``."""

    header_offset: int
    version_needed: int
    flags: int
    method: int
    time: int
    date: int
    crc32: int
    compressed_size: int
    size: int
    name_length: int
    extra_length: int

    @property
    def variable_offset(self) -> int:
        return self.header_offset + LOCAL_FMT.size

    @property
    def data_offset(self) -> int:
        return self.variable_offset + self.name_length + self.extra_length


def _fail(what: str, code: ErrorCode, *, where: str = "", section: str = "") -> ContainerError:
    return ContainerError(describe(what, where=where, section=section), code=code)


def _parse_zip64_extra(data: bytes, want: Sequence[str], where: str) -> dict[str, int]:
    """Parse an extra block that must be exactly one zip64 field with ``want``."""
    if len(data) < 4:
        raise _fail(f"extra field of {len(data)} bytes is too short", "zip-extra-field", where=where)
    hid, hlen = struct.unpack_from("<HH", data, 0)
    if hid != ZIP64_EXTRA_ID or hlen != 8 * len(want) or len(data) < 4 + hlen:
        raise _fail(
            f"expected a zip64 extra field (0x0001) holding {', '.join(want)}; found id 0x{hid:04x} of {hlen} bytes",
            "zip64",
            where=where,
            section="§3.3",
        )
    values = struct.unpack_from(f"<{len(want)}Q", data, 4)
    return dict(zip(want, values, strict=True))


def check_start(head: bytes, size: int) -> None:
    """FORMAT.md §13.1 Z1–Z2: ``head``, the file's first 4 bytes (fewer if it is shorter), and its ``size``."""
    if head != LOCAL_SIG:
        raise _fail(
            f"first bytes are {head!r}; expected a local file header 'PK\\x03\\x04' at offset 0", "not-zip", section="§3.1"
        )
    if size < MIN_ARCHIVE_BYTES:
        raise _fail(f"file is {size} bytes; a valid archive has at least {MIN_ARCHIVE_BYTES}", "truncated")


def parse_end_records(tail: bytes, size: int) -> EndRecords:
    """FORMAT.md §13.2 E1–E8 over ``tail``, the last ``min(size, END_RECORDS_MAX_BYTES)`` bytes of a file of ``size``."""
    base = size - len(tail)

    def at(pos: int, n: int) -> bytes:
        return tail[pos - base : pos - base + n]

    # E1–E4: the end of central directory record is exactly the last 22 bytes, with no comment (§3.5)
    eocd_pos = size - EOCD_FMT.size
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_off, comment_len = EOCD_FMT.unpack(at(eocd_pos, EOCD_FMT.size))
    if sig != EOCD_SIG:
        raise _fail(
            "no end of central directory record in the last 22 bytes: the file is truncated, "
            "has trailing bytes, or has an archive comment",
            "zip-eocd",
            section="§3.5",
        )
    if comment_len != 0:
        raise _fail(f"archive comment of {comment_len} bytes; comments are not allowed", "zip-comment", section="§3.5")
    if disk != 0 or cd_disk != 0:
        raise _fail(f"end record names disk {disk}/{cd_disk}; expected 0/0", "zip-eocd", section="§3.5")
    if n_disk != n_total:
        raise _fail(f"end record counts {n_disk} entries on this disk but {n_total} in total", "zip-eocd")

    # E5: the zip64 end records, exactly when a field of the end record holds its sentinel
    cd_end = eocd_pos
    zip64 = U32_MAX in (cd_size, cd_off) or n_total == U16_MAX
    if zip64:
        if eocd_pos < ZIP64_LOCATOR_FMT.size + ZIP64_EOCD_FMT.size:
            raise _fail("end record asks for zip64 but there is no room for its records", "zip64")
        loc_pos = eocd_pos - ZIP64_LOCATOR_FMT.size
        lsig, z_disk, z_off, n_disks = ZIP64_LOCATOR_FMT.unpack(at(loc_pos, ZIP64_LOCATOR_FMT.size))
        rec_pos = loc_pos - ZIP64_EOCD_FMT.size
        if lsig != ZIP64_LOCATOR_SIG or z_disk != 0 or n_disks != 1:
            raise _fail("zip64 end of central directory locator missing or malformed", "zip64", section="§3.5")
        if z_off != rec_pos:
            raise _fail(
                f"zip64 locator points at offset {z_off}; the zip64 end record must immediately precede it at {rec_pos}",
                "zip64",
            )
        (rsig, rsize, _made, _need, rdisk, rcd_disk, rn_disk, rn_total, r_cd_size, r_cd_off) = ZIP64_EOCD_FMT.unpack(
            at(rec_pos, ZIP64_EOCD_FMT.size)
        )
        if rsig != ZIP64_EOCD_SIG or rsize != ZIP64_EOCD_FMT.size - 12 or rdisk != 0 or rcd_disk != 0:
            raise _fail("zip64 end of central directory record malformed", "zip64", section="§3.5")
        if rn_disk != rn_total:
            raise _fail("zip64 end record entry counts disagree", "zip64")
        for label, short, wide, limit in (
            ("entry count", n_total, rn_total, U16_MAX),
            ("directory size", cd_size, r_cd_size, U32_MAX),
            ("directory offset", cd_off, r_cd_off, U32_MAX),
        ):
            if short != min(wide, limit):
                raise _fail(
                    f"end record {label} is {short}; with the zip64 value {wide} it must be {min(wide, limit)}",
                    "zip64",
                )
        # Zip64 "only when needed" follows from the loop above: we get here only because a short field
        # holds its sentinel, and then the zip64 value must be >= that limit (entry counts > 16 fail later).
        n_total, cd_size, cd_off = rn_total, r_cd_size, r_cd_off
        cd_end = rec_pos

    # E6–E8
    if not 2 <= n_total <= MAX_MEMBERS:
        raise _fail(f"archive has {n_total} entries; expected 2 or 3", "zip-entry-count", section="§3.1")
    if cd_off + cd_size != cd_end or cd_off > cd_end:
        raise _fail(
            f"central directory at {cd_off} of {cd_size} bytes does not end where the end records start ({cd_end})",
            "zip-layout",
        )
    if cd_size > MAX_CENTRAL_DIRECTORY_BYTES:
        raise _fail(f"central directory of {cd_size} bytes; the limit is {MAX_CENTRAL_DIRECTORY_BYTES}", "zip-layout", section="§8")
    return EndRecords(n_total, cd_off, cd_size, cd_end, zip64)


def parse_central_directory(data: bytes, end: EndRecords) -> list[CentralEntry]:
    """FORMAT.md §13.3 D1–D16 over ``data``, the ``end.directory_size`` bytes of the central directory."""
    entries: list[CentralEntry] = []
    names: set[bytes] = set()
    pos = 0
    for index in range(end.entry_count):
        if pos + CENTRAL_FMT.size > len(data):  # D1
            raise _fail(f"central directory entry {index} runs past the directory", "zip-layout")
        (csig, made_by, need, flags, method, mtime, mdate, crc, csize, usize, nlen, xlen, klen, disk_start, iattr, xattr, lho) = (
            CENTRAL_FMT.unpack_from(data, pos)
        )
        if csig != CENTRAL_SIG:  # D2
            raise _fail(f"central directory entry {index} has signature {csig!r}; expected 'PK\\x01\\x02'", "zip-layout")
        var_end = pos + CENTRAL_FMT.size + nlen + xlen + klen
        if var_end > len(data):  # D3
            raise _fail(f"central directory entry {index} runs past the directory", "zip-layout")
        rel = pos + CENTRAL_FMT.size
        raw_name = data[rel : rel + nlen]
        extra = data[rel + nlen : rel + nlen + xlen]
        if index == 0 and raw_name != MANIFEST_NAME.encode("ascii"):  # D4
            raise _fail(
                f"member 0 is named {raw_name!r}; expected {MANIFEST_NAME!r}", "zip-member-name", section="§3.1"
            )
        # D5: later names are checked against the v1 set once the manifest's version is known (§4.5);
        # here only that they are plain, distinct file names.
        if not _MEMBER_NAME.fullmatch(raw_name) or raw_name in names:
            raise _fail(
                f"member {index} is named {raw_name!r}; names are distinct, of [a-z0-9._-] and not '.' or '..'",
                "zip-member-name",
                section="§3.1",
            )
        names.add(raw_name)
        name = raw_name.decode("ascii")
        where = f"central directory entry {name!r}"
        if klen != 0:  # D6
            raise _fail(f"file comment of {klen} bytes; not allowed", "zip-comment", where=where)
        if disk_start != 0 or iattr != 0:  # D7
            raise _fail(f"disk {disk_start}, internal attributes {iattr}; expected 0 and 0", "zip-attributes", where=where)
        if made_by >> 8 != MADE_BY >> 8 or xattr != EXTERNAL_ATTR:  # D8
            # other readers act on these fields (unzip skips a volume label, bsdtar restores setuid bits):
            # only the one value writers produce is accepted, so every reader extracts the same regular file
            raise _fail(
                f"version made by 0x{made_by:04x} (host {made_by >> 8}), external attributes 0x{xattr:08x}; "
                f"expected host {MADE_BY >> 8} (Unix) and 0x{EXTERNAL_ATTR:08x}, a regular file of mode 0644",
                "zip-attributes",
                where=where,
                section="§3.2",
            )
        if flags & ~ALLOWED_FLAGS:  # D9
            raise _fail(
                f"general purpose flags 0x{flags:04x}; only bit 11 may be set (no encryption, no data descriptor)",
                "zip-flags",
                where=where,
                section="§3.2",
            )
        if method != 0:  # D10
            raise _fail(f"compression method {method}; expected 0 (STORED)", "zip-method", where=where, section="§3.2")
        want = [k for k, v in (("usize", usize), ("csize", csize), ("offset", lho)) if v == U32_MAX]  # D11
        z = _parse_zip64_extra(extra, want, where) if want else {}
        if not want and xlen != 0:
            raise _fail(f"unexpected extra field of {xlen} bytes", "zip-extra-field", where=where, section="§3.3")
        if want and 4 + 8 * len(want) != xlen:
            raise _fail("extra field holds more than the zip64 record", "zip-extra-field", where=where)
        usize, csize, lho = z.get("usize", usize), z.get("csize", csize), z.get("offset", lho)
        if ("usize" in z) != ("csize" in z):  # D12
            raise _fail("zip64 must carry both sizes", "zip64", where=where)
        for key in ("usize", "offset"):  # D13
            if key in z and z[key] < U32_MAX:
                raise _fail(f"zip64 {key} {z[key]} fits in 32 bits; zip64 only when needed", "zip64", where=where, section="§3.3")
        if csize != usize:  # D14
            raise _fail(f"compressed size {csize} differs from size {usize} for a STORED member", "zip-method", where=where)
        uses64 = bool(z) or usize >= U32_MAX
        if need != (VERSION_ZIP64 if uses64 else VERSION_PLAIN):  # D15
            raise _fail(
                f"version needed {need}; expected {VERSION_ZIP64 if uses64 else VERSION_PLAIN}", "zip-version", where=where
            )
        entries.append(CentralEntry(name, need, flags, mtime, mdate, crc, usize, lho))
        pos = var_end
    if pos != len(data):  # D16
        raise _fail(f"central directory has {len(data) - pos} bytes after its last entry", "zip-layout")
    return entries


def locate_local_header(entry: CentralEntry, previous_end: int, end: EndRecords) -> int:
    """FORMAT.md §13.4 LH1–LH2, before its bytes are read: the offset of ``entry``'s local header.

    ``previous_end`` is where the previous member's data ends (0 for the first member).
    """
    where = f"local header of {entry.name!r}"
    if entry.header_offset != previous_end:
        raise _fail(
            f"{where} is at offset {entry.header_offset}; expected {previous_end} "
            "(members are contiguous from offset 0)",
            "zip-layout",
            section="§3.1",
        )
    if entry.header_offset + LOCAL_FMT.size > end.directory_offset:
        raise _fail(f"{where} runs into the central directory", "zip-layout")
    return entry.header_offset


def parse_local_header(fixed: bytes, entry: CentralEntry, end: EndRecords) -> LocalHeader:
    """FORMAT.md §13.4 LH3–LH4 over ``fixed``, the 30 bytes at ``entry.header_offset``."""
    header = LocalHeader(entry.header_offset, *LOCAL_FMT.unpack(fixed)[1:])
    where = f"local header of {entry.name!r}"
    if fixed[:4] != LOCAL_SIG:
        raise _fail(f"signature {fixed[:4]!r}; expected 'PK\\x03\\x04'", "zip-layout", where=where)
    if header.data_offset > end.directory_offset:
        raise _fail(f"{where} runs into the central directory", "zip-layout")
    return header


def check_local_header(index: int, entry: CentralEntry, header: LocalHeader, variable: bytes, end: EndRecords) -> Member:
    """FORMAT.md §13.4 LH5–LH9 over ``variable``, the name and extra field after ``header``; the member it locates."""
    name, usize = entry.name, entry.size
    where = f"local header of {name!r}"
    lname = variable[: header.name_length]
    if lname != name.encode("ascii"):  # LH5
        raise _fail(f"local header name {lname!r} differs from central directory name {name!r}", "zip-header-mismatch")
    mismatches = [  # LH6
        label
        for label, a, b in (
            ("version needed", header.version_needed, entry.version_needed),
            ("flags", header.flags, entry.flags),
            ("method", header.method, 0),
            ("time", header.time, entry.time),
            ("date", header.date, entry.date),
            ("crc-32", header.crc32, entry.crc32),
        )
        if a != b
    ]
    if mismatches:
        raise _fail(f"{where} differs from the central directory in {', '.join(mismatches)}", "zip-header-mismatch")
    rest = variable[header.name_length :]
    if usize >= U32_MAX:  # LH7
        if header.compressed_size != U32_MAX or header.size != U32_MAX:
            raise _fail("sizes must be 0xFFFFFFFF with a zip64 extra field", "zip64", where=where)
        z = _parse_zip64_extra(rest[:20], ["usize", "csize"], where)
        if z["usize"] != usize or z["csize"] != usize:
            raise _fail("zip64 sizes differ from the central directory", "zip-header-mismatch", where=where)
        rest = rest[20:]
    elif header.compressed_size != usize or header.size != usize:
        raise _fail(
            f"sizes {header.compressed_size}/{header.size} differ from the central directory's {usize}", "zip-header-mismatch", where=where
        )
    data_offset = header.data_offset
    if index == 0:  # LH8
        if header.extra_length != 0:
            raise _fail("the manifest's local header has an extra field; none is allowed", "zip-extra-field", where=where, section="§3.4")
    else:
        pad = (-(data_offset - len(rest) + 4)) % ALIGNMENT
        if (
            len(rest) < 4
            or struct.unpack_from("<HH", rest, 0) != (PADDING_EXTRA_ID, len(rest) - 4)
            or len(rest) - 4 != pad
            or rest[4:].count(0) != len(rest) - 4
        ):
            raise _fail(
                f"expected a padding extra field 0x{PADDING_EXTRA_ID:04x} of {pad} zero bytes so that "
                f"data starts at a multiple of {ALIGNMENT}",
                "zip-alignment",
                where=where,
                section="§3.4",
            )
    if data_offset + usize > end.directory_offset:  # LH9
        raise _fail(f"member {name!r} of {usize} bytes runs past the start of the central directory", "zip-layout")
    return Member(name, header.header_offset, data_offset, usize, entry.crc32)


def check_members_end(members: Sequence[Member], end: EndRecords) -> None:
    """FORMAT.md §13.4 LH10: the last member's data ends exactly where the directory starts."""
    last = members[-1].data_end
    if last != end.directory_offset:
        raise _fail(f"{end.directory_offset - last} bytes between the last member and the central directory", "zip-layout")


def read_container(src: Source) -> list[Member]:
    """Validate the zip profile of ``src`` and return its members in order.

    Reads only the end records, the central directory and the local headers, and checks them in
    FORMAT.md §13's order. Raises :class:`ContainerError` for any departure from FORMAT.md §3.
    """
    size = src.size
    check_start(src.read(0, min(4, size)), size)
    tail = min(size, END_RECORDS_MAX_BYTES)
    end = parse_end_records(src.read(size - tail, tail), size)
    entries = parse_central_directory(src.read(end.directory_offset, end.directory_size), end)
    members: list[Member] = []
    for index, entry in enumerate(entries):
        offset = locate_local_header(entry, members[-1].data_end if members else 0, end)
        header = parse_local_header(src.read(offset, LOCAL_FMT.size), entry, end)
        variable = src.read(header.variable_offset, header.name_length + header.extra_length)
        members.append(check_local_header(index, entry, header, variable, end))
    check_members_end(members, end)
    return members


# --- writing ----------------------------------------------------------------


def _write_all(f: BinaryIO, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = f.write(view)
        if n is None or n <= 0:
            raise OSError("short write")
        view = view[n:]


def _writev_all(f: BinaryIO, views: list[memoryview]) -> None:
    """Write ``views`` in order: one ``os.writev`` where the platform has it and ``f`` is an unbuffered
    file (nothing of ours is waiting in a buffer), else one write of their concatenation (a batch is
    a few MiB at most: Windows, buffered and in-memory files)."""
    if not (_HAS_WRITEV and isinstance(f, io.FileIO)):
        _write_all(f, b"".join(views))
        return
    fd = f.fileno()
    todo = [v.cast("B") for v in views]
    while todo:
        n = os.writev(fd, todo)
        if n <= 0:
            raise OSError("short write")
        while n:  # drop what was written: whole views, then the front of a partly written one
            if n >= todo[0].nbytes:
                n -= todo[0].nbytes
                todo.pop(0)
            else:
                todo[0] = todo[0][n:]
                n = 0


class ContainerWriter:
    """Write the members of one archive, in order, into a seekable file.

    A small state machine: ``write_member`` for each name of MEMBER_ORDER in
    turn (the vocoder may be skipped), then ``finish`` writes the central
    directory and end records. ``f`` must be positioned at offset 0.
    """

    def __init__(self, f: BinaryIO, *, tick: Callable[[int], None] | None = None) -> None:
        self._f = f
        self._tick = tick
        self._offset = 0
        self._members: list[Member] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distillgan-crc")
        self._finished = False

    def write_member(self, name: str, size: int, chunks: Iterable[bytes | memoryview | list[memoryview]]) -> Member:
        """Write one member of ``size`` bytes taken from ``chunks``.

        A chunk is bytes-like, or a list of bytes-like views written in order
        with one vectored write. The writer keeps each chunk referenced until
        its CRC-32, computed on a worker thread while the data is written, is
        done, so a chunk must keep its memory valid for as long as it lives.
        """
        if self._finished:
            raise RuntimeError("archive already finished")
        index = len(self._members)
        allowed = MEMBER_ORDER[index : index + 1] if index < 2 else MEMBER_ORDER[2:3]
        if name not in allowed:
            raise RuntimeError(f"member {name!r} written out of order; expected one of {allowed}")
        lho = self._offset
        need64 = size >= U32_MAX
        name_b = name.encode("ascii")
        extra = b""
        if need64:
            extra += struct.pack("<HHQQ", ZIP64_EXTRA_ID, 16, size, size)
        if index > 0:
            base = lho + LOCAL_FMT.size + len(name_b) + len(extra) + 4
            pad = (-base) % ALIGNMENT
            extra += struct.pack("<HH", PADDING_EXTRA_ID, pad) + bytes(pad)
        uses64 = need64 or lho >= U32_MAX
        header = LOCAL_FMT.pack(
            LOCAL_SIG,
            VERSION_ZIP64 if uses64 else VERSION_PLAIN,
            0,
            0,
            DOS_TIME,
            DOS_DATE,
            0,  # CRC-32: patched once the data has streamed through
            U32_MAX if need64 else size,
            U32_MAX if need64 else size,
            len(name_b),
            len(extra),
        )
        _write_all(self._f, header + name_b + extra)
        data_offset = lho + len(header) + len(name_b) + len(extra)

        crc = self._stream(chunks, size, name)
        end = data_offset + size
        self._f.seek(lho + 14)
        _write_all(self._f, struct.pack("<I", crc))
        self._f.seek(end)
        self._offset = end
        member = Member(name, lho, data_offset, size, crc)
        self._members.append(member)
        return member

    def _stream(self, chunks: Iterable[bytes | memoryview | list[memoryview]], size: int, name: str) -> int:
        # Large chunks go through CRC-32 on the worker thread while the main thread writes them
        # (the CRC releases the GIL for its whole length). Batches of small views and small chunks
        # are summed here, after the pending work: handing them to the thread costs more than the
        # CRC, because the two threads then pass the GIL back and forth (measured at 16 MiB in 394
        # tensors: 21 ms threaded vs 12 ms inline).
        state = {"crc": 0}

        def step(chunk: bytes | memoryview) -> None:
            state["crc"] = crc32(chunk, state["crc"])

        pending: deque[tuple[Future[None], int]] = deque()
        pending_bytes = 0
        written = 0
        for chunk in chunks:
            n = sum(memoryview(v).nbytes for v in chunk) if isinstance(chunk, list) else memoryview(chunk).nbytes
            if n == 0:
                continue
            written += n
            if written > size:
                raise RuntimeError(f"member {name!r}: more than the declared {size} bytes")
            if isinstance(chunk, list) or n < _THREAD_CRC_BYTES:
                _writev_all(self._f, chunk) if isinstance(chunk, list) else _write_all(self._f, chunk)
                while pending:  # keep the order: the thread's earlier chunks first
                    pending.popleft()[0].result()
                pending_bytes = 0
                for part in chunk if isinstance(chunk, list) else (chunk,):
                    state["crc"] = crc32(part, state["crc"])
            else:
                pending.append((self._pool.submit(step, chunk), n))  # the future holds the chunk alive
                pending_bytes += n
                _write_all(self._f, chunk)
            if self._tick is not None:
                self._tick(n)
            while pending_bytes > _MAX_PENDING:
                fut, m = pending.popleft()
                fut.result()
                pending_bytes -= m
        for fut, _ in pending:
            fut.result()
        if written != size:
            raise RuntimeError(f"member {name!r}: {written} bytes written, {size} declared")
        return state["crc"]

    def finish(self) -> int:
        """Write the central directory and end records; return the file size."""
        if len(self._members) < 2:
            raise RuntimeError("an archive needs the manifest and the model member")
        self._finished = True
        self._pool.shutdown()
        cd_off = self._offset
        parts = []
        for m in self._members:
            name_b = m.name.encode("ascii")
            need64 = m.size >= U32_MAX
            off64 = m.header_offset >= U32_MAX
            extra_vals = ([m.size, m.size] if need64 else []) + ([m.header_offset] if off64 else [])
            extra = struct.pack(f"<HH{len(extra_vals)}Q", ZIP64_EXTRA_ID, 8 * len(extra_vals), *extra_vals) if extra_vals else b""
            parts.append(
                CENTRAL_FMT.pack(
                    CENTRAL_SIG,
                    MADE_BY,
                    VERSION_ZIP64 if (need64 or off64) else VERSION_PLAIN,
                    0,
                    0,
                    DOS_TIME,
                    DOS_DATE,
                    m.crc32,
                    U32_MAX if need64 else m.size,
                    U32_MAX if need64 else m.size,
                    len(name_b),
                    len(extra),
                    0,
                    0,
                    0,
                    EXTERNAL_ATTR,
                    U32_MAX if off64 else m.header_offset,
                )
                + name_b
                + extra
            )
        cd = b"".join(parts)
        cd_size = len(cd)
        tail = b""
        n = len(self._members)
        if cd_off >= U32_MAX or cd_size >= U32_MAX:
            rec_pos = cd_off + cd_size
            tail += ZIP64_EOCD_FMT.pack(ZIP64_EOCD_SIG, ZIP64_EOCD_FMT.size - 12, MADE_BY, VERSION_ZIP64, 0, 0, n, n, cd_size, cd_off)
            tail += ZIP64_LOCATOR_FMT.pack(ZIP64_LOCATOR_SIG, 0, rec_pos, 1)
        tail += EOCD_FMT.pack(EOCD_SIG, 0, 0, n, n, min(cd_size, U32_MAX), min(cd_off, U32_MAX), 0)
        _write_all(self._f, cd + tail)
        self._offset = cd_off + len(cd) + len(tail)
        return self._offset

    def abort(self) -> None:
        """Stop the CRC worker without writing the directory."""
        self._finished = True
        self._pool.shutdown(cancel_futures=True)
