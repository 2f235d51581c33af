"""Legacy torch streams and plain pickles; torch zips are handed to :mod:`.torchzip`."""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

from .common import TORCH_LEGACY_PROTOCOL_VERSION, TORCH_MAGIC_NUMBER, show, unreadable, unsafe
from .containers import DictBuilder
from .records import StorageRecord, is_stand_in_class, kind_of
from .session import Session
from .storages import declare_storage, read_exactly
from .torchzip import read_torch_zip
from .vm import load_one

# --------------------------------------------------------------------------------------------
# The three kinds of file


def read_stream(f: BinaryIO, size: int, session: Session, where: str) -> Any:
    f.seek(0)
    head = f.read(16)
    if not head:
        raise unreadable(f"{where}: the file is empty")
    if head.startswith(b"PK\x03\x04"):
        return read_torch_zip(f, size, session, where)
    if size >= 262:
        f.seek(257)
        if f.read(5) == b"ustar":
            raise unreadable(f"{where}: a tar archive: torch's pre-0.4 tar checkpoint format is not supported")
    first, end = load_one(f, 0, size, session, f"{where}, pickle at byte 0")
    if type(first) is int and first == TORCH_MAGIC_NUMBER and end < size:
        return read_legacy_stream(f, end, size, session, where)
    if end != size:
        raise unreadable(f"{where}: {size - end} bytes follow the pickle that ends at byte {end}")
    return first


def read_legacy_stream(f: BinaryIO, pos: int, size: int, session: Session, where: str) -> Any:
    """torch < 1.6 (torch/serialization.py ``_legacy_save``): after the magic number, four pickles, then the storages."""
    version, pos = load_one(f, pos, size, session, f"{where}, protocol version pickle")
    if type(version) is not int or version != TORCH_LEGACY_PROTOCOL_VERSION:
        raise unreadable(f"{where}: legacy torch protocol version {show(version)}; expected {TORCH_LEGACY_PROTOCOL_VERSION}")
    sys_info, pos = load_one(f, pos, size, session, f"{where}, sys_info pickle")
    if type(sys_info) is not DictBuilder:
        raise unreadable(f"{where}: sys_info is {kind_of(sys_info)}; expected a dict")
    # storage bytes are always little-endian in this format (THPStorage_writeFileRaw converts), whatever sys_info says
    storages: dict[str, StorageRecord] = {}

    def persistent(pid: Any) -> Any:
        kind = pid[0] if type(pid) is tuple and pid else None
        if kind == "module" and len(pid) == 4:  # ('module', class, source file, source): a pickled nn.Module's class
            if not is_stand_in_class(pid[1]):
                raise unsafe(f"{where}: module persistent id names {kind_of(pid[1])}")
            return pid[1]
        if kind != "storage" or len(pid) != 6:
            raise unreadable(f"{where}: persistent id {show(pid)}; expected ('storage', type, key, location, numel, view)")
        _, stype, key, location, numel, view = pid
        if view is not None:
            raise unreadable(f"{where}: storage {show(key)} is a view of another storage (torch < 0.4); not supported")
        return declare_storage(storages, stype, key, location, numel, size, session, where)

    root, pos = load_one(f, pos, size, session, f"{where}, data pickle", persistent)
    keys, pos = load_one(f, pos, size, session, f"{where}, storage keys pickle")
    if (
        type(keys) is not list
        or any(type(k) is not str for k in keys)
        or len(set(keys)) != len(keys)
        or set(keys) != set(storages)
    ):
        raise unreadable(
            f"{where}: storage keys {show(keys)} do not list each of the {len(storages)} storages the data uses once"
        )
    need = sum(8 + storages[k].nbytes for k in keys)
    if pos + need > size:
        raise unreadable(f"{where}: {len(keys)} storages need {need} bytes after byte {pos}; the file has {size - pos}")
    for key in keys:
        record = storages[key]
        f.seek(pos)
        (numel,) = struct.unpack("<q", f.read(8))
        if numel * record.dtype.itemsize != record.nbytes:
            raise unreadable(
                f"{where}: storage {show(key)} at byte {pos} holds {numel} elements; the data pickle declared {record.nbytes // record.dtype.itemsize}"
            )
        record.data = read_exactly(f, pos + 8, record.nbytes, where)
        pos += 8 + record.nbytes
    if pos != size:
        raise unreadable(f"{where}: {size - pos} bytes follow the last storage (byte {pos})")
    return root
