"""torch zip checkpoints (torch >= 1.6): ``<prefix>/data.pkl`` plus one stored member per storage.

The zip is read once, by this module's own parser (APPNOTE 6.3.x), never by :mod:`zipfile`:
so there is one reading of the end record, of the central directory and of every member, and
the bounds checked are the bounds of what is read. The parser is strict where ``torch.save``'s
writer (miniz) is regular: the end record is the file's last 22 bytes (no comment); a zip64
end record, when present, sits right before its locator and agrees with the end record; the
central directory ends where the end records begin and holds exactly the entries they count;
members are stored or deflated, unencrypted, and do not overlap.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from .common import MAX_DIRECTORY_BYTES, MAX_SMALL_MEMBER, over_limit, show, unreadable
from .records import StorageRecord
from .session import Session
from .storages import byteswap, declare_storage, read_exactly
from .vm import load_one

_EOCD = struct.Struct("<4s4H2IH")  # APPNOTE 4.3.16: 22 bytes
_ZIP64_LOCATOR = struct.Struct("<4sIQI")  # APPNOTE 4.3.15: 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQ2H2I4Q")  # APPNOTE 4.3.14: 56 bytes (no extensible data)
_CENTRAL = struct.Struct("<4s6H3I5H2I")  # APPNOTE 4.3.12: 46 bytes
_LOCAL = struct.Struct("<4s5H3I2H")  # APPNOTE 4.3.7: 30 bytes
_STORED, _DEFLATED = 0, 8
_INFLATE_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipMember:
    """One member as the central directory and its local header describe it (read once)."""

    name: str
    method: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    data_offset: int


def read_zip_directory(f: BinaryIO, size: int, where: str) -> dict[str, ZipMember]:
    """The members of the zip ``f`` (``size`` bytes), by name; every structure checked against the others."""
    if size < _EOCD.size:
        raise unreadable(f"{where}: a zip shorter than its end record")
    eocd_at = size - _EOCD.size
    f.seek(eocd_at)
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = _EOCD.unpack(f.read(_EOCD.size))
    if sig != b"PK\x05\x06" or comment:
        raise unreadable(
            f"{where}: the zip's end record is not its last 22 bytes (a comment, or trailing bytes); torch.save writes none"
        )
    if disk or cd_disk or n_disk != n_total:
        raise unreadable(f"{where}: a multi-disk zip")
    cd_end = eocd_at
    locator_at = eocd_at - _ZIP64_LOCATOR.size
    zip64 = False
    if locator_at >= 0:
        f.seek(locator_at)
        lsig, ldisk, record_at, ndisks = _ZIP64_LOCATOR.unpack(f.read(_ZIP64_LOCATOR.size))
        zip64 = lsig == b"PK\x06\x07"
    if zip64:
        if ldisk or ndisks != 1 or record_at != locator_at - _ZIP64_EOCD.size:
            raise unreadable(
                f"{where}: the zip64 locator points to byte {record_at}; its end record must end where the locator begins"
            )
        f.seek(record_at)
        zsig, rsize, _made, _need, zdisk, zcd_disk, zn_disk, zn_total, zcd_size, zcd_offset = _ZIP64_EOCD.unpack(
            f.read(_ZIP64_EOCD.size)
        )
        if zsig != b"PK\x06\x06" or rsize != _ZIP64_EOCD.size - 12 or zdisk or zcd_disk or zn_disk != zn_total:
            raise unreadable(f"{where}: the zip64 end record at byte {record_at} is damaged or has extensible data")
        for small, big, sentinel, what in (
            (n_total, zn_total, 0xFFFF, "entry count"),
            (cd_size, zcd_size, 0xFFFFFFFF, "directory size"),
            (cd_offset, zcd_offset, 0xFFFFFFFF, "directory offset"),
        ):
            if small != sentinel and small != big:
                raise unreadable(f"{where}: the end record's {what} {small} differs from the zip64 end record's {big}")
        n_total, cd_size, cd_offset, cd_end = zn_total, zcd_size, zcd_offset, record_at
    elif 0xFFFF in (n_total,) or 0xFFFFFFFF in (cd_size, cd_offset):
        raise unreadable(f"{where}: the end record defers to a zip64 end record, and there is none")
    if cd_size > MAX_DIRECTORY_BYTES:
        raise over_limit(f"{where}: the zip's central directory is {cd_size} bytes; at most {MAX_DIRECTORY_BYTES} are read")
    if cd_offset + cd_size != cd_end:
        raise unreadable(
            f"{where}: the central directory ({cd_size} bytes at byte {cd_offset}) does not end where the end records begin ({cd_end})"
        )
    if n_total > cd_size // _CENTRAL.size:
        raise unreadable(f"{where}: {n_total} entries cannot fit a central directory of {cd_size} bytes")
    f.seek(cd_offset)
    directory = f.read(cd_size)
    members: dict[str, ZipMember] = {}
    pos = 0
    for _ in range(n_total):
        member, pos = _central_entry(f, directory, pos, cd_offset, where)
        if member.name in members:
            raise unreadable(f"{where}: the zip holds two members named {show(member.name)}")
        members[member.name] = member
    if pos != cd_size:
        raise unreadable(f"{where}: {cd_size - pos} bytes follow the {n_total} entries of the central directory")
    end = 0
    for member in sorted(members.values(), key=lambda m: m.header_offset):
        if member.header_offset < end:
            raise unreadable(f"{where}: member {show(member.name)} overlaps the member before it")
        end = member.data_offset + member.compressed_size
    return members


def _central_entry(f: BinaryIO, directory: bytes, pos: int, cd_offset: int, where: str) -> tuple[ZipMember, int]:
    if pos + _CENTRAL.size > len(directory):
        raise unreadable(f"{where}: the central directory ends inside an entry")
    (sig, _made, _need, flags, method, _time, _date, crc, csize, usize, name_len, extra_len, comment_len, disk, _iattr, _eattr,
     offset) = _CENTRAL.unpack_from(directory, pos)  # fmt: skip
    if sig != b"PK\x01\x02":
        raise unreadable(f"{where}: central directory entry at byte {cd_offset + pos} has no signature")
    start = pos + _CENTRAL.size
    pos = start + name_len + extra_len + comment_len
    if pos > len(directory):
        raise unreadable(f"{where}: the central directory ends inside an entry")
    raw_name = directory[start : start + name_len]
    name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
    if flags & 0x1:
        raise unreadable(f"{where}: member {show(name)} is encrypted")
    if method not in (_STORED, _DEFLATED):
        raise unreadable(
            f"{where}: member {show(name)} uses compression method {method}; torch checkpoints are stored or deflated"
        )
    extra = directory[start + name_len : start + name_len + extra_len]
    if 0xFFFFFFFF in (csize, usize, offset) or disk == 0xFFFF:
        usize, csize, offset = _zip64_extra(extra, usize, csize, offset, name, where)
    if disk not in (0, 0xFFFF):
        raise unreadable(f"{where}: member {show(name)} is on disk {disk}")
    f.seek(offset)
    local = f.read(_LOCAL.size)
    if len(local) != _LOCAL.size or offset + _LOCAL.size > cd_offset:
        raise unreadable(f"{where}: member {show(name)} has no local header at byte {offset}")
    lsig, _lneed, _lflags, lmethod, _ltime, _ldate, _lcrc, _lcsize, _lusize, lname_len, lextra_len = _LOCAL.unpack(local)
    if lsig != b"PK\x03\x04" or lmethod != method:
        raise unreadable(f"{where}: member {show(name)}: the local header at byte {offset} differs from the central directory")
    if f.read(lname_len) != raw_name:
        raise unreadable(f"{where}: member {show(name)}: the local header's name differs from the central directory's")
    data_offset = offset + _LOCAL.size + lname_len + lextra_len
    if data_offset + csize > cd_offset:
        raise unreadable(f"{where}: member {show(name)} runs into the central directory")
    if method == _STORED and csize != usize:
        raise unreadable(f"{where}: stored member {show(name)} declares {usize} bytes and {csize} stored")
    return ZipMember(name, method, crc, csize, usize, offset, data_offset), pos


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int, name: str, where: str) -> tuple[int, int, int]:
    """APPNOTE 4.5.3: the zip64 extra field holds, in order, the fields whose 32-bit value is the sentinel."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, n = struct.unpack_from("<2H", extra, pos)
        if tag == 0x0001:
            body = extra[pos + 4 : pos + 4 + n]
            values = [v for v, present in ((usize, usize == 0xFFFFFFFF), (csize, csize == 0xFFFFFFFF),
                                            (offset, offset == 0xFFFFFFFF)) if present]  # fmt: skip
            if len(body) < 8 * len(values):
                break
            got = list(struct.unpack_from(f"<{len(values)}Q", body))
            if usize == 0xFFFFFFFF:
                usize = got.pop(0)
            if csize == 0xFFFFFFFF:
                csize = got.pop(0)
            if offset == 0xFFFFFFFF:
                offset = got.pop(0)
            return usize, csize, offset
        pos += 4 + n
    raise unreadable(f"{where}: member {show(name)} defers its sizes to a zip64 extra field it lacks")


