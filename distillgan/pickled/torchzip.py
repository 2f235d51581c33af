"""torch zip checkpoints (torch >= 1.6): ``<prefix>/data.pkl`` plus one stored member per storage."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from typing import Any, BinaryIO

from .common import MAX_DIRECTORY_BYTES, MAX_SMALL_MEMBER, over_limit, show, unreadable
from .records import StorageRecord
from .session import Session
from .storages import byteswap, declare_storage, read_exactly
from .vm import load_one

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
    _check_directory_size(f, size, where)
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except Exception as e:  # zipfile raises BadZipFile, OSError, EOFError, ValueError, struct.error ... for damaged files
        raise unreadable(f"{where}: not a readable zip: {type(e).__name__}: {show(str(e), 160)}") from e
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.orig_filename
        if name in members:
            raise unreadable(f"{where}: the zip holds two members named {show(name)}")
        members[name] = info
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
    byteorder = _small_member(f, zf, members.get(prefix + "byteorder"), size, where)
    if byteorder not in (None, b"little", b"big"):
        raise unreadable(f"{where}: byteorder member holds {show(byteorder)}; expected 'little' or 'big'")
    swap = byteorder == b"big"  # storages are byteswapped to little-endian (this host's order; see FORMAT.md big-endian-host)
    version = _small_member(f, zf, members.get(prefix + "version"), size, where)
    if version is not None and not version.strip().isdigit():
        raise unreadable(f"{where}: version member holds {show(version)}; expected a decimal number")
    pkl_info = members[prefix + "data.pkl"]
    if pkl_info.file_size > session.limits.max_pickle_bytes:
        raise over_limit(
            f"{where}: data.pkl is {pkl_info.file_size} bytes; the limit is {session.limits.max_pickle_bytes} (max_pickle_bytes)"
        )
    data_pkl = _member_bytes(f, zf, pkl_info, size, session.limits.max_pickle_bytes, where)
    storages: dict[str, StorageRecord] = {}
    read_total = 0

    def persistent(pid: Any) -> Any:
        nonlocal read_total
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise unreadable(f"{where}: persistent id {show(pid)}; expected ('storage', type, key, location, numel)")
        _, stype, key, location, numel = pid
        known = key in storages
        record = declare_storage(storages, stype, key, location, numel, size, session, where)
        if known:
            return record
        info = members.get(f"{prefix}data/{key}")
        if info is None:
            raise unreadable(f"{where}: storage {show(key)} has no member {show(prefix + 'data/' + key)}")
        if info.file_size != record.nbytes:
            raise unreadable(
                f"{where}: member {show(info.orig_filename)} holds {info.file_size} bytes; its persistent id declares {record.nbytes}"
            )
        if info.compress_type != zipfile.ZIP_STORED:
            raise unreadable(
                f"{where}: storage member {show(info.orig_filename)} is compressed; torch.save stores storages uncompressed"
            )
        read_total += record.nbytes
        if read_total > size:  # overlapping members would let a small file read its bytes many times
            raise over_limit(f"{where}: storages total more bytes ({read_total}) than the file holds ({size})")
        record.data = _member_bytes(f, zf, info, size, record.nbytes, where)
        if swap and record.dtype.itemsize > 1:
            byteswap(record.data, record.dtype)
        record.order_unknown = swap and stype.untyped
        return record

    root, end = load_one(io.BytesIO(data_pkl), 0, len(data_pkl), session, f"{where}, {prefix}data.pkl", persistent)
    if end != len(data_pkl):
        raise unreadable(f"{where}: {len(data_pkl) - end} bytes follow the pickle in {prefix}data.pkl")
    return root


def _check_directory_size(f: BinaryIO, size: int, where: str) -> None:
    """zipfile reads the whole central directory into memory: bound it first (APPNOTE 4.3.16, 4.3.14)."""
    tail = min(size, 0xFFFF + 22)
    f.seek(size - tail)
    data = f.read(tail)
    at = data.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(data):
        return  # zipfile will refuse it
    cd_size = int.from_bytes(data[at + 12 : at + 16], "little")
    if cd_size == 0xFFFFFFFF and at >= 20 and data[at - 20 : at - 16] == b"PK\x06\x07":
        record = int.from_bytes(data[at - 12 : at - 4], "little")
        if 0 <= record <= size - 56:
            f.seek(record)
            zip64 = f.read(56)
            if zip64[:4] == b"PK\x06\x06":
                cd_size = int.from_bytes(zip64[40:48], "little")
    if cd_size > MAX_DIRECTORY_BYTES:
        raise over_limit(f"{where}: the zip's central directory is {cd_size} bytes; at most {MAX_DIRECTORY_BYTES} are read")


_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # APPNOTE 4.3.7: signature, 5 x u16, crc, sizes, name and extra lengths


def _member_bytes(f: BinaryIO, zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, limit: int, where: str) -> bytearray:
    """A member's bytes, at most ``limit`` of them, CRC checked. Stored members are read in place."""
    name = show(info.orig_filename)
    if info.flag_bits & 0x1:
        raise unreadable(f"{where}: member {name} is encrypted")
    if info.compress_type != zipfile.ZIP_STORED:
        try:
            with zf.open(info) as member:
                inflated = member.read(limit + 1)  # bounded: a deflate bomb stops at limit + 1 bytes
        except Exception as e:
            raise unreadable(f"{where}: member {name}: {type(e).__name__}: {show(str(e), 160)}") from e
        if len(inflated) > limit:
            raise over_limit(f"{where}: member {name} decompresses to more than {limit} bytes")
        return bytearray(inflated)
    if info.file_size != info.compress_size or info.file_size > limit:
        raise unreadable(
            f"{where}: stored member {name} declares {info.file_size} bytes (compressed {info.compress_size}); expected at most {limit}"
        )
    f.seek(info.header_offset)
    header = f.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise unreadable(f"{where}: member {name} has no local header at byte {info.header_offset}")
    name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
    local_name = f.read(name_len)
    if local_name != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
        raise unreadable(f"{where}: local header name {show(local_name)} differs from central directory name {name}")
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if start + info.file_size > size:
        raise unreadable(f"{where}: member {name} runs past the end of the file")
    data = read_exactly(f, start, info.file_size, where)
    if zlib.crc32(data) != info.CRC:
        raise unreadable(f"{where}: member {name} fails its CRC-32 check (damaged file)")
    return data


def _small_member(f: BinaryIO, zf: zipfile.ZipFile, info: zipfile.ZipInfo | None, size: int, where: str) -> bytes | None:
    if info is None:
        return None
    if info.file_size > MAX_SMALL_MEMBER:
        raise unreadable(f"{where}: member {show(info.orig_filename)} is {info.file_size} bytes; expected a short text")
    return bytes(_member_bytes(f, zf, info, size, MAX_SMALL_MEMBER, where))