_TORCH_MEMBERS = (
    "data.pkl",
    "byteorder",
    "version",
    ".data/version",
    ".format_version",
    ".storage_alignment",
    ".data/serialization_id",
)


def read_torch_zip(f: BinaryIO, size: int, session: Session, where: str) -> Any:
    """torch >= 1.6: a zip of ``<prefix>/data.pkl`` and one stored member per storage (torch/serialization.py ``_save``)."""
    members = read_zip_directory(f, size, where)
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in members):
        raise unreadable(
            f"{where}: a TorchScript archive (torch.jit.save); its code is not read. Save its state_dict with torch.save instead"
        )
    roots = [n for n in members if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        raise unreadable(f"{where}: a zip but not a torch checkpoint: expected one '<name>/data.pkl', found {show(roots)}")
    prefix = roots[0][: -len("data.pkl")]
    for name in members:
        rest = name[len(prefix) :] if name.startswith(prefix) else None
        if rest is None or not (rest in _TORCH_MEMBERS or (rest.startswith("data/") and rest.count("/") == 1 and len(rest) > 5)):
            raise unreadable(f"{where}: member {show(name)} is not part of a torch checkpoint")
    byteorder = _small_member(f, members.get(prefix + "byteorder"), session, where)
    if byteorder not in (None, b"little", b"big"):
        raise unreadable(f"{where}: byteorder member holds {show(byteorder)}; expected 'little' or 'big'")
    swap = byteorder == b"big"  # storages are byteswapped to little-endian (this host's order; see FORMAT.md big-endian-host)
    version = _small_member(f, members.get(prefix + "version"), session, where)
    if version is not None and not version.strip().isdigit():
        raise unreadable(f"{where}: version member holds {show(version)}; expected a decimal number")
    pkl_info = members[prefix + "data.pkl"]
    if pkl_info.size > session.limits.max_pickle_bytes:
        raise over_limit(
            f"{where}: data.pkl is {pkl_info.size} bytes; the limit is {session.limits.max_pickle_bytes} (max_pickle_bytes)"
        )
    data_pkl = _member_bytes(f, pkl_info, session.limits.max_pickle_bytes, session, where)
    storages: dict[str, StorageRecord] = {}

    def persistent(pid: Any) -> Any:
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise unreadable(f"{where}: persistent id {show(pid)}; expected ('storage', type, key, location, numel)")
        _, stype, key, location, numel = pid
        known = type(key) is str and key in storages
        record = declare_storage(storages, stype, key, location, numel, size, session, where)
        if known:
            return record
        info = members.get(f"{prefix}data/{key}")
        if info is None:
            raise unreadable(f"{where}: storage {show(key)} has no member {show(prefix + 'data/' + key)}")
        if info.size != record.nbytes:
            raise unreadable(
                f"{where}: member {show(info.name)} holds {info.size} bytes; its persistent id declares {record.nbytes}"
            )
        if info.method != _STORED:
            raise unreadable(f"{where}: storage member {show(info.name)} is compressed; torch.save stores storages uncompressed")
        record.data = _member_bytes(f, info, record.nbytes, session, where)  # members do not overlap: each byte read once
        if swap and record.dtype.itemsize > 1:
            byteswap(record.data, record.dtype)
        record.order_unknown = swap and stype.untyped
        return record

    root, end = load_one(io.BytesIO(data_pkl), 0, len(data_pkl), session, f"{where}, {prefix}data.pkl", persistent)
    if end != len(data_pkl):
        raise unreadable(f"{where}: {len(data_pkl) - end} bytes follow the pickle in {prefix}data.pkl")
    return root


def _member_bytes(f: BinaryIO, info: ZipMember, limit: int, session: Session, where: str) -> bytearray:
    """A member's bytes, at most ``limit`` of them, CRC checked. A deflated member's inflated bytes are charged to the budget."""
    name = show(info.name)
    if info.size > limit:
        raise unreadable(f"{where}: member {name} declares {info.size} bytes; expected at most {limit}")
    if info.method == _STORED:
        data = read_exactly(f, info.data_offset, info.size, where)
    else:
        room = min(info.size, session.budget.bytes_left())
        session.budget.charge_bytes(info.size, f"{where}: member {name} inflated to its declared {info.size} bytes")
        data = _inflate(f, info, room, where)
    if zlib.crc32(data) != info.crc:
        raise unreadable(f"{where}: member {name} fails its CRC-32 check (damaged file)")
    return data


def _inflate(f: BinaryIO, info: ZipMember, size: int, where: str) -> bytearray:
    """Inflate a deflated member into exactly its declared ``size`` bytes; more or fewer is an error, never a larger buffer."""
    name = show(info.name)
    out = bytearray()
    engine = zlib.decompressobj(-15)
    f.seek(info.data_offset)
    left = info.compressed_size
    try:
        while left or engine.unconsumed_tail:
            chunk = engine.unconsumed_tail or f.read(min(left, _INFLATE_CHUNK))
            if not engine.unconsumed_tail:
                if not chunk:
                    raise unreadable(f"{where}: member {name} is cut short")
                left -= len(chunk)
            out += engine.decompress(chunk, size + 1 - len(out))
            if len(out) > size:
                raise unreadable(f"{where}: member {name} inflates to more than its declared {size} bytes")
            if engine.eof:
                break
        out += engine.flush(size + 1 - len(out)) if not engine.eof else b""
    except zlib.error as e:
        raise unreadable(f"{where}: member {name}: damaged deflate data ({e})") from e
    if not engine.eof or len(out) != size:
        raise unreadable(f"{where}: member {name} inflates to {len(out)} bytes; its directory entry declares {size}")
    return out


def _small_member(f: BinaryIO, info: ZipMember | None, session: Session, where: str) -> bytes | None:
    if info is None:
        return None
    if info.size > MAX_SMALL_MEMBER:
        raise unreadable(f"{where}: member {show(info.name)} is {info.size} bytes; expected a short text")
    return bytes(_member_bytes(f, info, MAX_SMALL_MEMBER, session, where))
